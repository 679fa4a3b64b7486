"""One poll of one patient (I/O): list its records, read what the bytes must decide,
claim, write the claims; and what the round's polls learned meanwhile.

`Polls` is the memory of one reconcile round (`reconciler.Reconciler`): the record
bytes read (`digests`), the files' MD5s, the candidates left ambiguous or crowded, the
records whose bytes differ, the patients listed and why a list could not be read. The
verdict at the deadline reads that memory (`verdict.py`). What is claimed is decided in
pure code (`match.py`, `claims.py`, `twins.py`); big polls do it off the loop
(`big_polls.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pracsuite_ingest import MAX_FILE_BYTES
from pracsuite_ingest.counters import Counters
from pracsuite_ingest.errors import Permanent, QuotaSpent, Retryable
from pracsuite_ingest.models import Stage
from pracsuite_ingest.reconcile.big_polls import Slices, compute, plan_reads, sliced
from pracsuite_ingest.reconcile.claims import Digest, VerifyMode, decide_claims
from pracsuite_ingest.reconcile.groups import UploadIndex, in_item_order, record_groups
from pracsuite_ingest.reconcile.match import Evidence, RecordView, Upload, match, named_already, nfc
from pracsuite_ingest.reconcile.records import OnAnswer, PresignAnswer, RecordReader
from pracsuite_ingest.reconcile.sources import ListUploads, UploadSource
from pracsuite_ingest.reconcile.twins import twins, twins_text
from pracsuite_ingest.state import ItemRecord, State
from pracsuite_ingest.state_reads import KEYS_A_STATEMENT, Waiting
from pracsuite_ingest.verification import FileMD5s, Verifier, VerifyFailed

Found = dict[int, tuple[str, bool]]  # item -> (record, whether its bytes were compared)


def _size_limit(uploads: list[Upload]) -> int:
    """The most bytes a record may hold to be one of `uploads`."""
    return max((u.size for u in uploads if u.size is not None), default=MAX_FILE_BYTES)


def _unnamed(records: Sequence[RecordView], skip: bytearray, names: Mapping[str, str],
             index: UploadIndex) -> list[RecordView]:
    """The records whose `presign_url` name is still to be read: not `skip`ped (proven,
    or named by their own strings), not named yet, of a size an upload has (pure; `names`
    is only asked, never walked: another poll may add to it meanwhile)."""
    return [r for i, r in enumerate(records) if not skip[i] and r.record_id not in names
            and index.size_wanted(r.file_size)]


class Polls:
    """The polls of one round: each `poll` looks at one patient; what they learn is
    kept here for the later polls and the verdict.

    `started(client_id)`: how many uploads of the patient have started so far (the
    upload phase's `Activity`): a poll during which it changes keeps only proven claims.
    `on_quota`: what to do when PracSuite's quota is spent (None: `QuotaSpent` is raised).
    """

    def __init__(self, state: State, run_id: str, reader: RecordReader, verifier: Verifier,
                 mode: VerifyMode, log: Any, counters: Counters,
                 started: Callable[[str], int],
                 on_quota: Callable[[QuotaSpent], None] | None = None) -> None:
        self.state, self.run_id, self.log, self.c = state, run_id, log, counters
        self.reader, self.verifier, self.mode = reader, verifier, mode
        self.uploads_started, self.on_quota = started, on_quota
        self.digests: dict[str, Digest] = {}  # records whose bytes were read
        self.md5s = FileMD5s()  # the files' MD5, for the storage's checksum
        self.ambiguous: dict[int, list[str]] = {}  # verify off: candidates left unclaimed
        self.crowded: dict[int, list[str]] = {}  # name and size could not tell, this round
        self.unread: dict[int, list[str]] = {}  # candidates whose bytes are yet to be read
        self.listed: set[str] = set()  # clients whose records a poll of this round read
        self.list_errors: dict[str, str] = {}  # why a client's records could not be read
        self.differ: dict[int, set[str]] = {}  # records whose bytes are not the upload's
        self._snapshots: dict[tuple[str, str], frozenset[str]] = {}  # once taken, fixed
        self._pathed: set[int] = set()  # items whose path `md5s` was told

    async def poll(self, client_id: str, uploads: list[Upload] | UploadSource,
                   limit_s: float, generation: int | None = None) -> tuple[bool, int]:
        """One look at the client's records: whether it was complete (False if
        PracSuite could not be asked, or not fully), and how many uploads it validated.

        Only uploads that finished are asked about (`uploads`: a list, or where to read
        them, `sources.StateUploads`: items at stage uploaded, missing, or outcome
        unknown). When an upload of the client started during the poll, its record may
        be in the list without its item among `uploads`: then only claims that a key or
        the bytes prove are kept; name and size alone wait for the next. `generation`:
        the patient's uploads started when it was chosen (default: now).

        The uploads are read twice (an index, then a group of names at a time,
        `groups.py`): a poll holds a few tens of bytes per upload, and one group.
        """
        if generation is None:
            generation = self.uploads_started(client_id)
        source = ListUploads(uploads) if isinstance(uploads, list) else uploads
        excluded = self.state.claimed(client_id)
        index, own = await self._index(client_id, source)
        until = asyncio.get_running_loop().time() + limit_s
        records: Sequence[RecordView] | None = None
        complete, validated = True, 0
        try:
            if index.count:
                async with asyncio.timeout_at(until):
                    walked = await self.reader.walk(
                        client_id, self.reader.relevant(index, index.hidden | excluded),
                        index.largest_before + len(excluded) + index.count)
                    await self._names(source, index, walked, excluded)
                    self.listed.add(client_id)  # as before: once the names are read too
                    records = walked
        except QuotaSpent as exc:
            if self.on_quota is None:
                raise
            self.on_quota(exc)  # PracSuite cannot be asked now: nothing is decided
            return False, 0
        except (Permanent, Retryable, TimeoutError) as exc:
            error = str(exc) or type(exc).__name__
            self.log.warning("reconcile poll failed", stage="reconcile", client_id=client_id,
                             error=error)
            self.list_errors[client_id] = error
            return False, 0
        if records is not None:
            try:
                validated, complete = await self._groups(client_id, source, index, records,
                                                         excluded, generation, until)
            except QuotaSpent as exc:
                if self.on_quota is None:
                    raise
                self.on_quota(exc)  # the rest is not decided (claims made are kept)
                return False, 0
        found: Found = {u.item_id: (rid, False) for u, rid in own}
        await self._validate(client_id, [u for u, _ in own], found, {})
        return complete, validated + len(found)

    async def _index(self, client_id: str, source: UploadSource
                     ) -> tuple[UploadIndex, list[tuple[Upload, str]]]:
        """The poll's uploads, read once: those whose own key already has a record
        (another row of the same upload claimed it: proof), and an index of the others."""
        index, own = UploadIndex(), []
        async for page in source.by_name():
            by_key = await self._claimed_keys(client_id, page)
            slices = Slices()
            for up in page:
                rid = by_key.get(up.key) if up.key else None
                if rid is not None:
                    own.append((up, rid))
                else:
                    index.add(up, nfc(up.file_name))
                await slices.tick()
        return await compute(index.count, index.done), own  # sorts of every upload's hashes

    async def _claimed_keys(self, client_id: str, page: list[Upload]) -> dict[str, str]:
        """Which of these uploads' keys a validated item claimed a record with (key ->
        record id), a few hundred at a time with the loop given back between: each is
        an index seek and a row read, and a page of 2,000 of one patient's 100,000
        uploads held the loop 114 ms in one go (bench/one_patient.py's `held_at`)."""
        asked = [(up.file_name, up.sha256, up.key) for up in page if up.key]
        found: dict[str, str] = {}
        for start in range(0, len(asked), KEYS_A_STATEMENT):  # one statement each
            found.update(self.state.claimed_by_key(
                client_id, asked[start:start + KEYS_A_STATEMENT]))
            await asyncio.sleep(0)
        return found

    async def _group_uploads(self, source: UploadSource, index: UploadIndex,
                             members: list[int]) -> list[Upload]:
        ups: list[Upload] = []
        for g in members:
            ups += await source.named(*index.range_of(g))
        return await sliced(in_item_order(ups, index), self.md5s.of)

    async def _names(self, source: UploadSource, index: UploadIndex,
                     records: Sequence[RecordView], excluded: frozenset[str]) -> None:
        """Read the `presign_url` names of the records that could be an upload's and are
        not named or proven by their own strings (so that every lookalike is seen):
        `match.names_to_read`, group by group."""
        names = self.reader.names
        skip = bytearray(len(records))
        for group in await compute(len(records), record_groups, records, names, index):
            ups = await self._group_uploads(source, index, group.members)
            recs = [records[i] for i in group.records]
            known = {r.record_id: names[r.record_id] for r in recs if r.record_id in names}
            size = max(len(ups), len(recs))
            first = await compute(size, match, ups, recs, excluded, known)
            done = await compute(size, named_already, recs, ups, first)
            for i in group.records:
                if records[i].record_id in done:
                    skip[i] = 1
        wanted = await compute(len(records), _unnamed, records, skip, names, index)
        if wanted:
            await self.reader.read_names([r.record_id for r in wanted],
                                         self._early_reader(source, index),
                                         {r.record_id: r.presign_link for r in wanted
                                          if r.presign_link})

    async def _groups(self, client_id: str, source: UploadSource, index: UploadIndex,
                      records: Sequence[RecordView], excluded: frozenset[str], generation: int,
                      until: float) -> tuple[int, bool]:
        """Match, read what the bytes must decide, claim: one group at a time. How many
        were validated, and whether the poll stayed complete."""
        names = self.reader.names
        stale = {i for i in self.unread if index.has(i)}  # no candidate left: not unread
        validated, complete = 0, True
        for group in await compute(len(records), record_groups, records, names, index):
            ups = await self._group_uploads(source, index, group.members)
            recs = [records[i] for i in group.records]
            known = {r.record_id: names[r.record_id] for r in recs if r.record_id in names}
            evidence = await compute(max(len(ups), len(recs)), match, ups, recs, excluded,
                                     known)
            if complete:  # a poll cut short reads no more bytes, and decides on those read
                complete = await self._bytes_in_time(client_id, ups, evidence, recs, until)
            claimed, complete = await self._claims(client_id, ups, evidence, generation,
                                                   complete)
            stale.difference_update(u.item_id for u in ups)
            doubles = await compute(len(claimed), twins, claimed, ups, evidence,
                                    dict(self.digests))
            await self._validate(client_id, ups, claimed,
                                 {i: twins_text(r) for i, r in doubles.items()})
            validated += len(claimed)
        for item_id in stale:
            self.unread.pop(item_id, None)
        return validated, complete

    async def _bytes_in_time(self, client_id: str, ups: list[Upload], evidence: Evidence,
                             recs: list[RecordView], until: float) -> bool:
        """`_read_bytes` before `until`; False when it could not read them all."""
        links = {r.record_id: r.presign_link for r in recs if r.presign_link}
        try:
            async with asyncio.timeout_at(until):
                await self._read_bytes(client_id, ups, evidence, links)
        except (Permanent, Retryable, TimeoutError) as exc:
            self.log.warning("reconcile poll failed", stage="reconcile", client_id=client_id,
                             error=str(exc) or type(exc).__name__)
            return False
        return True

    def upload_of(self, item: ItemRecord | Waiting) -> Upload:
        """What a poll needs of an item awaiting its record (not the row: its path is read
        again only where the file's MD5 is needed, `_know_paths`)."""
        return Upload(item.id, sys.intern(item.client_id), item.file_name, item.size,
                      item.key or "", self._before(item), item.sha256, seq=item.seq)

    async def uploads_of(self, items: list[ItemRecord]) -> list[Upload]:
        return await sliced(items, self.upload_of)

    def _know_paths(self, uploads: list[Upload]) -> None:
        """The files' paths, for `md5s` to read their MD5 (only for the uploads whose
        record's checksum may decide: a poll of 100,000 kept every path)."""
        for up in uploads:
            if up.item_id not in self._pathed:
                item = self.state.item(up.item_id)
                if item is not None:
                    self.md5s.know(up.item_id, item.path)
                self._pathed.add(up.item_id)

    def _before(self, item: ItemRecord | Waiting) -> frozenset[str]:
        """The snapshot taken before this item's upload: its own run's, or for an upload
        carried from an earlier run, the run that sent it (never this run's)."""
        at = (item.snapshot_run or self.run_id, item.client_id)
        if at not in self._snapshots:
            taken = self.state.snapshot(*at)
            if taken is None:  # not reachable: a run snapshots a client before presigning
                return frozenset()
            self._snapshots[at] = frozenset(taken)
        return self._snapshots[at]

    def _early_reader(self, source: UploadSource, index: UploadIndex) -> OnAnswer | None:
        """What to do with each `presign_url` answer read during the poll (verify
        `all`): a record whose name is an upload's has its bytes read now, while the URL
        is fresh."""
        if not self.mode.bytes_decide_names:
            return None

        async def read_early(rid: str, answer: PresignAnswer) -> None:
            name = nfc(answer.file_name)
            if rid in self.digests or index.group_of_name(name) < 0:
                return
            named = await self._group_uploads_named(source, index, name)
            if named:
                self._know_paths(named)
                checksum = await self.md5s.all_known(named)
                with contextlib.suppress(VerifyFailed):
                    self.digests[rid] = await self.verifier.digest_bounded(
                        answer.url, index.size_limit, checksum=checksum)

        return read_early

    async def _group_uploads_named(self, source: UploadSource, index: UploadIndex,
                                   name: str) -> list[Upload]:
        """The poll's uploads of one NFC name."""
        return await sliced(in_item_order(await source.named(name, name + "\x00"), index),
                            self.md5s.of)

    async def _read_bytes(self, client_id: str, uploads: list[Upload], evidence: Evidence,
                          links: dict[str, str]) -> None:
        """Download what the bytes must decide; each digest is kept as it comes, so a
        poll cut by its time limit loses none of those already read."""
        uploads = await sliced(uploads, self.md5s.of)  # MD5s read back since
        decision, deciding = await compute(len(uploads), plan_reads, uploads, evidence,
                                           self.mode, dict(self.digests),
                                           frozenset(self.crowded))
        if not decision.download:
            return

        async def read_answer(rid: str) -> PresignAnswer:
            return await self.reader.presign(rid, links.get(rid, ""))

        def failed(rid: str, reason: str) -> None:
            self.log.warning("record bytes not read; the next poll tries again",
                             stage="verify", client_id=client_id, attachment_id=rid,
                             error=reason)

        checksum = set()
        slices = Slices()
        for rid in decision.download:
            ups = deciding.get(rid, [])
            # A checksum already read that could not decide: only the bytes can.
            if rid not in self.digests and ups:
                self._know_paths(ups)
            if rid not in self.digests and ups and await self.md5s.all_known(ups):
                checksum.add(rid)
            await slices.tick()
        await self.verifier.digest_records(decision.download, self.reader.answers,
                                           read_answer, _size_limit(uploads), self.digests,
                                           failed, checksum)
        self.log.debug("record bytes read", stage="verify", client_id=client_id,
                       records=len(decision.download), downloads_total=self.verifier.downloads,
                       checksums_total=self.verifier.checksums,
                       bytes_total=self.verifier.bytes_read)

    async def _claims(self, client_id: str, waiting: list[Upload], evidence: Evidence,
                      generation: int, complete: bool) -> tuple[Found, bool]:
        """The claims the evidence and the bytes read allow, and whether the poll stays
        complete; remembers what the verdict will need (ambiguous, other bytes)."""
        decision = await compute(len(waiting), decide_claims, waiting, evidence, self.mode,
                                 dict(self.digests), frozenset(self.crowded))
        claimed = decision.claims
        if self.uploads_started(client_id) != generation:
            claimed = {i: (r, v) for i, (r, v) in claimed.items()
                       if v or evidence.proven.get(i) == r}
            complete = complete and len(claimed) == len(decision.claims)
        for item in waiting:
            item_id = item.item_id
            # Once crowded, crowded for the round: its candidates only add up.
            for memory, found in ((self.crowded, decision.crowded),
                                  (self.ambiguous, decision.ambiguous)):
                if item_id in found:
                    seen = memory.setdefault(item_id, [])
                    seen += [r for r in found[item_id] if r not in seen]
            if item_id in decision.unread:
                self.unread[item_id] = decision.unread[item_id]
            else:
                self.unread.pop(item_id, None)
            if item_id in decision.differ:
                self.differ.setdefault(item_id, set()).update(decision.differ[item_id])
        return claimed, complete

    async def _validate(self, client_id: str, items: list[Upload], found: Found,
                        notes: dict[int, str]) -> None:
        """Claims written, in slices; `notes`: items whose bytes another new record
        holds too. Committed with the state's other writes (every few seconds, or every
        `state.MAX_PENDING_WRITES`), not per poll: polls of many patients share their
        pages. Lost to a crash, a claim is made again by the next run's poll (the
        record is still new to the upload's snapshot and claimed by no other item)."""
        by_id = {i.item_id: i for i in items if i.item_id in found}
        slices = Slices()
        for item_id, (record, verified) in found.items():
            self._validate_one(client_id, by_id[item_id], record, verified,
                               notes.get(item_id))
            await slices.tick()

    def _validate_one(self, client_id: str, item: Upload, record: str, verified: bool,
                      note: str | None) -> None:
        item_id = item.item_id
        self.state.set_stage(item_id, Stage.VALIDATED, attachment_id=record,
                             error=note, verified=True if verified else None)
        if note is not None:
            self.log.warning("another upload of this file exists", stage="reconcile",
                             client_id=client_id, item=item.seq,
                             attachment_id=record, others=note)
        # Claimed: excluded from every later poll, so nothing read of it is needed again.
        self.reader.forget(record)
        self.digests.pop(record, None)
        self.md5s.forget(item_id)
        self._pathed.discard(item_id)
        self.c.tally(Stage.VALIDATED)
        self.c.awaiting -= 1
        self.log.info("item validated", stage="reconcile", client_id=client_id,
                      item=item.seq, attachment_id=record, verified=verified,
                      file_name=item.file_name)
