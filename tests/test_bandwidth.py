"""upload.max_bytes_per_second: one cap shared fairly by the uploads in flight."""

from __future__ import annotations

import pytest

from pracsuite_ingest.bandwidth import schedule

CHUNK = 256 * 1024


def paced(uploads: dict[str, int], rate: float) -> tuple[float, dict[str, float]]:
    """Simulated: each upload asks for its next chunk as soon as its last one went;
    (seconds until every byte went, when each upload finished)."""
    left = dict(uploads)
    ready = dict.fromkeys(uploads, 0.0)  # when each upload asks for its next chunk
    free_at, done = 0.0, {}
    while left:
        name = min(left, key=lambda n: (ready[n], n))  # the one that asked first
        size = min(CHUNK, left[name])
        wait, free_at = schedule(free_at, ready[name], size, rate)
        ready[name] += wait + size / rate
        left[name] -= size
        if left[name] == 0:
            done[name] = ready[name]
            del left[name]
    return max(done.values()), done


def test_the_cap_holds_over_a_100_mb_run_for_one_upload_or_eight() -> None:
    rate = 2_000_000.0  # 2 MB/s: a clinic's uplink shared with the front desk
    for uploads in ({"one": 100 * 2**20}, {f"f{i}": 100 * 2**20 // 8 for i in range(8)}):
        took, _ = paced(uploads, rate)
        sent = sum(uploads.values())
        assert sent / took == pytest.approx(rate, rel=0.01)  # never above, not far below


def test_uploads_in_flight_share_the_cap_fairly() -> None:
    # four equal uploads started together finish together: none starves the others
    _, done = paced({f"f{i}": 10 * CHUNK for i in range(4)}, 1_000_000.0)
    assert max(done.values()) - min(done.values()) <= 3 * CHUNK / 1_000_000.0


def test_idle_time_is_not_saved_up_for_a_burst() -> None:
    wait, free_at = schedule(free_at=5.0, now=100.0, size=1000, bytes_per_second=1000.0)
    assert wait == 0.0 and free_at == 101.0
    wait, free_at = schedule(free_at, 100.0, 1000, 1000.0)  # a second chunk at once
    assert wait == 1.0 and free_at == 102.0
