"""What `pracsuite-ingest sandbox` tells the worker: an `[api]` block to paste into a
config, or a whole config written to a file (`--config-out`).

The text is TOML that the worker's config loader accepts as it is (every key is one
the worker knows). Pure functions build it; `write_config` is the only I/O.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# The first line of every file `--config-out` writes: only such a file is overwritten.
MARKER = "# pracsuite-ingest configuration for the local sandbox"


def api_block(base_url: str, vendor_key: str, practice_key: str, s3_url: str) -> str:
    """The `[api]` section for this sandbox, ready to paste (the S3 URL as a comment:
    it is not a config key, each presign names it)."""
    return "\n".join([
        "[api]",
        f"base_url = {json.dumps(base_url)}",
        f"vendor_api_key = {json.dumps(vendor_key)}",
        f"practice_api_key = {json.dumps(practice_key)}",
        f"# the sandbox's S3 is {s3_url} (not a config key: each presign names it)",
    ]) + "\n"


def reconcile_deadline_s(validation_delay_s: float) -> int:
    """How long a run against the sandbox waits for records: a record that has not come
    by then never will (the sandbox refused the file), so a rehearsal ends in a minute,
    not PracSuite's 15."""
    return max(60, round(4 * validation_delay_s + 30))


def whole_config(base_url: str, vendor_key: str, practice_key: str, s3_url: str,
                 validation_delay_s: float = 0.5) -> str:
    """A complete config for a run against this sandbox; only `[input]` is to fill in.

    State and reports get their own names, so that a rehearsal never mixes with a real
    practice's state file. The keys are this sandbox's: random at each start unless
    `--vendor-key` / `--practice-key` were given.
    """
    deadline = f"deadline_s = {reconcile_deadline_s(validation_delay_s)}"
    return f"""{MARKER} (written by `pracsuite-ingest sandbox
# --config-out`). Fill in [input]: set manifest (a CSV or .jsonl with client_id and path)
# or source_dir (a folder of <client_id>/... files), or give --manifest / --source-dir
# to `run`. The keys below are this sandbox's and change at each start unless the
# sandbox was given --vendor-key and --practice-key. Every key: config.example.toml.

{api_block(base_url, vendor_key, practice_key, s3_url)}
[input]
manifest = ""              # fill in: CSV or .jsonl manifest; or:
source_dir = ""            # fill in: <source_dir>/<client_id>/**/<file>

[reconcile]
poll_interval_s = 1.0      # records come --validation-delay ({validation_delay_s:g} s) after
{deadline:<27}# an upload; one not there by then never comes

[state]
path = "sandbox-state.db"  # not a real practice's state file

[report]
dir = "sandbox-reports"
"""


class ConfigOutRefused(ValueError):
    """`--config-out` names a file the sandbox did not write (it is left alone)."""


def write_config(path: Path, text: str) -> None:
    """Write `text` to `path`, readable by the owner only (0600: it holds keys).

    Overwrites only a file that an earlier `--config-out` wrote, never someone's own
    config (`ConfigOutRefused`).
    """
    try:
        with path.open(encoding="utf-8") as fh:
            first = fh.readline()
    except FileNotFoundError:
        first = MARKER
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigOutRefused(f"--config-out {path}: cannot read the file there ({exc}); "
                               "give another path") from None
    if not first.startswith(MARKER):
        raise ConfigOutRefused(f"--config-out {path}: the file exists and was not written by "
                               "the sandbox; it is left alone, give another path")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        os.fchmod(fh.fileno(), 0o600)  # an existing file keeps its mode otherwise
        fh.write(text)
