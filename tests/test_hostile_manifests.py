"""Untrusted manifests: whatever the bytes, the readers never crash, every row is
accounted for, and the CSV report never hands a spreadsheet a formula."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path, PurePath
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from manifest_invariants import check_rows, physical_lines
from pracsuite_ingest.report import csv_cell, to_csv
from pracsuite_ingest.scan import MAX_LINE_CHARS, read_rows

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
CELL = st.text(st.characters(blacklist_categories=["Cs"]), max_size=12)
FORMULAS = st.sampled_from(["=cmd|' /C calc'!A0", "+1+2", "-2+3", "@SUM(A1)", "\t=1", "\r=1"])


def rows_of(tmp_path: Path, name: str, data: bytes, encoding: str = "") -> list[Any]:
    manifest = tmp_path / name
    manifest.write_bytes(data)
    return check_rows(read_rows(manifest, None, encoding=encoding), physical_lines(data))


# ---------------------------------------------------------------- fuzz: arbitrary bytes
@FUZZ
@given(st.binary(max_size=600))
def test_csv_reader_survives_any_bytes(tmp_path: Path, data: bytes) -> None:
    rows_of(tmp_path, "m.csv", b"client_id,path,file_name\n" + data)
    rows_of(tmp_path, "raw.csv", data)
    rows_of(tmp_path, "semi.csv", b" Client_ID ;PATH\n" + data, encoding="cp1252")
    rows_of(tmp_path, "u16.csv", "client_id\tpath\r\n".encode("utf-16") + data)
    rows_of(tmp_path, "u16.jsonl", b"\xff\xfe" + data)


@FUZZ
@given(st.binary(max_size=600))
def test_jsonl_reader_gives_one_row_per_non_blank_line(tmp_path: Path, data: bytes) -> None:
    rows = rows_of(tmp_path, "m.jsonl", data)
    text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", errors="surrogateescape")
    assert len(rows) == sum(1 for line in text if line.strip())


# ------------------------------------------------------- fuzz: well-formed, hostile cells
# cp1252 cells: letters whose bytes (0xC0 and up) never form UTF-8 by chance
CP1252_CELL = st.text(st.sampled_from("abcXYZ 09-_.,;\t\"'éüßÆøÖ"), max_size=12)
# How practice systems and spreadsheets write a manifest: (codec, BOM, label)
ENCODINGS = [("utf-8", b"", ""), ("utf-8", b"\xef\xbb\xbf", ""),
             ("utf-16-le", b"\xff\xfe", ""), ("utf-16-be", b"\xfe\xff", ""),
             ("cp1252", b"", "cp1252")]


@FUZZ
@given(data=st.data(), bom=st.booleans(), terminator=st.sampled_from(["\r\n", "\n"]),
       bad_utf8_at=st.integers(min_value=0, max_value=8),
       delimiter=st.sampled_from([",", ";", "\t"]),
       header=st.sampled_from([("client_id", "path"), (" Client_ID ", "PATH "),
                               ("CLIENT_ID", " Path")]),
       encoding=st.sampled_from(ENCODINGS))
def test_csv_rows_round_trip_and_a_bad_byte_spoils_only_its_row(
        tmp_path: Path, data: st.DataObject, bom: bool, terminator: str, bad_utf8_at: int,
        delimiter: str, header: tuple[str, str], encoding: tuple[str, bytes, str]) -> None:
    codec, mark, setting = encoding
    cell = CP1252_CELL if codec == "cp1252" else CELL | FORMULAS
    records: list[tuple[str, str, str]] = data.draw(
        st.lists(st.tuples(cell, cell, cell), max_size=8))
    if codec != "utf-8":
        bad_utf8_at = -1  # bytes that are not UTF-8 are the UTF-8 reader's case
        bom = False
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator=terminator, delimiter=delimiter)
    writer.writerow([*header, "note"])
    chunks = [buf.getvalue().encode(codec)]
    marker = "\ue000BAD"
    for i, rec in enumerate(records):
        if i == bad_utf8_at:
            rec = (rec[0], rec[1], marker)
        buf = io.StringIO(newline="")
        # csv.writer leaves a lone \r unquoted under a "\n" terminator: quote every cell
        quoting = csv.QUOTE_MINIMAL if terminator == "\r\n" else csv.QUOTE_ALL
        csv.writer(buf, lineterminator=terminator, quoting=quoting,
                   delimiter=delimiter).writerow(rec)
        line = buf.getvalue().encode(codec)
        if i == bad_utf8_at:  # invalid UTF-8 in the note cell
            line = line.replace(marker.encode(), b"\xff\xfe")
        chunks.append(line)
    body = (b"\xef\xbb\xbf" if bom else mark) + b"".join(chunks)
    rows = rows_of(tmp_path, "m.csv", body, encoding=setting)
    expected = [(i, rec) for i, rec in enumerate(records)
                if i == bad_utf8_at or any(v.strip() for v in rec)]
    assert len(rows) == len(expected)
    for row, (i, (client_id, path, note)) in zip(rows, expected, strict=True):
        if i == bad_utf8_at:
            assert row.problem is not None and "not valid UTF-8" in row.problem
        elif "\x00" in client_id + path:
            assert row.problem is not None and "NUL byte" in row.problem
        elif not client_id.strip() or not path.strip():
            assert row.problem is not None and "missing" in row.problem
        else:
            assert row.problem is None
            assert row.client_id == client_id.strip()
            assert row.path == str(tmp_path / path)  # exactly as written: spaces kept
            assert row.file_name == PurePath(path.replace("\\", "/")).name
            assert row.extra == {"note": note}


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | CELL,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(CELL, inner, max_size=3),
    max_leaves=8)


@FUZZ
@given(st.lists(st.dictionaries(st.sampled_from(["client_id", "path", "file_name", "x"]),
                                JSON_VALUES, max_size=4), max_size=6))
def test_jsonl_objects_of_any_shape_each_give_one_row(
        tmp_path: Path, objects: list[dict[str, Any]]) -> None:
    data = "".join(json.dumps(o) + "\n" for o in objects).encode()
    rows = rows_of(tmp_path, "m.jsonl", data)
    assert [r.line for r in rows] == list(range(1, len(objects) + 1))
    for row, obj in zip(rows, objects, strict=True):
        ok_id = (isinstance(obj.get("client_id"), str) and obj["client_id"].strip()) or (
            isinstance(obj.get("client_id"), int) and not isinstance(obj["client_id"], bool))
        ok_path = isinstance(obj.get("path"), str) and obj["path"].strip()
        ok_name = obj.get("file_name") is None or isinstance(obj.get("file_name"), str)
        text = json.dumps([obj.get("client_id"), obj.get("path"), obj.get("file_name")])
        if ok_id and ok_path and ok_name and "\\u0000" not in text:
            assert row.problem is None and row.extra == {k: v for k, v in obj.items()
                                                        if k == "x"}
        else:
            assert row.problem is not None


# ------------------------------------------------------------------- the named cases
def test_invalid_utf8_mid_stream_is_one_invalid_row_and_the_rest_go_on(tmp_path: Path) -> None:
    data = b"client_id,path\n1,a.pdf\n2,caf\xe9.pdf\n3,c.pdf\n"
    rows = rows_of(tmp_path, "m.csv", data)
    assert [(r.line, r.problem is None) for r in rows] == [(2, True), (3, False), (4, True)]
    assert "line 3: not valid UTF-8" in (rows[1].problem or "")
    assert rows[1].path == str(tmp_path / "caf\ufffd.pdf")  # what could be read
    jsonl = rows_of(tmp_path, "m.jsonl",
                    b'{"client_id": "1", "path": "a.pdf"}\n{"client_id": "\xff", "path": "b"}\n'
                    b'{"client_id": "3", "path": "c.pdf"}\n')
    assert [r.problem is None for r in jsonl] == [True, False, True]


def test_a_utf16_manifest_without_a_bom_says_which_setting_reads_it(tmp_path: Path) -> None:
    rows = rows_of(tmp_path, "m.csv", "client_id,path\n1,a.pdf\n".encode("utf-16-le"))
    assert len(rows) == 1 and "input.encoding = \"utf-16-le\"" in (rows[0].problem or "")
    rows = rows_of(tmp_path, "m.csv", "client_id,path\n1,a.pdf\n".encode("utf-16-le"),
                   encoding="utf-16-le")
    assert [(r.client_id, r.problem) for r in rows] == [("1", None)]


def test_excel_unicode_text_is_read(tmp_path: Path) -> None:
    """Excel's "Unicode Text": UTF-16 LE with a BOM, tab-separated, CRLF."""
    text = "Client_ID\tPath\tFile_Name\r\n7\tscans/é.pdf\tÉchographie 心电图.pdf\r\n"
    rows = rows_of(tmp_path, "m.txt", text.encode("utf-16"))
    assert [(r.client_id, r.path, r.file_name, r.problem) for r in rows] == [
        ("7", str(tmp_path / "scans/é.pdf"), "Échographie 心电图.pdf", None)]


