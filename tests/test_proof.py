"""Proof of arrival that cannot be fooled, on real servers (the sandbox, and radosgw as
its S3): other people's lookalike records are never claimed, the bytes sent are the
bytes checked, and names are one name in NFC and NFD.

The radosgw tests read every stored object back and compare it with the report.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sqlite3
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from e2e import config, make_files, run_cli, write_manifest
from pracsuite_ingest import state as state_mod
from pracsuite_ingest.errors import SOURCE_CHANGED
from pracsuite_ingest.formbody import FileChanged, form_body
from pracsuite_ingest.models import Identity
from pracsuite_ingest.reconcile.claims import Digest
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions, add_arguments
from pracsuite_ingest.sandbox.faults import FaultPlan
from pracsuite_ingest.sandbox.ledger import DescriptionMode
from pracsuite_ingest.sandbox.options import options_from_args
from pracsuite_ingest.sandbox.store import LocalStore
from pracsuite_ingest.state import State
from pracsuite_ingest.verification import Verifier, VerifyFailed
from radosgw import RadosgwTarget, presign_post, require_radosgw, s3_client
from test_sandbox_external import external

FAST = {"deadline_s": 15, "poll_interval_s": 0.3}


def stored(target: RadosgwTarget, key: str) -> bytes | None:
    """The object radosgw holds at `key`, None when it holds none."""
    client = s3_client(target)
    try:
        body: bytes = client.get_object(Bucket=target.bucket, Key=key)["Body"].read()
    except client.exceptions.NoSuchKey:
        return None
    return body


def assert_report_is_what_radosgw_stored(target: RadosgwTarget, items: list[dict[str, Any]],
                                         stats: dict[str, Any]) -> int:
    """Every validated item's size and sha256 are those of the object its record names."""
    keys = {r["id"]: r["key"] for c in stats["records_created"].values() for r in c["records"]}
    checked = 0
    for it in items:
        if it["status"] == "validated":
            data = stored(target, keys[it["attachment_id"]])
            assert data is not None, it
            assert (it["size"], it["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
            checked += 1
    return checked


def names_with_two_records(stats: dict[str, Any]) -> list[tuple[str, str]]:
    counts = Counter((client, unicodedata.normalize("NFC", r["file_name"]))
                     for client, c in stats["records_created"].items() for r in c["records"])
    return [name for name, n in counts.items() if n > 1]


@pytest.mark.radosgw
@pytest.mark.parametrize("mode", [DescriptionMode.EMPTY, DescriptionMode.FILE_NAME])
async def test_other_peoples_lookalike_records_are_never_claimed(
        tmp_path: Path, mode: DescriptionMode) -> None:
    target = require_radosgw()
    options = SandboxOptions(external_s3=external(target), validation_delay_s=0.2,
                             others_rate=0.3, seed=13, description_mode=mode)
    async with Sandbox(options) as sb:
        rows = make_files(tmp_path, 20, ["1", "2"], size=3000)
        cfg = config(tmp_path, sb, reconcile=FAST)
        result = await run_cli("run", "--config", str(cfg), "--manifest",
                               str(write_manifest(tmp_path, rows)), cwd=tmp_path)
        stats = sb.stats()
    report = result.report(tmp_path / "reports")
    assert result.code == 0, result.stderr[-3000:]
    others = {r["id"] for r in stats["records_by_others"]}
    assert len(others) >= 3  # about 30% of 20: the lookalikes were there to be claimed
    claimed = {it["attachment_id"] for it in report["items"]}
    assert claimed.isdisjoint(others)  # 0 records of others claimed
    own = {r["id"]: r["key"] for c in stats["records_created"].values() for r in c["records"]}
    assert all(own[it["attachment_id"]] == it["key"] for it in report["items"])
    assert report["summary"]["validated"] == 20
    # The bytes decided exactly where a lookalike made the name and size ambiguous.
    crowded = {(r["client_id"], unicodedata.normalize("NFC", r["file_name"]))
               for r in stats["records_by_others"]}
    for it in report["items"]:
        shared = (it["client_id"], unicodedata.normalize("NFC", it["file_name"])) in crowded
        assert it["verified"] is (True if shared else None), it
    assert report["summary"]["verified"] == len(others)
    assert assert_report_is_what_radosgw_stored(target, report["items"], stats) == 20


async def test_with_verify_off_lookalikes_leave_the_upload_missing_and_named(
        tmp_path: Path) -> None:
    async with Sandbox(SandboxOptions(validation_delay_s=0.1, others_rate=1.0)) as sb:
        rows = make_files(tmp_path, 4, ["3"])
        cfg = config(tmp_path, sb, reconcile={"deadline_s": 2, "poll_interval_s": 0.2,
                                              "verify": "off"})
        result = await run_cli("run", "--config", str(cfg), "--manifest",
                               str(write_manifest(tmp_path, rows)), cwd=tmp_path)
        stats = sb.stats()
    report = result.report(tmp_path / "reports")
    assert result.code == 1
    others = {r["id"]: r for r in stats["records_by_others"]}
    ours = {r["file_name"]: r["id"] for r in stats["records_created"]["3"]["records"]}
    assert len(others) == 4
    for it in report["items"]:
        assert it["status"] == "missing" and it["attachment_id"] is None
        theirs = next(i for i, r in others.items() if r["file_name"] == it["file_name"])
        for rid in (theirs, ours[it["file_name"]]):
            assert rid in it["error"]
        assert 'reconcile.verify = "ambiguous"' in it["error"]
    html = (tmp_path / "reports" / "latest.html").read_text()
    assert "Let the bytes decide" in html


@pytest.mark.radosgw
async def test_verify_all_proves_every_item_by_its_bytes(tmp_path: Path) -> None:
    target = require_radosgw()
    async with Sandbox(SandboxOptions(external_s3=external(target),
                                      validation_delay_s=0.1)) as sb:
        rows = make_files(tmp_path, 100, ["1", "2", "3", "4"], size=2000)
        cfg = config(tmp_path, sb, reconcile={**FAST, "verify": "all"})
        result = await run_cli("run", "--config", str(cfg), "--manifest",
                               str(write_manifest(tmp_path, rows)), cwd=tmp_path)
        stats = sb.stats()
    report = result.report(tmp_path / "reports")
    assert result.code == 0, result.stderr[-3000:]
    assert report["summary"]["validated"] == report["summary"]["verified"] == 100
    assert all(it["verified"] is True for it in report["items"])
    html = (tmp_path / "reports" / "latest.html").read_text()
    assert "verified by bytes" in html and "100 of them proven by their bytes" in html
    assert assert_report_is_what_radosgw_stored(target, report["items"], stats) == 100


async def wait_for(sb: Sandbox, kind: str, limit_s: float = 30.0) -> None:
    """Until the sandbox has answered a `kind` request (e.g. the first attachment list)."""
    for _ in range(int(limit_s / 0.02)):
        if sb.stats()["requests"][kind]:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no {kind} request within {limit_s}s")


@pytest.mark.radosgw
async def test_a_file_changed_while_its_upload_waits_is_never_sent_as_the_checked_file(
        tmp_path: Path) -> None:
    target = require_radosgw()
    root = tmp_path / "files"
    files = {name: root / "5" / name for name in
             ("append.pdf", "truncate.pdf", "rewrite.pdf", "link.pdf", "steady.pdf")}
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(1000))
    secret = tmp_path / "outside" / "other patient.pdf"
    secret.parent.mkdir()
    secret.write_bytes(b"another patient's letter " * 40)  # 1,000 bytes too
    rows = [{"client_id": "5", "path": str(p.relative_to(tmp_path))} for p in files.values()]
    manifest = write_manifest(tmp_path, rows)
    # The API holds every request 1.5 s: the files are checked, the client's records
    # listed, and each presign is held while the files change under it.
    options = SandboxOptions(external_s3=external(target), validation_delay_s=0.1,
                             latency_ms=(1500, 1500))
    async with Sandbox(options) as sb:
        cfg = config(tmp_path, sb, reconcile=FAST, input={"root": str(root)})
        run = asyncio.create_task(run_cli("run", "--config", str(cfg), "--manifest",
                                          str(manifest), cwd=tmp_path))
        await wait_for(sb, "list")  # every file is checked: the presigns wait
        with files["append.pdf"].open("ab") as fh:
            fh.write(b"appended after the check" * 20)
        with files["truncate.pdf"].open("r+b") as fh:
            fh.truncate(10)
        rewrite = files["rewrite.pdf"]
        with rewrite.open("r+b") as fh:  # the same size, other bytes, in place
            fh.write(os.urandom(1000))
        files["link.pdf"].unlink()
        files["link.pdf"].symlink_to(secret)
        first = await run
        first_items = first.report(tmp_path / "reports")["items"]
        sb.set_faults(FaultPlan())
        second = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                               cwd=tmp_path)
        stats = sb.stats()
    one = {it["file_name"]: it for it in first_items}
    assert first.code == 1, first.stderr[-3000:]
    for name in ("append.pdf", "truncate.pdf", "rewrite.pdf", "link.pdf"):
        assert one[name]["status"] == "failed"
        assert one[name]["error"] == SOURCE_CHANGED
        assert one[name]["size"] is None and one[name]["sha256"] is None  # none S3 holds
        assert one[name]["key"] and stored(target, one[name]["key"]) is None
    assert one["steady.pdf"]["status"] == "validated"
    two = {it["file_name"]: it for it in second.report(tmp_path / "reports")["items"]}
    for name in ("append.pdf", "truncate.pdf", "rewrite.pdf"):  # sent as they are now
        assert two[name]["status"] == "validated"
        assert two[name]["sha256"] == hashlib.sha256(files[name].read_bytes()).hexdigest()
    assert two["link.pdf"]["status"] == "invalid" and "input.root" in two["link.pdf"]["error"]
    assert two["steady.pdf"]["status"] == "skipped"
    assert names_with_two_records(stats) == []
    every = [*first_items, *second.report(tmp_path / "reports")["items"]]
    assert assert_report_is_what_radosgw_stored(target, every, stats) == 4
    keys = [r["key"] for c in stats["records_created"].values() for r in c["records"]]
    assert all(stored(target, k) != secret.read_bytes() for k in keys)  # 0 bytes from outside


