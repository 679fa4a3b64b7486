"""AWS Signature Version 4 for S3 browser-based POST uploads: presign and verify.

Pure functions only: no clock, no I/O. `presign_post` builds what PracSuite hands
out (and what boto3's `generate_presigned_post` builds for a real S3 or radosgw);
`verify_post` decides, as S3 does, whether a received form may be stored, and
answers with S3's own status, code and message when it may not.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "s3"
TERMINATOR = "aws4_request"

# Form fields S3 never asks a policy condition for.
_EXEMPT_FIELDS = frozenset({"file", "policy", "x-amz-signature"})
_EXEMPT_PREFIX = "x-ignore-"


@dataclass(frozen=True)
class Credentials:
    """An S3 key pair, with the session token of temporary (STS) credentials."""

    access_key: str
    secret_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Refusal:
    """S3's answer to a form it will not store: HTTP status, error code, message."""

    status: int
    code: str
    message: str


@dataclass(frozen=True)
class Grant:
    """A form that passed the policy; the body size it may have, inclusive."""

    min_bytes: int = 0
    max_bytes: int | None = None


def signing_key(secret_key: str, date_stamp: str, region: str) -> bytes:
    """The SigV4 signing key for `date_stamp` (YYYYMMDD), `region` and S3."""
    key = ("AWS4" + secret_key).encode()
    for part in (date_stamp, region, SERVICE, TERMINATOR):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def sign_policy(policy_b64: str, *, secret_key: str, date_stamp: str, region: str) -> str:
    """The hex `x-amz-signature` of a base64 policy: the policy is the string to sign."""
    key = signing_key(secret_key, date_stamp, region)
    return hmac.new(key, policy_b64.encode(), hashlib.sha256).hexdigest()


def presign_post(
    *,
    url: str,
    bucket: str,
    key: str,
    creds: Credentials,
    region: str,
    now: datetime,
    expires_in_s: float,
    max_bytes: int,
) -> tuple[str, list[tuple[str, str]]]:
    """A presigned POST for exactly `key`, bodies of 0..`max_bytes`, until now + expiry.

    Returns `url` unchanged and the form fields in PracSuite's order and spelling:
    key, Policy, x-amz-algorithm, x-amz-credential, x-amz-date, x-amz-signature and,
    only when `creds` carry one, x-amz-security-token. `now` must be timezone-aware.
    The result is accepted by Amazon S3 and radosgw as well as by `verify_post`.
    """
    date_stamp = now.strftime("%Y%m%d")
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    credential = f"{creds.access_key}/{date_stamp}/{region}/{SERVICE}/{TERMINATOR}"
    expiration = now + timedelta(seconds=expires_in_s)
    conditions: list[Any] = [
        {"bucket": bucket},
        ["eq", "$key", key],
        ["content-length-range", 0, max_bytes],
        {"x-amz-algorithm": ALGORITHM},
        {"x-amz-credential": credential},
        {"x-amz-date": amz_date},
    ]
    if creds.session_token is not None:
        conditions.append({"x-amz-security-token": creds.session_token})
    policy = {"expiration": expiration.strftime("%Y-%m-%dT%H:%M:%SZ"), "conditions": conditions}
    # json.dumps escapes non-ASCII, as boto3 does: the policy stays plain ASCII.
    policy_b64 = base64.b64encode(json.dumps(policy).encode()).decode()
    signature = sign_policy(
        policy_b64, secret_key=creds.secret_key, date_stamp=date_stamp, region=region
    )
    fields = [
        ("key", key),
        ("Policy", policy_b64),
        ("x-amz-algorithm", ALGORITHM),
        ("x-amz-credential", credential),
        ("x-amz-date", amz_date),
        ("x-amz-signature", signature),
    ]
    if creds.session_token is not None:
        fields.append(("x-amz-security-token", creds.session_token))
    return url, fields


def verify_post(
    fields: Mapping[str, str],
    *,
    bucket: str,
    body_size: int,
    secrets_by_access_key: Mapping[str, str],
    now: datetime,
    session_tokens: Mapping[str, str] | None = None,
) -> Refusal | None:
    """None when S3 would store this upload, else S3's refusal.

    `fields` are the form fields before the file part (names compared
    case-insensitively, as S3 does). `session_tokens` names the access keys that are
    temporary credentials and the token each must come with.
    """
    grant = authorize_post(
        fields,
        bucket=bucket,
        secrets_by_access_key=secrets_by_access_key,
        now=now,
        session_tokens=session_tokens,
    )
    if isinstance(grant, Refusal):
        return grant
    return check_size(grant, body_size)


def check_size(grant: Grant, body_size: int) -> Refusal | None:
    """S3's content-length-range check on the file part's size."""
    if grant.max_bytes is not None and body_size > grant.max_bytes:
        return Refusal(
            400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size"
        )
    if body_size < grant.min_bytes:
        return Refusal(
            400, "EntityTooSmall", "Your proposed upload is smaller than the minimum allowed size"
        )
    return None


def authorize_post(
    fields: Mapping[str, str],
    *,
    bucket: str,
    secrets_by_access_key: Mapping[str, str],
    now: datetime,
    session_tokens: Mapping[str, str] | None = None,
) -> Grant | Refusal:
    """Every check of `verify_post` that does not need the body: run before reading it.

    Order as S3: required fields, signature, token, policy document, expiry, each
    condition, then fields no condition covers.
    """
    form = {name.lower(): value for name, value in fields.items()}
    if "key" not in form:
        return Refusal(
            400,
            "InvalidArgument",
            "Bucket POST must contain a field named 'key'.  "
            "If it is specified, please check the order of the fields.",
        )
    refusal = _check_signature(form, secrets_by_access_key, session_tokens or {})
    if refusal is not None:
        return refusal
    policy = _decode_policy(form["policy"])
    if isinstance(policy, Refusal):
        return policy
    refusal = _check_expiration(policy, now)
    if refusal is not None:
        return refusal
    return _check_conditions(policy["conditions"], fields, form, bucket)


