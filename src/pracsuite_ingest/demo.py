"""`pracsuite-ingest demo`: the sandbox, sample files, a full run, the summary.

Works offline with no account and no config. The samples include rows that are meant
to go wrong (a missing file, no extension, a file over 100 MB, an unknown client, a
duplicate row, an empty file PracSuite's validation refuses) so that every status of
the report shows up; the demo succeeds when every good row is validated.

Where it writes (`--out`, or the first of `default_outs` it may use): samples, the
sandbox's S3, its own state file and its reports, all in that one folder. It never uses
the configured `state.path` or the report folder's own files: a sandbox's uploads
recorded in a real state file, or a sandbox report as `latest.json`, would be false
proof. It deletes only what it wrote: a folder is used when it is new or empty, or
when it holds the demo's marker and nothing but the names the demo writes (then those
are replaced); anything else is refused, and nothing in it is touched.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import secrets
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pracsuite_ingest import MAX_FILE_BYTES, aio
from pracsuite_ingest.errors import ConfigError
from pracsuite_ingest.exit_codes import EXIT_CONFIG
from pracsuite_ingest.hints import program_name
from pracsuite_ingest.localfs import private_dir
from pracsuite_ingest.logs import configure
from pracsuite_ingest.plural import counted
from pracsuite_ingest.settings import load_settings

if TYPE_CHECKING:
    from pracsuite_ingest.settings import Settings
    from pracsuite_ingest.watch import Watch

# EXIT_CONFIG (docs/contract.md): configuration, here also a folder the demo may not use
MARKER = ".pracsuite-ingest-demo"
# Everything the demo writes at the top of its folder (the state file's SQLite and lock
# companions included); a marked folder holding anything else is not the demo's alone.
DEMO_NAMES = frozenset({MARKER, "files", "manifest.csv", "sandbox-s3", "reports", "state.db",
                        "state.db-wal", "state.db-shm", "state.db-journal", "state.db.lock",
                        "state.db.sends"})
DEFAULT_NAME = "demo-out"


@dataclass(frozen=True)
class OutPlan:
    """What to do with a folder before the demo writes there."""

    action: str  # "create", "use" (empty), "replace" (the demo's own earlier output), "refuse"
    reason: str = ""


def plan_out(entries: frozenset[str] | None, *, is_dir: bool = True) -> OutPlan:
    """The demo's rule for a folder holding `entries` (None: it does not exist).
    Never names an entry: a file name in a practice's folder can be health data."""
    if entries is None:
        return OutPlan("create")
    if not is_dir:
        return OutPlan("refuse", "it is a file, not a folder")
    if not entries:
        return OutPlan("use")
    if MARKER in entries and entries <= DEMO_NAMES:
        return OutPlan("replace")
    foreign = len(entries - DEMO_NAMES) if MARKER in entries else len(entries)
    return OutPlan("refuse", f"it holds {foreign} file(s) or folder(s) the demo did not write, "
                             "and the demo deletes only its own")


def default_outs(cwd: Path, report_dir: str | None, tmp: Path) -> list[Path]:
    """Where the demo writes without --out, first usable first: ./demo-out (a laptop);
    a `demo` folder in report.dir (the image: /data/reports/demo, so a mounted reports
    volume gets it, beside and never over a real run's reports); the temp folder (a
    read-only container with nothing mounted)."""
    outs = [cwd / DEFAULT_NAME]
    if report_dir:
        outs.append((cwd / report_dir / "demo").resolve())
    outs.append(tmp / "pracsuite-ingest-demo")
    return list(dict.fromkeys(outs))


