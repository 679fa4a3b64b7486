"""Shared helpers for end-to-end tests: sample inputs and the CLI as a real process."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pracsuite_ingest.connection import make_client, make_session
from pracsuite_ingest.pipeline import Run
from pracsuite_ingest.sandbox import Sandbox
from pracsuite_ingest.settings import Settings
from pracsuite_ingest.state import ItemRecord, State


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def report(self, report_dir: Path, name: str = "latest") -> dict[str, Any]:
        """`latest.json`, or `dry-run.json` (name="dry-run") after a dry run."""
        data: dict[str, Any] = json.loads((report_dir / f"{name}.json").read_text())
        return data


def write_manifest(root: Path, rows: list[dict[str, str]]) -> Path:
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["client_id", "path", "file_name", "note"])
        writer.writeheader()
        for r in rows:
            writer.writerow({"file_name": "", "note": "", **r})
    return manifest


def make_files(root: Path, count: int, clients: list[str], *, size: int = 1500,
               names: list[str] | None = None) -> list[dict[str, str]]:
    names = names or ["letter.pdf", "Pathology, FBC.pdf", 'Scan "final" é.jpg', "心电图.png"]
    rows = []
    for i in range(count):
        client = clients[i % len(clients)]
        name = f"{i:05d} {names[i % len(names)]}"
        path = root / "files" / client / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size) + name.encode())
        rows.append({"client_id": client, "path": str(path.relative_to(root)),
                     "note": f"n{i}"})
    return rows


def config(root: Path, sb: Sandbox, **sections: dict[str, Any]) -> Path:
    """A TOML config for the CLI pointed at `sb`; sections override the defaults."""
    base: dict[str, dict[str, Any]] = {
        "api": {"base_url": sb.base_url, "vendor_api_key": sb.vendor_key,
                "practice_api_key": sb.practice_key, "requests_per_second": 200.0},
        "reconcile": {"deadline_s": 15, "poll_interval_s": 0.3},
        "state": {"path": str(root / "state.db")},
        "report": {"dir": str(root / "reports")},
        "log": {"level": "info", "format": "json"},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    lines = []
    for name, values in base.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path = root / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
                  limit_s: float = 240, prefix: Sequence[str] = ()) -> CliResult:
    """`python -m pracsuite_ingest ARGS` as a child process; the sandbox keeps serving.

    `prefix` runs it under another program (e.g. `faketime -f +2h`)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PRACSUITE")}
    full_env.update(env or {})
    proc = await asyncio.create_subprocess_exec(
        *prefix, sys.executable, "-m", "pracsuite_ingest", *args, cwd=cwd, env=full_env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), limit_s)
    assert proc.returncode is not None
    return CliResult(proc.returncode, out.decode(), err.decode())


def api_keys(sb: Sandbox) -> dict[str, str]:
    """Both PracSuite key headers for the sandbox `sb`."""
    return {"x-api-key": sb.vendor_key, "a-api-key": sb.practice_key}


async def run_in_process(settings: Settings, state_path: Path, started_at: str,
                         shutdown: asyncio.Event | None = None) -> list[ItemRecord]:
    """One run of `settings` in this process (the pipeline itself, not the CLI), to its
    end, on the state file at `state_path`; its items."""
    state = State.open(state_path)
    try:
        async with make_session(settings) as session:
            run = Run(settings, state, make_client(settings, session), session,
                      dry_run=False, shutdown=shutdown or asyncio.Event(), run_id="run-1")
            state.new_run("run-1", started_at)
            await run.execute()
        return list(state.items("run-1"))
    finally:
        state.close()
