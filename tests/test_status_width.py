"""`status` on a terminal: whole run ids and every count at 80 columns (two lines per
run), the full table where it fits (200 columns); never a cut `202…`."""

from __future__ import annotations

import io
import re

import pytest

from pracsuite_ingest.status_view import print_status

ANSI = re.compile(r"\x1b\[[0-9;]*m")
RUNS = [
    {"run_id": "2026-12-04T19-35-16Z-8fd2", "started_at": "2026-12-04T19:35:16Z",
     "finished_at": "2026-12-04T19:37:40Z", "outcome": "finished",
     "stages": {"validated": 290, "skipped": 10, "missing": 1, "invalid": 6}},
    {"run_id": "2026-12-04T23-59-59Z-0a1b", "started_at": "2026-12-04T23:59:59Z",
     "finished_at": "2026-12-05T00:00:03Z", "outcome": "dry-run", "stages": {"seen": 307}},
    {"run_id": "2026-12-05T02-00-00Z-77aa", "started_at": "2026-12-05T02:00:00Z",
     "finished_at": None, "outcome": "running", "stages": {"uploading": 1}},
]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def screen(width: int, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setenv("COLUMNS", str(width))
    out = Terminal()
    print_status("/srv/pracsuite/pracsuite-ingest.db", RUNS, as_json=False, out=out)
    return ANSI.sub("", out.getvalue()).splitlines()


def test_status_fits_80_columns_with_whole_run_ids_and_counts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    lines = screen(80, monkeypatch)
    assert all(len(line) <= 80 for line in lines), lines
    text = "\n".join(lines)
    assert "…" not in text
    for run in RUNS:
        assert str(run["run_id"]) in text and str(run["outcome"]) in text
    assert "307 items: validated 290, missing 1, invalid 6, skipped 10" in text
    assert "307 items: pending 307" in text and "1 item: pending 1" in text
    assert "2026-12-04 19:35:16 - 19:37:40" in text  # same day: the date once
    assert "2026-12-04 23:59:59 - 2026-12-05 00:00:03" in text


def test_status_at_200_columns_is_the_whole_table(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = screen(200, monkeypatch)
    text = "\n".join(lines)
    assert "…" not in text and all(len(line) <= 200 for line in lines)
    header = next(line for line in lines if "started (UTC)" in line)
    for column in ("run", "finished (UTC)", "outcome", "items", "validated", "missing",
                   "failed", "invalid", "skipped", "pending"):
        assert column in header
    row = next(line for line in lines if "2026-12-04T19-35-16Z-8fd2" in line)
    assert "2026-12-04 19:35:16" in row and "2026-12-04 19:37:40" in row
    assert re.search(r"\b290\b.*\b1\b.*\b6\b.*\b10\b", row)
