"""Every walk through a patient's attachment list ends, whatever PracSuite answers.

A `links.next` that points back at a page already read, a bare array that answers a
full page for every page number, or pages of new records without end would keep a
walk (and its memory) growing for ever. `Walk` is what one walk has read so far; it
travels with each `PageRef`, and `Walk.after_page` decides, page by page, whether the
walk may go on:

- a page URL read twice, or a page whose records are exactly an earlier page's: a loop;
- more pages than `total_entries` (where the answer gives it) could fill, or than
  `WalkLimits.max_pages`;
- more records than `WalkLimits.max_records` (the memory a walk may hold);
- longer than `WalkLimits.max_seconds` since the first page was asked for.

Each is a `Permanent` error naming what PracSuite did (never a URL's query, never a
key): the patient's items fail with it, the other patients go on.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pracsuite_ingest.errors import Permanent

# A patient with 20,000 attachments is far past any real record; 20,000 parsed records
# are some 40 MB. At 3 calls a second, 2,000 pages take 11 minutes.
MAX_RECORDS = 20_000
MAX_PAGES = 2_000
MAX_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class WalkLimits:
    max_records: int = MAX_RECORDS
    max_pages: int = MAX_PAGES
    max_seconds: float = MAX_SECONDS


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
        if count > self.limits.max_records:
            raise Permanent(f"PracSuite's attachment list goes on past "
                            f"{self.limits.max_records:,} records ({read:,} pages); the walk "
                            "was stopped (a list that never ends?)")
        if now - self.started > self.limits.max_seconds:
            raise Permanent(f"PracSuite's attachment list took longer than "
                            f"{self.limits.max_seconds:,.0f} s to read ({read:,} pages); the "
                            "walk was stopped")
        mark = fingerprint(records) if records else ""
        if mark and mark in self.pages:
            raise Permanent(f"PracSuite's attachment list repeats itself: page {read} "
                            f"({_where(url)}) holds exactly the records of an earlier page; "
                            "the walk was stopped")
        known = self.total
        if known is None and isinstance(total, int) and not isinstance(total, bool):
            known = max(total, 0)
        per_page = self.per_page or (len(records) if next_url is not None else 0)
        walk = Walk(self.started, self.limits, self.urls | {url},
                    self.pages | {mark} if mark else self.pages, count, known, per_page)
        if next_url is not None:
            walk.may_follow(next_url)
        return walk

    def may_follow(self, next_url: str) -> None:
        """`Permanent` when the page `next_url` must not be read."""
        read = len(self.urls)
        if next_url in self.urls:
            raise Permanent(f"PracSuite's attachment list loops: page {read}'s links.next "
                            f"({_where(next_url)}) is a page already read; the walk was "
                            "stopped")
        cap = self.limits.max_pages
        if self.total is not None:
            cap = min(cap, math.ceil(self.total / max(self.per_page, 1)) + 1)
        if read >= cap:
            said = (f" than its total_entries ({self.total:,}) can fill"
                    if self.total is not None and cap < self.limits.max_pages else "")
            raise Permanent(f"PracSuite's attachment list has more pages{said} "
                            f"(more than {cap:,}); the walk was stopped")