class ChangesAfterFirstRead:
    """A file object that rewrites part of its file, in place, once it has been read
    from: the body is then being streamed when the file changes."""

    def __init__(self, path: Path) -> None:
        self._fh = path.open("rb")
        self._path = path
        self._reads = 0

    def read(self, n: int = -1) -> bytes:
        self._reads += 1
        if self._reads == 2:
            with self._path.open("r+b") as fh:
                fh.seek(self._path.stat().st_size - 100)
                fh.write(os.urandom(100))
        return self._fh.read(n)

    def fileno(self) -> int:
        return self._fh.fileno()

    def tell(self) -> int:
        return self._fh.tell()

    def close(self) -> None:
        self._fh.close()


@pytest.mark.radosgw
async def test_a_file_changed_while_it_streams_is_cut_before_its_end_and_s3_stores_nothing(
        tmp_path: Path, session: aiohttp.ClientSession) -> None:
    target = require_radosgw()
    path = tmp_path / "big.pdf"
    path.write_bytes(os.urandom(3 * 2**20))
    checked = path.read_bytes()
    key = f"temp/proof/{os.urandom(8).hex()}/big.pdf"
    url, fields = presign_post(target, key, max_size=2**27, expires_in=300)
    fh = ChangesAfterFirstRead(path)
    first = fh.read(256 * 1024)
    body = form_body(fields, fh, "big.pdf", size=len(checked), first=first,  # type: ignore[arg-type]
                     sha256=hashlib.sha256(checked).hexdigest(),
                     identity=Identity.of(os.stat(path)))
    with pytest.raises((aiohttp.ClientError, FileChanged)):
        async with session.post(url, data=body) as resp:
            await resp.read()
    fh.close()
    assert body.changed and not body.handed_on
    assert stored(target, key) is None


