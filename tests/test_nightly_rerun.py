"""Nightly runs cost what changed (issue 22.1; docs/contract.md, "A rerun costs only
what changed"): a file whose identity on disk (device, inode, size, mtime, ctime) is
what an earlier run recorded for the row's validated upload is skipped without being
opened; any change means it is read, and new content is sent as a new attachment whose
item names the earlier one in `replaces`, even when the rewrite put the old size and
mtime back (the ctime moves).

"Not opened" is measured in the worker's own process: a `sitecustomize` module on its
PYTHONPATH installs an audit hook that writes down every path `open` is asked for, and
at exit the process's `rchar` (bytes read by syscalls, /proc/self/io)."""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from e2e import CliResult, config, make_files, run_cli, write_manifest
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions

PROBE = '''
import atexit, os, sys
_log = os.environ.get("OPEN_PROBE_LOG")
if _log:
    _opened = []
    def _hook(event, args):
        if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            _opened.append(os.fsdecode(args[0]))
    sys.addaudithook(_hook)
    def _write():
        try:
            with open("/proc/self/io") as fh:
                rchar = next(l.split()[1] for l in fh if l.startswith("rchar:"))
        except OSError:
            rchar = "-1"
        with open(_log, "w") as out:
            out.write(rchar + "\\n" + "\\n".join(_opened))
    atexit.register(_write)
'''
API_KINDS = ("presign", "list", "record", "presign_url", "content")
FILE_BYTES = 64 * 1024


def _api_calls(stats: dict[str, Any]) -> int:
    return sum(sum(stats["requests"][k].values()) for k in API_KINDS)


async def _night(tmp_path: Path, cfg: Path, manifest: Path, n: int) -> tuple[CliResult,
                                                                          int, list[str]]:
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir(exist_ok=True)
    (probe_dir / "sitecustomize.py").write_text(PROBE)
    log = tmp_path / f"opens-{n}.txt"
    env = {"PYTHONPATH": os.pathsep.join([str(probe_dir), os.environ.get("PYTHONPATH", "")]),
           "OPEN_PROBE_LOG": str(log)}
    result = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                           cwd=tmp_path, env=env)
    rchar, *opened = log.read_text().split("\n")
    return result, int(rchar), opened


def _opened_files(opened: list[str], names: set[str]) -> Counter[str]:
    return Counter(Path(p).name for p in opened if Path(p).name in names)


