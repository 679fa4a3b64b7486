"""What `status` reads of a state file that a run may be writing, or that a killed run
left behind, so that what it shows is true:

- the runs and their items per stage as of the state's last commit;
- with the send log on top: an upload begun since that commit is written there before
  its first byte leaves (`send_log.py`), and the next lock holder will replay it. So an
  item the log holds with more sends than the file's row counts at the log's stage
  (`uploading`), and one the file does not hold yet counts too;
- a run the file still holds as `running` whose process is gone (nobody holds the
  state's lock: a SIGKILL, an OOM kill, a power cut) is shown `interrupted`, as the next
  lock holder will mark it.

Read only: nothing is written and no lock is kept (the lock is tried for an instant;
`State.open` waits that instant out, so a run starting then still starts).
"""

from __future__ import annotations

import contextlib
import copy
import errno
import fcntl
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pracsuite_ingest import send_log
from pracsuite_ingest.state import DEAD_RUN, State

# An item as one side holds it: (run_id, stage, sends).
Held = tuple[str, str, int]


def with_sends(runs: Sequence[Mapping[str, Any]], logged: Mapping[int, Held],
               filed: Mapping[int, Held], *, alive: bool) -> list[dict[str, Any]]:
    """`runs` (`StateReads.runs`) with the send log's items (`logged`) counted at their
    logged stage where the file (`filed`: those items as the state file holds them)
    has fewer sends or lacks them; without a live run (`alive`), a `running` run is
    shown `interrupted`."""
    out = [copy.deepcopy(dict(r)) for r in runs]
    by_id = {r["run_id"]: r for r in out}
    for item, (run_id, stage, sends) in logged.items():
        run = by_id.get(run_id)
        if run is None:
            continue  # a run the file does not hold: not this state's row
        was = filed.get(item)
        if was is not None:
            if was[2] >= sends:
                continue  # committed since (a kill between a commit and the log emptied)
            _count(by_id.get(was[0], run)["stages"], was[1], -1)
        _count(run["stages"], stage, +1)
    if not alive:
        for run in out:
            if run["outcome"] == "running":
                run["outcome"] = DEAD_RUN
    return out


def _count(stages: dict[str, int], stage: str, by: int) -> None:
    stages[stage] = stages.get(stage, 0) + by
    if stages[stage] <= 0:
        del stages[stage]


def runs_now(path: Path) -> list[dict[str, Any]]:
    """The runs of the state file at `path` as `status` shows them (module docstring)."""
    state = State.open(path, lock=False)
    try:
        runs = state.runs()
        logged = _logged(send_log.path_of(path))
        filed = state.held(list(logged))
    finally:
        state.close()
    return with_sends(runs, logged, filed, alive=lock_held(path))


def _logged(log_path: Path) -> dict[int, Held]:
    """Each item of the send log at its latest line (most sends)."""
    out: dict[int, Held] = {}
    for row in send_log.rows_of(log_path):
        held = (str(row.get("run_id")), str(row.get("stage")), int(row.get("sends") or 0))
        if row["id"] not in out or out[row["id"]][2] < held[2]:
            out[row["id"]] = held
    return out


def lock_held(path: Path) -> bool:
    """Whether a process holds the state's lock (a run or `reconcile` is alive): tried,
    never waited for, released at once. No lock file: nothing ever ran on it."""
    try:
        fd = os.open(f"{path}.lock", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:  # cannot tell: say nothing untrue (a run is kept `running`)
        return exc.errno != errno.ENOENT
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return True
    else:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
