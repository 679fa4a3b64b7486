"""Matching PracSuite's records to our uploads: the pure rules."""

from __future__ import annotations

from typing import Any

from pracsuite_ingest.reconcile import (
    Upload,
    candidate,
    in_every_snapshot,
    match,
    needs_name,
    next_poll_interval,
    proven_by_own_key,
    view,
)

UUID_A = "11111111-2222-3333-4444-555555555555"
UUID_B = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


def rec(rid: int, description: str = "", size: int = 10, **extra: Any) -> dict[str, Any]:
    return {"attachment_client_id": rid, "description": description, "file_size": size,
            "file_type": "PDF", "links": {"self": f"/x/{rid}"}, **extra}


def up(item_id: int, name: str = "a.pdf", size: int = 10, uuid: str = UUID_A) -> Upload:
    return Upload(item_id, "42", name, size, f"temp/1/42/1/1/{uuid}/{name}")


def views(*records: dict[str, Any]) -> list[Any]:
    return [v for v in (view(r) for r in records) if v is not None]


def test_uuid_of_the_key_anywhere_in_the_record_is_a_match() -> None:
    records = views(rec(5, links_content=f"https://s3/temp/{UUID_A}/a.pdf"))
    assert match([up(1)], records, set(), {}) == {1: "5"}


def test_description_equal_to_the_file_name_matches_when_sizes_agree() -> None:
    records = views(rec(5, "a.pdf", size=99), rec(6, "a.pdf", size=10))
    assert match([up(1)], records, set(), {}) == {1: "6"}


def test_a_substring_of_the_name_is_not_a_match() -> None:
    records = views(rec(5, "data.pdf"))
    assert match([up(1, "a.pdf")], records, set(), {}) == {}


def test_records_in_the_snapshot_or_claimed_are_never_claimed() -> None:
    records = views(rec(5, "a.pdf"), rec(6, "a.pdf"))
    assert match([up(1)], records, {"5", "6"}, {}) == {}
    assert match([up(1)], records, {"5"}, {}) == {1: "6"}


def test_two_uploads_with_the_same_name_claim_two_records() -> None:
    records = views(rec(7, "a.pdf"), rec(8, "a.pdf"))
    assert match([up(1), up(2, uuid=UUID_B)], records, set(), {}) == {1: "7", 2: "8"}


def test_presign_url_names_match_new_records_without_description() -> None:
    records = views(rec(7), rec(8), rec(9, size=11))
    names = {"7": "b.pdf", "8": "a.pdf", "9": "a.pdf"}
    ups = [up(1, "a.pdf"), up(2, "a.pdf", size=11, uuid=UUID_B)]
    assert match(ups, records, set(), names) == {1: "8", 2: "9"}


def test_needs_name_asks_only_for_new_unmatched_unknown_records() -> None:
    records = views(rec(1), rec(2), rec(3), rec(4))
    assert needs_name(records, {"1"}, ["2"], {"3": "x.pdf"}) == ["4"]


def test_record_without_any_id_is_ignored() -> None:
    assert view({"description": "a.pdf"}) is None


def test_poll_interval_grows_by_half_to_a_cap() -> None:
    assert next_poll_interval(1.0, 10.0) == 1.5
    assert next_poll_interval(10.0, 10.0) == 15.0
    assert next_poll_interval(50.0, 10.0) == 60.0
    assert next_poll_interval(100.0, 120.0) == 120.0


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
    assert match([carried, fresh], records, set(), names) == {1: "5", 2: "6"}
    # a record in an upload's own snapshot is never its candidate, even by name
    assert match([fresh], views(rec(5)), set(), {"5": "b.pdf"}) == {}
    # and the later snapshot does not hide record 5 from the carried upload alone
    assert match([carried], views(rec(5)), set(), names) == {1: "5"}


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