def prepare_out(out: Path) -> OutPlan:
    """Apply `plan_out` to `out`: create it, or empty the demo's own earlier output
    (the folder itself stays: it may be a mount point), and mark it as the demo's.
    Raises OSError when the folder cannot be made or written."""
    if out.exists() and not out.is_dir():
        return plan_out(frozenset(), is_dir=False)
    try:
        entries: frozenset[str] | None = frozenset(p.name for p in out.iterdir())
    except FileNotFoundError:
        entries = None
    plan = plan_out(entries)
    if plan.action == "refuse":
        return plan
    if plan.action == "create":
        private_dir(out)
    if plan.action == "replace":
        for name in sorted(entries or ()):
            path = out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    (out / MARKER).write_text("written by `pracsuite-ingest demo`, which may replace what "
                              "it wrote here on its next run\n", encoding="utf-8")
    return plan


def choose_out(out: Path | None) -> tuple[Path | None, list[str]]:
    """The folder to write in, prepared, and what was said on the way; (None, messages)
    when there is none. An explicit --out is the only candidate."""
    if out is not None:
        candidates = [out]
    else:
        try:
            report_dir: str | None = load_settings(None, {}, require_keys=False,
                                                   require_input=False).report.dir
        except ConfigError:
            report_dir = None
        candidates = default_outs(Path.cwd(), report_dir, Path(tempfile.gettempdir()))
    notes = []
    for folder in candidates:
        try:
            plan = prepare_out(folder)
        except OSError as exc:
            notes.append(f"{folder} is not writable ({exc.strerror})")
            continue
        if plan.action != "refuse":
            return folder, notes
        notes.append(f"{folder} is not the demo's to use: {plan.reason}")
    return None, notes


NAMES = ["Referral letter.pdf", "Pathology \u2013 FBC 2026.pdf", "Échographie abdominale.pdf",
         "x-ray, left knee.jpg", 'Discharge "final".docx', "心电图.png", "Care plan.txt",
         "Müller, Jürgen - consent.pdf"]