def test_european_excel_semicolons_and_a_spaced_header_are_read(tmp_path: Path) -> None:
    data = b"\xef\xbb\xbf Client_ID ; PATH ;Note\r\n42;a,b.pdf;x\r\n43;c.pdf;z;extra\r\n"
    rows = rows_of(tmp_path, "m.csv", data)
    first = rows[0]
    assert (first.line, first.client_id, first.path, first.problem) == (
        2, "42", str(tmp_path / "a,b.pdf"), None)
    assert rows[0].extra == {"Note": "x"} and rows[0].file_name == "a,b.pdf"
    assert "4 fields, the header has 3" in (rows[1].problem or "")


def test_a_cp1252_export_is_read_with_input_encoding_and_refused_without(
        tmp_path: Path) -> None:
    data = "client_id,path\n1,Müller José.pdf\n2,plain.pdf\n".encode("cp1252")
    rows = rows_of(tmp_path, "m.csv", data, encoding="cp1252")
    assert [(r.path, r.problem) for r in rows] == [
        (str(tmp_path / "Müller José.pdf"), None), (str(tmp_path / "plain.pdf"), None)]
    rows = rows_of(tmp_path, "m.csv", data)  # read as UTF-8: the accented row is refused
    assert rows[0].problem is not None and "input.encoding" in rows[0].problem
    assert "cp1252" in rows[0].problem and rows[1].problem is None


