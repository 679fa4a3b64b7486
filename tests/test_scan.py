"""Reading manifests and folders, and the local checks before any request."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pracsuite_ingest import MAX_FILE_BYTES
from pracsuite_ingest.local_check import check_local, file_name_problem
from pracsuite_ingest.models import LocalFile
from pracsuite_ingest.scan import read_rows


def write(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_csv_rows_resolve_relative_paths_and_carry_extra_columns(tmp_path: Path) -> None:
    m = tmp_path / "m.csv"
    m.write_text('client_id,path,file_name,note\n42,a/b.pdf,,"hi, there"\n7,c.txt,Letter.txt,\n')
    rows = list(read_rows(m, None))
    assert [(r.client_id, r.file_name, r.line) for r in rows] == [
        ("42", "b.pdf", 2), ("7", "Letter.txt", 3)]
    assert rows[0].path == str(tmp_path / "a/b.pdf")
    assert rows[0].extra == {"note": "hi, there"}


def test_csv_malformed_row_names_its_line_and_others_go_on(tmp_path: Path) -> None:
    m = tmp_path / "m.csv"
    m.write_text('client_id,path\n1,a.pdf\n2,"bad"quote.pdf\n3,c.pdf\n,d.pdf\n')
    rows = list(read_rows(m, None))
    problems = [(r.line, r.problem) for r in rows if r.problem]
    assert [r.client_id for r in rows if not r.problem] == ["1", "3"]
    assert problems[0][0] == 3 and "line 3" in (problems[0][1] or "")
    assert problems[1][0] == 5 and "missing client_id" in (problems[1][1] or "")


def test_csv_without_required_column_is_one_invalid_row(tmp_path: Path) -> None:
    m = tmp_path / "m.csv"
    m.write_text("client,path\n1,a.pdf\n")
    rows = list(read_rows(m, None))
    assert len(rows) == 1 and "client_id" in (rows[0].problem or "")


def test_jsonl_rows_and_a_line_that_does_not_parse(tmp_path: Path) -> None:
    m = tmp_path / "m.jsonl"
    m.write_text('{"client_id": 5, "path": "x.pdf"}\n{oops\n\n["not", "object"]\n'
                 '{"client_id": "6", "path": "y.pdf", "file_name": "Ünïcode name.pdf"}\n')
    rows = list(read_rows(m, None))
    assert [(r.line, r.client_id, bool(r.problem)) for r in rows] == [
        (1, "5", False), (2, "", True), (4, "", True), (5, "6", False)]
    assert rows[3].file_name == "Ünïcode name.pdf"
    assert "line 2" in (rows[1].problem or "")


def test_directory_rows_take_client_from_first_folder_and_skip_hidden(tmp_path: Path) -> None:
    write(tmp_path / "42" / "deep" / "er" / "a.pdf")
    write(tmp_path / "42" / ".hidden.pdf")
    write(tmp_path / ".git" / "x.pdf")
    write(tmp_path / "7" / "b.txt")
    write(tmp_path / "stray.pdf")
    rows = list(read_rows(None, tmp_path))
    good = sorted((r.client_id, r.file_name) for r in rows if not r.problem)
    assert good == [("42", "a.pdf"), ("7", "b.txt")]
    assert [r.file_name for r in rows if r.problem] == ["stray.pdf"]


def test_rows_are_a_stream_not_a_list(tmp_path: Path) -> None:
    m = tmp_path / "m.csv"
    m.write_text("client_id,path\n1,a.pdf\n")
    rows = read_rows(m, None)
    assert iter(rows) is rows  # a generator: nothing read until asked


@pytest.mark.parametrize(("name", "ok"), [
    ("a.pdf", True), ("scan 1, \"final\".PDF", True), ("Ünïcode.docx", True),
    ("noext", False), ("line\nbreak.pdf", False), ("tab\there.pdf", False), (".pdf", False),
    ("trailing.", False), ("a/b.pdf", False), ("", False)])
def test_file_name_needs_an_extension_and_no_folder(name: str, ok: bool) -> None:
    assert (file_name_problem(name) is None) is ok


async def test_check_local_hashes_and_sizes_a_good_file(tmp_path: Path) -> None:
    f = write(tmp_path / "1" / "a.pdf", b"hello")
    m = tmp_path / "m.csv"
    m.write_text(f"client_id,path\n1,{f}\n")
    (row,) = read_rows(m, None)
    local = await check_local(row)
    assert isinstance(local, LocalFile)
    assert local.size == 5
    assert local.sha256 == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"


async def test_check_local_reasons(tmp_path: Path) -> None:
    at_limit = tmp_path / "limit.pdf"
    with at_limit.open("wb") as fh:
        fh.truncate(MAX_FILE_BYTES)  # sparse: costs no disk
    over = tmp_path / "over.pdf"
    with over.open("wb") as fh:
        fh.truncate(MAX_FILE_BYTES + 1)
    unreadable = write(tmp_path / "secret.pdf")
    unreadable.chmod(0)
    (tmp_path / "folder.pdf").mkdir()
    m = tmp_path / "m.csv"
    m.write_text("client_id,path\n1,missing.pdf\n1,over.pdf\n1,folder.pdf\n1,secret.pdf\n"
                 "1,limit.pdf\n")
    results = [await check_local(r) for r in read_rows(m, None)]
    assert results[0] == "file not found"
    assert "104,857,601 bytes" in str(results[1])
    assert str(results[2]).startswith("not a regular file (a folder)")
    if os.geteuid() != 0:  # root reads anything
        assert "not readable" in str(results[3])
    assert isinstance(results[4], LocalFile) and results[4].size == MAX_FILE_BYTES
