"""No secret leaves: a faulty run at DEBUG, and everything it wrote is searched for every
secret the sandbox issued; tracebacks, other libraries' logs and `--help` too."""

from __future__ import annotations

import contextlib
import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from e2e import config, make_files, run_cli, write_manifest
from pracsuite_ingest.cli import build_parser, main
from pracsuite_ingest.logs import MASK, redact
from pracsuite_ingest.models import Presigned
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions, ThrottleStyle

FAULTS = SandboxOptions(
    validation_delay_s=0.1, seed=7, fail_rate_429=0.15,
    throttle_style=ThrottleStyle.RETRY_AFTER_SECONDS, retry_after_s=0, fail_rate_500=0.1,
    s3_slowdown_rate=0.15, s3_drop_before_rate=0.1, s3_drop_after_rate=0.2)


def everything_written(root: Path, outputs: list[str]) -> bytes:
    """stdout and stderr of every command, and every file under `root/data`."""
    files = [p.read_bytes() for p in sorted((root / "data").rglob("*")) if p.is_file()]
    return b"\n".join([o.encode() for o in outputs] + files)


@pytest.mark.slow
async def test_a_faulty_debug_run_writes_no_secret_anywhere(tmp_path: Path) -> None:
    data = tmp_path / "data"  # created by the worker: must come out 0700
    async with Sandbox(FAULTS) as sb:
        rows = make_files(tmp_path, 24, ["21", "22"])
        rows += [{"client_id": "424242", "path": rows[0]["path"]},  # 404: an error body
                 {"client_id": "21", "path": "files/21/gone.pdf"}]
        manifest = write_manifest(tmp_path, rows)
        cfg = config(tmp_path, sb, log={"level": "debug", "format": "json"},
                     api={"max_attempts": 10},
                     # one request at a time: the seeded fault draws come in the same order
                     upload={"concurrency": 1, "presign_concurrency": 1},
                     # a dropped upload waits out the deadline before it is sent again
                     reconcile={"deadline_s": 3, "poll_interval_s": 0.2},
                     state={"path": str(data / "state" / "state.db")},
                     report={"dir": str(data / "reports")})
        outputs = []
        for args in (["run", "--manifest", str(manifest)], ["status"], ["reconcile"],
                     ["check"]):
            if args == ["check"]:
                sb.reset_faults()  # one call, no retry: a drawn 429 would fail it (exit 3)
            result = await run_cli(*args, "--config", str(cfg), cwd=tmp_path)
            assert result.code in (0, 1), (args, result.stderr[-2000:])
            outputs += [result.stdout, result.stderr]
        issued = list(sb.stats_counters.issued_secrets)
        stats = sb.stats()
        secrets = [sb.vendor_key, sb.practice_key, sb.options.s3_secret_key,
                   sb.options.session_token or "", *issued]
    # the run met every fault and was handed every kind of secret, many times
    assert {"api_429", "api_500", "s3_slowdown", "s3_drop_before", "s3_drop_after"} <= set(
        stats["faults"]), stats["faults"]
    assert len(issued) >= 4 * 24 and all(len(s) >= 16 for s in secrets)
    assert sum(1 for line in outputs[1].splitlines() if '"level": "debug"' in line) > 0
    blob = everything_written(tmp_path, outputs)
    assert b"temp/" in blob  # the state file and reports were searched (they hold keys)
    leaked = [s[:12] + "..." for s in secrets if s.encode() in blob]
    assert leaked == []
    # files at rest: the worker's folders 0700, its files 0600
    for path in [data, *data.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    assert {p.name for p in (data / "state").iterdir()} >= {"state.db", "state.db.lock"}


SCRIPT = r"""
import logging, sys
from pracsuite_ingest.logs import configure, get_logger, register_secret
from pracsuite_ingest.models import Presigned

KEY = "vendor-key-7f3a9c1e5b"
FIELDS = (("key", "temp/1/x.pdf"),
          ("Policy", "eyJleHBpcmF0aW9uIjoiMjA5OS0wMS0wMVQwMDowMDowMFoifQ=="),
          ("x-amz-credential", "ASIAEXAMPLEKEY123/20991231/ap-southeast-2/s3/aws4_request"),
          ("x-amz-signature", "5d41402abc4b2a76b9719d911017c592" * 2),
          ("x-amz-security-token", "FwoGZXIvYXdzEJr//////////wEaDNotARealToken"))
register_secret(KEY)
configure(sys.argv[1], "json")
log = get_logger()
presigned = Presigned("https://s3.example/b", FIELDS)
log.debug("nested", answer={"url": "https://s3.example", "fields": dict(FIELDS)},
          form=[list(f) for f in FIELDS], presigned=presigned, headers={"x-api-key": KEY})
try:
    raise RuntimeError(f"boom {KEY} {dict(FIELDS)}")
except RuntimeError:
    log.exception("caught")
logging.getLogger("aiohttp.client").error("library says %s %s", KEY, FIELDS)
raise RuntimeError(f"uncaught {KEY} {dict(FIELDS)} {presigned.fields}")
"""
SECRET_VALUES = ["vendor-key-7f3a9c1e5b", "eyJleHBpcmF0aW9u", "ASIAEXAMPLEKEY123",
                 "5d41402abc4b2a76b9719d911017c592", "FwoGZXIvYXdzEJr"]


@pytest.mark.parametrize("level", ["debug", "error"])
def test_tracebacks_nested_values_and_library_logs_are_scrubbed(level: str) -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, level], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 1  # the uncaught exception
    assert "Traceback (most recent call last)" in proc.stderr  # printed, but scrubbed
    assert "library says" in proc.stderr and "caught" in proc.stderr
    assert "temp/1/x.pdf" in proc.stderr  # the key is no secret: it is still shown
    for secret in SECRET_VALUES:
        assert secret not in proc.stderr, secret


def test_redaction_reaches_into_nested_values_and_objects() -> None:
    fields = (("key", "k"), ("Policy", "eyJwb2xpY3kiOiJzZWNyZXQtcG9saWN5In0="))
    event = redact(None, "", {"event": "x", "resp": {"data": {"Policy": "p", "ok": 1}},
                              "pairs": [("x-amz-signature", "abc123def456")],
                              "obj": Presigned("https://s", fields), "n": 3})
    assert event["resp"] == {"data": {"Policy": MASK, "ok": 1}}
    assert "abc123def456" not in str(event["pairs"]) and event["n"] == 3
    assert "eyJwb2xpY3k" not in event["obj"]


def test_help_of_every_command_shows_no_secret(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    key, practice = "vendor-secret-31415926", "practice-secret-27182818"
    monkeypatch.setenv("PRACSUITE_VENDOR_API_KEY", key)
    monkeypatch.setenv("PRACSUITE_PRACTICE_API_KEY", practice)
    monkeypatch.chdir(tmp_path)
    Path("pracsuite-ingest.toml").write_text(
        f'[api]\nvendor_api_key = "{key}"\npractice_api_key = "{practice}"\n')
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and "run" in a.choices)
    commands = [[], *([c] for c in subparsers.choices), ["report", "merge"]]
    assert len(commands) >= 8
    for command in commands:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
            main([*command, "--help"])
        assert done.value.code == 0
        text = out.getvalue()
        assert "usage:" in text
        assert key not in text and practice not in text, command
    assert os.environ["PRACSUITE_VENDOR_API_KEY"] == key  # the test did set them
