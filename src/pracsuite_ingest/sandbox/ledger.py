"""What the sandbox's PracSuite knows, and the pure rules it answers by.

`Ledger` holds the clients, the uploads presigned so far and the attachment records;
the module-level functions decide (file name accepted? page in range? upload valid?)
without touching the network. The aiohttp handlers in `api.py` only call these.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
FIRST_RECORD_ID = 1001

# Names of the records a practice already holds before any upload; several are the
# names a migration is likely to upload again, so "never claim a pre-existing
# record" gets exercised.
_EXISTING_NAMES = (
    "Referral letter.pdf",
    "Discharge summary.pdf",
    "Pathology results.pdf",
    "Consent form.pdf",
    "X-ray report.pdf",
    "Scan.jpg",
)


class DescriptionMode(StrEnum):
    """What a record's `description` holds (PracSuite's behaviour is unknown)."""

    FILE_NAME = "file_name"
    EMPTY = "empty"
    TEXT = "text"


@dataclass(frozen=True)
class PendingUpload:
    """A presign handed out: the one key S3 will accept for it, and the name asked for."""

    upload_id: str
    client_id: str
    file_name: str
    key: str
    presigned_at: datetime


@dataclass(frozen=True)
class Record:
    """A Patient Attachment record; `file_name` and `key` are never shown on it."""

    id: int
    client_id: str
    file_name: str
    key: str
    file_size: int
    file_date: date
    description: str
    tenant_id: int
    user_id: int
    pre_existing: bool
    by_others: bool = False  # someone else's upload (front desk, another integration)

    @property
    def file_type(self) -> str:
        """The extension, upper case, without the dot: "PDF"."""
        return PurePosixPath(self.file_name).suffix.lstrip(".").upper()


def describe(mode: DescriptionMode, file_name: str) -> str:
    """A record's `description` under `mode`."""
    if mode is DescriptionMode.FILE_NAME:
        return file_name
    if mode is DescriptionMode.TEXT:
        return "Uploaded via API"
    return ""


def file_name_problem(body: Any) -> str | None:
    """Why a presign body is refused (400 INVALID_PARAMS), None when it is fine."""
    if not isinstance(body, dict):
        return 'The body must be a JSON object: {"file_name": "name.ext"}.'
    name = body.get("file_name")
    if not isinstance(name, str) or not name.strip():
        return "file_name is required and must be a non-empty string."
    if "/" in name or "\\" in name or "\x00" in name:
        return "file_name must be a file name, not a path."
    if len(name.encode()) > 255:
        return "file_name must be at most 255 bytes."
    if not PurePosixPath(name).suffix:
        return "file_name must include an extension, for example 'letter.pdf'."
    return None


def parse_paging(query: Mapping[str, str]) -> tuple[int, int] | str:
    """(page, page_size) from a list query, or why it is refused (400 INVALID_PARAMS)."""
    values: dict[str, int] = {}
    for name, default in (("page", 1), ("page_size", DEFAULT_PAGE_SIZE)):
        raw = query.get(name)
        if raw is None:
            values[name] = default
            continue
        try:
            values[name] = int(raw)
        except ValueError:
            return f"{name} must be an integer."
    if values["page"] < 1:
        return "page must be 1 or more."
    if not 1 <= values["page_size"] <= MAX_PAGE_SIZE:
        return f"page_size must be between 1 and {MAX_PAGE_SIZE}."
    return values["page"], values["page_size"]


def validation_failure(
    pending: PendingUpload,
    size: int | None,
    *,
    max_bytes: int,
    reject_names: re.Pattern[str] | None,
    accept_empty: bool = False,
) -> str | None:
    """Why PracSuite's validation refuses a stored upload, None when it passes."""
    stored_name = pending.key.rsplit("/", 1)[-1]
    if stored_name != pending.file_name:
        return "the object's name differs from the presigned file_name"
    if size is None:
        return "no object at the presigned key"
    if size == 0 and not accept_empty:
        return "the file is empty"
    if size > max_bytes:
        return f"the file is larger than {max_bytes} bytes"
    if reject_names is not None and reject_names.search(pending.file_name):
        return "the file name is refused by reject_names"
    return None


def parse_sort_by(raw: str | None) -> list[str] | str:
    """The `sort_by` fields ([] when absent), or why it is refused (400 INVALID_PARAMS).

    PracSuite documents a JSON array of field names (`["file_date","description"]`);
    the descending syntax is not published, so none is accepted here.
    """
    if raw is None or raw == "":
        return []
    try:
        fields = json.loads(raw)
    except ValueError:
        return 'sort_by must be a JSON array of field names, e.g. ["file_date"].'
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        return 'sort_by must be a JSON array of field names, e.g. ["file_date"].'
    unknown = [f for f in fields if f not in SORTABLE_FIELDS]
    if unknown:
        return f"sort_by names unknown fields: {', '.join(unknown)}."
    return fields


SORTABLE_FIELDS = frozenset({"tenant_id", "attachment_client_id", "client_id", "user_id",
                             "file_date", "description", "file_type", "file_size"})


def sorted_rendered(records: list[dict[str, Any]], fields: list[str]) -> list[dict[str, Any]]:
    """Rendered records sorted ascending by `fields`, in order (stable)."""

    def value(v: Any) -> tuple[int, int, str]:
        return (0, v, "") if isinstance(v, int) else (1, 0, str(v))

    return sorted(records, key=lambda r: tuple(value(r.get(f, "")) for f in fields))


