"""Every walk through a patient's attachment list ends, whatever PracSuite answers.

A `links.next` that points back at a page already read, a bare array that answers a
full page for every page number, or pages of new records without end would keep a
walk (and its memory) growing for ever. `Walk` is what one walk has read so far; it
travels with each `PageRef`, and `Walk.after_page` decides, page by page, whether the
walk may go on:

- a page URL read twice, or a page whose records are exactly an earlier page's: a loop;
- more pages than `total_entries` (where the answer gives it) could fill;
- more records, pages or seconds than the walk's caps (`WalkLimits`).

The caps grow with what the patient legitimately has, never with a list's length:
- the records the walker expects (`WalkLimits.expected`: a poll counts the records in
  its uploads' snapshot, the records already claimed for the patient and the uploads
  it waits for; a snapshot, the records claimed for the patient by earlier runs);
- `total_entries`, as the first page that gives it says.
The record cap is the larger of `max_records` (20,000: the cap when nothing says more)
and that legitimate count plus a tenth and one `SLACK` (records others add meanwhile),
never past `CEILING_RECORDS` (250,000) whatever `total_entries` claims. The page cap is
`max_pages` (2,000), or the pages the legitimate count fills at the first page's size,
plus one, never past `CEILING_PAGES` (5,500); the time cap is `max_seconds` (600 s), or
`SECONDS_PER_PAGE` (1 s) a page of that cap. So a patient with 100,000 attachments is
read to its end, while a list of new records without end stops at its caps: the floor
when nothing vouches for it, its own `total_entries` when that is given (pages past what
it can fill), at worst the ceilings.

Each is a `Permanent` error naming what PracSuite did (never a URL's query, never a
key): the patient's items fail with it, the other patients go on.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from pracsuite_ingest.errors import Permanent

# The caps of a walk that nothing vouches for: at 3 calls a second, 2,000 pages take 11
# minutes. A walk keeps a few facts per record (reconcile/records.py), not the records.
MAX_RECORDS = 20_000
MAX_PAGES = 2_000
MAX_SECONDS = 600.0
# Whatever total_entries claims: 2.5 times the largest patient we plan for (100,000);
# a lying total_entries costs at most 2,751 pages (46 min at 1 s a page).
CEILING_RECORDS = 250_000
CEILING_PAGES = 5_500  # those records at 50 a page (PracSuite's default), plus a tenth
SLACK = 1_000  # records others may add to the patient while we walk and poll
SECONDS_PER_PAGE = 1.0  # a page's share of the time cap, retries and pacing included


@dataclass(frozen=True, slots=True)
class WalkLimits:
    """A walk's caps when nothing vouches for more (`max_*`), and the records the walker
    legitimately expects the patient to have (`expected`)."""

    max_records: int = MAX_RECORDS
    max_pages: int = MAX_PAGES
    max_seconds: float = MAX_SECONDS
    expected: int = 0

    def legitimate(self, total: int | None) -> int:
        """The records the patient may hold: what we expect, or what total_entries says."""
        return max(self.expected, total or 0)

    def records_cap(self, total: int | None) -> int:
        legit = self.legitimate(total)
        grown = legit + legit // 10 + SLACK if legit else 0
        return max(self.max_records, min(grown, CEILING_RECORDS))

    def pages_cap(self, total: int | None, per_page: int) -> int:
        legit = min(self.legitimate(total), CEILING_RECORDS)
        if not legit:
            return self.max_pages
        grown = math.ceil((legit + legit // 10 + SLACK) / max(per_page, 1)) + 1
        return max(self.max_pages, min(grown, CEILING_PAGES))

    def seconds_cap(self, total: int | None, per_page: int) -> float:
        pages = self.pages_cap(total, per_page)
        if pages <= self.max_pages:
            return self.max_seconds
        return max(self.max_seconds, pages * SECONDS_PER_PAGE)


def fingerprint(records: list[dict[str, Any]]) -> str:
    """What a page held, to tell the same page served again under another URL."""
    text = json.dumps(records, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _where(url: str) -> str:
    """A URL's path for a message: no host, no query."""
    return urlsplit(url).path or "/"


@dataclass(frozen=True, slots=True)
class Walk:
    """What one walk has read: started at `started` (monotonic seconds)."""

    started: float
    limits: WalkLimits = WalkLimits()
    urls: frozenset[str] = frozenset()
    pages: frozenset[str] = frozenset()  # fingerprints of the non-empty pages read
    records: int = 0
    total: int | None = None  # total_entries, as the first page that gave it said
    per_page: int = 0  # records on the first page that had a next one

    def after_page(self, url: str, records: list[dict[str, Any]], total: Any,
                   next_url: str | None, now: float) -> Walk:
        """The walk with page `url` read; `Permanent` when it must not go on to
        `next_url` (None: it ends here, and only the records cap and time apply)."""
        count = self.records + len(records)
        read = len(self.urls) + 1
        known = self.total
        if known is None and isinstance(total, int) and not isinstance(total, bool):
            known = max(total, 0)
        per_page = self.per_page or (len(records) if next_url is not None else 0)
        cap = self.limits.records_cap(known)
        if count > cap:
            raise Permanent(f"PracSuite's attachment list goes on past {cap:,} records "
                            f"({read:,} pages); the walk was stopped (a list that never "
                            "ends?)")
        seconds = self.limits.seconds_cap(known, per_page or len(records))
        if now - self.started > seconds:
            raise Permanent(f"PracSuite's attachment list took longer than {seconds:,.0f} s "
                            f"to read ({read:,} pages); the walk was stopped")
        mark = fingerprint(records) if records else ""
        if mark and mark in self.pages:
            raise Permanent(f"PracSuite's attachment list repeats itself: page {read} "
                            f"({_where(url)}) holds exactly the records of an earlier page; "
                            "the walk was stopped")
        walk = Walk(self.started, self.limits, self.urls | {url},
                    self.pages | {mark} if mark else self.pages, count, known, per_page)
        if next_url is not None:
            walk.may_follow(next_url)
        return walk

    def expecting(self, records: int) -> Walk:
        """This walk, its caps grown for a patient expected to hold `records`."""
        limits = self.limits
        return replace(self, limits=replace(limits, expected=max(limits.expected, records)))

    def may_follow(self, next_url: str) -> None:
        """`Permanent` when the page `next_url` must not be read."""
        read = len(self.urls)
        if next_url in self.urls:
            raise Permanent(f"PracSuite's attachment list loops: page {read}'s links.next "
                            f"({_where(next_url)}) is a page already read; the walk was "
                            "stopped")
        most = cap = self.limits.pages_cap(self.total, self.per_page)
        if self.total is not None:
            cap = min(cap, math.ceil(self.total / max(self.per_page, 1)) + 1)
        if read >= cap:
            said = (f" than its total_entries ({self.total:,}) can fill"
                    if self.total is not None and cap < most else "")
            raise Permanent(f"PracSuite's attachment list has more pages{said} "
                            f"(more than {cap:,}); the walk was stopped")