def test_utf8_read_as_cp1252_is_refused_never_sent_mangled(tmp_path: Path) -> None:
    data = "client_id,path\n1,José.pdf\n2,plain.pdf\n".encode()
    rows = rows_of(tmp_path, "m.csv", data, encoding="cp1252")
    assert rows[0].problem is not None and "reads as UTF-8" in rows[0].problem
    assert rows[1].problem is None
    # A byte cp1252 does not define (0x81) in a cp1252 manifest: refused, named.
    rows = rows_of(tmp_path, "n.csv", b"client_id,path\n1,a\x81.pdf\n", encoding="cp1252")
    assert "not valid cp1252" in (rows[0].problem or "")


def test_a_header_naming_a_column_twice_is_refused(tmp_path: Path) -> None:
    rows = rows_of(tmp_path, "m.csv", b"client_id,path,PATH\n1,a.pdf,b.pdf\n")
    assert len(rows) == 1 and "2 'path' columns" in (rows[0].problem or "")


def test_bom_nul_and_missing_columns(tmp_path: Path) -> None:
    rows = rows_of(tmp_path, "m.csv", b"\xef\xbb\xbfclient_id,path\n1,a\x00.pdf\n2\n3,c.pdf\n")
    assert [r.line for r in rows] == [2, 3, 4]
    assert "NUL byte" in (rows[0].problem or "")
    assert "1 fields, the header has 2" in (rows[1].problem or "")
    assert rows[2].problem is None and rows[2].client_id == "3"
    assert "no 'path' column" in (rows_of(tmp_path, "n.csv", b"client_id\n1\n")[0].problem or "")


def test_huge_fields_and_lines_are_rows_not_memory(tmp_path: Path) -> None:
    field = b"x" * 200_000  # past csv's field limit
    line = b"," * (MAX_LINE_CHARS + 10)  # a million tiny fields on one line
    data = b"client_id,path\n1," + field + b"\n2," + line + b"\n3,c.pdf\n"
    rows = rows_of(tmp_path, "m.csv", data)
    assert [r.line for r in rows] == [2, 3, 4]
    assert "field larger than field limit" in (rows[0].problem or "")
    assert f"longer than {MAX_LINE_CHARS:,}" in (rows[1].problem or "")
    assert rows[2].problem is None
    jsonl = rows_of(tmp_path, "m.jsonl", b'{"client_id": "1", "path": "' + b"y" * MAX_LINE_CHARS
                    + b'"}\n{"client_id": "2", "path": "b.pdf"}\n')
    assert [r.problem is None for r in jsonl] == [False, True]


@pytest.mark.parametrize(("line", "reason"), [
    (b'{"client_id": "1", "path": "a.pdf", "n": NaN}', "NaN"),
    (b'{"client_id": "1", "path": "a.pdf", "n": ' + b"9" * 5000 + b"}", "digits"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"client_id": "1", "path": "\\ud800.pdf"}', "unpaired surrogate"),
    (b'{"client_id": true, "path": "a.pdf"}', "must be text or a whole number"),
    (b'{"client_id": "1", "path": ["a.pdf"]}', "must be text"),
    (b'{"client_id": "1", "path": "a.pdf", "file_name": 7}', "must be text"),
    (b'{"client_id": "1", "path": "a\\u0000.pdf"}', "NUL byte"),
])
def test_hostile_json_lines(tmp_path: Path, line: bytes, reason: str) -> None:
    (row,) = rows_of(tmp_path, "m.jsonl", line + b"\n")
    assert row.problem is not None and reason in row.problem