def render_record(
    record: Record, *, base_url: str, row_num: int, total_rows: int, links: bool = True
) -> dict[str, Any]:
    """A record as the API shows it; `base_url` ends in /v1. No file name, no key.

    `links` (absolute, on the API's origin) are left out when `links` is False.
    """
    self_url = f"{base_url}/patient_attachment/{record.id}"
    shown: dict[str, Any] = {"row_num": row_num, "total_rows": total_rows}
    if links:
        shown["links"] = {
            "self": self_url,
            "content": f"{self_url}/content",
            "presign_url": f"{self_url}/presign_url",
        }
    return shown | {
        "tenant_id": record.tenant_id,
        "attachment_client_id": record.id,
        "client_id": int(record.client_id) if record.client_id.isdigit() else record.client_id,
        "user_id": record.user_id,
        "file_date": record.file_date.isoformat(),
        "description": record.description,
        "file_type": record.file_type,
        "file_size": record.file_size,
    }


class Ledger:
    """Clients, presigned uploads and records; ids ascend in creation order.

    Not thread-safe; used from the event loop only. A key yields at most one record,
    however often it is uploaded or validated.
    """

    def __init__(
        self,
        *,
        clients: Iterable[str],
        tenant_id: int,
        user_id: int,
        description_mode: DescriptionMode,
    ) -> None:
        self.tenant_id = tenant_id
        self.user_id = user_id
        self.description_mode = description_mode
        self._records: dict[str, list[Record]] = {client: [] for client in clients}
        self._pending: dict[str, PendingUpload] = {}
        self._record_by_key: dict[str, Record] = {}
        self._record_by_id: dict[int, Record] = {}
        self._next_id = FIRST_RECORD_ID

    def seed_existing(self, per_client: int, rng: random.Random, today: date) -> list[Record]:
        """Create `per_client` records for every client, as if made before the sandbox."""
        created = []
        for client in self._records:
            for n in range(per_client):
                name = _EXISTING_NAMES[n % len(_EXISTING_NAMES)]
                folder = uuid.UUID(int=rng.getrandbits(128), version=4)
                created.append(
                    self._add(
                        client_id=client,
                        file_name=name,
                        key=f"attachments/{self.tenant_id}/{client}/{folder}/{name}",
                        size=rng.randint(2_000, 400_000),
                        file_date=today - timedelta(days=rng.randint(30, 3000)),
                        pre_existing=True,
                    )
                )
        return created

    def has_client(self, client_id: str) -> bool:
        return client_id in self._records

    def presign(self, client_id: str, file_name: str, *, now: datetime) -> PendingUpload:
        """Record a presign for a known client; the key is unique to it."""
        upload_id = str(uuid.uuid4())
        key = f"temp/{self.tenant_id}/{client_id}/{self.user_id}/1/{upload_id}/{file_name}"
        pending = PendingUpload(upload_id, client_id, file_name, key, now)
        self._pending[key] = pending
        return pending

    @property
    def presigned_count(self) -> int:
        return len(self._pending)

    def pending(self, key: str) -> PendingUpload | None:
        return self._pending.get(key)

    def records_of(self, client_id: str) -> list[Record]:
        """A known client's records, ids ascending (a copy)."""
        return list(self._records[client_id])

    def record_by_id(self, record_id: str) -> Record | None:
        """The record with this id (as in the URL), None when there is none."""
        return self._record_by_id.get(int(record_id)) if record_id.isdigit() else None

    def record(self, client_id: str, record_id: str) -> Record | None:
        """The client's record with this id (as in the URL), None when there is none."""
        found = self._record_by_id.get(int(record_id)) if record_id.isdigit() else None
        return found if found is not None and found.client_id == client_id else None

    def created_records(self) -> list[Record]:
        """Records made from uploads (not pre-existing), ids ascending."""
        return sorted(
            (r for records in self._records.values() for r in records
             if not r.pre_existing and not r.by_others),
            key=lambda r: r.id,
        )

    def others_records(self) -> list[Record]:
        """Records someone else made during the run (`SandboxOptions.others_rate`)."""
        return sorted((r for records in self._records.values() for r in records
                       if r.by_others), key=lambda r: r.id)

    def lookalike_key(self, pending: PendingUpload) -> str:
        """Where someone else's upload of the same name for the same patient is stored."""
        return (f"temp/{self.tenant_id}/{pending.client_id}/{self.user_id + 1}/1/"
                f"{uuid.uuid4()}/{pending.file_name}")

    def create_other(self, pending: PendingUpload, key: str, size: int, today: date) -> Record:
        """Someone else's record: the same patient, file name and size as `pending`."""
        return self._add(client_id=pending.client_id, file_name=pending.file_name, key=key,
                         size=size, file_date=today, pre_existing=False, by_others=True)

    def create_record(self, pending: PendingUpload, size: int, today: date) -> Record | None:
        """The record for a validated upload; None if its key already has one."""
        if pending.key in self._record_by_key:
            return None
        return self._add(
            client_id=pending.client_id,
            file_name=pending.file_name,
            key=pending.key,
            size=size,
            file_date=today,
            pre_existing=False,
        )

    def _add(
        self,
        *,
        client_id: str,
        file_name: str,
        key: str,
        size: int,
        file_date: date,
        pre_existing: bool,
        by_others: bool = False,
    ) -> Record:
        record = Record(
            id=self._next_id,
            client_id=client_id,
            file_name=file_name,
            key=key,
            file_size=size,
            file_date=file_date,
            description=describe(self.description_mode, file_name),
            tenant_id=self.tenant_id,
            user_id=self.user_id,
            pre_existing=pre_existing,
            by_others=by_others,
        )
        self._next_id += 1
        self._records[client_id].append(record)
        self._record_by_key[key] = record
        self._record_by_id[record.id] = record
        return record
