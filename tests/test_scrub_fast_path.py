"""`logs.scrub` leaves a text without any secret's mark as it is after one search
(issue 23: a log line's strings cost a quarter as much); that shortcut must mask
exactly what the four substitutions mask, for any text."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pracsuite_ingest import logs

# Pieces of every shape the substitutions know (names in any case, values, a policy's
# base64, a SigV4 scope) among ordinary words, so that random texts often hold them.
PIECES = st.sampled_from([
    "x-amz-signature", "X-Amz-Credential", "x-amz-security-token", "X-API-KEY",
    "a-api-key", "Policy", "policy", "eyJ", "eyJhbGciOiJIUzI1NiIsInR5cCI6", "aws4_request",
    "AKIAIOSFODNN7EXAMPLE/20261205/us-east-1/s3/aws4_request", "=", ": ", "'", '"', ",",
    " ", "abc", "0123456789", "/", "item validated", "reconcile", "\n",
])


def every_substitution(text: str) -> str:
    """What `scrub` did before the shortcut: every registered value, then every shape."""
    for secret in logs._secret_values:
        if secret in text:
            text = text.replace(secret, logs.MASK)
    for pattern, replacement in logs._SECRET_SHAPES:
        text = pattern.sub(replacement, text)
    return text


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.one_of(PIECES, st.text(max_size=12)), max_size=12).map("".join))
def test_scrub_masks_what_every_substitution_masks(text: str) -> None:
    assert logs.scrub(text) == every_substitution(text)


def test_each_shape_is_still_masked_through_the_shortcut() -> None:
    for text in ("x-amz-signature=abcdef123", "POLICY=abcdef", "eyJ" + "a" * 20,
                 "AKIAIOSFODNN7EXAMPLE/20261205/us-east-1/s3/aws4_request"):
        assert logs.MASK in logs.scrub(text), text
    assert logs.scrub("item validated") == "item validated"
