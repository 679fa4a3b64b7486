"""`pracsuite-ingest ARGS` in this process, with a watchdog thread timing the event loop.

    BENCH_LOOP_WATCH_OUT=out.json python bench/loop_watch.py run --config ... --manifest ...

The command runs exactly as the CLI runs it (`cli.main`, its loop from `aio`). Every
`TICK_S` a thread asks the running loop to call back (`call_soon_threadsafe`) and times
how long the callback waited: the longest such wait is the longest the loop was held
(by a callback, a slow state write, a CPU-bound match) to within one tick, or not run
at all (on a loaded machine the process waits for a core: the CPU the loop's thread
used during each stall is measured too, `max_stall_cpu_by_phase_ms`, which that wait
does not inflate). A thread, not
a task: a task's own sleep cannot wake while the loop is held, and this way nothing is
added to the loop but the callbacks themselves.

When a callback is `SAMPLE_AFTER_S` late, the thread samples the loop thread's stack
(`sys._current_frames`): `held_at` counts the innermost frames seen in stalls, which
names what held the loop. Stalls are also counted by phase: the first `STARTUP_S`
seconds (imports on the loop), the run, and the report's writing after it
(`commands.write_report`).

`BENCH_BIG_POLL=N` (optional): the first `Reconciler.poll` of at least N uploads writes
the time it began to `BENCH_BIG_POLL_MARK` (a file), for a benchmark that sends SIGTERM
during it (`bench/one_patient.py`). Not part of the product.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pracsuite_ingest import aio, cli

TICK_S = 0.01
SAMPLE_AFTER_S = 0.1  # a callback this late: the loop is held; its stack is sampled
STACK_FRAMES = 6
STARTUP_S = 5.0  # the loop's first seconds: imports and settings, before any file


class Watch:
    """The loop's stalls (ms), as a background thread sees them."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.samples = 0
        self.max_ms = 0.0
        self.max_at_s = 0.0
        self.over_100ms = 0
        self.over_1s = 0
        self.held_over_100ms_s = 0.0
        self.worst: list[tuple[float, float]] = []  # (ms, at s), the longest stalls
        self.phase = "start-up"  # then "run" (after STARTUP_S), "report" (its writing)
        self.max_by_phase: dict[str, float] = {}
        self.max_cpu_by_phase: dict[str, float] = {}  # the loop thread's CPU in a stall
        self.stop = threading.Event()
        self.loop_thread = 0
        self.held_at: dict[str, int] = {}  # the loop thread's stack, sampled in stalls

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        clock = time.pthread_getcpuclockid(threading.get_ident())  # the loop's thread
        self.loop_thread = threading.get_ident()
        threading.Thread(target=self._watch, args=(loop, clock), daemon=True).start()

    def _sample(self, thread_id: int) -> None:
        """The loop thread's innermost frames (the project's and SQLite's callers), while
        it holds the loop: what the longest stalls were doing."""
        frame = sys._current_frames().get(thread_id)
        if frame is None:
            return
        where = [f"{Path(f.filename).name}:{f.lineno} {f.name}"
                 for f in traceback.extract_stack(frame)[-STACK_FRAMES:]]
        key = " < ".join(reversed(where))
        self.held_at[key] = self.held_at.get(key, 0) + 1

    def _watch(self, loop: asyncio.AbstractEventLoop, clock: int) -> None:
        loop_thread = self.loop_thread
        while not self.stop.wait(TICK_S):
            if loop.is_closed():
                return
            if not loop.is_running():
                continue
            ran = threading.Event()
            sent = time.perf_counter()
            cpu = time.clock_gettime(clock)
            try:
                loop.call_soon_threadsafe(ran.set)
            except RuntimeError:  # closed meanwhile
                return
            if not ran.wait(SAMPLE_AFTER_S):  # held: where is the loop's thread now?
                self._sample(loop_thread)
            while not ran.wait(0.5):
                if loop.is_closed() or self.stop.is_set():
                    return
            self._note((time.perf_counter() - sent) * 1e3, sent,
                       (time.clock_gettime(clock) - cpu) * 1e3)

    def _note(self, ms: float, sent: float, cpu_ms: float) -> None:
        self.samples += 1
        if self.phase == "start-up" and sent - self.started > STARTUP_S:
            self.phase = "run"
        self.max_by_phase[self.phase] = max(self.max_by_phase.get(self.phase, 0.0), ms)
        cpu = self.max_cpu_by_phase
        cpu[self.phase] = max(cpu.get(self.phase, 0.0), cpu_ms)
        if ms > self.max_ms:
            self.max_ms, self.max_at_s = ms, sent - self.started
        if ms > 50:
            self.worst = sorted([*self.worst, (ms, sent - self.started)], reverse=True)[:10]
        if ms > 100:
            self.over_100ms += 1
            self.held_over_100ms_s += ms / 1e3
        if ms > 1000:
            self.over_1s += 1

    def as_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "tick_ms": TICK_S * 1e3,
                "max_stall_ms": round(self.max_ms, 1), "max_stall_at_s": round(self.max_at_s, 1),
                "stalls_over_100ms": self.over_100ms, "stalls_over_1s": self.over_1s,
                "held_in_stalls_over_100ms_s": round(self.held_over_100ms_s, 1),
                "worst": [[round(ms), round(at, 1)] for ms, at in self.worst],
                "max_stall_by_phase_ms": {k: round(v) for k, v in self.max_by_phase.items()},
                "max_stall_cpu_by_phase_ms": {
                    k: round(v) for k, v in self.max_cpu_by_phase.items()},
                "held_at": dict(sorted(self.held_at.items(), key=lambda kv: -kv[1])[:15])}


