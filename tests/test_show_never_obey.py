"""Show, never obey: text from the manifest, from PracSuite or from S3 that holds escape
sequences (set the window title, clear the screen, ring the bell, CSI) is shown as
escapes on the terminal, never obeyed: console logs, the dry-run plan, the summary,
the fatal messages of `run` and `check`. A file name with a bidi control, a C1 control
or an invisible character is refused (`invalid`, with the reason), and the HTML
report shows such characters as escapes."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from e2e import config, run_cli
from pracsuite_ingest.local_check import file_name_problem
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions
from pracsuite_ingest.visible import visible

HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x9b31m\x7f"  # title, clear screen, C1 CSI, DEL
RAW = ("\x1b", "\x07", "\x9b", "\x7f", "\u202e")


def assert_shown_not_obeyed(text: str) -> None:
    found = [c for c in RAW if c in text]
    assert not found, f"raw control characters reached the terminal: {found!r}"


def test_visible_escapes_every_control_and_invisible_character() -> None:
    assert visible("plain é 心电图 \u200cok") == "plain é 心电图 \u200cok"  # ZWNJ: spelling
    assert visible(HOSTILE) == "\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\x7f"
    assert visible("a\u202eb\u2066c\u200bd\ufeff") == "a\\u202eb\\u2066c\\u200bd\\ufeff"
    assert visible("line\nnext\ttab\r") == "line\\x0anext\\x09tab\\x0d"
    assert visible("line\nnext\ttab\r", keep_lines=True) == "line\nnext\ttab\\x0d"


@pytest.mark.parametrize("name", ["invoice\u202efdp.exe", "a\u2066b.pdf", "a\u200bb.pdf",
                                  "a\x9bb.pdf", "\ufeffa.pdf", "a\u200fb.pdf"])
def test_a_file_name_that_reads_differently_from_what_it_is_is_refused(name: str) -> None:
    problem = file_name_problem(name)
    assert problem is not None and "rename the file" in problem
    assert_shown_not_obeyed(problem)


def test_names_in_persian_and_emoji_spelling_are_kept() -> None:
    # ZWNJ: Persian spelling
    assert file_name_problem("\u0646\u0627\u0645\u0647\u200c\u0647\u0627.pdf") is None
    assert file_name_problem("👩\u200d⚕️ note.pdf") is None  # ZWJ: one emoji


def _manifest(root: Path, rows: list[tuple[str, str, str]]) -> Path:
    (root / "files").mkdir(exist_ok=True)
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["client_id", "path", "file_name", "note"])
        for n, (client, name, note) in enumerate(rows):
            path = root / "files" / f"f{n}.pdf"
            path.write_bytes(b"%PDF-1.4 " + bytes([n]) * 200)
            writer.writerow([client, str(path), name, note])
    return manifest


@pytest.mark.slow
async def test_a_run_shows_hostile_text_from_the_input_and_pracsuite_never_obeys_it(
        tmp_path: Path) -> None:
    # PracSuite's error details carry escape sequences too (it echoes what it was sent).
    opts = SandboxOptions(validation_delay_s=0.1, error_detail_suffix=HOSTILE)
    async with Sandbox(opts) as sb:
        manifest = _manifest(tmp_path, [
            ("1", "letter.pdf", HOSTILE),            # sent: validated
            ("9999", "scan.pdf", ""),                # unknown client: PracSuite's 404
            (f"2{HOSTILE}", "x.pdf", ""),             # a client id that is an attack
            ("3", "invoice\u202efdp.exe", ""),       # reads "invoiceexe.pdf"
            ("3", f"a{HOSTILE}.pdf", ""),            # C0 in a name: refused as before
        ])
        cfg = config(tmp_path, sb, log={"format": "console", "file_names": True,
                                        "level": "debug"})
        plan = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                             "--dry-run", cwd=tmp_path)
        run = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                            cwd=tmp_path)
    for result in (plan, run):
        assert_shown_not_obeyed(result.stdout)
        assert_shown_not_obeyed(result.stderr)
    assert "\\x1b]0;pwned\\x07" in plan.stdout  # the client id, shown in the plan
    assert "\\x1b]0;pwned\\x07" in run.stderr  # PracSuite's detail, shown in a log line
    assert run.code == 1, run.stderr[-2000:]
    items = run.report(tmp_path / "reports")["items"]
    by_name = {it["file_name"]: it for it in items}
    assert by_name["letter.pdf"]["status"] == "validated"
    assert by_name["scan.pdf"]["status"] == "failed"
    bidi = by_name["invoice\u202efdp.exe"]
    assert bidi["status"] == "invalid" and "\\u202e" in bidi["error"]
    page = (tmp_path / "reports" / "latest.html").read_text()
    assert "\u202e" not in page and "invoice\\u202efdp.exe" in page
    assert "\x1b" not in page


@pytest.mark.slow
@pytest.mark.parametrize("command", ["run", "check"])
async def test_a_fatal_message_quoting_pracsuite_is_shown_never_obeyed(
        tmp_path: Path, command: str) -> None:
    async with Sandbox(SandboxOptions(error_detail_suffix=HOSTILE)) as sb:
        manifest = _manifest(tmp_path, [("1", "letter.pdf", "")])
        cfg = config(tmp_path, sb, api={"practice_api_key": "not-the-key"},
                     log={"format": "console"})
        args = ["--manifest", str(manifest)] if command == "run" else []
        result = await run_cli(command, "--config", str(cfg), *args, cwd=tmp_path)
    assert result.code == 3, result.stderr[-2000:]
    assert "api.practice_api_key" in result.stderr
    assert "\\x1b]0;pwned\\x07" in result.stderr
    assert_shown_not_obeyed(result.stderr)
    assert_shown_not_obeyed(result.stdout)
