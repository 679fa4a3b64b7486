"""The worker's `run`, in this process, with an event-loop lag sampler beside it.

    python bench/lag.py CONFIG.toml MANIFEST OUT.json [--dry-run]

Exactly what `pracsuite-ingest run` does (`commands.cmd_run`), plus one task that sleeps
`TICK_S` again and again and records how late it wakes: the loop was busy (or
blocked: a state write, a hash or a stat on the loop) for that long. Writes
percentiles and the worst stalls to OUT.json. Not part of the product.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

from pracsuite_ingest.commands import cmd_run
from pracsuite_ingest.logs import configure
from pracsuite_ingest.settings import load_settings

TICK_S = 0.005


async def sample(lags: list[float]) -> None:
    while True:
        before = time.perf_counter()
        await asyncio.sleep(TICK_S)
        lags.append(time.perf_counter() - before - TICK_S)


async def main(config: Path, manifest: Path, out: Path, dry_run: bool) -> int:
    settings = load_settings(config, {"input": {"manifest": str(manifest), "source_dir": ""}},
                             require_keys=not dry_run)
    configure(settings.log.level, settings.log.format, file_names=settings.log.file_names)
    lags: list[float] = []
    sampler = asyncio.create_task(sample(lags))
    started = time.perf_counter()
    try:
        code = await cmd_run(settings, dry_run=dry_run)
    finally:
        sampler.cancel()
    ms = sorted(x * 1000 for x in lags) or [0.0]

    def pct(p: float) -> float:
        return round(ms[min(len(ms) - 1, int(p * len(ms)))], 2)

    out.write_text(json.dumps({  # noqa: ASYNC240 - once, after the run
        "wall_s": round(time.perf_counter() - started, 3), "samples": len(ms),
        "tick_ms": TICK_S * 1000, "p50_ms": pct(0.5), "p99_ms": pct(0.99),
        "p999_ms": pct(0.999), "max_ms": round(ms[-1], 2),
        "mean_ms": round(statistics.fmean(ms), 3),
        "over_50ms": sum(1 for x in ms if x > 50), "over_100ms": sum(1 for x in ms if x > 100),
    }))
    return code


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--dry-run"]
    os.environ.pop("PRACSUITE_INGEST_INPUT__MANIFEST", None)
    sys.exit(asyncio.run(main(Path(args[0]), Path(args[1]), Path(args[2]),
                              "--dry-run" in sys.argv)))
