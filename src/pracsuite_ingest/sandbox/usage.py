"""Who used the vendor key's budget: API calls granted and throttled per practice key, per second.

PracSuite's rate limit is the vendor key's (API Gateway throttles per key), and every
practice on it draws from the one budget (`SandboxOptions.practice_keys`). An operator
rehearsing a fleet wants to see how the practices shared it: `/_sandbox/stats`'s
`usage` gives, for each practice key, the calls the budget granted (any answer but a
429) and those answered 429 (the budget, an injected 429 or a spent quota), in all and
second by second since the sandbox started. A key is named by its position, never by
itself: "0" is `--practice-key`, "1", "2", ... the `--more-practice-key`s in order.
Calls with a missing or wrong key are counted nowhere here (they never reach the budget).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

KEEP_S = 3600  # seconds of timeline kept per key (a rehearsal of hours keeps its last hour)


@dataclass
class KeyUsage:
    """One practice key's calls: totals, and per second from `from_s` on."""

    granted: int = 0
    throttled: int = 0
    from_s: int = 0  # the second (since the sandbox started) the lists below begin at
    granted_per_s: list[int] = field(default_factory=list)
    throttled_per_s: list[int] = field(default_factory=list)

    def note(self, second: int, granted: bool) -> None:
        if not self.granted_per_s:
            self.from_s = second
        index = second - self.from_s
        if index < 0:  # a clock never runs back; a call decided late counts in its second
            index = 0
        missing = index + 1 - len(self.granted_per_s)
        if missing > 0:
            self.granted_per_s.extend([0] * missing)
            self.throttled_per_s.extend([0] * missing)
        if granted:
            self.granted += 1
            self.granted_per_s[index] += 1
        else:
            self.throttled += 1
            self.throttled_per_s[index] += 1
        drop = len(self.granted_per_s) - KEEP_S
        if drop > 0:
            del self.granted_per_s[:drop], self.throttled_per_s[:drop]
            self.from_s += drop

    def as_dict(self) -> dict[str, Any]:
        return {"granted": self.granted, "throttled": self.throttled, "from_s": self.from_s,
                "granted_per_s": list(self.granted_per_s),
                "throttled_per_s": list(self.throttled_per_s)}


@dataclass
class Usage:
    """Every practice key's `KeyUsage`; seconds count from `started` (monotonic)."""

    started: float = field(default_factory=time.monotonic)
    keys: dict[str, KeyUsage] = field(default_factory=dict)

    def note(self, key: str, now: float, *, granted: bool) -> None:
        """One authenticated API call of practice key `key`, decided at `now`."""
        second = max(0, int(now - self.started))
        self.keys.setdefault(key, KeyUsage()).note(second, granted)

    def snapshot(self, rate_budget: float) -> dict[str, Any]:
        return {"rate_budget": rate_budget,
                "practice_keys": {k: u.as_dict() for k, u in sorted(self.keys.items())}}


def key_label(index: int | None) -> str:
    """The name a practice key is shown by: its position (None: the main `practice_key`)."""
    return "0" if index is None else str(index + 1)
