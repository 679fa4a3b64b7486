"""Counters for `/_sandbox/stats`: what the servers saw and what the sandbox did."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .ledger import Ledger
from .usage import Usage

ENDPOINT_KINDS = (
    "presign",
    "list",
    "record",
    "presign_url",
    "content",
    "unknown",
    "s3_post",
    "s3_get",
    "s3_head",
)
DROPPED = "dropped"  # the status recorded for a connection closed unanswered
SECRET_FIELDS = frozenset(
    {"policy", "x-amz-signature", "x-amz-credential", "x-amz-security-token"})


@dataclass
class Stats:
    """Mutable counters; `snapshot` turns them into the admin JSON."""

    requests: dict[str, Counter[str]] = field(
        default_factory=lambda: {kind: Counter() for kind in ENDPOINT_KINDS}
    )
    faults: Counter[str] = field(default_factory=Counter)
    uploads_stored: int = 0
    s3_bytes_served: int = 0  # bytes of stored objects the S3's GETs answered with
    validation_failures: list[dict[str, Any]] = field(default_factory=list)
    validation_errors: list[str] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)  # API calls per practice key, per second
    issued_secrets: list[str] = field(default_factory=list, repr=False)
    """Every Policy, signature, credential and token handed out (for leak tests only;
    never in `snapshot`)."""

    def note_issued(self, fields: Iterable[tuple[str, str]]) -> None:
        self.issued_secrets.extend(v for k, v in fields if k.lower() in SECRET_FIELDS)

    def count(self, kind: str, status: int | str) -> None:
        """One request of `kind` answered with `status` (or DROPPED)."""
        self.requests.setdefault(kind, Counter())[str(status)] += 1

    def snapshot(self, ledger: Ledger, *, validations_pending: int) -> dict[str, Any]:
        """The admin JSON (see the package docstring for its shape)."""
        by_status: Counter[str] = Counter()
        for counts in self.requests.values():
            by_status.update(counts)
        created: dict[str, dict[str, Any]] = {}
        records = ledger.created_records()
        for record in records:
            entry = created.setdefault(record.client_id, {"count": 0, "records": []})
            entry["count"] += 1
            entry["records"].append(
                {"id": str(record.id), "file_name": record.file_name, "key": record.key}
            )
        return {
            "requests": {kind: dict(counts) for kind, counts in self.requests.items()},
            "requests_by_status": dict(by_status),
            "faults": dict(self.faults),
            "presigned": ledger.presigned_count,
            "uploads_stored": self.uploads_stored,
            "s3_bytes_served": self.s3_bytes_served,
            "records_created": created,
            "records_created_total": len(records),
            "records_by_others": [
                {"id": str(r.id), "client_id": r.client_id, "file_name": r.file_name,
                 "key": r.key, "file_size": r.file_size} for r in ledger.others_records()],
            "validation_failures": list(self.validation_failures),
            "validations_pending": validations_pending,
            "validation_errors": list(self.validation_errors),
        }
