"""`report merge`: shard and practice reports combined, with totals and the exit code."""

from __future__ import annotations

import csv
import json
import stat
import subprocess
import sys
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


def write_big_part(folder: Path, run_id: str, rows: int, offset: int) -> None:
    """A report folder of `rows` items, written as `report.write` lays one out."""
    folder.mkdir(parents=True)
    with (folder / "latest.json").open("w", encoding="utf-8") as fh:
        fh.write(f'{{"run_id": "{run_id}", "started_at": null, "finished_at": null, "items": [')
        for i in range(rows):
            status = ("validated", "missing", "failed")[i % 3]
            fh.write(("," if i else "") + "\n" + json.dumps(
                item(str((offset + i) % 5000), f"{offset + i:07d} letter.pdf", status)))
        fh.write("]}\n")


# VmHWM is the peak of this process's own memory since its exec. getrusage's ru_maxrss
# is not: Linux carries it across exec from the forking parent (here a pytest worker
# that may already hold 140 MB), which once made this test measure the wrong process.
MERGE_IN_A_CHILD = """
import sys
from pracsuite_ingest import cli
code = cli.main(["report", "merge", *sys.argv[1:-1], "--out", sys.argv[-1]])
with open("/proc/self/status") as fh:
    peak_kb = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
print(code, peak_kb)
"""


def test_merging_100000_rows_stays_under_100_mb(tmp_path: Path) -> None:
    """SPEC.md: `report merge` peak RSS under 100 MB at any row count. The merge before
    streaming held the parts whole (178 MB at 100,000 rows, bench/scale.py); the bound
    is the child's own peak (VmHWM in it), not a timing."""
    rows, shards = 100_000, 2
    folders = []
    for n in range(shards):
        folder = tmp_path / "clinic" / f"shard-{n + 1}-of-{shards}"
        write_big_part(folder, f"r{n}", rows // shards, n * rows)
        folders.append(str(folder))
    out = tmp_path / "out"
    child = subprocess.run([sys.executable, "-c", MERGE_IN_A_CHILD, *folders, str(out)],
                           capture_output=True, text=True, timeout=600, check=False)
    code, peak_kb = map(int, child.stdout.splitlines()[-1].split())
    assert code == 1, child.stderr  # missing and failed items
    assert peak_kb / 1024 < 100, f"peak RSS {peak_kb / 1024:.0f} MB"
    with (out / "latest.csv").open(newline="") as fh:
        assert sum(1 for _ in csv.reader(fh)) == rows + 1
    with (out / "latest.json").open() as fh:
        doc = json.load(fh)
    assert doc["summary"]["total"] == rows and len(doc["items"]) == rows
    assert doc["summary"]["validated"] == shards * len(range(0, rows // shards, 3))
    last = (shards - 1) * rows + rows // shards - 1
    assert doc["items"][-1]["file_name"] == f"{last:07d} letter.pdf"
    page = (out / "latest.html").read_text()
    # the page lists the first 2,000 of each status and says how many more the CSV has
    assert f"… and {doc['summary']['missing'] - 2000:,} more" in page


def test_the_same_shard_of_the_same_practice_twice_is_refused_naming_both(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two folders of the same names (a copy, another disk) hold the same shard: merged,
    its rows would count twice."""
    a1 = part(tmp_path / "nightly" / "clinic" / "shard-1-of-2", "r1", [item("1", "a.pdf",
                                                                           "validated")])
    a2 = part(tmp_path / "nightly" / "clinic" / "shard-2-of-2", "r2", [item("2", "b.pdf",
                                                                           "validated")])
    copy = part(tmp_path / "copy" / "clinic" / "shard-1-of-2", "r1", [item("1", "a.pdf",
                                                                           "validated")])
    out = tmp_path / "out"
    assert cli.main(["report", "merge", str(a1), str(a2), str(copy), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(a1) in err and str(copy) in err and "shard 1/2 of practice clinic" in err
    assert not out.exists()
    plain = part(tmp_path / "x" / "clinic-b", "rb", [item("1", "a.pdf", "validated")])
    again = part(tmp_path / "y" / "clinic-b", "rb2", [item("1", "a.pdf", "validated")])
    assert cli.main(["report", "merge", str(plain), str(again), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(plain) in err and str(again) in err


def identified(folder: Path, run_id: str, practice: str, client: str) -> Path:
    doc = {"run_id": run_id, "started_at": None, "finished_at": None,
           "practice_id": report.practice_id("https://api.pracsuite.com/v1", practice),
           "summary": report.summarise(["validated"]),
           "items": [item(client, "a.pdf", "validated")]}
    report.write(doc, folder)
    return folder


def test_same_named_folders_of_different_practices_are_refused_naming_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two practices whose shard folders were both called `clinic/shard-I-of-2`: their
    reports say which practice they are of, and the merge will not count them as one."""
    a1 = identified(tmp_path / "site-a" / "clinic" / "shard-1-of-2", "a1", "key-of-a", "1")
    b2 = identified(tmp_path / "site-b" / "clinic" / "shard-2-of-2", "b2", "key-of-b", "2")
    out = tmp_path / "out"
    assert cli.main(["report", "merge", str(a1), str(b2), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(a1) in err and str(b2) in err and "different practices" in err
    assert "key-of" not in err  # the id names no key
    assert not out.exists()
    a2 = identified(tmp_path / "site-a" / "clinic" / "shard-2-of-2", "a2", "key-of-a", "2")
    assert cli.main(["report", "merge", str(a1), str(a2), "--out", str(out)]) == 0
    doc = json.loads((out / "latest.json").read_text())
    assert {p["practice_id"] for p in doc["parts"]} == {
        report.practice_id("https://api.pracsuite.com/v1", "key-of-a")}


def test_a_practice_id_names_no_secret_and_tells_practices_apart() -> None:
    one = report.practice_id("https://api.pracsuite.com/v1", "k" * 32)
    assert one == report.practice_id("https://api.pracsuite.com/v1/", "k" * 32)
    assert len(one) == 16 and "k" * 4 not in one
    assert one != report.practice_id("https://api.pracsuite.com/v1", "j" * 32)
    assert one != report.practice_id("https://eu.pracsuite.com/v1", "k" * 32)
