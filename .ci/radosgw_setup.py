"""Set-up steps of .ci/radosgw.sh that talk S3/STS: bucket, warm-up, STS check.

Creates the bucket (no LocationConstraint: radosgw refuses one), warms it up with one
upload (the first write is slow: pool and index set-up), and when --role-arn is given
checks that sts:AssumeRole gives session credentials that a presigned POST (carrying
x-amz-security-token) can upload with. Prints "sts=ok" or "sts=off" on stdout; details
go to stderr. Leaves the bucket empty.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request
import uuid

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError


def multipart(fields: list[tuple[str, str]], data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts: list[bytes] = []
    for name, value in fields:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
        )
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--access-key", required=True)
    ap.add_argument("--secret-key", required=True)
    ap.add_argument("--bucket", required=True)
    ap.add_argument("--region", required=True)
    ap.add_argument("--role-arn")
    args = ap.parse_args()

    cfg = Config(
        signature_version="s3v4",  # else boto3 presigns POSTs with SigV2
        s3={"addressing_style": "path"},
        retries={"max_attempts": 10, "mode": "standard"},
        connect_timeout=10,
    )
    s3 = boto3.client(
        "s3",
        endpoint_url=args.endpoint,
        aws_access_key_id=args.access_key,
        aws_secret_access_key=args.secret_key,
        region_name=args.region,
        config=cfg,
    )
    t0 = time.monotonic()
    try:
        s3.create_bucket(Bucket=args.bucket)
    except ClientError as e:
        if e.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    s3.put_object(Bucket=args.bucket, Key="warmup/plain", Body=b"warm-up")
    s3.delete_object(Bucket=args.bucket, Key="warmup/plain")
    print(f"bucket ready in {time.monotonic() - t0:.1f}s", file=sys.stderr)

    if not args.role_arn:
        print("sts=off")
        return 0
    try:
        check_sts(args, cfg)
    except Exception as e:
        print(f"STS check failed: {e!r}", file=sys.stderr)
        print("sts=off")
        return 0
    s3.delete_object(Bucket=args.bucket, Key="warmup/sts")
    print("sts=ok")
    return 0


def check_sts(args: argparse.Namespace, cfg: Config) -> None:
    """AssumeRole, then upload warmup/sts with a POST presigned with the session keys."""
    sts = boto3.client(
        "sts",
        endpoint_url=args.endpoint,
        aws_access_key_id=args.access_key,
        aws_secret_access_key=args.secret_key,
        region_name=args.region,
        config=cfg,
    )
    creds = sts.assume_role(RoleArn=args.role_arn, RoleSessionName="ci-setup", DurationSeconds=900)[
        "Credentials"
    ]
    s3s = boto3.client(
        "s3",
        endpoint_url=args.endpoint,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=args.region,
        config=cfg,
    )
    post = s3s.generate_presigned_post(
        args.bucket,
        "warmup/sts",
        Conditions=[["content-length-range", 0, 1024]],
        ExpiresIn=300,
    )
    if "x-amz-security-token" not in post["fields"]:
        raise RuntimeError("presigned post carries no x-amz-security-token")
    if not post["url"].startswith(("http://", "https://")):
        raise RuntimeError(f"unexpected url {post['url']!r}")
    body, ctype = multipart(list(post["fields"].items()), b"warm-up via sts")
    req = urllib.request.Request(  # noqa: S310 (http checked above; loopback)
        post["url"], data=body, method="POST", headers={"Content-Type": ctype}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
            status = resp.status
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"POST with session credentials: {e.code} {e.read()!r}") from e
    if status != 204:
        raise RuntimeError(f"POST with session credentials answered {status}")


if __name__ == "__main__":
    sys.exit(main())
