"""What the worker is compared with: naive, aws-cli, and the limits (S3 + loopback, disk)."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from measure import run_measured
from servers import BUCKET, PYTHON, REPO, Radosgw

from pracsuite_ingest.sandbox.sigv4 import Credentials, presign_post

BENCH_VENV = REPO / "bench" / ".venv"
BENCH_TOOLS = ("awscli>=1.33", "py-spy>=0.3")


def bench_tool(name: str) -> Path:
    """A tool from the benchmark's own venv (bench/.venv), installed on first use.

    aws-cli pins botocore exactly; kept apart, it cannot move the project's boto3.
    """
    path = BENCH_VENV / "bin" / name
    if not path.exists():
        if not (BENCH_VENV / "bin" / "pip").exists():
            subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
        subprocess.run([str(BENCH_VENV / "bin" / "pip"), "install", "-q", *BENCH_TOOLS],
                       check=True)
    return path


def manifest_rows(manifest: Path) -> list[tuple[Path, str]]:
    with manifest.open(newline="", encoding="utf-8") as fh:
        return [(manifest.parent / r["path"], r.get("file_name") or Path(r["path"]).name)
                for r in csv.DictReader(fh)]


def naive(base_url: str, vendor: str, practice: str, manifest: Path) -> dict[str, Any]:
    """bench/naive.py as a child process: one file at a time, then poll."""
    m = run_measured([PYTHON, str(REPO / "bench" / "naive.py"), base_url, vendor, practice,
                      str(manifest)])
    if m.code != 0:
        raise RuntimeError(f"naive failed ({m.code}): {m.stdout[-500:]}")
    inner = json.loads(m.stdout.strip().splitlines()[-1])
    return {**m.as_dict(), "upload_s": round(inner["upload_s"], 3)}


def awscli(rgw: Radosgw, files_dir: Path, prefix: str) -> dict[str, Any]:
    """`aws s3 cp --recursive` of the same files to the same bucket, default settings."""
    aws = bench_tool("aws")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PRACSUITE"))}
    env.update(AWS_ACCESS_KEY_ID=rgw.access_key, AWS_SECRET_ACCESS_KEY=rgw.secret_key,
               AWS_DEFAULT_REGION=rgw.region, AWS_CONFIG_FILE="/dev/null",
               AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    m = run_measured([str(aws), "s3", "cp", "--recursive", "--only-show-errors",
                      "--endpoint-url", rgw.endpoint, str(files_dir),
                      f"s3://{BUCKET}/{prefix}/"], env=env)
    if m.code != 0:
        raise RuntimeError(f"aws s3 cp failed ({m.code}): {m.stdout[-500:]}")
    return m.as_dict()


def limit_posts(rgw: Radosgw, keys: tuple[str, str, str | None], manifest: Path,
                concurrency: int, prefix: str) -> dict[str, Any]:
    """Concurrent raw presigned POSTs of the same bytes, presigned and read beforehand."""
    rows = manifest_rows(manifest)
    creds = Credentials(*keys)
    now = datetime.now(UTC)
    forms = []
    for i, (path, name) in enumerate(rows):
        url, fields = presign_post(url=f"{rgw.endpoint}/{BUCKET}", bucket=BUCKET,
                                   key=f"{prefix}/{i}/{name}", creds=creds, region=rgw.region,
                                   now=now, expires_in_s=3600, max_bytes=104_857_600)
        forms.append((url, fields, path.read_bytes(), name))
    total = sum(len(f[2]) for f in forms)
    before = resource.getrusage(resource.RUSAGE_SELF)
    wall = asyncio.run(_post_all(forms, concurrency))
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return {"wall_s": round(wall, 3), "files": len(forms), "bytes": total,
            "concurrency": concurrency, "cpu_s": round(cpu, 2)}


async def _post_all(forms: list[tuple[str, list[tuple[str, str]], bytes, str]],
                    concurrency: int) -> float:
    slots = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=900)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def post(url: str, fields: list[tuple[str, str]], body: bytes, name: str) -> None:
            async with slots:
                form = aiohttp.FormData(quote_fields=False)
                for k, v in fields:
                    form.add_field(k, v)
                form.add_field("file", body, filename=name,
                               content_type="application/octet-stream")
                async with session.post(url, data=form) as resp:
                    if resp.status != 204:
                        raise RuntimeError(f"limit POST: {resp.status} {await resp.text()}")

        started = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for f in forms:
                tg.create_task(post(*f))
        return time.perf_counter() - started


def disk_read(manifest: Path) -> dict[str, Any]:
    """A sequential read of every file in 1 MiB chunks (page cache as the worker finds it)."""
    rows = manifest_rows(manifest)
    total = 0
    started = time.perf_counter()
    for path, _ in rows:
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                total += len(chunk)
    return {"wall_s": round(time.perf_counter() - started, 4), "files": len(rows),
            "bytes": total}
