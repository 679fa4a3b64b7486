"""Matching PracSuite's records to our uploads, and what `reconcile.verify` claims: the
pure rules."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from pracsuite_ingest.reconcile.claims import Digest, decide_claims
from pracsuite_ingest.reconcile.match import (
    Evidence,
    Upload,
    candidate,
    in_every_snapshot,
    match,
    needs_name,
    proven_by_own_key,
)
from pracsuite_ingest.reconcile.records import view

UUID_A = "11111111-2222-3333-4444-555555555555"
UUID_B = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
SHA_A, SHA_B = "a" * 64, "b" * 64


def rec(rid: int, description: str = "", size: int = 10, **extra: Any) -> dict[str, Any]:
    return {"attachment_client_id": rid, "description": description, "file_size": size,
            "file_type": "PDF", "links": {"self": f"/x/{rid}"}, **extra}


def up(item_id: int, name: str = "a.pdf", size: int = 10, uuid: str = UUID_A,
       sha: str = SHA_A) -> Upload:
    return Upload(item_id, "42", name, size, f"temp/1/42/1/1/{uuid}/{name}", sha256=sha)


def views(*records: dict[str, Any]) -> list[Any]:
    return [v for v in (view(r) for r in records) if v is not None]


def test_uuid_of_the_key_anywhere_in_the_record_is_proof() -> None:
    records = views(rec(5, links_content=f"https://s3/temp/{UUID_A}/a.pdf"))
    assert match([up(1)], records, set(), {}) == Evidence({1: "5"}, {})


def test_description_equal_to_the_file_name_names_a_candidate_when_sizes_agree() -> None:
    records = views(rec(5, "a.pdf", size=99), rec(6, "a.pdf", size=10))
    assert match([up(1)], records, set(), {}) == Evidence({}, {1: ["6"]})


def test_a_substring_of_the_name_is_not_a_candidate() -> None:
    records = views(rec(5, "data.pdf"))
    assert match([up(1, "a.pdf")], records, set(), {}) == Evidence({}, {})


def test_records_in_the_snapshot_or_claimed_are_never_candidates() -> None:
    records = views(rec(5, "a.pdf"), rec(6, "a.pdf"))
    assert match([up(1)], records, {"5", "6"}, {}) == Evidence({}, {})
    assert match([up(1)], records, {"5"}, {}).named == {1: ["6"]}


def test_presign_url_names_name_candidates_for_records_without_description() -> None:
    records = views(rec(7), rec(8), rec(9, size=11))
    names = {"7": "b.pdf", "8": "a.pdf", "9": "a.pdf"}
    ups = [up(1, "a.pdf"), up(2, "a.pdf", size=11, uuid=UUID_B)]
    assert match(ups, records, set(), names).named == {1: ["8"], 2: ["9"]}


def test_names_are_compared_in_nfc() -> None:
    nfd, nfc = "Re\u0301sume\u0301.pdf", "R\u00e9sum\u00e9.pdf"
    assert match([up(1, nfc)], views(rec(7, nfd)), set(), {}).named == {1: ["7"]}
    assert match([up(1, nfd)], views(rec(7)), set(), {"7": nfc}).named == {1: ["7"]}


def test_needs_name_asks_only_for_new_unmatched_unknown_records_of_a_possible_size() -> None:
    records = views(rec(1), rec(2), rec(3), rec(4), rec(5, size=99))
    assert needs_name(records, {"1"}, ["2"], {"3": "x.pdf"}) == ["4", "5"]
    assert needs_name(records, {"1"}, ["2"], {"3": "x.pdf"}, [up(1)]) == ["4"]


def test_with_verify_all_a_lone_match_is_never_claimed_before_its_bytes_are_read() -> None:
    # Someone else's record with our name and size appeared before ours: alone at this
    # poll, name and size cannot tell it is not ours. Under "all" the bytes decide.
    evidence = Evidence({}, {1: ["7"]})
    first = decide_claims([up(1)], evidence, "all", {})
    assert first.claims == {} and first.download == ["7"] and first.unread == {1: ["7"]}
    theirs = decide_claims([up(1)], evidence, "all", {"7": Digest(10, SHA_B)})
    assert theirs.claims == {} and theirs.differ == {1: ["7"]} and theirs.download == []
    ours = decide_claims([up(1)], Evidence({}, {1: ["7", "8"]}), "all",
                  {"7": Digest(10, SHA_B), "8": Digest(10, SHA_A)})
    assert ours.claims == {1: ("8", True)} and ours.unread == {}


def test_with_verify_ambiguous_a_single_match_is_claimed_without_reading_anything() -> None:
    # One new record of the name and size, one upload of it: nothing is ambiguous.
    decision = decide_claims([up(1)], Evidence({}, {1: ["7"]}), "ambiguous", {})
    assert decision.claims == {1: ("7", False)}
    assert decision.download == [] and decision.crowded == {}


@pytest.mark.parametrize("verify", ["ambiguous", "all"])
def test_more_records_of_a_name_and_size_than_uploads_of_it_are_told_apart_by_bytes(
        verify: str) -> None:
    crowd = Evidence({}, {1: ["7", "8"]})
    first = decide_claims([up(1)], crowd, verify, {})
    assert first.claims == {} and first.download == ["7", "8"]
    assert first.crowded == {1: ["7", "8"]}
    read = decide_claims([up(1)], crowd, verify,
                         {"7": Digest(10, SHA_B), "8": Digest(10, SHA_A)})
    assert read.claims == {1: ("8", True)} and read.differ == {1: ["7"]}


def test_with_verify_ambiguous_two_uploads_naming_one_record_are_told_apart_by_bytes() -> None:
    # Two uploads of one name and size, one record so far: whose is it?
    ups = [up(1), up(2, uuid=UUID_B, sha=SHA_B)]
    decision = decide_claims(ups, Evidence({}, {1: ["7"], 2: ["7"]}), "ambiguous", {})
    assert decision.claims == {} and decision.download == ["7"]
    assert decision.crowded == {1: ["7"], 2: ["7"]}
    read = decide_claims(ups, Evidence({}, {1: ["7"], 2: ["7"]}), "ambiguous",
                         {"7": Digest(10, SHA_B)})
    assert read.claims == {2: ("7", True)}


def test_with_verify_ambiguous_an_upload_once_crowded_is_claimed_only_on_its_bytes() -> None:
    # An earlier poll saw two records of its name and size; this one sees one (the other
    # claimed by another upload, say): the count at any poll up to the verdict decides.
    decision = decide_claims([up(1)], Evidence({}, {1: ["8"]}), "ambiguous", {}, crowded={1})
    assert decision.claims == {} and decision.download == ["8"]


def test_bytes_already_read_that_differ_are_never_claimed_even_when_single() -> None:
    decision = decide_claims([up(1)], Evidence({}, {1: ["7"]}), "ambiguous",
                             {"7": Digest(10, SHA_B)})
    assert decision.claims == {} and decision.differ == {1: ["7"]}


def test_bytes_with_the_same_hash_but_another_size_are_not_ours() -> None:
    decision = decide_claims([up(1)], Evidence({}, {1: ["7"]}), "ambiguous",
                             {"7": Digest(11, SHA_A)})
    assert decision.claims == {}


def test_proof_is_claimed_without_bytes_unless_verify_is_all() -> None:
    evidence = Evidence({1: "5"}, {})
    assert decide_claims([up(1)], evidence, "ambiguous", {}).claims == {1: ("5", False)}
    assert decide_claims([up(1)], evidence, "off", {}).claims == {1: ("5", False)}
    assert decide_claims([up(1)], evidence, "all", {}).download == ["5"]
    assert decide_claims([up(1)], evidence, "all", {"5": Digest(10, SHA_A)}).claims == {
        1: ("5", True)}


def test_with_verify_off_only_a_match_that_name_and_size_single_out_is_claimed() -> None:
    assert decide_claims([up(1)], Evidence({}, {1: ["7"]}), "off", {}).claims == {1: ("7", False)}
    two_records = decide_claims([up(1)], Evidence({}, {1: ["7", "8"]}), "off", {})
    assert two_records.claims == {} and two_records.ambiguous == {1: ["7", "8"]}
    assert two_records.download == []
    # two uploads naming the one record: neither is claimed
    two_uploads = decide_claims([up(1), up(2, uuid=UUID_B, sha=SHA_B)],
                         Evidence({}, {1: ["7"], 2: ["7"]}), "off", {})
    assert two_uploads.claims == {} and two_uploads.ambiguous == {1: ["7"], 2: ["7"]}


def test_each_record_is_claimed_once_even_when_bytes_match_twice() -> None:
    ups = [up(1), up(2, uuid=UUID_B)]
    decision = decide_claims(ups, Evidence({}, {1: ["7"], 2: ["7"]}), "ambiguous",
                      {"7": Digest(10, SHA_A)})
    assert decision.claims == {1: ("7", True)}


def test_record_without_any_id_is_ignored() -> None:
    assert view({"description": "a.pdf"}) is None



def test_each_upload_is_matched_against_the_snapshot_taken_before_it() -> None:
    # Upload 1 (run A, snapshot {1, 2}) lost its S3 answer; its record 5 appeared
    # before run B took its snapshot {1, 2, 5}, and run B then sent upload 2 (record 6).
    # Record 5 is new for upload 1 however many later snapshots hold it.
    records = views(rec(1), rec(2), rec(5), rec(6))
    names = {"1": "a.pdf", "2": "b.pdf", "5": "a.pdf", "6": "b.pdf"}
    carried = Upload(1, "42", "a.pdf", 10, f"temp/1/42/1/1/{UUID_A}/a.pdf",
                     before=frozenset({"1", "2"}))
    fresh = Upload(2, "42", "b.pdf", 10, f"temp/1/42/1/1/{UUID_B}/b.pdf",
                   before=frozenset({"1", "2", "5"}))
    assert match([carried, fresh], records, set(), names).named == {1: ["5"], 2: ["6"]}
    # a record in an upload's own snapshot is never its candidate, even by name
    assert match([fresh], views(rec(5)), set(), {"5": "b.pdf"}) == Evidence({}, {})
    # and the later snapshot does not hide record 5 from the carried upload alone
    assert match([carried], views(rec(5)), set(), names).named == {1: ["5"]}


def test_names_are_read_back_for_records_new_to_any_waiting_upload() -> None:
    old = Upload(1, "42", "a.pdf", 10, "k1", before=frozenset({"1"}))
    new = Upload(2, "42", "b.pdf", 10, "k2", before=frozenset({"1", "5"}))
    assert in_every_snapshot([old, new]) == {"1"}
    assert in_every_snapshot([]) == frozenset()
    records = views(rec(1), rec(5), rec(6))
    assert needs_name(records, in_every_snapshot([old, new]), [], {}) == ["5", "6"]
    assert needs_name(records, in_every_snapshot([new]), [], {}) == ["6"]


def test_an_upload_whose_own_key_proved_a_record_under_another_row_is_that_records() -> None:
    # The same upload carried to a later run is a second item row with the same key.
    ups = [up(1), up(2, uuid=UUID_B)]
    claims = {"7": ups[0].key, "8": "temp/another/upload.pdf", "9": None}
    assert proven_by_own_key(ups, claims) == {1: "7"}
    # and a record claimed by another upload is never a candidate for this one
    assert not candidate(ups[1], "7", claims.keys())
    assert candidate(ups[1], "10", claims.keys())


MD5_A, MD5_B = "c" * 32, "d" * 32


@pytest.mark.parametrize("verify", ["ambiguous", "all"])
def test_the_storages_md5_decides_where_the_files_md5_is_known(verify: str) -> None:
    with_md5 = replace(up(1), md5=MD5_A)
    evidence = Evidence({}, {1: ["7", "8"]})
    checksums = {"7": Digest(10, None, MD5_B), "8": Digest(10, None, MD5_A)}
    decision = decide_claims([with_md5], evidence, verify, checksums)
    assert decision.claims == {1: ("8", True)} and decision.differ == {1: ["7"]}
    # the same MD5 at another size is not ours
    assert decide_claims([with_md5], Evidence({}, {1: ["8"]}), verify,
                         {"8": Digest(11, None, MD5_A)}, crowded={1}).claims == {}
    # the file's MD5 unknown (changed on disk since): a checksum cannot decide, the bytes must
    unknown = decide_claims([up(1)], Evidence({}, {1: ["8"]}), verify,
                            {"8": Digest(10, None, MD5_A)}, crowded={1})
    assert unknown.claims == {} and unknown.download == ["8"] and unknown.differ == {}


def test_with_verify_off_an_upload_once_ambiguous_stays_unclaimed_on_name_alone() -> None:
    # An earlier poll saw two records of its name and size; now one is seen (the other
    # claimed by proof, or gone): name and size alone still cannot tell.
    decision = decide_claims([up(1)], Evidence({}, {1: ["8"]}), "off", {}, crowded={1})
    assert decision.claims == {} and decision.ambiguous == {1: ["8"]}
    # proof still claims it
    assert decide_claims([up(1)], Evidence({1: "8"}, {}), "off", {}, crowded={1}).claims == {
        1: ("8", False)}
