"""The sandbox's SigV4 POST presigner and verifier, against AWS's example and boto3."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from unittest import mock

import boto3
import pytest
from botocore.config import Config

from pracsuite_ingest.sandbox.sigv4 import (
    Credentials,
    Refusal,
    presign_post,
    sign_policy,
    verify_post,
)

NOW = datetime(2026, 11, 25, 2, 0, 0, tzinfo=UTC)
CREDS = Credentials("AKIASANDBOX", "s3cr3t/KEY+value", "session-token-value")
SECRETS = {"AKIASANDBOX": "s3cr3t/KEY+value"}
TOKENS = {"AKIASANDBOX": "session-token-value"}
BUCKET = "pracsuite-region1"
KEY = "temp/1/2/3/4/00000000-0000-0000-0000-000000000000/Referral letter.pdf"

# AWS's documented SigV4 POST example (S3 API reference, "Example: Browser-Based
# Upload using HTTP POST"): the base64 policy and the signature it states.
AWS_POLICY_B64 = (
    "eyAiZXhwaXJhdGlvbiI6ICIyMDE1LTEyLTMwVDEyOjAwOjAwLjAwMFoiLA0KICAiY29uZGl0aW9ucyI6IFsNCiAgICB7"
    "ImJ1Y2tldCI6ICJzaWd2NGV4YW1wbGVidWNrZXQifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRrZXkiLCAidXNlci91"
    "c2VyMS8iXSwNCiAgICB7ImFjbCI6ICJwdWJsaWMtcmVhZCJ9LA0KICAgIHsic3VjY2Vzc19hY3Rpb25fcmVkaXJlY3Qi"
    "OiAiaHR0cDovL3NpZ3Y0ZXhhbXBsZWJ1Y2tldC5zMy5hbWF6b25hd3MuY29tL3N1Y2Nlc3NmdWxfdXBsb2FkLmh0bWwi"
    "fSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRDb250ZW50LVR5cGUiLCAiaW1hZ2UvIl0sDQogICAgeyJ4LWFtei1tZXRh"
    "LXV1aWQiOiAiMTQzNjUxMjM2NTEyNzQifSwNCiAgICB7IngtYW16LXNlcnZlci1zaWRlLWVuY3J5cHRpb24iOiAiQUVT"
    "MjU2In0sDQogICAgWyJzdGFydHMtd2l0aCIsICIkeC1hbXotbWV0YS10YWciLCAiIl0sDQoNCiAgICB7IngtYW16LWNy"
    "ZWRlbnRpYWwiOiAiQUtJQUlPU0ZPRE5ON0VYQU1QTEUvMjAxNTEyMjkvdXMtZWFzdC0xL3MzL2F3czRfcmVxdWVzdCJ9"
    "LA0KICAgIHsieC1hbXotYWxnb3JpdGhtIjogIkFXUzQtSE1BQy1TSEEyNTYifSwNCiAgICB7IngtYW16LWRhdGUiOiAi"
    "MjAxNTEyMjlUMDAwMDAwWiIgfQ0KICBdDQp9"
)
AWS_SIGNATURE = "8afdbf4008c03f22c2cd3cdb72e4afbb1f6a588f3255ac628749a66d7f09699e"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def _presigned(max_bytes: int = 1000, creds: Credentials = CREDS) -> dict[str, str]:
    _, fields = presign_post(
        url="http://s3.local/pracsuite-region1",
        bucket=BUCKET,
        key=KEY,
        creds=creds,
        region="ap-southeast-2",
        now=NOW,
        expires_in_s=3600,
        max_bytes=max_bytes,
    )
    return dict(fields)


def _verify(fields: dict[str, str], *, size: int = 10, now: datetime = NOW) -> Refusal | None:
    return verify_post(
        fields,
        bucket=BUCKET,
        body_size=size,
        secrets_by_access_key=SECRETS,
        now=now + timedelta(seconds=5),
        session_tokens=TOKENS,
    )


def _policy(fields: dict[str, str]) -> dict[str, object]:
    decoded: dict[str, object] = json.loads(base64.b64decode(fields["Policy"]))
    return decoded


def test_signature_matches_the_aws_documented_post_example() -> None:
    signature = sign_policy(
        AWS_POLICY_B64, secret_key=AWS_SECRET, date_stamp="20151229", region="us-east-1"
    )
    assert signature == AWS_SIGNATURE


def test_aws_documented_form_passes_verification_including_starts_with_and_mixed_case() -> None:
    fields = {
        "key": "user/user1/photo.jpg",
        "acl": "public-read",
        "success_action_redirect": (
            "http://sigv4examplebucket.s3.amazonaws.com/successful_upload.html"
        ),
        "Content-Type": "image/jpeg",
        "x-amz-meta-uuid": "14365123651274",
        "x-amz-server-side-encryption": "AES256",
        "X-Amz-Credential": "AKIAIOSFODNN7EXAMPLE/20151229/us-east-1/s3/aws4_request",
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Date": "20151229T000000Z",
        "x-amz-meta-tag": "",
        "Policy": AWS_POLICY_B64,
        "X-Amz-Signature": AWS_SIGNATURE,
    }
    refusal = verify_post(
        fields,
        bucket="sigv4examplebucket",
        body_size=100,
        secrets_by_access_key={"AKIAIOSFODNN7EXAMPLE": AWS_SECRET},
        now=datetime(2015, 12, 29, 10, 0, tzinfo=UTC),
    )
    assert refusal is None


def test_presign_fields_come_in_pracsuite_order_and_spelling() -> None:
    assert list(_presigned()) == [
        "key",
        "Policy",
        "x-amz-algorithm",
        "x-amz-credential",
        "x-amz-date",
        "x-amz-signature",
        "x-amz-security-token",
    ]
    no_token = _presigned(creds=Credentials("AKIASANDBOX", "s3cr3t/KEY+value"))
    assert "x-amz-security-token" not in no_token


def test_presign_policy_pins_bucket_exact_key_size_and_credentials() -> None:
    fields = _presigned(max_bytes=104_857_600)
    assert _policy(fields) == {
        "expiration": "2026-11-25T03:00:00Z",
        "conditions": [
            {"bucket": BUCKET},
            ["eq", "$key", KEY],
            ["content-length-range", 0, 104_857_600],
            {"x-amz-algorithm": "AWS4-HMAC-SHA256"},
            {"x-amz-credential": "AKIASANDBOX/20261125/ap-southeast-2/s3/aws4_request"},
            {"x-amz-date": "20261125T020000Z"},
            {"x-amz-security-token": "session-token-value"},
        ],
    }


def test_our_presign_is_accepted_by_our_verify() -> None:
    assert _verify(_presigned()) is None


def test_lower_case_policy_field_is_accepted() -> None:
    fields = _presigned()
    fields["policy"] = fields.pop("Policy")
    assert _verify(fields) is None


def test_non_ascii_key_round_trips() -> None:
    _, pairs = presign_post(
        url="u",
        bucket=BUCKET,
        key="temp/1/2/3/4/x/Lettre d\u2019Andr\u00e9 \u2013 \u00e9t\u00e9.pdf",
        creds=CREDS,
        region="ap-southeast-2",
        now=NOW,
        expires_in_s=60,
        max_bytes=10,
    )
    assert _verify(dict(pairs), size=1) is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(
            lambda f: f.update(key=f["key"].replace("Referral", "Other")),
            Refusal(
                403,
                "AccessDenied",
                f'Invalid according to Policy: Policy Condition failed: ["eq", "$key", "{KEY}"]',
            ),
            id="key-changed",
        ),
        pytest.param(
            lambda f: f.update({"x-amz-signature": "0" * 64}),
            Refusal(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. "
                "Check your key and signing method.",
            ),
            id="signature-changed",
        ),
        pytest.param(
            lambda f: f.pop("x-amz-signature"),
            Refusal(
                403, "AccessDenied", "Bucket POST must contain a field named 'x-amz-signature'."
            ),
            id="signature-missing",
        ),
        pytest.param(
            lambda f: f.pop("Policy"),
            Refusal(403, "AccessDenied", "Access Denied"),
            id="policy-missing",
        ),
        pytest.param(
            lambda f: f.update({"Content-Type": "application/pdf"}),
            Refusal(
                403,
                "AccessDenied",
                "Invalid according to Policy: Extra input fields: Content-Type",
            ),
            id="extra-field",
        ),
        pytest.param(
            lambda f: f.update({"x-amz-security-token": "forged"}),
            Refusal(403, "InvalidToken", "The provided token is malformed or otherwise invalid."),
            id="token-changed",
        ),
        pytest.param(
            lambda f: f.update({"x-amz-credential": f["x-amz-credential"].replace("AKIA", "AKIB")}),
            Refusal(
                403,
                "InvalidAccessKeyId",
                "The AWS Access Key Id you provided does not exist in our records.",
            ),
            id="unknown-access-key",
        ),
        pytest.param(
            lambda f: f.pop("key"),
            Refusal(
                400,
                "InvalidArgument",
                "Bucket POST must contain a field named 'key'.  "
                "If it is specified, please check the order of the fields.",
            ),
            id="key-missing",
        ),
    ],
)
def test_tampered_forms_are_refused_as_s3_refuses_them(change: object, expected: Refusal) -> None:
    fields = _presigned()
    change(fields)  # type: ignore[operator]
    assert _verify(fields) == expected


def test_ignored_fields_need_no_condition() -> None:
    fields = _presigned()
    fields["x-ignore-note"] = "anything"
    fields["file"] = "not really here"
    assert _verify(fields) is None


def test_policy_changed_with_signature_kept_is_refused() -> None:
    fields = _presigned()
    policy = _policy(fields)
    policy["conditions"][2] = ["content-length-range", 0, 10**12]  # type: ignore[index]
    fields["Policy"] = base64.b64encode(json.dumps(policy).encode()).decode()
    refusal = _verify(fields)
    assert refusal is not None
    assert (refusal.status, refusal.code) == (403, "SignatureDoesNotMatch")


def test_expired_policy_is_refused() -> None:
    refusal = _verify(_presigned(), now=NOW + timedelta(hours=1))
    assert refusal == Refusal(403, "AccessDenied", "Invalid according to Policy: Policy expired.")


def test_body_over_the_range_is_entity_too_large_and_the_limit_itself_passes() -> None:
    fields = _presigned(max_bytes=100)
    assert _verify(fields, size=100) is None
    assert _verify(fields, size=0) is None
    refusal = _verify(fields, size=101)
    assert refusal is not None
    assert (refusal.status, refusal.code) == (400, "EntityTooLarge")


def test_body_under_the_range_is_entity_too_small() -> None:
    fields = _presigned()
    policy = _policy(fields)
    policy["conditions"][2] = ["content-length-range", 5, 10]  # type: ignore[index]
    fields["Policy"] = base64.b64encode(json.dumps(policy).encode()).decode()
    date_stamp = fields["x-amz-date"][:8]
    fields["x-amz-signature"] = sign_policy(
        fields["Policy"],
        secret_key=CREDS.secret_key,
        date_stamp=date_stamp,
        region="ap-southeast-2",
    )
    refusal = _verify(fields, size=4)
    assert refusal is not None
    assert (refusal.status, refusal.code) == (400, "EntityTooSmall")


def _boto3_post(key: str, token: str | None) -> dict[str, str]:
    client = boto3.client(
        "s3",
        region_name="ap-southeast-2",
        endpoint_url="http://127.0.0.1:9",
        aws_access_key_id=CREDS.access_key,
        aws_secret_access_key=CREDS.secret_key,
        aws_session_token=token,
        config=Config(signature_version="s3v4"),
    )
    frozen = NOW.replace(tzinfo=None)
    with (
        mock.patch("botocore.auth.get_current_datetime", return_value=frozen),
        mock.patch("botocore.signers.get_current_datetime", return_value=frozen),
    ):
        post = client.generate_presigned_post(
            BUCKET,
            key,
            Conditions=[["content-length-range", 0, 1000]],
            ExpiresIn=3600,
        )
    fields: dict[str, str] = post["fields"]
    return fields


def test_boto3_presigned_post_verifies_and_signs_like_ours() -> None:
    theirs = _boto3_post(KEY, CREDS.session_token)
    assert _verify(theirs) is None
    assert theirs["x-amz-signature"] == sign_policy(
        theirs["policy"],
        secret_key=CREDS.secret_key,
        date_stamp="20261125",
        region="ap-southeast-2",
    )
    ours = _presigned()
    for name in ("x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-security-token"):
        assert ours[name] == theirs[name]
    their_policy = json.loads(base64.b64decode(theirs["policy"]))
    assert _policy(ours)["expiration"] == their_policy["expiration"]


def test_boto3_post_with_a_changed_key_is_refused() -> None:
    theirs = _boto3_post(KEY, None)
    theirs["key"] = KEY + ".exe"
    refusal = verify_post(
        theirs,
        bucket=BUCKET,
        body_size=1,
        secrets_by_access_key=SECRETS,
        now=NOW,
    )
    assert refusal is not None
    assert (refusal.status, refusal.code) == (403, "AccessDenied")
