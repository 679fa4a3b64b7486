"""Several practices on one vendor key: 2, 4 and 8 processes sharing one rate budget.

    make bench-fleet        # or: .venv/bin/python bench/fleet.py [--budget 16] [--files 400]

Each process is a real `pracsuite_ingest run` with its own config, state, practice key and
patients, `requests_per_second = "auto"`, against ONE sandbox playing the vendor key's
budget (a token bucket of `--budget` requests/s, API Gateway's bare 429 above it). Each
count of processes runs twice: every process pacing itself (no coordination), and with
`api.shared_limit` on a redis-server started here (Debian's /usr/bin/redis-server).
`--files` is the fleet's total, split evenly, so every row does the same work.

Printed per row: the share of the budget used while the fleet ran (accepted API calls
per second over the budget), the share of API calls answered 429, and the finish
spread (the longest run over the shortest: equal work, so 1.0 is fair); then the same
read from the sandbox's per-practice counts (`/_sandbox/stats` `usage`) in the seconds
when every process was calling: used, throttled, and the largest practice's share of
the granted calls over the smallest's (the figures tests/test_fleet.py asserts; they do
not move with a process's start-up on a loaded CPU). Writes
bench/results/<time>-fleet.json (with the load average).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))

from fleet_runs import Practice, redis_server, run_fleet  # noqa: E402


async def one(processes: int, files: int, budget: float, redis: str | None,
              worker_src: Path | None = None) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        practices = [Practice(files // processes) for _ in range(processes)]
        if redis is None:
            result = await run_fleet(root, practices, budget=budget, worker_src=worker_src)
        else:
            async with redis_server(redis, root / "redis") as server:
                result = await run_fleet(root, practices, budget=budget,
                                         shared_limit=server.url, worker_src=worker_src)
    for o in result.outcomes:
        if o.code not in (0, 1):  # shown, so that a row's figures are never misread
            print(f"a process exited {o.code}: {o.stderr.strip().splitlines()[-1:]}")
    return {"worker": str(worker_src) if worker_src else "this checkout",
            "shared_limit": redis is not None, **result.as_dict()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, default=16.0)
    p.add_argument("--files", type=int, default=400, help="the fleet's total")
    p.add_argument("--processes", default="2,4,8")
    p.add_argument("--baseline", type=Path, default=None, metavar="SRC",
                   help="also run each count and mode with the worker of another "
                        "checkout's src/ (e.g. /work/main/src: the policy before)")
    args = p.parse_args()
    redis = shutil.which("redis-server")
    if redis is None:
        print("redis-server is not installed (Debian: apt-get install redis-server): "
              "the shared_limit rows are left out")
    rows = []
    for n in (int(x) for x in args.processes.split(",")):
        runs: list[tuple[str | None, Path | None]] = [(None, None)]
        if redis:
            runs.append((redis, None))
        if args.baseline is not None:  # each beside the same mode of the other worker
            runs = [r for mode in runs for r in ((mode[0], args.baseline), mode)]
        for server, src in runs:
            row = asyncio.run(one(n, args.files, args.budget, server, src))
            rows.append(row)
            label = ("shared_limit" if server else "each alone  ") + (" (baseline)" if src
                                                                      else "           ")
            print(f"{n} processes  {label}  "
                  f"used {row['used_of_budget']:>6.1%} of {args.budget:g}/s  "
                  f"throttled {row['throttled_share']:>6.2%}  spread {row['spread']:.2f}x  "
                  f"span {row['span_s']:>5.1f} s  validated {row['validated']}/"
                  f"{row['files']}  records {row['records_created']}", flush=True)
            w = row["all_calling"]
            if isinstance(w, dict) and w:
                print(f"{'':>26}all calling {w['seconds']:>3} s: used "
                      f"{w['used_of_budget']:>6.1%}  throttled {w['throttled_share']:>6.2%}  "
                      f"shares {w['share_spread']:.2f}x apart", flush=True)
    out = REPO / "bench" / "results" / f"{datetime.now(UTC):%Y-%m-%dT%H-%M-%SZ}-fleet.json"
    out.write_text(json.dumps({"args": {**vars(args), "baseline": str(args.baseline)},
                               "load_average": os.getloadavg(), "runs": rows}, indent=1)
                   + "\n")
    print(f"written: {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
