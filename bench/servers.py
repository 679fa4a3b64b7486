"""The servers a benchmark runs against: a Ceph radosgw and the sandbox in external mode.

The radosgw is the one named by RADOSGW_ENDPOINT (and friends) when set, else the
benchmark's own, started by `.ci/radosgw.sh` on ports apart from the test suite's.
The sandbox runs as a separate process (`pracsuite-ingest sandbox --external-s3-url`),
so that its CPU is not the worker's and its event loop not the benchmark's.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
BENCH_RGW_DIR = Path(os.environ.get("BENCH_RADOSGW_DIR", "/tmp/bench-rgw"))
BENCH_RGW_ENV = {
    "RADOSGW_PORT": "7490",
    "RADOSGW_MON_PORT": "3310",
    "RADOSGW_OSD_PORT_MIN": "6900",
    # 8 x 100 MB per tool, deleted (and garbage-collected) between tools; memstore keeps
    # it in RAM, at about twice its size in the OSD's memory.
    "RADOSGW_MEMSTORE_BYTES": str(3 * 2**30),
}
BUCKET = "pracsuite-bench"


@dataclass
class Radosgw:
    endpoint: str
    access_key: str
    secret_key: str
    region: str
    role_arn: str | None
    pids: list[int] = field(default_factory=list)
    started_here: bool = False
    workdir: Path | None = None

    def s3(self) -> Any:
        return _client(self, "s3")

    def session_keys(self) -> tuple[str, str, str | None]:
        """STS AssumeRole keys (access, secret, token), as PracSuite presigns with."""
        if self.role_arn is None:
            return self.access_key, self.secret_key, None
        c = _client(self, "sts").assume_role(RoleArn=self.role_arn, RoleSessionName="bench",
                                             DurationSeconds=3600)["Credentials"]
        return c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]


def _client(rgw: Radosgw, service: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(service, endpoint_url=rgw.endpoint, region_name=rgw.region,
                        aws_access_key_id=rgw.access_key, aws_secret_access_key=rgw.secret_key,
                        config=Config(signature_version="s3v4",
                                      s3={"addressing_style": "path"}))


def _env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            out[name.strip()] = value.strip()
    return out


def _pids(workdir: Path) -> list[int]:
    pids = []
    for name in ("rgw", "osd", "mon"):
        f = workdir / f"{name}.pid"
        if f.is_file() and f.read_text().strip().isdigit():
            pids.append(int(f.read_text().strip()))
    return pids


def radosgw() -> Radosgw:
    """The radosgw to use: from the environment, or the bench's own (started if needed)."""
    if os.environ.get("RADOSGW_ENDPOINT"):
        values = dict(os.environ)
        log_dir = values.get("RADOSGW_LOG_DIR")
        workdir = Path(log_dir).parent if log_dir else None
        started = False
    else:
        workdir = BENCH_RGW_DIR
        env_file = workdir / "radosgw.env"
        was_running = env_file.is_file() and _answers(_env_file(env_file)["RADOSGW_ENDPOINT"])
        if not was_running:
            script = str(REPO / ".ci" / "radosgw.sh")
            subprocess.run(["bash", script, "install"], check=True)  # no-op when installed
            subprocess.run(["bash", script, "start", str(workdir)],
                           env={**os.environ, **BENCH_RGW_ENV, "PYTHON": PYTHON}, check=True)
        if was_running:
            # A long-lived gateway has seen every earlier run's objects come and go, and
            # got slower for it here (the limit: 906 files/s after an hour of runs, 1,056 fresh).
            print(f"bench: reusing the radosgw already running from {workdir}; for figures "
                  "comparable with bench/results, stop it first (.ci/radosgw.sh stop "
                  f"{workdir} with this file's BENCH_RGW_ENV)", flush=True)
        values = _env_file(env_file)
        started = not was_running
    rgw = Radosgw(values["RADOSGW_ENDPOINT"], values["RADOSGW_ACCESS_KEY"],
                  values["RADOSGW_SECRET_KEY"], values.get("RADOSGW_REGION") or "us-east-1",
                  values.get("RADOSGW_ROLE_ARN") or None,
                  _pids(workdir) if workdir else [], started, workdir)
    s3 = rgw.s3()
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=BUCKET)
    return rgw


