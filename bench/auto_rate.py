"""`api.requests_per_second = "auto"` against a PracSuite that has a limit it does not tell.

    make bench-rate                   # or: .venv/bin/python bench/auto_rate.py [--files N]

The sandbox plays the limit (`--rate-budget N`: N API requests/s accepted, a token
bucket holding one second's worth, API Gateway's bare 429 above it). For each budget,
one run of the worker with "auto" and, as the baseline in the same run, one with the
rate fixed at the budget itself (an operator who somehow knew the limit), and one at
the default fixed 3/s where that finishes in reasonable time. Printed per run: API
calls accepted per second while the run was calling (the share of the budget used),
the share of calls answered 429, where "auto" settled, wall time. Files are small
(2 KB) and validation quick, so that the API's pace, not S3, sets the time.

Not part of the test suite: timings on a shared machine are noisy. Writes
bench/results/<time>-auto-rate.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))

from fleet_runs import api_requests  # noqa: E402
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions  # noqa: E402
from pracsuite_ingest.sandbox.faults import ThrottleStyle  # noqa: E402


def write_input(root: Path, files: int, clients: int) -> Path:
    lines = ["client_id,path"]
    for i in range(files):
        client = str(1 + i % clients)
        path = root / "files" / client / f"{i:05d}.pdf"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(2048))
        lines.append(f"{client},{path}")
    manifest = root / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def write_config(root: Path, sb: Sandbox, rate: float | str) -> Path:
    cfg = root / "config.toml"
    cfg.write_text(
        "[api]\n"
        f"base_url = {json.dumps(sb.base_url)}\n"
        f"vendor_api_key = {json.dumps(sb.vendor_key)}\n"
        f"practice_api_key = {json.dumps(sb.practice_key)}\n"
        f"requests_per_second = {json.dumps(rate)}\n"
        "max_requests_per_second = 200.0\nmax_attempts = 20\n"
        "[upload]\nconcurrency = 16\npresign_concurrency = 16\n"
        "[reconcile]\ndeadline_s = 120\npoll_interval_s = 0.5\n"
        f"[state]\npath = {json.dumps(str(root / 'state.db'))}\n"
        f"[report]\ndir = {json.dumps(str(root / 'reports'))}\n"
        "[log]\nformat = \"json\"\nlevel = \"warning\"\n")
    return cfg


async def one(budget: float, rate: float | str, files: int, clients: int) -> dict[str, Any]:
    opts = SandboxOptions(validation_delay_s=0.2, rate_budget=budget, record_requests=False,
                          throttle_style=ThrottleStyle.GATEWAY,
                          clients=tuple(str(c) for c in range(1, clients + 1)))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = write_input(root, files, clients)
        async with Sandbox(opts) as sb:
            cfg = write_config(root, sb, rate)
            env = {k: v for k, v in os.environ.items() if not k.startswith("PRACSUITE")}
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pracsuite_ingest", "run", "--config", str(cfg),
                "--manifest", str(manifest), env=env, cwd=root,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            await proc.communicate()
            wall = time.monotonic() - started
            stats = sb.stats()
        report = json.loads((root / "reports" / "latest.json").read_text())
    accepted, refused = api_requests(stats)
    pace = report.get("api", {})
    return {
        "budget": budget, "rate": rate, "files": files, "exit": proc.returncode,
        "validated": report["summary"]["validated"], "wall_s": round(wall, 1),
        "api_accepted": accepted, "api_429": refused,
        "used_of_budget": round(accepted / wall / budget, 3),
        "throttled_share": round(refused / max(1, accepted + refused), 4),
        "settled_rps": pace.get("requests_per_second"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=600)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--budgets", default="10,25")
    args = p.parse_args()
    rows = []
    for budget in (float(b) for b in args.budgets.split(",")):
        rates: list[float | str] = ["auto", budget]
        if args.files * 3 / 3.0 < 400:  # the default 3/s, when it ends within minutes
            rates.append(3.0)
        for rate in rates:
            row = asyncio.run(one(budget, rate, args.files, args.clients))
            rows.append(row)
            print(f"budget {budget:>5.1f}/s  rate {rate!s:>5}  files {row['validated']:>4}/"
                  f"{args.files}  wall {row['wall_s']:>6.1f} s  used {row['used_of_budget']:>6.1%}"
                  f" of the budget  throttled {row['throttled_share']:>6.2%}"
                  f"  settled {row['settled_rps']}", flush=True)
    out = REPO / "bench" / "results" / f"{datetime.now(UTC):%Y-%m-%dT%H-%M-%SZ}-auto-rate.json"
    out.write_text(json.dumps({"args": vars(args), "runs": rows}, indent=1) + "\n")
    print(f"written: {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