async def test_nfc_and_nfd_names_are_one_name_in_one_run_and_across_runs(
        tmp_path: Path) -> None:
    nfc = unicodedata.normalize("NFC", "Résumé médical.pdf")
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfc != nfd
    content = os.urandom(1200)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / nfc).write_bytes(content)
    (tmp_path / "b" / nfd).write_bytes(content)
    async with Sandbox(SandboxOptions(validation_delay_s=0.1)) as sb:
        cfg = config(tmp_path, sb, reconcile=FAST)
        both = write_manifest(tmp_path, [{"client_id": "8", "path": f"a/{nfc}"},
                                         {"client_id": "8", "path": f"b/{nfd}"}])
        one_run = await run_cli("run", "--config", str(cfg), "--manifest", str(both),
                                cwd=tmp_path)
        first = one_run.report(tmp_path / "reports")["items"]
        (tmp_path / "manifest.csv").unlink()
        later = write_manifest(tmp_path, [{"client_id": "8", "path": f"b/{nfd}"}])
        next_run = await run_cli("run", "--config", str(cfg), "--manifest", str(later),
                                 cwd=tmp_path)
        stats = sb.stats()
    assert one_run.code == 0, one_run.stderr[-2000:]
    # The two rows are checked side by side: whichever is admitted first is sent.
    assert sorted(it["status"] for it in first) == ["skipped", "validated"]
    sent = next(it for it in first if it["status"] == "validated")
    dup = next(it for it in first if it["status"] == "skipped")
    assert "row" in dup["error"] and dup["attachment_id"] == sent["attachment_id"]
    (again,) = next_run.report(tmp_path / "reports")["items"]
    assert next_run.code == 0 and again["status"] == "skipped"
    assert again["attachment_id"] == sent["attachment_id"]
    (record,) = stats["records_created"]["8"]["records"]
    assert record["file_name"] == sent["file_name"]  # the name sent is the row's, as given
    assert names_with_two_records(stats) == []


