"""What byte-level proof costs: `reconcile.verify = "all"` against `"off"`, same run.

    .venv/bin/python bench/verify.py [--small 2000] [--large 8] [--workdir /tmp/bench-verify]

Against radosgw (RADOSGW_ENDPOINT and friends, or the benchmark's own, as bench/run.py)
and the sandbox presigning for it, the worker runs as a child process twice on the same
files, once with each setting, each against a fresh sandbox: 2,000 x 16 KB (files/s) and
8 x 100 MB (MB/s), with wall time, CPU seconds and peak RSS of the worker, and how many
records' bytes were read back. Prints the figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from measure import run_measured
from run import fresh_dir, make_files, phases, worker_config
from servers import PYTHON, SandboxProcess, empty_bucket, radosgw, stop_radosgw

MB = 1_000_000


def one(rgw: Any, keys: Any, work: Path, name: str, manifest: Path, verify: str) -> dict[str, Any]:
    out = fresh_dir(work / "runs" / f"{name}-{verify}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRACSUITE")}
    with SandboxProcess(rgw, keys, validation_delay_s=0.2) as sb:
        cfg = worker_config(out / "config.toml", sb, out, rps=1000.0, concurrency=8,
                            presign_concurrency=4)
        text = cfg.read_text().replace("poll_interval_s = 1\n",
                                       f'poll_interval_s = 1\nverify = "{verify}"\n')
        cfg.write_text(text)
        m = run_measured([PYTHON, "-m", "pracsuite_ingest", "run", "--config", str(cfg),
                          "--manifest", str(manifest)], env=env, cwd=out,
                         log=out / "worker.log")
        stats = sb.stats()
    empty_bucket(rgw)
    report = json.loads((out / "reports" / "latest.json").read_text())
    return {**m.as_dict(), **phases(out / "state.db"), "summary": report["summary"],
            "presign_url_calls": sum(stats["requests"]["presign_url"].values())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--large", type=int, default=8)
    parser.add_argument("--workdir", default="/tmp/bench-verify")
    args = parser.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    rgw = radosgw()
    try:
        keys = rgw.session_keys()
        results: dict[str, Any] = {}
        for name, count, size in (("small", args.small, 16 * 1024),
                                  ("large", args.large, 100 * MB)):
            folder = work / name
            folder.mkdir(exist_ok=True)
            manifest = make_files(folder, count, size, clients=min(count, 10))
            for verify in ("off", "all"):
                r = one(rgw, keys, work, name, manifest, verify)
                r["files_per_s"] = round(count / r["wall_s"], 1)
                r["mb_per_s"] = round(count * size / MB / r["wall_s"], 1)
                results[f"{name}/{verify}"] = r
                print(f"{name:5} verify={verify:3}: {r['wall_s']:7.1f} s wall, "
                      f"{r['files_per_s']:7.1f} files/s, {r['mb_per_s']:6.1f} MB/s, "
                      f"{r['cpu_s']:6.1f} s CPU, peak RSS {r['peak_rss_mb']:5.1f} MB, "
                      f"validated {r['summary']['validated']}, verified "
                      f"{r['summary'].get('verified', 0)}, upload {r.get('upload_s')} s, "
                      f"reconcile {r.get('reconcile_s')} s", flush=True)
        print(json.dumps(results, indent=1))
    finally:
        stop_radosgw(rgw)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
