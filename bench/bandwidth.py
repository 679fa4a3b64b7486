"""`upload.max_bytes_per_second`: is the cap held over a 100 MB run?

    make bench-bandwidth              # or: .venv/bin/python bench/bandwidth.py [--mb 100]

One run of the worker without a cap (the baseline, same machine, same run of this
script), then one per cap, each sending `--mb` MB in 10 files with 8 uploads in flight
to the sandbox's own S3 on loopback. Printed: the bytes sent per second from the run's
start to its last upload's answer (so hashing and presigning count against the run),
against the cap. Not part of the test suite. Writes bench/results/<time>-bandwidth.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from pracsuite_ingest.sandbox import Sandbox, SandboxOptions  # noqa: E402


def when(line: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00")).timestamp()


async def one(total_mb: int, cap: int) -> dict[str, Any]:
    files = 10
    size = total_mb * 2**20 // files
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lines = ["client_id,path"]
        for i in range(files):
            path = root / "files" / f"{i:02d}.pdf"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as fh:
                fh.write(os.urandom(size))
            lines.append(f"1,{path}")
        (root / "m.csv").write_text("\n".join(lines) + "\n")
        async with Sandbox(SandboxOptions(validation_delay_s=0.1, clients=("1",),
                                          record_requests=False)) as sb:
            (root / "c.toml").write_text(
                f"[api]\nbase_url = {json.dumps(sb.base_url)}\n"
                f"vendor_api_key = {json.dumps(sb.vendor_key)}\n"
                f"practice_api_key = {json.dumps(sb.practice_key)}\n"
                "requests_per_second = 50.0\n"
                f"[upload]\nconcurrency = 8\nmax_bytes_per_second = {cap}\n"
                "[reconcile]\ndeadline_s = 60\npoll_interval_s = 0.5\n"
                f"[state]\npath = {json.dumps(str(root / 's.db'))}\n"
                f"[report]\ndir = {json.dumps(str(root / 'r'))}\n"
                "[log]\nformat = \"json\"\nlevel = \"debug\"\n")
            env = {k: v for k, v in os.environ.items() if not k.startswith("PRACSUITE")}
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pracsuite_ingest", "run", "--config",
                str(root / "c.toml"), "--manifest", str(root / "m.csv"), env=env, cwd=root,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            _, err = await proc.communicate()
    log = [json.loads(x) for x in err.decode().splitlines() if x.startswith("{")]
    starts = [when(x) for x in log if x.get("event") == "run started"]
    ends = [when(x) for x in log if x.get("event") == "item uploaded"]
    phase = max(ends) - min(starts) if starts and ends else float("nan")
    sent = files * size
    return {"cap": cap, "exit": proc.returncode, "bytes": sent, "upload_phase_s": round(phase, 2),
            "bytes_per_s": round(sent / phase), "of_cap": round(sent / phase / cap, 3)
            if cap else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=int, default=100)
    p.add_argument("--caps", default="5000000,20000000", help="bytes/s, comma separated")
    args = p.parse_args()
    rows = []
    for cap in [0, *(int(c) for c in args.caps.split(","))]:
        row = asyncio.run(one(args.mb, cap))
        rows.append(row)
        label = "no cap" if not cap else f"cap {cap / 1e6:.1f} MB/s"
        share = f"  {row['of_cap']:.1%} of the cap" if cap else ""
        print(f"{label:>16}: {args.mb} MB in {row['upload_phase_s']:>6.2f} s = "
              f"{row['bytes_per_s'] / 1e6:6.2f} MB/s{share}  (exit {row['exit']})", flush=True)
    out = REPO / "bench" / "results" / f"{datetime.now(UTC):%Y-%m-%dT%H-%M-%SZ}-bandwidth.json"
    out.write_text(json.dumps({"args": vars(args), "runs": rows}, indent=1) + "\n")
    print(f"written: {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
