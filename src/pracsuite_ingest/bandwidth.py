"""The bandwidth cap: `upload.max_bytes_per_second`, for a clinic's link in office hours.

One cap per process, shared by every upload in flight: each chunk of a request body
takes its turn (`BandwidthCap.take`) before it is handed to the connection, in the
order the chunks asked, so uploads in flight share the cap fairly chunk by chunk and
together never go faster than it. `schedule` is the decision, pure; `take` sleeps it.

Pacing (each chunk gets the next free slot of `bytes / rate` seconds) rather than a
token bucket with a burst: a burst is what the cap is there to prevent, and the
kernel's socket buffer already smooths what the cap hands on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


def schedule(free_at: float, now: float, size: int, bytes_per_second: float,
             ) -> tuple[float, float]:
    """(seconds to wait before sending `size` bytes, when the link is free again). Pure.

    The chunk goes out when the link is free (`free_at`), or now if that has passed
    (time the link stood idle is not saved up for later), and holds it for its share.
    """
    start = max(free_at, now)
    return start - now, start + size / bytes_per_second


class BandwidthCap:
    """At most `bytes_per_second` for all uploads of this process together."""

    def __init__(self, bytes_per_second: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if bytes_per_second <= 0:
            raise ValueError("bytes_per_second must be positive")
        self.bytes_per_second = bytes_per_second
        self._clock = clock
        self._free_at = 0.0

    async def take(self, size: int) -> None:
        """Wait for this chunk's turn; the chunk is then sent at once by the caller."""
        wait, self._free_at = schedule(self._free_at, self._clock(), size,
                                       self.bytes_per_second)
        if wait > 0:
            await asyncio.sleep(wait)
