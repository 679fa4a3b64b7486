"""When reconcile polls which patient: the pure schedule (scheduling.py)."""

from __future__ import annotations

import pytest

from pracsuite_ingest.scheduling import Activity, Due, Schedule


def test_a_patient_is_due_the_first_interval_after_its_last_upload() -> None:
    s = Schedule(2.0)
    s.waiting("a", 100.0)
    s.waiting("b", 101.0)
    assert s.next_due() == Due("a", 102.0)
    assert s.next_due({"b"}) == Due("b", 103.0)
    assert s.next_due(set()) is None


def test_a_later_upload_of_the_patient_starts_its_schedule_over() -> None:
    s = Schedule(2.0)
    s.waiting("a", 100.0)
    s.polled("a", 102.0, found_all=False, found_none=False)
    s.waiting("a", 105.0)
    assert s.due_at("a") == 107.0
    s.waiting("a", 104.0)  # an earlier time is no news
    assert s.due_at("a") == 107.0


def test_a_first_poll_that_found_nothing_raises_the_estimate_for_every_patient() -> None:
    s = Schedule(2.0)
    s.waiting("a", 100.0)
    s.waiting("b", 100.5)
    s.polled("a", 102.0, found_all=False, found_none=True)
    assert s.estimate == 3.0
    assert s.due_at("b") == 103.5  # not polled at 102.5: the delay is longer than that
    assert s.early == 1


def test_simultaneous_misses_at_one_delay_do_not_compound() -> None:
    s = Schedule(2.0)
    for cid in "abcd":
        s.waiting(cid, 100.0)
    for cid in "abcd":
        s.polled(cid, 102.0, found_all=False, found_none=True)
    assert s.estimate == 3.0


def test_unfruitful_polls_back_off_by_half_from_the_first_interval_up_to_a_minute() -> None:
    s = Schedule(2.0)
    s.waiting("a", 0.0)
    at = s.due_at("a")
    waits = []
    for _ in range(12):
        s.polled("a", at, found_all=False, found_none=False)
        nxt = s.due_at("a")
        waits.append(nxt - at)
        at = nxt
    assert waits[:4] == [2.0, 3.0, 4.5, 6.75]
    assert max(waits) == 60.0
    assert waits[-1] == 60.0


def test_a_fruitful_first_poll_lowers_the_estimate_but_never_below_the_first_interval() -> None:
    s = Schedule(2.0)
    s.estimate = 10.0
    s.waiting("a", 0.0)
    s.polled("a", 10.0, found_all=True, found_none=False)
    assert s.estimate == pytest.approx(9.9)
    assert "a" not in s  # every upload found: nothing to poll for
    for i in range(500):
        s.waiting(str(i), 0.0)
        s.polled(str(i), s.estimate, found_all=True, found_none=False)
    assert s.estimate == 2.0


def test_a_partial_poll_or_a_late_one_teaches_nothing() -> None:
    s = Schedule(2.0)
    s.waiting("a", 0.0)
    s.polled("a", 2.0, found_all=False, found_none=False)  # some found: a rejection?
    assert s.estimate == 2.0
    s.waiting("old", -3600.0)  # an upload of an earlier run, polled an hour later
    s.polled("old", 0.0, found_all=False, found_none=True)
    assert s.estimate == 2.0
    s.waiting("b", 0.0)  # a re-poll after a miss is the backoff's, not the estimate's
    s.polled("b", 2.0, found_all=False, found_none=True)
    s.polled("b", 5.0, found_all=False, found_none=True)
    assert s.estimate == 3.0


def test_the_estimate_converges_on_a_fixed_delay_with_few_early_polls() -> None:
    """Patients finishing one every 0.1 s, PracSuite taking 8 s: a few first polls are
    early while the estimate learns, then every first poll finds its uploads."""
    s = Schedule(2.0)
    delay, polls = 8.0, 0
    pending = {f"p{i}": i * 0.1 for i in range(200)}
    for cid, at in pending.items():
        s.waiting(cid, at)
    now = 0.0
    while len(s):
        due = s.next_due()
        assert due is not None
        now = max(now, due.at)
        polls += 1
        found = now - pending[due.client_id] >= delay
        s.polled(due.client_id, now, found_all=found, found_none=not found)
    assert polls <= 200 + 15  # learning costs a few polls, not a share of every patient
    assert delay <= s.estimate <= 1.5 * delay


def test_activity_counts_uploads_in_flight_and_every_start() -> None:
    a = Activity()
    changes = []
    a.on_change = lambda: changes.append(1)
    with a.sending("7"):
        assert a.busy("7")
        a.began("7")
        a.ended("7")
        assert a.busy("7")
    assert not a.busy("7")
    assert a.started("7") == 2
    assert a.started("8") == 0
    assert len(changes) == 2
    with pytest.raises(RuntimeError), a.sending("9"):
        raise RuntimeError
    assert not a.busy("9")


def test_a_first_interval_over_a_minute_is_also_the_longest() -> None:
    s = Schedule(120.0)
    s.waiting("a", 0.0)
    s.polled("a", 120.0, found_all=False, found_none=False)
    s.polled("a", 240.0, found_all=False, found_none=False)
    assert s.due_at("a") == 360.0


def test_every_waiting_patient_gets_a_last_look_before_the_deadline_once() -> None:
    s = Schedule(10.0)
    s.estimate = 600.0  # PracSuite has been slow: the first poll would come after it
    s.waiting("a", 0.0)
    s.waiting("b", 0.0)
    s.polled("b", 80.0, found_all=False, found_none=False)  # polled before the last look
    assert s.next_due(last_look=95.0) == Due("a", 95.0)
    s.polled("a", 95.0, found_all=False, found_none=False)
    assert s.next_due({"a"}, last_look=95.0) == Due("a", 600.0)  # once, not again
    assert s.next_due({"b"}, last_look=95.0) == Due("b", 95.0)
    assert s.next_due({"b"}, last_look=700.0) == Due("b", 600.0)  # its own time first