def test_the_others_rate_is_a_sandbox_flag() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert options_from_args(parser.parse_args(["--others-rate", "0.3"])).others_rate == 0.3
    assert options_from_args(parser.parse_args([])).others_rate == 0.0


async def test_a_download_stops_past_the_largest_size_that_could_be_ours(
        session: aiohttp.ClientSession) -> None:
    async with Sandbox(SandboxOptions()) as sb:
        data = os.urandom(600_000)
        sb_store = LocalStore(sb.data_dir)
        sb_store.put_bytes(sb.bucket, "temp/x/big.pdf", data)
        url = f"{sb.s3_url}/{sb.bucket}/temp/x/big.pdf"
        verifier = Verifier(session, 2)
        whole = await verifier.digest(url, 1_000_000)
        cut = await verifier.digest(url, 1000)
    assert whole == Digest(600_000, hashlib.sha256(data).hexdigest(),
                           hashlib.md5(data).hexdigest())
    assert cut == Digest(1001, "")
    assert verifier.bytes_read < 600_000 + 2 * 256 * 1024  # the second read stopped early
    with pytest.raises(VerifyFailed, match="plain http://"):
        await verifier.digest("http://storage.example.com/b/k.pdf", 10)


def test_a_state_file_of_an_earlier_version_gains_the_new_columns(tmp_path: Path) -> None:
    old = state_mod.SCHEMA.replace("  name_nfc TEXT,\n  verified INTEGER,\n", "")
    assert old != state_mod.SCHEMA
    db = sqlite3.connect(tmp_path / "s.db")
    db.executescript(old)
    db.execute("INSERT INTO runs (run_id, started_at) VALUES ('r0', 't')")
    db.execute("INSERT INTO items (run_id, seq, line, client_id, path, file_name, size, "
               "sha256, stage, updated_at) VALUES ('r0', 1, 1, '8', '/a', ?, 3, 'ab', "
               "'validated', 0)", (unicodedata.normalize("NFD", "é.pdf"),))
    db.commit()
    db.close()
    state = State.open(tmp_path / "s.db")
    try:
        found = state.find_earlier("r1", "8", unicodedata.normalize("NFC", "é.pdf"), "ab")
    finally:
        state.close()
    assert found is not None and found.verified is None


