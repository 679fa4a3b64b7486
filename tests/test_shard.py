"""Sharding: which shard takes a client, from flags or an Indexed Job, and its own paths."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from pracsuite_ingest import cli
from pracsuite_ingest.errors import ConfigError
from pracsuite_ingest.models import Row
from pracsuite_ingest.settings import Settings
from pracsuite_ingest.shard import (
    ENV_COUNT,
    ENV_INDEX,
    Shard,
    apply,
    existing_layouts,
    layout_conflict,
    only_mine,
    parse,
    resolve,
    shard_of,
)


def test_the_hash_never_changes() -> None:
    # Pinned: a different hash would move clients to shards whose state files have
    # never seen their uploads, and every one of them would be sent again.
    assert [shard_of(c, 3) for c in ("1", "2", "3", "42", "1001", "")] == [2, 2, 2, 1, 1, 2]
    assert [shard_of(c, 7) for c in ("1", "2", "3", "42", "1001")] == [3, 4, 2, 3, 6]


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_every_client_falls_in_exactly_one_shard_and_the_shards_are_even(count: int) -> None:
    clients = [str(n) for n in range(1, 3001)]
    owners = {c: [i for i in range(1, count + 1) if Shard(i, count).owns(c)] for c in clients}
    assert all(len(o) == 1 for o in owners.values())
    sizes = Counter(o[0] for o in owners.values())
    assert len(sizes) == count
    assert min(sizes.values()) > 0.8 * len(clients) / count


def test_a_shard_keeps_its_rows_in_input_order_and_a_client_is_never_split() -> None:
    rows = [Row(n, str(n % 10), f"/f{n}.pdf", f"f{n}.pdf") for n in range(100)]
    parts = [list(only_mine(rows, Shard(i, 3))) for i in (1, 2, 3)]
    assert sorted(r.line for p in parts for r in p) == list(range(100))
    for part in parts:
        assert [r.line for r in part] == sorted(r.line for r in part)
    clients = [{r.client_id for r in p} for p in parts]
    assert not (clients[0] & clients[1] or clients[0] & clients[2] or clients[1] & clients[2])
    assert list(only_mine(rows, None)) == rows


@pytest.mark.parametrize("text", ["0/3", "4/3", "1/0", "a/b", "3", "", "1/2/3", "-1/2"])
def test_a_bad_shard_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"shard|I/N"):
        parse(text)


def test_the_flag_wins_and_an_indexed_job_counts_from_zero() -> None:
    assert parse(" 2/5 ") == Shard(2, 5)
    env = {ENV_COUNT: "4", ENV_INDEX: "0"}
    assert resolve(None, env) == Shard(1, 4)
    assert resolve(None, {ENV_COUNT: "4", ENV_INDEX: "3"}) == Shard(4, 4)
    assert resolve("2/3", env) == Shard(2, 3)
    assert resolve(None, {}) is None
    assert resolve(None, {ENV_INDEX: "2"}) is None  # an Indexed Job that does not shard


@pytest.mark.parametrize(("env", "flag", "message"), [
    ({ENV_COUNT: "4"}, None, "JOB_COMPLETION_INDEX is not"),
    ({ENV_COUNT: "4", ENV_INDEX: "4"}, None, "counts from 0"),
    ({ENV_COUNT: "four", ENV_INDEX: "0"}, None, "whole number"),
    ({ENV_COUNT: "0", ENV_INDEX: "0"}, None, "count must be"),
    ({"PRACSUITE_INGEST_SHARD__INDEX": "1"}, None, "SHARD__INDEX"),
    ({}, "5/4", "--shard"),
])
def test_a_bad_shard_setting_is_a_configuration_error(env: dict[str, str], flag: str | None,
                                                       message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve(flag, env)


def test_a_shard_has_its_own_state_and_reports_and_its_share_of_the_rate() -> None:
    base = Settings(state={"path": "/data/state/a.db"}, report={"dir": "/data/reports/a"},
                    api={"requests_per_second": 3.0})  # type: ignore[arg-type]
    mine = apply(base, Shard(2, 3))
    assert mine.state.path == "/data/state/a.db.shard-2-of-3"
    assert mine.report.dir == "/data/reports/a/shard-2-of-3"
    assert mine.api.requests_per_second == pytest.approx(1.0)
    assert mine.upload == base.upload and base.state.path == "/data/state/a.db"


def test_an_auto_shard_adapts_within_its_share_of_the_maximum() -> None:
    base = Settings(api={"requests_per_second": "auto",  # type: ignore[arg-type]
                         "max_requests_per_second": 30.0})
    mine = apply(base, Shard(1, 3))
    assert mine.api.requests_per_second == "auto"
    assert mine.api.max_requests_per_second == pytest.approx(10.0)


def test_a_run_with_another_shard_layout_than_the_state_files_is_refused(
        tmp_path: Path) -> None:
    base = str(tmp_path / "a.db")
    assert existing_layouts(base) == []
    for name in ("a.db.shard-1-of-3", "a.db.shard-1-of-3-wal", "a.db.shard-2-of-3.lock",
                 "b.db.shard-1-of-2"):
        (tmp_path / name).write_text("x")
    found = existing_layouts(base)
    assert [p.name for p in found] == ["a.db.shard-1-of-3"]
    assert layout_conflict(base, Shard(2, 3), found) is None
    assert "3 shards" in (layout_conflict(base, Shard(1, 2), found) or "")
    assert "3 shards" in (layout_conflict(base, None, found) or "")
    (tmp_path / "a.db").write_text("x")
    assert "unsharded" in (layout_conflict(base, Shard(2, 3), existing_layouts(base)) or "")


def test_the_cli_exits_2_for_a_bad_shard_or_a_changed_layout(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("PRACSUITE") or name == ENV_INDEX:
            monkeypatch.delenv(name)
    (tmp_path / "in").mkdir()
    common = ["run", "--dry-run", "--source-dir", "in", "--state", "s.db"]
    assert cli.main([*common, "--shard", "4/3"]) == 2
    assert "--shard" in capsys.readouterr().err
    (tmp_path / "s.db.shard-1-of-2").write_text("")
    assert cli.main([*common, "--shard", "1/3"]) == 2
    assert "2 shards" in capsys.readouterr().err
    monkeypatch.setenv(ENV_COUNT, "2")
    assert cli.main(common) == 2  # count without JOB_COMPLETION_INDEX
    assert ENV_INDEX in capsys.readouterr().err


def test_on_a_shared_limit_a_shard_keeps_the_fleets_whole_rate() -> None:
    # the rate in Redis is the whole fleet's: dividing it per shard would cap the fleet
    base = Settings(api={"requests_per_second": "auto",  # type: ignore[arg-type]
                         "max_requests_per_second": 30.0,
                         "shared_limit": "redis://cache:6379/0"})
    mine = apply(base, Shard(1, 3))
    assert mine.api.max_requests_per_second == 30.0
    assert mine.api.shared_limit == "redis://cache:6379/0"