def test_formula_cells_are_escaped_in_the_csv_report() -> None:
    item = {"client_id": "=1+2", "path": "/x/+evil.pdf", "file_name": "@SUM(A1).pdf",
            "size": -1, "sha256": "-", "status": "invalid", "attachment_id": None,
            "key": "\tx", "error": "=cmd|' /C calc'!A0", "attempts": 0,
            "extra": {"note": "=HYPERLINK(\"http://x\")"}}
    row = next(csv.DictReader(io.StringIO(to_csv([item]))))
    assert row["client_id"] == "'=1+2"
    assert row["file_name"] == "'@SUM(A1).pdf" and row["sha256"] == "'-"
    assert row["key"] == "'\tx" and row["error"].startswith("'=")
    assert row["path"] == "/x/+evil.pdf"  # only a leading character is dangerous
    assert row["size"] == "-1"  # a number is a number
    assert json.loads(row["extra"]) == item["extra"]  # JSON starts with {: left as it is
    assert csv_cell("\r=1") == "'\r=1" and csv_cell("ok") == "ok"


async def test_a_hostile_manifest_runs_to_a_report(tmp_path: Path) -> None:
    """The whole worker (dry run) on such a manifest: every row reported, exit 1."""
    from e2e import run_cli

    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "ok.pdf").write_bytes(b"%PDF")
    data = (b"\xef\xbb\xbfclient_id,path,note\n1,1/ok.pdf,=cmd|' /C calc'!A0\n"
            b"2,caf\xe9.pdf,x\n3,a\x00.pdf,x\n4,\"unterminated\n")
    (tmp_path / "m.csv").write_bytes(data)
    result = await run_cli("run", "--dry-run", "--manifest", str(tmp_path / "m.csv"),
                           "--state", str(tmp_path / "s.db"), "--report-dir",
                           str(tmp_path / "r"), "--log-format", "json", cwd=tmp_path)
    assert result.code == 1, result.stderr[-2000:]
    report = result.report(tmp_path / "r", "dry-run")
    assert report["summary"]["total"] == 4 and report["summary"]["pending"] == 1
    lines = list(csv.reader(io.StringIO((tmp_path / "r" / "dry-run.csv").read_text())))
    assert len(lines) == 5  # the header and one line per row
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("codec", "bom", "delimiter", "setting"), [
    ("cp1252", b"", ";", "cp1252"),          # European Excel on an older Windows
    ("utf-16-le", b"\xff\xfe", "\t", ""),     # Excel's "Unicode Text"
])
async def test_a_legacy_export_is_sent_with_its_names_intact(
        tmp_path: Path, codec: str, bom: bytes, delimiter: str, setting: str) -> None:
    from e2e import config, run_cli
    from pracsuite_ingest.sandbox import Sandbox, SandboxOptions

    names = ["Müller José.pdf", "Échographie Œdème.pdf"]
    (tmp_path / "f").mkdir()
    lines = [delimiter.join([" Client_ID ", "PATH", "File_Name "])]
    for n, name in enumerate(names):
        (tmp_path / "f" / f"{n}.pdf").write_bytes(b"%PDF-1.4 " + bytes([n]) * 100)
        lines.append(delimiter.join(["1", f"f/{n}.pdf", name]))
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(bom + ("\r\n".join(lines) + "\r\n").encode(codec))
    async with Sandbox(SandboxOptions(validation_delay_s=0.1)) as sb:
        cfg = config(tmp_path, sb, input={"encoding": setting})
        result = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                               cwd=tmp_path)
        stats = sb.stats()
    assert result.code == 0, result.stderr[-2000:]
    sent = sorted(r["file_name"] for c in stats["records_created"].values()
                  for r in c["records"])
    assert sent == sorted(names)


# ----------------------------------------------------------------------------- atheris
ATHERIS_RUNS = 10_000


def test_atheris_fuzzes_both_readers_without_a_crash(tmp_path: Path) -> None:
    try:
        import atheris  # noqa: F401
    except ImportError:
        reason = ("atheris is not installed (its wheels are for Linux x86_64, Python < 3.13;"
                  " pyproject's dev extra installs it there)")
        if os.environ.get("CI") and sys.platform == "linux" and os.uname().machine == "x86_64" \
                and sys.version_info < (3, 13):
            pytest.fail(reason)
        pytest.skip(reason)
    harness = Path(__file__).parent / "fuzz_manifest.py"
    proc = subprocess.run(
        [sys.executable, str(harness), f"-runs={ATHERIS_RUNS}", "-max_len=2048", "-seed=1",
         f"-artifact_prefix={tmp_path}/"],
        cwd=tmp_path, capture_output=True, text=True, timeout=240,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)}, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Done {ATHERIS_RUNS} runs" in proc.stderr
