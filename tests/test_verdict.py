"""The end-of-deadline verdict (pure): what a `missing` item says, and what is sent again."""

from __future__ import annotations

from dataclasses import replace

from pracsuite_ingest.models import Stage
from pracsuite_ingest.reconcile.verdict import verdict
from pracsuite_ingest.state import ItemRecord

ITEM = ItemRecord(1, "r1", 1, 2, "42", "/a.pdf", "a.pdf", 5, "ab", {}, Stage.UPLOADED, None, 1,
                  "temp/1/a.pdf", None, False, "r1", None, 1.0)


def test_an_upload_whose_candidates_bytes_were_not_read_says_so_and_is_not_sent_again() -> None:
    lost = replace(ITEM, id=2, outcome_unknown=True)
    result = verdict([ITEM, lost], {}, {}, {"42"}, 30.0, unread={1: ["8", "7"], 2: ["9"]})
    errors = {m.item_id: m.error for m in result.missing}
    assert "no PracSuite record appeared" not in errors[1]
    assert "2 new PracSuite records" in errors[1] and "(attachment ids 7, 8)" in errors[1]
    assert "could not be read" in errors[1] and "pracsuite-ingest reconcile" in errors[1]
    # its record may be among them: a lost upload is not sent again on a guess either
    assert result.resend == set()
    assert [m.outcome_unknown for m in result.missing] == [False, True]


def test_without_unread_candidates_an_upload_with_no_record_is_said_so() -> None:
    result = verdict([ITEM], {}, {}, {"42"}, 30.0)
    assert "no PracSuite record appeared within 30s" in result.missing[0].error


def test_an_upload_whose_patient_no_poll_could_list_is_not_declared_missing() -> None:
    # Every poll of patient 42 failed (a list walk cut by its cap, a 500): nobody saw that
    # PracSuite has no record, so the upload stays pending, saying why.
    lost = replace(ITEM, id=2, outcome_unknown=True)
    listed_elsewhere = replace(ITEM, id=3, client_id="43")
    result = verdict([ITEM, lost, listed_elsewhere], {}, {}, set(), 30.0,
                     unlisted={"42": "more than 20,000 records"})
    assert [u.item_id for u in result.unasked] == [1]
    assert "could not be read at any poll" in result.unasked[0].error
    assert "more than 20,000 records" in result.unasked[0].error
    # a lost upload still says it could not be asked; a listed patient's is missing
    assert [m.item_id for m in result.missing] == [2, 3]
    assert "could not be asked" in result.missing[0].error
    assert "no PracSuite record appeared" in result.missing[1].error
    assert result.resend == set()