@pytest.mark.parametrize(("etag", "honour_range", "settled_by_checksum"), [
    ("md5", True, True),        # S3 and radosgw: 206, ETag the MD5, size in Content-Range
    ("none", True, False),      # no ETag: the bytes are downloaded
    ("multipart", True, False),  # "<md5>-2" says nothing of the MD5: downloaded
    ("md5", False, False),      # the Range ignored: the 200's body is the download
])
async def test_a_checksum_stands_in_for_the_download_only_where_the_storage_gives_one(
        session: aiohttp.ClientSession, etag: str, honour_range: bool,
        settled_by_checksum: bool) -> None:
    data = os.urandom(300_000)
    async with Sandbox(SandboxOptions(object_etag=etag, honour_range=honour_range)) as sb:
        LocalStore(sb.data_dir).put_bytes(sb.bucket, "temp/x/a.pdf", data)
        LocalStore(sb.data_dir).put_bytes(sb.bucket, "temp/x/empty.pdf", b"")
        url = f"{sb.s3_url}/{sb.bucket}/temp/x/a.pdf"
        verifier = Verifier(session, 2)
        found = await verifier.digest(url, 1_000_000, checksum=True)
        empty = await verifier.digest(f"{sb.s3_url}/{sb.bucket}/temp/x/empty.pdf", 10,
                                      checksum=True)
        bounded = await verifier.digest(url, 1000, checksum=True)
    md5 = hashlib.md5(data).hexdigest()
    if settled_by_checksum:
        assert found == Digest(300_000, None, md5)
        assert (verifier.checksums, verifier.downloads) == (2, 1)  # the empty object
        assert bounded == Digest(300_000, None, md5)  # its size alone says: not ours
    else:
        assert found == Digest(300_000, hashlib.sha256(data).hexdigest(), md5)
        assert verifier.checksums == 0
        assert bounded == Digest(1001, "")  # a 200 to a Range is read only so far
    assert empty == Digest(0, hashlib.sha256(b"").hexdigest(), hashlib.md5(b"").hexdigest())


@pytest.mark.radosgw
async def test_radosgw_answers_a_one_byte_range_with_the_objects_md5_and_size(
        session: aiohttp.ClientSession) -> None:
    target = require_radosgw()
    data = os.urandom(70_000)
    client = s3_client(target)
    key = f"temp/proof-checksum/{os.urandom(6).hex()}/a.pdf"
    client.put_object(Bucket=target.bucket, Key=key, Body=data)
    try:
        url = client.generate_presigned_url(
            "get_object", Params={"Bucket": target.bucket, "Key": key}, ExpiresIn=300)
        verifier = Verifier(session, 2)
        found = await verifier.digest(url, 1_000_000, checksum=True)
    finally:
        client.delete_object(Bucket=target.bucket, Key=key)
    assert found == Digest(70_000, None, hashlib.md5(data).hexdigest())
    assert (verifier.checksums, verifier.downloads, verifier.bytes_read) == (1, 0, 1)