def watched(factory: Callable[[], Callable[[], asyncio.AbstractEventLoop] | None],
            watch: Watch) -> Callable[[], Callable[[], asyncio.AbstractEventLoop]]:
    def make() -> Callable[[], asyncio.AbstractEventLoop]:
        base = factory() or asyncio.new_event_loop

        def loop() -> asyncio.AbstractEventLoop:
            created = base()
            watch.attach(created)
            return created

        return loop

    return make


def mark_big_poll(threshold: int, mark: Path) -> None:
    from pracsuite_ingest.reconcile import reconciler

    original = reconciler.Reconciler.poll
    marked: list[float] = []

    async def poll(self: Any, client_id: str, items: Any, *args: Any,
                   **kwargs: Any) -> tuple[bool, int]:
        # A list of uploads, or where a poll reads them (`reconcile.sources`: count them).
        count = (len(items) if isinstance(items, list)
                 else self.state.awaiting_count(self.run_id, client_id)[0])
        if count >= threshold and not marked:
            marked.append(time.time())
            mark.write_text(f"{marked[0]}\n")  # noqa: ASYNC240 - once, a few bytes
        return await original(self, client_id, items, *args, **kwargs)

    reconciler.Reconciler.poll = poll  # type: ignore[method-assign]


def mark_report(watch: Watch) -> None:
    """Stalls while the report is written (after the run, on the loop) are counted apart."""
    from pracsuite_ingest import commands

    original = commands.write_report

    def write_report(*args: Any, **kwargs: Any) -> int:
        watch.phase = "report"
        return original(*args, **kwargs)

    commands.write_report = write_report


def main() -> int:
    watch = Watch()
    aio.loop_factory = watched(aio.loop_factory, watch)  # type: ignore[assignment]
    mark_report(watch)
    if os.environ.get("BENCH_BIG_POLL"):
        mark_big_poll(int(os.environ["BENCH_BIG_POLL"]), Path(os.environ["BENCH_BIG_POLL_MARK"]))
    code = 1
    try:
        code = cli.main(sys.argv[1:])
    finally:
        watch.stop.set()
        out = os.environ.get("BENCH_LOOP_WATCH_OUT")
        if out:
            Path(out).write_text(json.dumps({**watch.as_dict(), "exit": code}) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