def write_samples(root: Path, count: int, clients: list[str]) -> tuple[Path, int]:
    """Sample files and a CSV manifest; returns (manifest, rows meant to validate)."""
    files = root / "files"
    files.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, str]] = []
    for i in range(count):
        client = clients[i % len(clients)]
        name = f"{i:04d} {NAMES[i % len(NAMES)]}"
        path = files / client / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(secrets.token_bytes(2048 + 97 * i) + name.encode())
        rows.append({"client_id": client, "path": str(path.relative_to(root)), "file_name": "",
                     "note": f"sample {i}"})
    good = len(rows)
    too_big = files / clients[0] / "too big.pdf"
    with too_big.open("wb") as fh:
        fh.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used
    empty = files / clients[0] / "empty.pdf"
    empty.write_bytes(b"")
    noext = files / clients[0] / "no extension"
    noext.write_bytes(b"data")
    rows += [
        {"client_id": clients[0], "path": "files/gone.pdf", "file_name": "", "note": "missing"},
        {"client_id": clients[0], "path": str(too_big.relative_to(root)), "file_name": "",
         "note": "over 100 MB"},
        {"client_id": clients[0], "path": str(noext.relative_to(root)), "file_name": "",
         "note": "no extension"},
        {"client_id": "999999", "path": rows[0]["path"], "file_name": "",
         "note": "unknown client"},
        dict(rows[1], note="duplicate of row 2"),
        {"client_id": clients[0], "path": str(empty.relative_to(root)), "file_name": "",
         "note": "empty: PracSuite refuses"},
    ]
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["client_id", "path", "file_name", "note"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest, good


def closing_text(good: int, summary: dict[str, int], manifest: Path,
                 program: str = "pracsuite-ingest") -> str:
    """The demo's last words: what happened, and next steps that work once the demo's
    sandbox is gone (no `reconcile`: there is nothing left to ask). `program` is how
    this program was started (`hints.program_name`)."""
    missing = summary.get("missing", 0)
    why_missing = (f" The {missing} `missing` row is the empty file: PracSuite's validation "
                   "refuses it, so it never gets a record (the report's advice to run "
                   "`reconcile` is for a real PracSuite; this sandbox has stopped)."
                   if missing == 1 else "")
    return (f"demo ok: all {counted(good, 'good file')} validated; the 6 bad rows are "
            f"explained in the report.{why_missing}\n"
            "To try the commands yourself, start a sandbox that keeps running, then, in "
            "another terminal, run the same manifest against it:\n"
            f"  {program} sandbox --config-out sandbox.toml\n"
            f"  {program} run --config sandbox.toml --manifest {manifest}")


async def _demo(count: int, out: Path) -> int:
    # exactly what `run` runs (commands.py), against the sandbox
    from pracsuite_ingest.commands import cmd_run
    from pracsuite_ingest.progress import TerminalProgress
    from pracsuite_ingest.sandbox import Sandbox, SandboxOptions
    from pracsuite_ingest.watch import Watch

    # record_requests off: the demo may run many files, and nothing checks them here
    options = SandboxOptions(validation_delay_s=0.3, data_dir=out / "sandbox-s3",
                             record_requests=False)
    async with Sandbox(options) as sandbox:
        clients = ["1", "2", "3", "1001"]
        manifest, good = await asyncio.to_thread(write_samples, out, count, clients)
        print(f"sandbox: PracSuite at {sandbox.base_url}, S3 at {sandbox.s3_url}")
        print(f"samples: {counted(good, 'good file')} and 6 bad rows in {manifest}")
        settings = _demo_settings(sandbox.base_url, sandbox.vendor_key, sandbox.practice_key,
                                  manifest, out)
        configure("warning", "console" if sys.stderr.isatty() else "json")
        progress = TerminalProgress.for_terminal(quiet=False, log_format=settings.log.format)
        watch: Watch = Watch(progress=progress)
        await cmd_run(settings, dry_run=False, watch=watch)
    doc = json.loads((out / "reports" / "latest.json").read_text())
    validated = doc["summary"]["validated"]
    print(f"open {out / 'reports' / 'latest.html'} in a browser for the readable report")
    if validated == good:
        program = program_name(sys.argv[0], cwd=str(Path.cwd()), path=os.environ.get("PATH"),
                               executable=sys.executable)
        print(closing_text(good, doc["summary"], out / "manifest.csv", program))
        return 0
    print(f"demo: only {validated} of {counted(good, 'good file')} validated", file=sys.stderr)
    return 1


def _demo_settings(base_url: str, vendor_key: str, practice_key: str, manifest: Path,
                   out: Path) -> Settings:
    """The configuration (file, environment) with the demo's own values winning: the
    sandbox and its keys (never a real key, wherever the configuration keeps one), the
    samples, and a state file and reports inside `out`."""
    return load_settings(None, {
        "api": {"base_url": base_url, "requests_per_second": 50.0,
                "vendor_api_key": vendor_key, "practice_api_key": practice_key},
        "input": {"manifest": str(manifest), "source_dir": ""},
        # The refused empty file waits the whole deadline: 4 s is 13 times the
        # sandbox's validation delay, and the demo ends in about half the time.
        "reconcile": {"deadline_s": 4.0, "poll_interval_s": 0.5},
        "state": {"path": str(out / "state.db")},
        "report": {"dir": str(out / "reports")},
    })


def run_demo(count: int, out: Path | None) -> int:
    """`demo`: exit 0 when every good row validated, 1 when not, 2 when there is no
    folder it may write in (or the configuration is wrong)."""
    folder, notes = choose_out(out)
    if folder is None:
        for note in notes:
            print(f"pracsuite-ingest demo: {note}", file=sys.stderr)
        hint = "choose a new or empty folder with --out" if out is not None else \
            "choose a folder with --out"
        print(f"pracsuite-ingest demo: nowhere to write; {hint}", file=sys.stderr)
        return EXIT_CONFIG
    for note in notes:
        print(f"demo: skipped {note}")
    print(f"demo: samples, state and reports in {folder}")
    try:
        return aio.run(_demo(count, folder))
    except ConfigError as exc:
        print(f"pracsuite-ingest demo: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
