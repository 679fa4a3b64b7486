"""First contact with a practice's PracSuite: what `check --client ID` learns, read-only.

PracSuite leaves several things unpublished (pracsuite-api.md, "Unknown"): the list's
envelope key, whether a record carries its file name, rate limits. `discover` asks
one patient's attachment list a few documented GETs (never a POST, never an upload)
and the pure functions below decide what the answers show and which configuration
follows. Text that came from PracSuite is passed through `shown` before it reaches a
terminal; file names and descriptions are never shown at all (health data).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from pracsuite_ingest.api import Exchange, PracSuiteClient, RecordRef, record_links
from pracsuite_ingest.api_answers import LIST_KEYS, parse_api_error
from pracsuite_ingest.client_ids import client_id_problem
from pracsuite_ingest.plural import counted
from pracsuite_ingest.reconcile.facts import record_id
from pracsuite_ingest.visible import visible

BARE = "(bare array)"
SAMPLES = 3  # records whose presign_url is read: enough to see a pattern, few calls
SORT_FIELD = "file_date"  # a documented record field
RATE_HEADER_PARTS = ("ratelimit", "rate-limit", "retry-after", "x-amzn-ratelimit")


def shown(text: object, limit: int = 120) -> str:
    """`text` safe for a terminal (`visible`: controls and invisible characters escaped),
    cut short."""
    raw = str(text)
    return visible(raw[:limit]) + ("..." if len(raw) > limit else "")


def envelope_of(body: Any) -> tuple[str | None, list[dict[str, Any]]]:
    """(the key holding the records, or BARE; None when it cannot be told) and the records."""
    if isinstance(body, list):
        return BARE, [r for r in body if isinstance(r, dict)]
    if not isinstance(body, dict):
        return None, []
    arrays = [k for k, v in body.items() if isinstance(v, list) and k != "links"]
    if len(arrays) != 1:
        arrays = [k for k in LIST_KEYS if isinstance(body.get(k), list)][:1]
    if not arrays:
        return None, []
    return arrays[0], [r for r in body[arrays[0]] if isinstance(r, dict)]


def record_fields(records: Iterable[Mapping[str, Any]]) -> list[str]:
    return sorted({str(k) for r in records for k in r})


def name_carriers(samples: Iterable[tuple[Mapping[str, Any], str]]) -> dict[str, int]:
    """{field: how many sampled records hold their presign_url file name in it}."""
    found: dict[str, int] = {}
    for record, name in samples:
        if not name:
            continue
        for key, value in record.items():
            if key != "links" and isinstance(value, str) and name in value:
                found[str(key)] = found.get(str(key), 0) + 1
    return found


def rate_limit_headers(exchanges: Iterable[Exchange]) -> dict[str, str]:
    """Headers that look like rate limits (the last value seen of each)."""
    out: dict[str, str] = {}
    for ex in exchanges:
        for name, value in ex.headers.items():
            if any(part in name for part in RATE_HEADER_PARTS):
                out[name] = value
    return out


def answer_error(ex: Exchange) -> str:
    """`STATUS CODE: detail` of an answer that is not a 2xx, for showing."""
    body = json.dumps(ex.body).encode() if ex.body is not None else b""
    code, detail, request_id = parse_api_error(ex.status, body)
    text = f"{ex.status} {code or 'ERROR'}" + (f": {detail}" if detail else "")
    return text + (f" (request_id {request_id})" if request_id else "")


@dataclass
class Findings:
    """What one `check --client` learned; `to_json` is its `--json` form."""

    client_id: str
    list_status: int = 0
    list_error: str = ""
    envelope: str | None = None
    total_entries: int | None = None
    records_on_page: int = 0
    fields: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    """The `links.*` names the sampled records carry."""
    name_fields: dict[str, int] = field(default_factory=dict)
    presign_sampled: int = 0
    presign_answered: int = 0
    presign_named: int = 0
    presign_via: list[str] = field(default_factory=list)
    presign_errors: list[str] = field(default_factory=list)
    sort_by_status: int = 0
    sort_by_error: str = ""
    page_size_got: int | None = None
    page_size_honoured: bool | None = None
    times_ms: list[float] = field(default_factory=list)
    rate_limit_headers: dict[str, str] = field(default_factory=dict)

    @property
    def list_read(self) -> bool:
        return 200 <= self.list_status < 300 and self.envelope is not None

    def configuration(self) -> dict[str, Any]:
        """The settings that follow from what was seen."""
        if not self.list_read:
            return {}
        return {"api.list_key": "" if self.envelope == BARE else self.envelope}

    def notes(self) -> list[str]:
        """What the operator should know before a run, in plain words."""
        out = []
        if self.list_read and self.records_on_page == 0:
            out.append("this patient has no attachments: pick a patient with some to learn "
                       "about records, file names and presign_url")
        if self.presign_sampled and not self.name_fields:
            out.append("no record field carries the file name: every match needs one "
                       "presign_url call per new record (count it in "
                       "api.requests_per_second)")
        if self.presign_sampled and self.presign_answered < self.presign_sampled:
            out.append("presign_url did not answer for every record: uploads may stay "
                       "'missing' when records carry no file name")
        if self.list_read and self.records_on_page and not self.links:
            out.append("records carry no links: the worker builds the documented paths")
        if self.page_size_honoured is False:
            out.append("page_size is not honoured: set api.page_size to the page size "
                       f"PracSuite uses ({self.page_size_got})")
        if self.sort_by_status and not 200 <= self.sort_by_status < 300:
            out.append("sort_by is refused: the worker does not need it")
        return out

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["list_read"] = self.list_read
        data["configuration"] = self.configuration()
        data["notes"] = self.notes()
        return data


def _times(findings: Findings, *exchanges: Exchange) -> None:
    findings.times_ms += [round(ex.elapsed_s * 1000, 1) for ex in exchanges]


async def discover(client: PracSuiteClient, client_id: str) -> Findings:
    """A few read-only GETs on one patient's attachments; see the module docstring."""
    found = Findings(client_id)
    problem = client_id_problem(client_id)
    if problem:  # never sent: `..` would be another path (client_ids.py)
        found.list_error = problem
        return found
    seen: list[Exchange] = []
    first = await client.exchange(client.list_url(client_id, 1))
    seen.append(first)
    found.list_status = first.status
    if not 200 <= first.status < 300:
        found.list_error = answer_error(first)
        found.rate_limit_headers = rate_limit_headers(seen)
        _times(found, *seen)
        return found
    found.envelope, records = envelope_of(first.body)
    if isinstance(first.body, dict) and isinstance(first.body.get("total_entries"), int):
        found.total_entries = first.body["total_entries"]
    found.records_on_page = len(records)
    found.fields = record_fields(records)
    found.links = sorted({name for r in records[:SAMPLES] for name in record_links(r)})
    samples: list[tuple[Mapping[str, Any], str]] = []
    for record in records[:SAMPLES]:
        rid = record_id(record)
        if rid is None:
            continue
        link = record_links(record).get("presign_url", "")
        via = "links.presign_url" if client.own_link(link) else "documented path"
        answer = await client.exchange(client.presign_url_of(RecordRef(rid, link)))
        seen.append(answer)
        found.presign_sampled += 1
        if via not in found.presign_via:
            found.presign_via.append(via)
        if 200 <= answer.status < 300 and isinstance(answer.body, dict):
            found.presign_answered += 1
            name = answer.body.get("file_name")
            if isinstance(name, str) and name:
                found.presign_named += 1
                samples.append((record, name))
        else:
            found.presign_errors.append(answer_error(answer))
    found.name_fields = name_carriers(samples)
    sort = await client.exchange(client.list_url(client_id, 1, sort_by=[SORT_FIELD]))
    paged = await client.exchange(client.list_url(client_id, 1, 1))
    seen += [sort, paged]
    found.sort_by_status = sort.status
    if not 200 <= sort.status < 300:
        found.sort_by_error = answer_error(sort)
    if 200 <= paged.status < 300 and found.records_on_page >= 2:
        found.page_size_got = len(envelope_of(paged.body)[1])
        found.page_size_honoured = found.page_size_got <= 1
    found.rate_limit_headers = rate_limit_headers(seen)
    _times(found, *seen)
    return found


