"""Matching PracSuite's records to our uploads: the pure rules."""

from __future__ import annotations

from typing import Any

from pracsuite_ingest.reconcile import Upload, match, needs_name, next_poll_interval, view

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