def _check_signature(
    form: Mapping[str, str],
    secrets_by_access_key: Mapping[str, str],
    session_tokens: Mapping[str, str],
) -> Refusal | None:
    if "policy" not in form:
        # Without a policy the POST is anonymous, and the bucket is not public.
        return Refusal(403, "AccessDenied", "Access Denied")
    for required in ("x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-signature"):
        if required not in form:
            return Refusal(
                403, "AccessDenied", f"Bucket POST must contain a field named '{required}'."
            )
    if form["x-amz-algorithm"] != ALGORITHM:
        return Refusal(400, "InvalidArgument", "Unsupported x-amz-algorithm")
    scope = form["x-amz-credential"].split("/")
    if len(scope) != 5 or scope[3] != SERVICE or scope[4] != TERMINATOR:
        return Refusal(
            400, "AuthorizationQueryParametersError", "Error parsing the X-Amz-Credential parameter"
        )
    access_key, date_stamp, region = scope[0], scope[1], scope[2]
    secret = secrets_by_access_key.get(access_key)
    if secret is None:
        return Refusal(
            403,
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
        )
    expected = sign_policy(form["policy"], secret_key=secret, date_stamp=date_stamp, region=region)
    if not hmac.compare_digest(expected, form["x-amz-signature"].lower()):
        return Refusal(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. "
            "Check your key and signing method.",
        )
    token = session_tokens.get(access_key)
    given = form.get("x-amz-security-token")
    if given != token:
        return Refusal(403, "InvalidToken", "The provided token is malformed or otherwise invalid.")
    return None


def _decode_policy(policy_b64: str) -> dict[str, Any] | Refusal:
    try:
        policy = json.loads(base64.b64decode(policy_b64, validate=True))
    except (binascii.Error, ValueError):
        return Refusal(400, "InvalidPolicyDocument", "Invalid Policy: Invalid JSON.")
    if not isinstance(policy, dict):
        return Refusal(400, "InvalidPolicyDocument", "Invalid Policy: Invalid JSON.")
    if "expiration" not in policy:
        return Refusal(400, "InvalidPolicyDocument", "Invalid Policy: Policy missing expiration.")
    if not isinstance(policy.get("conditions"), list):
        return Refusal(400, "InvalidPolicyDocument", "Invalid Policy: Policy missing conditions.")
    return policy


def _check_expiration(policy: Mapping[str, Any], now: datetime) -> Refusal | None:
    raw = policy["expiration"]
    try:
        expiration = datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        expiration = None
    if expiration is None or expiration.tzinfo is None:
        return Refusal(
            400, "InvalidPolicyDocument", f"Invalid Policy: Invalid 'expiration' value: '{raw}'"
        )
    if now >= expiration:
        return Refusal(403, "AccessDenied", "Invalid according to Policy: Policy expired.")
    return None


@dataclass(frozen=True)
class _Match:
    op: str  # "eq" or "starts-with"
    name: str  # lower case, without the "$"
    value: str


@dataclass(frozen=True)
class _Range:
    low: int
    high: int


def _check_conditions(
    conditions: list[Any], fields: Mapping[str, str], form: Mapping[str, str], bucket: str
) -> Grant | Refusal:
    grant = Grant()
    covered: set[str] = set()
    for condition in conditions:
        parsed = _parse_condition(condition)
        if parsed is None:
            return Refusal(
                400,
                "InvalidPolicyDocument",
                f"Invalid Policy: Invalid Condition: {json.dumps(condition)}",
            )
        if isinstance(parsed, _Range):
            grant = Grant(min_bytes=parsed.low, max_bytes=parsed.high)
            continue
        covered.add(parsed.name)
        actual = bucket if parsed.name == "bucket" else form.get(parsed.name)
        if actual is None or not (
            actual == parsed.value if parsed.op == "eq" else actual.startswith(parsed.value)
        ):
            shown = json.dumps([parsed.op, f"${parsed.name}", parsed.value], ensure_ascii=False)
            return Refusal(
                403,
                "AccessDenied",
                f"Invalid according to Policy: Policy Condition failed: {shown}",
            )
    for name in fields:
        lowered = name.lower()
        if lowered in _EXEMPT_FIELDS or lowered.startswith(_EXEMPT_PREFIX) or lowered in covered:
            continue
        return Refusal(
            403, "AccessDenied", f"Invalid according to Policy: Extra input fields: {name}"
        )
    return grant


def _parse_condition(condition: Any) -> _Match | _Range | None:
    """One policy condition, None if malformed; `{"name": "v"}` is `["eq", "$name", "v"]`."""
    if isinstance(condition, dict) and len(condition) == 1:
        ((name, value),) = condition.items()
        if isinstance(name, str) and isinstance(value, str):
            return _Match("eq", name.lower(), value)
        return None
    if not isinstance(condition, list) or len(condition) != 3:
        return None
    op = condition[0].lower() if isinstance(condition[0], str) else None
    if op == "content-length-range":
        low, high = _as_int(condition[1]), _as_int(condition[2])
        return None if low is None or high is None else _Range(low, high)
    name, value = condition[1], condition[2]
    if op not in ("eq", "starts-with") or not isinstance(name, str) or not name.startswith("$"):
        return None
    if not isinstance(value, str):
        return None
    return _Match(op, name[1:].lower(), value)


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None
