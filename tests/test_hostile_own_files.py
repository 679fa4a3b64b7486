"""The worker's own files (config, keys, secrets folder, state, lock, reports) are never
sent as a patient's document, whatever path or link names them; and the folders it
keeps its state and reports in cannot be used to plant links (issue 27, points 1, 4)."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from e2e import config, run_cli
from pracsuite_ingest import localfs
from pracsuite_ingest.errors import StateUnusable
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions
from pracsuite_ingest.state import State

pytestmark = pytest.mark.timeout(240)


async def test_a_manifest_cannot_send_the_workers_own_files(tmp_path: Path) -> None:
    """A real run against the sandbox, keys in files and a secrets folder, input.root
    unset: rows naming the key file (directly, through a link, through a hard link),
    the config, the secrets folder's files, the state file, its lock and -wal, and a
    report are `invalid` with a reason that names no secret; the one real document is
    validated, and no secret's bytes reach the sandbox."""
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    async with Sandbox(SandboxOptions(validation_delay_s=0.05,
                                      data_dir=tmp_path / "sandbox")) as sb:
        keys = tmp_path / "keys"
        keys.mkdir(mode=0o700)
        (keys / "vendor").write_text(sb.vendor_key + "\n")
        (secrets / "practice_api_key").write_text(sb.practice_key + "\n")
        cfg = config(tmp_path, sb, api={"base_url": sb.base_url, "requests_per_second": 200.0,
                                        "vendor_api_key_file": str(keys / "vendor")})
        text = cfg.read_text()  # the keys come from the file and the secrets folder only
        cfg.write_text("\n".join(line for line in text.splitlines()
                                 if not line.startswith(("vendor_api_key =",
                                                         "practice_api_key ="))) + "\n")
        env = {"PRACSUITE_INGEST_SECRETS_DIR": str(secrets)}
        (tmp_path / "doc.pdf").write_bytes(b"%PDF-1.4 a real letter")
        first = tmp_path / "first.csv"  # a first run leaves a state file and reports
        first.write_text("client_id,path\n1,doc.pdf\n")
        result = await run_cli("run", "--config", str(cfg), "--manifest", str(first),
                               cwd=tmp_path, env=env)
        assert result.code == 0, result.stderr[-2000:]
        (tmp_path / "innocent.pdf").symlink_to(keys / "vendor")
        os.link(keys / "vendor", tmp_path / "scan.pdf")
        targets = {
            "2": (keys / "vendor", "API key file (api.vendor_api_key_file)"),
            "3": (tmp_path / "innocent.pdf", "API key file (api.vendor_api_key_file)"),
            "4": (tmp_path / "scan.pdf", "API key file (api.vendor_api_key_file)"),
            "5": (cfg, "configuration file"),
            "6": (secrets / "practice_api_key", "secrets folder"),
            "7": (tmp_path / "state.db", "state file (state.path)"),
            "8": (tmp_path / "state.db.lock", "state file's lock"),
            "9": (tmp_path / "state.db-wal", "state file's -wal"),
            "10": (tmp_path / "reports" / "latest.json", "report folder"),
            "11": (tmp_path / "state.db.sends", "state file's send log"),
        }
        rows = ["client_id,path,file_name", "1,doc.pdf,again.pdf"]
        rows += [f"{c},{p},referral-letter.pdf" for c, (p, _) in targets.items()]
        manifest = tmp_path / "m.csv"
        manifest.write_text("\n".join(rows) + "\n")
        result = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                               cwd=tmp_path, env=env)
        stats = sb.stats()
        stored = [p.read_bytes() for p in (tmp_path / "sandbox").rglob("*") if p.is_file()]
    assert result.code == 1, result.stderr[-2000:]
    items = {it["client_id"]: it for it in result.report(tmp_path / "reports")["items"]}
    assert items["1"]["status"] == "validated"
    for client_id, (_, what) in targets.items():
        item = items[client_id]
        assert item["status"] == "invalid", (client_id, item)
        assert "worker's own" in item["error"] and what in item["error"], item["error"]
        assert str(tmp_path) not in item["error"]  # no path of a key in the reason
    assert set(stats["records_created"]) == {"1"}
    assert stored  # the real document is there
    for blob in stored:
        assert sb.vendor_key.encode() not in blob and sb.practice_key.encode() not in blob
    for secret in (sb.vendor_key, sb.practice_key):
        assert secret not in result.stderr and secret not in result.stdout


def test_check_warns_when_input_root_is_unset() -> None:
    from pracsuite_ingest.own_files import root_unset_warning

    warning = root_unset_warning("")
    assert warning is not None and "input.root" in warning and "warning" in warning
    assert root_unset_warning("/data/input") is None


def test_the_container_and_deploy_confine_the_input() -> None:
    root = Path(__file__).resolve().parent.parent
    assert "PRACSUITE_INGEST_INPUT__ROOT=/data/input" in (root / "Dockerfile").read_text()
    for job in ("migration/job.yaml", "nightly/cronjob.yaml"):
        text = (root / "deploy" / "k8s" / "base" / job).read_text()
        assert "PRACSUITE_INGEST_INPUT__ROOT" in text and "value: /data/input" in text