@pytest.mark.slow
async def test_a_nightly_rerun_reads_only_what_changed(tmp_path: Path) -> None:
    rows = make_files(tmp_path, 300, ["1", "2", "3"], size=FILE_BYTES)
    manifest = write_manifest(tmp_path, rows)
    names = {Path(r["path"]).name for r in rows}
    async with Sandbox(SandboxOptions(validation_delay_s=0.05)) as sb:
        cfg = config(tmp_path, sb, upload={"concurrency": 8},
                     reconcile={"deadline_s": 120, "poll_interval_s": 0.2})
        night1, _, opened1 = await _night(tmp_path, cfg, manifest, 1)
        assert night1.code == 0, night1.stderr[-3000:]
        first = {it["path"]: it for it in night1.report(tmp_path / "reports")["items"]}
        assert {it["status"] for it in first.values()} == {"validated"}
        assert _opened_files(opened1, names).keys() == names  # the probe sees the reads

        # Night 2: nothing changed.
        before = sb.stats()
        night2, rchar2, opened2 = await _night(tmp_path, cfg, manifest, 2)
        after2 = sb.stats()
        assert night2.code == 0, night2.stderr[-3000:]
        second = night2.report(tmp_path / "reports")["items"]
        assert {it["status"] for it in second} == {"skipped"}
        assert all(it["attachment_id"] == first[it["path"]]["attachment_id"]
                   and it["sha256"] == first[it["path"]]["sha256"] for it in second)
        assert _opened_files(opened2, names) == Counter()
        assert rchar2 < 300 * FILE_BYTES, rchar2  # all of it would be 19.7 MB
        assert _api_calls(after2) == _api_calls(before), (before["requests"],
                                                          after2["requests"])

        # Night 3: 5 new files, 3 changed (grown), and 1 rewritten in place with its
        # old size and mtime put back.
        new_rows = make_files(tmp_path / "new", 5, ["2"], size=FILE_BYTES,
                              names=["night three.pdf"])
        for r in new_rows:
            r["path"] = str(Path("new") / r["path"])
        grown = rows[10:13]
        for r in grown:
            with (tmp_path / r["path"]).open("ab") as fh:
                fh.write(b"an addendum")
        sneaky = tmp_path / rows[20]["path"]
        st = sneaky.stat()
        data = bytearray(sneaky.read_bytes())
        data[:8] = b"REWRITE!"
        sneaky.write_bytes(bytes(data))
        os.utime(sneaky, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert (sneaky.stat().st_size, sneaky.stat().st_mtime_ns) == (st.st_size,
                                                                       st.st_mtime_ns)
        manifest = write_manifest(tmp_path, rows + new_rows)
        changed = [*grown, rows[20]]
        night3, _, opened3 = await _night(tmp_path, cfg, manifest, 3)
        after3 = sb.stats()
    assert night3.code == 0, night3.stderr[-3000:]
    third = {it["path"]: it for it in night3.report(tmp_path / "reports")["items"]}
    sent = {p for p, it in third.items() if it["status"] == "validated"}
    assert sent == {str(tmp_path / r["path"]) for r in changed + new_rows}
    assert after3["presigned"] - after2["presigned"] == len(changed) + len(new_rows)
    for r in changed:
        path = str(tmp_path / r["path"])
        assert third[path]["replaces"] == first[path]["attachment_id"]
        assert third[path]["attachment_id"] != first[path]["attachment_id"]
    assert all(third[str(tmp_path / r["path"])]["replaces"] is None for r in new_rows)
    assert {p for p, it in third.items() if it["status"] == "skipped"} == (
        set(first) - {str(tmp_path / r["path"]) for r in changed})
    read3 = _opened_files(opened3, names | {Path(r["path"]).name for r in new_rows})
    assert set(read3) == {Path(r["path"]).name for r in changed + new_rows}
    with (tmp_path / "reports" / "latest.csv").open(newline="", encoding="utf-8") as fh:
        by_path = {row["path"]: row for row in csv.DictReader(fh)}
    sneaky_path = str(tmp_path / rows[20]["path"])
    assert by_path[sneaky_path]["replaces"] == first[sneaky_path]["attachment_id"]
    assert by_path[str(tmp_path / rows[0]["path"])]["replaces"] == ""


@pytest.mark.slow
async def test_rehash_reads_every_file_and_sends_none_again(tmp_path: Path) -> None:
    rows = make_files(tmp_path, 6, ["1"], size=2000)
    manifest = write_manifest(tmp_path, rows)
    names = {Path(r["path"]).name for r in rows}
    async with Sandbox(SandboxOptions(validation_delay_s=0.05)) as sb:
        cfg = config(tmp_path, sb, reconcile={"deadline_s": 60, "poll_interval_s": 0.2})
        night1, _, _ = await _night(tmp_path, cfg, manifest, 1)
        assert night1.code == 0, night1.stderr[-3000:]
        cfg = config(tmp_path, sb, input={"rehash": True},
                     reconcile={"deadline_s": 60, "poll_interval_s": 0.2})
        presigned = sb.stats()["presigned"]
        night2, _, opened = await _night(tmp_path, cfg, manifest, 2)
        assert sb.stats()["presigned"] == presigned
    assert night2.code == 0, night2.stderr[-3000:]
    assert set(_opened_files(opened, names)) == names
    items = night2.report(tmp_path / "reports")["items"]
    assert {it["status"] for it in items} == {"skipped"}
    assert all("already validated" in it["error"] for it in items)