def render(f: Findings, base_url: str) -> str:
    """The findings as a person reads them on a terminal."""
    lines = [f"first contact: patient {shown(f.client_id)} at {shown(base_url)} "
             f"(read-only: {counted(len(f.times_ms), 'GET request')}, nothing sent)"]

    def row(label: str, text: str) -> None:
        lines.append(f"  {label + ':':<16}{text}")

    if not f.list_read:
        why = shown(f.list_error) if f.list_error else "an answer with no records array"
        row("list", f"not read: {why}")
        return "\n".join(lines) + "\n"
    envelope = "a bare array" if f.envelope == BARE else f'envelope key "{shown(f.envelope)}"'
    total = f", total_entries {f.total_entries}" if f.total_entries is not None else ""
    records = counted(f.records_on_page, "record")
    row("list", f"{f.list_status}, {envelope} ({records} on page 1{total})")
    row("record fields", ", ".join(shown(k, 40) for k in f.fields) or "(no records)")
    row("links", ", ".join(f"links.{shown(k, 40)}" for k in f.links) or "none on the records")
    if not f.presign_sampled:
        row("presign_url", "not tried (no records)")
        row("file name", "unknown (no records)")
    else:
        via = " and ".join(f.presign_via)
        text = (f"answered for {f.presign_answered} of {f.presign_sampled} sampled records "
                f"(via {via}); {f.presign_named} gave a file_name")
        row("presign_url", text)
        for err in f.presign_errors[:3]:
            row("", shown(err))
        if f.name_fields:
            where = ", ".join(f"{shown(k, 40)} ({n} of {f.presign_named})"
                              for k, n in sorted(f.name_fields.items()))
            row("file name", f"records carry it in: {where}")
        elif f.presign_named:
            row("file name", "no record field carries it (only presign_url tells it)")
        else:
            row("file name", "unknown (presign_url gave no file_name)")
    sort = (f'["{SORT_FIELD}"] accepted ({f.sort_by_status})' if 200 <= f.sort_by_status < 300
            else f"refused: {shown(f.sort_by_error)}")
    row("sort_by", sort)
    if f.page_size_honoured is None:
        row("page_size", "cannot tell (fewer than 2 records)")
    else:
        verdict = "honoured" if f.page_size_honoured else "NOT honoured"
        row("page_size", f"page_size=1 {verdict} (the page held {f.page_size_got})")
    if f.times_ms:
        row("response times", f"min {min(f.times_ms):.0f} ms, median "
            f"{statistics.median(f.times_ms):.0f} ms, max {max(f.times_ms):.0f} ms "
            f"over {counted(len(f.times_ms), 'call')} (from sending to the whole answer; "
            "the wait for api.requests_per_second not counted)")
    headers = ", ".join(f"{shown(k, 40)}: {shown(v, 40)}"
                        for k, v in sorted(f.rate_limit_headers.items()))
    row("rate limits", headers or "no rate-limit headers seen")
    for note in f.notes():
        row("note", note)
    lines.append("configuration that follows:")
    lines.append("  [api]")
    lines += [f"  {key.split('.', 1)[1]} = {json.dumps(value)}"
              for key, value in f.configuration().items()]
    return "\n".join(lines) + "\n"
