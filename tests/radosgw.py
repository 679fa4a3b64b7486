"""Helpers for tests that need the real Ceph radosgw started by `.ci/radosgw.sh start`.

    from radosgw import presign_post, require_radosgw, s3_client  # tests/ is on sys.path

    target = require_radosgw()          # skips (or fails when CI is set) if absent
    url, fields = presign_post(target, "temp/1/x.pdf", max_size=100 * 2**20, expires_in=60)

The target is read from the environment (RADOSGW_ENDPOINT, RADOSGW_ACCESS_KEY,
RADOSGW_SECRET_KEY, RADOSGW_BUCKET, RADOSGW_REGION, optional RADOSGW_ROLE_ARN) or, when
RADOSGW_ENDPOINT is not set, from the env file `.ci/work/radosgw/radosgw.env` that the
start script writes. With a role ARN, posts are presigned with STS session credentials, so
they carry `x-amz-security-token` exactly like PracSuite's.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

REPO_DIR = Path(__file__).resolve().parents[1]
ENV_FILE = REPO_DIR / ".ci" / "work" / "radosgw" / "radosgw.env"
START_HINT = "radosgw not running: start it with bash .ci/radosgw.sh start"


@dataclass(frozen=True)
class RadosgwTarget:
    endpoint: str  # http://127.0.0.1:PORT
    access_key: str
    secret_key: str
    bucket: str
    region: str
    role_arn: str | None = None  # set when STS session credentials are available
    log_dir: str | None = None  # the gateway's log says why it refused a POST

    @property
    def sts(self) -> bool:
        return self.role_arn is not None


def _read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def _answers(endpoint: str, timeout: float = 1.0) -> bool:
    parts = urlsplit(endpoint)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def radosgw_target() -> RadosgwTarget | None:
    """The running radosgw, or None when it is not configured or does not answer."""
    if os.environ.get("RADOSGW_ENDPOINT"):
        values = dict(os.environ)
    elif ENV_FILE.is_file():
        values = _read_env_file(ENV_FILE)
    else:
        return None
    try:
        target = RadosgwTarget(
            endpoint=values["RADOSGW_ENDPOINT"].rstrip("/"),
            access_key=values["RADOSGW_ACCESS_KEY"],
            secret_key=values["RADOSGW_SECRET_KEY"],
            bucket=values["RADOSGW_BUCKET"],
            region=values.get("RADOSGW_REGION") or "us-east-1",
            role_arn=values.get("RADOSGW_ROLE_ARN") or None,
            log_dir=values.get("RADOSGW_LOG_DIR") or None,
        )
    except KeyError:
        return None
    if not _answers(target.endpoint):
        return None  # a stale env file (the cluster died or was stopped)
    return target


def require_radosgw() -> RadosgwTarget:
    """The target, else skip the test; in CI (env CI set) a missing radosgw is a failure."""
    target = radosgw_target()
    if target is None:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"CI is set but {START_HINT}")
        pytest.skip(START_HINT)
    return target


def _client(target: RadosgwTarget, service: str, creds: dict[str, str] | None = None) -> Any:
    import boto3
    from botocore.config import Config

    creds = creds or {
        "aws_access_key_id": target.access_key,
        "aws_secret_access_key": target.secret_key,
    }
    return boto3.client(
        service,
        endpoint_url=target.endpoint,
        region_name=target.region,
        # s3v4: without it boto3 presigns POSTs with SigV2 (AWSAccessKeyId, signature);
        # PracSuite's carry x-amz-algorithm/-credential/-date/-signature (SigV4).
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3},
        ),
        **creds,
    )


def s3_client(target: RadosgwTarget) -> Any:
    """A boto3 S3 client with the user's own keys (to HEAD/GET/delete what was uploaded)."""
    return _client(target, "s3")


_creds_lock = threading.Lock()
_creds_cache: dict[tuple[str, str], tuple[float, dict[str, str]]] = {}


def session_credentials(target: RadosgwTarget, duration: int = 3600) -> dict[str, str] | None:
    """STS AssumeRole on the gateway: boto3 client kwargs with a session token, or None.

    Cached until five minutes before they expire.
    """
    if target.role_arn is None:
        return None
    cache_key = (target.endpoint, target.role_arn)
    with _creds_lock:
        hit = _creds_cache.get(cache_key)
        if hit is not None and hit[0] - time.time() > 300:
            return hit[1]
        resp = _client(target, "sts").assume_role(
            RoleArn=target.role_arn, RoleSessionName="pytest", DurationSeconds=duration
        )
        c = resp["Credentials"]
        creds = {
            "aws_access_key_id": c["AccessKeyId"],
            "aws_secret_access_key": c["SecretAccessKey"],
            "aws_session_token": c["SessionToken"],
        }
        _creds_cache[cache_key] = (c["Expiration"].timestamp(), creds)
        return creds


def presign_post(
    target: RadosgwTarget,
    key: str,
    *,
    max_size: int,
    expires_in: int,
    min_size: int = 0,
    use_sts: bool = True,
    policy_field: str = "policy",
) -> tuple[str, list[tuple[str, str]]]:
    """Presign a POST for `key` with boto3's generate_presigned_post.

    Conditions: content-length-range [min_size, max_size]; boto3 adds bucket, key,
    credential, algorithm, date and (with session credentials) security token. Returns
    `(url, fields)` with fields as an ordered list of (name, value): send them in this
    order, the file part last. `policy_field="Policy"` spells the policy field the way
    PracSuite does (radosgw accepts both).
    """
    creds = session_credentials(target) if use_sts else None
    post = _client(target, "s3", creds).generate_presigned_post(
        target.bucket,
        key,
        Conditions=[["content-length-range", min_size, max_size]],
        ExpiresIn=expires_in,
    )
    fields = [
        (policy_field if name == "policy" else name, str(value))
        for name, value in post["fields"].items()
    ]
    return post["url"], fields
