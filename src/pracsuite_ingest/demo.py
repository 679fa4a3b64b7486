"""`pracsuite-ingest demo`: the sandbox, sample files, a full run, the summary.

Works offline with no account and no config. The samples include rows that are meant
to go wrong (a missing file, no extension, a file over 100 MB, an unknown client, a
duplicate row, an empty file PracSuite's validation refuses) so that every status of
the report shows up; the demo succeeds when every good row is validated.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import secrets
import shutil
import sys
from pathlib import Path

from pracsuite_ingest import MAX_FILE_BYTES, aio
from pracsuite_ingest.logs import configure
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions
from pracsuite_ingest.settings import load_settings

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


def closing_text(good: int, summary: dict[str, int], manifest: Path) -> str:
    """The demo's last words: what happened, and next steps that work once the demo's
    sandbox is gone (no `reconcile`: there is nothing left to ask)."""
    missing = summary.get("missing", 0)
    why_missing = (f" The {missing} `missing` row is the empty file: PracSuite's validation "
                   "refuses it, so it never gets a record (the report's advice to run "
                   "`reconcile` is for a real PracSuite; this sandbox has stopped)."
                   if missing == 1 else "")
    return (f"demo ok: all {good} good files validated; the 6 bad rows are explained in the "
            f"report.{why_missing}\n"
            "To try the commands yourself, start a sandbox that keeps running, then, in "
            "another terminal, run the same manifest against it:\n"
            "  pracsuite-ingest sandbox --config-out sandbox.toml\n"
            f"  pracsuite-ingest run --config sandbox.toml --manifest {manifest}")


def _fresh_dir(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)


async def _demo(count: int, out: Path) -> int:
    from pracsuite_ingest.cli import cmd_run
    from pracsuite_ingest.progress import TerminalProgress
    from pracsuite_ingest.watch import Watch

    await asyncio.to_thread(_fresh_dir, out)
    options = SandboxOptions(validation_delay_s=0.3, data_dir=out / "sandbox-s3")
    async with Sandbox(options) as sandbox:
        clients = ["1", "2", "3", "1001"]
        manifest, good = write_samples(out, count, clients)
        print(f"sandbox: PracSuite at {sandbox.base_url}, S3 at {sandbox.s3_url}")
        print(f"samples: {good} good files and 6 bad rows in {manifest}")
        os.environ["PRACSUITE_VENDOR_API_KEY"] = sandbox.vendor_key
        os.environ["PRACSUITE_PRACTICE_API_KEY"] = sandbox.practice_key
        settings = load_settings(None, {
            "api": {"base_url": sandbox.base_url, "requests_per_second": 50.0},
            "input": {"manifest": str(manifest), "source_dir": ""},
            "reconcile": {"deadline_s": 8.0, "poll_interval_s": 0.5},
            "state": {"path": str(out / "state.db")},
            "report": {"dir": str(out / "reports")},
        })
        configure("warning", "console" if sys.stderr.isatty() else "json")
        progress = TerminalProgress.for_terminal(quiet=False, log_format=settings.log.format)
        await cmd_run(settings, dry_run=False, watch=Watch(progress=progress))
    doc = json.loads((out / "reports" / "latest.json").read_text())
    validated = doc["summary"]["validated"]
    print(f"open {out / 'reports' / 'latest.html'} in a browser for the readable report")
    if validated == good:
        print(closing_text(good, doc["summary"], out / "manifest.csv"))
        return 0
    print(f"demo: only {validated} of {good} good files validated", file=sys.stderr)
    return 1


def run_demo(count: int, out: Path) -> int:
    return aio.run(_demo(count, out))
