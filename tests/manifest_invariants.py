"""What must hold for every row read from any manifest, however hostile (shared by the
hypothesis tests and the atheris harness)."""

from __future__ import annotations

import json
from collections.abc import Iterable

from pracsuite_ingest.models import Row


def check_rows(rows: Iterable[Row], physical_lines: int) -> list[Row]:
    """Every row can be stored and reported; line numbers rise; nothing is invented."""
    out = list(rows)
    last = 0
    for row in out:
        assert row.line >= 1 and row.line > last, (row.line, last)
        last = row.line
        for text in (row.client_id, row.path, row.file_name, row.problem or ""):
            text.encode("utf-8")  # no undecodable byte reaches the state file or a report
        json.dumps(row.extra, ensure_ascii=False, allow_nan=False).encode("utf-8")
        if row.problem is None:
            assert row.client_id and row.path, row  # an empty file_name: check_local says so
            assert "\x00" not in row.client_id + row.path + row.file_name
        else:
            assert row.problem.startswith(f"line {row.line}: "), row.problem
    assert len(out) <= max(physical_lines, 1)
    return out


def physical_lines(data: bytes) -> int:
    return data.count(b"\n") + data.count(b"\r") + 1
