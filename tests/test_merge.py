"""`report merge`: shard and practice reports combined, with totals and the exit code."""

from __future__ import annotations

import csv
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from pracsuite_ingest import cli, report
from pracsuite_ingest.merge import practice_and_shard


def item(client: str, name: str, status: str) -> dict[str, Any]:
    return {"client_id": client, "path": f"/in/{client}/{name}", "file_name": name, "size": 3,
            "sha256": "ab", "status": status,
            "attachment_id": "9" if status in ("validated", "skipped") else None,
            "key": None, "error": None if status == "validated" else "why", "attempts": 1,
            "extra": {"note": name}}


def part(folder: Path, run_id: str, items: list[dict[str, Any]],
         started: str = "2026-11-25T02:00:00Z", finished: str = "2026-11-25T03:00:00Z") -> Path:
    doc = {"run_id": run_id, "started_at": started, "finished_at": finished,
           "summary": report.summarise(it["status"] for it in items), "items": items}
    report.write(doc, folder)
    return folder


def test_shards_and_practices_merge_into_one_report_with_their_totals(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a1 = part(tmp_path / "clinic-a" / "shard-1-of-2", "ra1",
              [item("1", "x.pdf", "validated"), item("1", "y.pdf", "skipped")],
              started="2026-11-25T01:00:00Z")
    a2 = part(tmp_path / "clinic-a" / "shard-2-of-2", "ra2", [item("2", "z.pdf", "validated")],
              finished="2026-11-25T04:00:00Z")
    b = part(tmp_path / "clinic-b", "rb", [item("1", "x.pdf", "validated")])
    out = tmp_path / "all"
    assert cli.main(["report", "merge", str(a1), str(a2), str(b), "--out", str(out)]) == 0
    doc = json.loads((out / "latest.json").read_text())
    assert doc["run_id"].startswith("merged-")
    assert (doc["started_at"], doc["finished_at"]) == ("2026-11-25T01:00:00Z",
                                                        "2026-11-25T04:00:00Z")
    assert [it["file_name"] for it in doc["items"]] == ["x.pdf", "y.pdf", "z.pdf", "x.pdf"]
    assert doc["items"][0] == item("1", "x.pdf", "validated")  # items pass through unchanged
    assert doc["summary"] == {"total": 4, "validated": 3, "missing": 0, "failed": 0,
                              "invalid": 0, "skipped": 1, "pending": 0, "verified": 0}
    practices = {p["practice"]: p for p in doc["practices"]}
    assert practices["clinic-a"]["parts"] == 2 and practices["clinic-a"]["summary"]["total"] == 3
    assert practices["clinic-b"]["summary"]["validated"] == 1
    assert [(p["practice"], p["shard"], p["run_id"], p["summary"]["total"])
            for p in doc["parts"]] == [("clinic-a", "1/2", "ra1", 2), ("clinic-a", "2/2", "ra2", 1),
                                       ("clinic-b", None, "rb", 1)]
    for name in ("latest.json", "latest.csv", "latest.html", f"{doc['run_id']}.json",
                 f"{doc['run_id']}.csv", f"{doc['run_id']}.html"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600
    with (out / "latest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and list(rows[0]) == list(report.ITEM_COLUMNS)
    page = (out / "latest.html").read_text()
    assert "Per practice" in page and "clinic-b" in page and "Per part" in page
    printed = capsys.readouterr().out
    assert "4 items" in printed and "clinic-a: 3 items in 2 parts" in printed


@pytest.mark.parametrize(("statuses", "code"), [
    (["validated", "skipped"], 0),
    (["validated", "missing"], 1),
    (["validated", "failed"], 1),
    (["invalid"], 1),
    (["validated", "pending"], 1),  # an interrupted shard: the whole is not done (not 130)
])
def test_the_merge_exits_as_a_run_with_that_report_would(
        tmp_path: Path, statuses: list[str], code: int) -> None:
    a = part(tmp_path / "p" / "shard-1-of-2", "r1", [item("1", "a.pdf", "validated")])
    b = part(tmp_path / "p" / "shard-2-of-2", "r2",
             [item("2", f"{n}.pdf", s) for n, s in enumerate(statuses)])
    assert cli.main(["report", "merge", str(a), str(b), "--out", str(tmp_path / "o")]) == code


def test_merging_no_items_is_a_clean_empty_report(tmp_path: Path) -> None:
    a = part(tmp_path / "quiet", "r1", [])
    assert cli.main(["report", "merge", str(a), "--out", str(tmp_path / "o")]) == 0
    assert json.loads((tmp_path / "o" / "latest.json").read_text())["summary"]["total"] == 0


def test_unusable_inputs_exit_2_and_write_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a1 = part(tmp_path / "a" / "shard-1-of-3", "r1", [item("1", "a.pdf", "validated")])
    a2 = part(tmp_path / "a" / "shard-2-of-3", "r2", [item("2", "a.pdf", "validated")])
    a3 = part(tmp_path / "a" / "shard-3-of-3", "r3", [item("3", "a.pdf", "validated")])
    other = part(tmp_path / "a" / "shard-1-of-2", "r4", [item("1", "a.pdf", "validated")])
    empty = tmp_path / "never-ran"
    empty.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "latest.json").write_text("{not json")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "latest.json").write_text(json.dumps({"run_id": "x", "items": [{"a": 1}]}))
    out = tmp_path / "out"
    cases = [
        ([a1, a2], "shard(s) 3/3"),
        ([a1, a2, a3, other], "different shard layouts"),
        ([a1, a2, a3, a1], "given twice"),
        ([a1, a2, a3, empty], "no latest.json"),
        ([broken], "not JSON"),
        ([foreign], "lacks report columns"),
    ]
    for folders, message in cases:
        args = ["report", "merge", *map(str, folders), "--out", str(out)]
        assert cli.main(args) == 2, message
        assert message in capsys.readouterr().err
    assert cli.main(["report", "merge", str(a1), str(a2), str(a3), "--out", str(a1)]) == 2
    assert "would be overwritten" in capsys.readouterr().err
    assert not out.exists()
    assert json.loads((a1 / "latest.json").read_text())["run_id"] == "r1"


def test_a_folder_names_its_practice_and_shard(tmp_path: Path) -> None:
    assert practice_and_shard(tmp_path / "clinic-a" / "shard-2-of-5") == ("clinic-a", (2, 5))
    assert practice_and_shard(tmp_path / "clinic-b") == ("clinic-b", None)
    assert practice_and_shard(tmp_path / "clinic-b" / ".")[0] == "clinic-b"