# ------------------------------------------------------------------ point 4: state folder
def test_a_planted_lock_link_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    """Another user's `state.db.lock` symlink: the state is not opened, the link's target
    keeps its mode, nothing is created where the link points."""
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    target = tmp_path / "victim.conf"
    target.write_text("x")
    target.chmod(0o644)
    (folder / "state.db.lock").symlink_to(target)
    with pytest.raises(StateUnusable, match="symbolic link"):
        State.open(folder / "state.db")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    dangling = tmp_path / "dangling"
    (folder / "state.db.lock").unlink()
    (folder / "state.db.lock").symlink_to(tmp_path / "created-by-the-attacker")
    with pytest.raises(StateUnusable, match="symbolic link"):
        State.open(folder / "state.db")
    assert not (tmp_path / "created-by-the-attacker").exists() and not dangling.exists()


@pytest.mark.parametrize("name", ["state.db", "state.db-wal"])
def test_a_planted_state_link_is_refused(tmp_path: Path, name: str) -> None:
    target = tmp_path / "elsewhere.db"
    target.write_bytes(b"")
    target.chmod(0o644)
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    (folder / name).symlink_to(target)
    with pytest.raises(StateUnusable, match="symbolic link"):
        State.open(folder / "state.db")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_a_planted_send_log_link_is_refused_before_anything_is_read_from_it(
        tmp_path: Path) -> None:
    # The send log is replayed into the state at open: read through a planted link, its
    # lines would become items of our state.
    target = tmp_path / "elsewhere.sends"
    target.write_text(json.dumps({
        "id": 1, "run_id": "r", "seq": 1, "line": 2, "client_id": "7", "path": "/x",
        "file_name": "x.pdf", "stage": "uploading", "key": "temp/x", "updated_at": 1.0,
        "sends": 1}) + "\n")
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    (folder / "state.db.sends").symlink_to(target)
    with pytest.raises(StateUnusable, match="symbolic link"):
        State.open(folder / "state.db")
    (folder / "state.db.sends").unlink()
    with contextlib.closing(sqlite3.connect(folder / "state.db")) as con:
        tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master")}
        assert "items" not in tables or con.execute(
            "SELECT count(*) FROM items").fetchone() == (0,)


def test_private_file_never_follows_a_link(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.write_text("x")
    target.chmod(0o644)
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(OSError, match="symbolic link"):
        localfs.private_file(tmp_path / "link")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


async def test_a_state_or_report_folder_writable_by_everyone_is_refused_exit_2(
        tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    (tmp_path / "m.csv").write_text("client_id,path\n")
    for flag, label in (("--state", "state.path"), ("--report-dir", "report.dir")):
        target = str(shared / "state.db") if flag == "--state" else str(shared / "reports")
        other = ["--report-dir", str(tmp_path / "r")] if flag == "--state" else [
            "--state", str(tmp_path / "s.db")]
        result = await run_cli("run", "--dry-run", "--manifest", str(tmp_path / "m.csv"),
                               flag, target, *other, cwd=tmp_path)
        assert result.code == 2, result.stderr[-2000:]
        assert label in result.stderr and "writable by every user" in result.stderr
    assert not any(shared.iterdir())  # nothing was created there
    shared.chmod(0o1777)  # sticky and ours: others cannot replace what we create
    result = await run_cli("run", "--dry-run", "--manifest", str(tmp_path / "m.csv"),
                           "--state", str(shared / "state.db"), "--report-dir",
                           str(tmp_path / "r"), cwd=tmp_path)
    assert result.code == 0, result.stderr[-2000:]


def test_the_folder_rule() -> None:
    folder_trust_problem = localfs.folder_trust_problem
    me = os.geteuid()
    here = Path("/f")
    assert folder_trust_problem(here, stat.S_IFDIR | 0o700, me, me, "state.path") is None
    assert folder_trust_problem(here, stat.S_IFDIR | 0o2770, 0, me, "state.path") is None
    assert folder_trust_problem(here, stat.S_IFDIR | 0o1777, me, me, "state.path") is None
    assert folder_trust_problem(here, stat.S_IFDIR | 0o1777, 0, me + 1, "x") is not None
    assert folder_trust_problem(here, stat.S_IFDIR | 0o777, me, me, "x") is not None
    other = folder_trust_problem(here, stat.S_IFDIR | 0o755, me + 1, me, "report.dir")
    assert other is not None and "another user" in other and "report.dir" in other


def test_a_report_folder_above_the_input_refuses_reports_only(tmp_path: Path) -> None:
    """report.dir = a folder that also holds the documents: its reports are refused,
    the documents below it are not."""
    from pracsuite_ingest import own_files

    (tmp_path / "shard-1").mkdir()
    report = tmp_path / "shard-1" / "latest.json"
    report.write_text("{}")
    letter = tmp_path / "input" / "1" / "letter.pdf"
    letter.parent.mkdir(parents=True)
    letter.write_bytes(b"%PDF")
    deep_json = tmp_path / "input" / "1" / "export.json"
    deep_json.write_text("{}")
    own_files.guard("settings", own_files.settings_files(None, [], "", str(tmp_path)))
    try:
        def judged(path: Path) -> str | None:
            return own_files.refusal(path.stat(), Path(os.path.realpath(path)))

        refused = judged(report)
        assert refused is not None and "report folder" in refused
        assert judged(letter) is None and judged(deep_json) is None
    finally:
        own_files.guard("settings", [])
