"""API calls per file on a practice-shaped input, against the least the flow needs.

    make bench-calls                  # or: .venv/bin/python bench/calls_per_file.py

A practice: `--patients` patients with 1 to `--max-files` files each (seeded; or exactly
`--files-per-patient`), of `--size` bytes, validation taking `--validation-delay` s,
`reconcile.poll_interval_s` 2 s, `reconcile.verify` as `--verify` says. `--description`
is what the sandbox's records carry: `empty` (no file name: every match reads a
`presign_url`), `file_name` (the name, no key) or `key` (the uploaded key: the name and
the presign's uuid, i.e. proof). The least the flow needs, per file: its presign, and
its record's `presign_url` unless the records carry the name; per patient: one
snapshot and one poll that finds every upload (more pages when a patient has over 100
records). Also printed: the bytes the sandbox's S3 served to the worker's proof
(ranged GETs and downloads) against the bytes uploaded. Printed:
the calls by kind, calls per file against that least, files per hour at this run's
pace, when the first file was validated and the last upload finished (seconds from the
start of the run) and how many files were validated before the last upload, and the
hours a 100,000-file practice would take at 3, 10 and 30 requests/s if the API rate is
the bound (calls per file x 100,000 / rate). Not part of the test suite.
Writes bench/results/<time>-calls.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from pracsuite_ingest.sandbox import Sandbox, SandboxOptions  # noqa: E402
from pracsuite_ingest.sandbox.options import DescriptionMode  # noqa: E402


async def run(patients: int, max_files: int, delay: float, rate: float, seed: int,
              *, per_patient: int = 0, size: int = 1024, verify: str = "ambiguous",
              description: str = "empty") -> dict[str, Any]:
    rng = random.Random(seed)
    counts = {str(1000 + p): per_patient or rng.randint(1, max_files)
              for p in range(patients)}
    files = sum(counts.values())
    mode = DescriptionMode(description)
    opts = SandboxOptions(validation_delay_s=delay, clients=tuple(counts),
                          description_mode=mode, record_requests=False,
                          existing_records_per_client=3)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lines = ["client_id,path"]
        for client, n in counts.items():
            for i in range(n):
                path = root / "files" / client / f"doc{i}.pdf"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(os.urandom(size))
                lines.append(f"{client},{path}")
        (root / "m.csv").write_text("\n".join(lines) + "\n")
        async with Sandbox(opts) as sb:
            (root / "c.toml").write_text(
                f"[api]\nbase_url = {json.dumps(sb.base_url)}\n"
                f"vendor_api_key = {json.dumps(sb.vendor_key)}\n"
                f"practice_api_key = {json.dumps(sb.practice_key)}\n"
                f"requests_per_second = {rate}\n"
                "[reconcile]\ndeadline_s = 300\npoll_interval_s = 2\n"
                f"verify = {json.dumps(verify)}\n"
                f"[state]\npath = {json.dumps(str(root / 's.db'))}\n"
                f"[report]\ndir = {json.dumps(str(root / 'r'))}\n"
                "[log]\nformat = \"json\"\nlevel = \"warning\"\n")
            env = {k: v for k, v in os.environ.items() if not k.startswith("PRACSUITE")}
            started = time.monotonic()
            started_wall = time.time()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pracsuite_ingest", "run", "--config",
                str(root / "c.toml"), "--manifest", str(root / "m.csv"), env=env, cwd=root,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            await proc.communicate()
            wall = time.monotonic() - started
            stats = sb.stats()
        report = json.loads((root / "r" / "latest.json").read_text())
        with sqlite3.connect(root / "s.db") as db:
            first_validated, last_upload = db.execute(
                "SELECT (SELECT MIN(updated_at) FROM items WHERE stage = 'validated'), "
                "(SELECT MAX(uploaded_at) FROM items)").fetchone()
            early = db.execute("SELECT COUNT(*) FROM items WHERE stage = 'validated' "
                               "AND updated_at < ?", (last_upload or 0,)).fetchone()[0]
    by_kind = {k: sum(v.values()) for k, v in stats["requests"].items()
               if not k.startswith("s3_") and sum(v.values())}
    calls = sum(by_kind.values())
    named = mode in (DescriptionMode.FILE_NAME, DescriptionMode.KEY)
    least = (1 if named else 2) * files + 2 * patients
    uploaded = files * size
    return {"patients": patients, "files": files, "exit": proc.returncode,
            "verify": verify, "description": description, "size": size,
            "bytes_uploaded": uploaded, "bytes_downloaded": stats["s3_bytes_served"],
            "downloaded_share": round(stats["s3_bytes_served"] / uploaded, 5),
            "verified": report["summary"].get("verified"),
            "validated": report["summary"]["validated"], "wall_s": round(wall, 1),
            "calls": calls, "by_kind": by_kind, "least": least,
            "calls_per_file": round(calls / files, 3),
            "least_per_file": round(least / files, 3),
            "ratio_to_least": round(calls / least, 3),
            "files_per_hour": round(files / wall * 3600),
            "first_validated_s": round((first_validated or started_wall) - started_wall, 1),
            "last_upload_s": round((last_upload or started_wall) - started_wall, 1),
            "validated_before_last_upload": early,
            "hours_for_100k": {str(r): round(calls / files * 100_000 / r / 3600, 1)
                               for r in (3, 10, 30)}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--patients", type=int, default=2000)
    p.add_argument("--max-files", type=int, default=10)
    p.add_argument("--validation-delay", type=float, default=1.0)
    p.add_argument("--rate", type=float, default=1000.0,
                   help="api.requests_per_second of the run (high: count calls, not wait)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--files-per-patient", type=int, default=0,
                   help="exactly this many files per patient (0: 1 to --max-files)")
    p.add_argument("--size", type=int, default=1024, help="bytes per file")
    p.add_argument("--verify", choices=["off", "ambiguous", "all"], default="ambiguous")
    p.add_argument("--description", choices=[m.value for m in DescriptionMode],
                   default="empty", help="what the records' description carries")
    args = p.parse_args()
    row = asyncio.run(run(args.patients, args.max_files, args.validation_delay, args.rate,
                          args.seed, per_patient=args.files_per_patient, size=args.size,
                          verify=args.verify, description=args.description))
    print(f"verify {row['verify']}, records' description {row['description']}: "
          f"{row['bytes_downloaded']:,} bytes read back for {row['bytes_uploaded']:,} "
          f"uploaded ({row['downloaded_share']:.2%}), {row['verified']} verified")
    print(f"{row['patients']:,} patients, {row['files']:,} files: {row['calls']:,} API calls "
          f"({row['by_kind']}), {row['calls_per_file']} per file against the least "
          f"{row['least_per_file']} (x{row['ratio_to_least']}); {row['files_per_hour']:,} "
          f"files/hour here; first validated at {row['first_validated_s']} s, last upload "
          f"at {row['last_upload_s']} s ({row['validated_before_last_upload']:,} validated "
          f"before it); a 100,000-file practice at 3/10/30 requests/s: "
          f"{row['hours_for_100k']['3']} / {row['hours_for_100k']['10']} / "
          f"{row['hours_for_100k']['30']} hours; exit {row['exit']}, "
          f"{row['validated']:,} validated")
    out = REPO / "bench" / "results" / f"{datetime.now(UTC):%Y-%m-%dT%H-%M-%SZ}-calls.json"
    out.write_text(json.dumps({"args": vars(args), "run": row}, indent=1) + "\n")
    print(f"written: {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
