"""Which stage may follow which: the one place the item state machine is written down.

    seen -> presigned -> uploading -> uploaded -> validated | missing
    (failed from any stage before S3 stored the file; a lost S3 answer stays
    `uploading` until reconciliation decides; an expired policy goes back to
    `presigned`; a `missing` upload whose answer was lost is presigned again)
"""

from __future__ import annotations

from pracsuite_ingest.models import Stage

S = Stage

ALLOWED: dict[Stage, frozenset[Stage]] = {
    S.SEEN: frozenset({S.PRESIGNED, S.FAILED}),
    S.PRESIGNED: frozenset({S.UPLOADING, S.PRESIGNED, S.FAILED}),
    S.UPLOADING: frozenset({S.UPLOADING, S.UPLOADED, S.PRESIGNED, S.FAILED, S.VALIDATED,
                            S.MISSING}),
    S.UPLOADED: frozenset({S.VALIDATED, S.MISSING}),
    S.MISSING: frozenset({S.VALIDATED, S.MISSING, S.PRESIGNED, S.FAILED}),
    S.VALIDATED: frozenset(),
    S.FAILED: frozenset(),
    S.INVALID: frozenset(),
    S.SKIPPED: frozenset(),
}


def predecessors(stage: Stage) -> frozenset[Stage]:
    """Every stage from which `stage` may be entered."""
    return frozenset(s for s, nexts in ALLOWED.items() if stage in nexts)


def allowed(old: Stage, new: Stage) -> bool:
    return new in ALLOWED[old]


class IllegalTransition(RuntimeError):
    """A bug: the code tried to move an item along an edge the state machine lacks."""
