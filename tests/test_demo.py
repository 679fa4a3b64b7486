"""`demo`'s folder rules: where it writes without --out, what it may delete, and a clear
exit 2 (never a traceback) when it may not write. The same rules let the container
image's `demo` work with no flag and no volume (deploy/container-test.sh runs that)."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest

from e2e import run_cli
from pracsuite_ingest import demo
from pracsuite_ingest.demo import DEMO_NAMES, MARKER, default_outs, plan_out, prepare_out


# ------------------------------------------------------------------ the rule, pure
def test_a_new_or_empty_folder_is_used_and_the_demos_own_output_replaced() -> None:
    assert plan_out(None).action == "create"
    assert plan_out(frozenset()).action == "use"
    assert plan_out(frozenset(DEMO_NAMES)).action == "replace"
    assert plan_out(frozenset({MARKER, "reports", "state.db"})).action == "replace"


@pytest.mark.parametrize("entries", [
    {"latest.json"},                                    # a real run's report folder
    {"files", "manifest.csv", "reports", "state.db"},   # looks like the demo's, no marker
    {MARKER, "reports", "Smith, Jane - referral.pdf"},  # the demo's, plus someone's file
])
def test_anything_else_is_refused_without_naming_what_is_there(entries: set[str]) -> None:
    plan = plan_out(frozenset(entries))
    assert plan.action == "refuse"
    assert "did not write" in plan.reason
    assert not any(name in plan.reason for name in entries)  # a file name can be health data


def test_a_file_is_refused() -> None:
    assert plan_out(frozenset(), is_dir=False).action == "refuse"


def test_the_default_is_demo_out_then_the_report_folder_then_the_temp_folder() -> None:
    tmp = Path("/tmp")
    assert default_outs(Path("/app"), "/data/reports", tmp) == [
        Path("/app/demo-out"), Path("/data/reports/demo"), tmp / "pracsuite-ingest-demo"]
    assert default_outs(Path("/home/op"), "reports", tmp)[1] == Path("/home/op/reports/demo")
    assert default_outs(Path("/app"), None, tmp) == [Path("/app/demo-out"),
                                                      tmp / "pracsuite-ingest-demo"]


def test_the_demo_does_not_import_the_cli() -> None:
    # cli imports demo; demo imports `cmd_run` from commands, so there is no import circle
    tree = ast.parse(Path(demo.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "pracsuite_ingest.cli" not in imported


# ------------------------------------------------------------------ the rule, on disk
def test_the_demos_own_output_is_replaced_and_the_folder_kept(tmp_path: Path) -> None:
    out = tmp_path / "mounted"  # stands for a mount point: it must stay
    (out / "files" / "1").mkdir(parents=True)
    (out / "files" / "1" / "a.pdf").write_bytes(b"x")
    (out / "state.db").write_bytes(b"x")
    (out / MARKER).write_text("")
    inode = out.stat().st_ino
    assert prepare_out(out).action == "replace"
    assert out.stat().st_ino == inode
    assert sorted(p.name for p in out.iterdir()) == [MARKER]


def test_a_folder_of_other_files_is_refused_and_untouched(tmp_path: Path) -> None:
    (tmp_path / "latest.json").write_text("a real report")
    (tmp_path / MARKER).write_text("")
    assert prepare_out(tmp_path).action == "refuse"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([MARKER, "latest.json"])
    assert (tmp_path / "latest.json").read_text() == "a real report"


def test_a_new_folder_is_created_private_and_marked(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    assert prepare_out(out).action == "create"
    assert (out / MARKER).is_file()
    assert out.stat().st_mode & 0o777 == 0o700


# ------------------------------------------------------------------ the command
async def test_an_unwritable_out_is_exit_2_with_a_message(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")  # a folder inside a file: unwritable, even for root
    result = await run_cli("demo", "--out", str(tmp_path / "a-file" / "demo"), cwd=tmp_path,
                           limit_s=60)
    assert result.code == 2, result.stderr
    assert "not writable" in result.stderr and "--out" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


async def test_an_out_of_other_files_is_exit_2_and_untouched(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "latest.json").write_text("a real report")
    result = await run_cli("demo", "--out", str(reports), cwd=tmp_path, limit_s=60)
    assert result.code == 2, result.stderr
    assert "the demo deletes only its own" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert [p.name for p in reports.iterdir()] == ["latest.json"]
    assert (reports / "latest.json").read_text() == "a real report"


@pytest.mark.slow
async def test_without_out_it_writes_beside_the_reports_and_replaces_only_its_own(
        tmp_path: Path) -> None:
    # As in the image: ./demo-out cannot be used (here: a file of that name), report.dir
    # is set; the configuration also holds a key, which must never reach the sandbox.
    (tmp_path / "demo-out").write_text("someone's file")
    (tmp_path / "tmp").mkdir()
    env = {"PRACSUITE_INGEST_REPORT__DIR": str(tmp_path / "reports"),
           "PRACSUITE_INGEST_STATE__PATH": str(tmp_path / "state" / "real.db"),
           "PRACSUITE_INGEST_API__VENDOR_API_KEY": "a-real-vendor-key",
           "PRACSUITE_INGEST_LOG__FORMAT": "json", "TMPDIR": str(tmp_path / "tmp")}
    out = tmp_path / "reports" / "demo"
    for _ in range(2):  # the second run replaces the first's output, in the same folder
        result = await run_cli("demo", "--files", "2", cwd=tmp_path, env=env, limit_s=120)
        assert result.code == 0, result.stderr[-3000:]
        assert f"demo: samples, state and reports in {out}" in result.stdout
        assert "demo ok" in result.stdout
    assert (tmp_path / "demo-out").read_text() == "someone's file"
    assert not (tmp_path / "state").exists()  # the configured state.path: never used
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["demo"]
    assert not os.listdir(tmp_path / "tmp")
    names = {p.name for p in out.iterdir()}
    assert MARKER in names and names <= DEMO_NAMES
    runs = [p for p in (out / "reports").glob("*.json") if p.name != "latest.json"]
    assert len(runs) == 1  # the first run's report went with its output
    doc = json.loads((out / "reports" / "latest.json").read_text())
    assert doc["summary"]["validated"] == 2
