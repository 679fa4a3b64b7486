"""A file name is sent exactly as given: its spaces (leading, trailing, doubled) kept in
every input mode, so that a manifest run and a folder run of the same files agree on
what was sent; a tab or another control character is refused with a reason."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from e2e import config, run_cli
from pracsuite_ingest.local_check import check_local
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions
from pracsuite_ingest.sandbox.ledger import DescriptionMode
from pracsuite_ingest.scan import read_rows

SPACED = ["  leading and trailing spaces  .pdf", "double  space.pdf", " lead.pdf",
          "trail .pdf"]


def spaced_folder(root: Path, client: str = "42") -> Path:
    folder = root / "src" / client
    folder.mkdir(parents=True)
    for name in SPACED:
        (folder / name).write_bytes(f"content of {name!r}".encode())
    return root / "src"


def write_csv(root: Path, rows: list[list[str]]) -> Path:
    """A spreadsheet's export: a BOM and a spaced, capitalised header."""
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8-sig") as fh:
        writer = csv.writer(fh)
        writer.writerow([" Client_ID ", "Path ", " File_Name"])
        writer.writerows(rows)
    return manifest


def test_csv_jsonl_and_folder_rows_keep_the_names_exactly(tmp_path: Path) -> None:
    source = spaced_folder(tmp_path)
    manifest = write_csv(tmp_path, [[" 42 ", f"src/42/{n}", n] for n in SPACED])
    jsonl = tmp_path / "manifest.jsonl"
    jsonl.write_text("".join(json.dumps({"client_id": " 42", "path": f"src/42/{n}"}) + "\n"
                             for n in SPACED))
    for rows in (read_rows(manifest, None), read_rows(jsonl, None), read_rows(None, source)):
        got = sorted((r.client_id, r.file_name, Path(r.path).name, r.problem) for r in rows)
        assert got == sorted(("42", n, n, None) for n in SPACED)


async def test_a_tab_or_control_character_in_a_name_is_refused_with_a_reason(
        tmp_path: Path) -> None:
    spaced_folder(tmp_path)
    manifest = write_csv(tmp_path, [
        ["42", "src/42/lead.pdf", "lead.pdf\t"],       # the tab was silently dropped before
        ["42", "src/42/ lead.pdf", "\tlead.pdf"],
        ["42", "src/42/ lead.pdf", "le\x07ad.pdf"],
    ])
    reasons = [await check_local(row) for row in read_rows(manifest, None)]
    assert reasons[0] == reasons[1] != reasons[2]
    assert isinstance(reasons[0], str) and "a tab (U+0009)" in reasons[0]
    assert isinstance(reasons[2], str) and "a control character (U+0007)" in reasons[2]


async def test_a_path_with_stray_spaces_is_not_found_and_says_why(tmp_path: Path) -> None:
    spaced_folder(tmp_path)
    manifest = write_csv(tmp_path, [["42", "src/42/double  space.pdf ", ""],
                                    ["42", "src/42/nothing.pdf", ""]])
    stray, absent = [await check_local(row) for row in read_rows(manifest, None)]
    assert isinstance(stray, str) and stray.startswith("file not found (")
    assert "used exactly as written" in stray
    assert absent == "file not found"


@pytest.mark.slow
@pytest.mark.parametrize("mode", [DescriptionMode.EMPTY, DescriptionMode.FILE_NAME])
async def test_a_manifest_run_and_a_folder_run_of_spaced_names_send_each_file_once(
        tmp_path: Path, mode: DescriptionMode) -> None:
    source = spaced_folder(tmp_path)
    manifest = write_csv(tmp_path, [[" 42 ", f"src/42/{n}", n] for n in SPACED])
    async with Sandbox(SandboxOptions(validation_delay_s=0.05, description_mode=mode)) as sb:
        cfg = config(tmp_path, sb)
        first = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                              cwd=tmp_path)
        assert first.code == 0, first.stderr[-3000:]
        sent = first.report(tmp_path / "reports")["items"]
        assert sorted(i["file_name"] for i in sent) == sorted(SPACED)
        assert all(i["status"] == "validated" for i in sent)
        assert sorted(i["key"].rsplit("/", 1)[1] for i in sent) == sorted(SPACED)
        again = await run_cli("run", "--config", str(cfg), "--source-dir", str(source),
                              cwd=tmp_path)
        assert again.code == 0, again.stderr[-3000:]
        items = again.report(tmp_path / "reports")["items"]
        assert sorted((i["file_name"], i["status"]) for i in items) == sorted(
            (n, "skipped") for n in SPACED)
        presigned = [json.loads(r.body or "{}").get("file_name")
                     for r in sb.api_requests if r.method == "POST"]
    assert sorted(presigned) == sorted(SPACED)  # each name presigned once, exactly


@pytest.mark.slow
async def test_a_file_an_earlier_version_sent_without_its_spaces_is_not_sent_again(
        tmp_path: Path) -> None:
    source = spaced_folder(tmp_path)
    # what versions that stripped values recorded: the name without its spaces
    stripped = write_csv(tmp_path, [["42", f"src/42/{n}", n.strip()] for n in SPACED])
    async with Sandbox(SandboxOptions(validation_delay_s=0.05)) as sb:
        cfg = config(tmp_path, sb)
        first = await run_cli("run", "--config", str(cfg), "--manifest", str(stripped),
                              cwd=tmp_path)
        assert first.code == 0, first.stderr[-3000:]
        again = await run_cli("run", "--config", str(cfg), "--source-dir", str(source),
                              cwd=tmp_path)
        presigned = sb.stats()["presigned"]
    assert again.code == 0, again.stderr[-3000:]
    items = again.report(tmp_path / "reports")["items"]
    assert sorted((i["file_name"], i["status"]) for i in items) == sorted(
        (n, "skipped") for n in SPACED)
    assert presigned == len(SPACED)  # each file presigned once, by the first run