def stop_radosgw(rgw: Radosgw) -> None:
    if rgw.started_here:
        subprocess.run(["bash", str(REPO / ".ci" / "radosgw.sh"), "stop", str(BENCH_RGW_DIR)],
                       env={**os.environ, **BENCH_RGW_ENV}, check=False)


def warm_up(rgw: Radosgw) -> None:
    """A fresh gateway is slow at its first writes (pools and indexes being set up):
    some small objects and a multipart upload first, so that no tool pays for them."""
    import io

    s3 = rgw.s3()
    for i in range(100):
        s3.put_object(Bucket=BUCKET, Key=f"warm-up/{i}.pdf", Body=os.urandom(16 * 1024))
    s3.upload_fileobj(io.BytesIO(os.urandom(20 * 2**20)), BUCKET, "warm-up/big.pdf")
    empty_bucket(rgw)


def empty_bucket(rgw: Radosgw, bucket: str = BUCKET, prefix: str = "") -> int:
    """Delete every object of `bucket` under `prefix` (memstore keeps them in RAM)."""
    s3 = rgw.s3()
    deleted = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
            deleted += len(keys)
    if deleted and rgw.workdir is not None and (rgw.workdir / "ceph.conf").is_file():
        # A deleted object's data (past its first 4 MB) waits for the gateway's garbage
        # collection, two hours by default; memstore would fill up long before.
        subprocess.run(["radosgw-admin", "gc", "process", "--include-all"],
                       env={**os.environ, "CEPH_CONF": str(rgw.workdir / "ceph.conf")},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
                       timeout=300)
    return deleted


def _answers(url: str) -> bool:
    host, _, port = url.split("//", 1)[1].rstrip("/").partition(":")
    try:
        with socket.create_connection((host, int(port or 80)), timeout=1):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SandboxProcess:
    """`pracsuite-ingest sandbox` in external-S3 mode, as a child process."""

    def __init__(self, rgw: Radosgw, keys: tuple[str, str, str | None], *,
                 validation_delay_s: float, clients: str = "1-10",
                 api_latency_ms: int | str = 0, s3_url: str | None = None,
                 bucket: str = BUCKET) -> None:
        self.vendor_key = secrets.token_hex(16)
        self.practice_key = secrets.token_hex(16)
        port = free_port()
        access, secret, token = keys
        argv = [PYTHON, "-m", "pracsuite_ingest", "sandbox", "--port", str(port),
                "--vendor-key", self.vendor_key, "--practice-key", self.practice_key,
                "--clients", clients, "--validation-delay", str(validation_delay_s),
                "--external-s3-url", s3_url or rgw.endpoint, "--external-s3-bucket", bucket,
                "--external-s3-region", rgw.region, "--external-s3-access-key", access]
        if api_latency_ms:  # a WAN's round trip to the API ("MIN,MAX" or one number)
            argv += ["--latency-ms", str(api_latency_ms)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRACSUITE")}
        env["SANDBOX_EXTERNAL_S3_SECRET_KEY"] = secret
        if token:
            env["SANDBOX_EXTERNAL_S3_SESSION_TOKEN"] = token
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        header, first = self.proc.stdout.readline(), self.proc.stdout.readline()
        if header.strip() != "[api]" or not first.startswith("base_url = "):
            self.proc.kill()
            raise RuntimeError(f"the sandbox did not start: {header + first!r}")
        self.base_url: str = json.loads(first.split("=", 1)[1])
        self.admin_url = self.base_url.removesuffix("/v1") + "/_sandbox"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.admin_url}/stats", timeout=30) as resp:
            data: dict[str, Any] = json.load(resp)
        return data

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> SandboxProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
