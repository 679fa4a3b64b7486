"""The short soak (`tests/soak.py`; `make soak` runs the long one): a migration SIGKILLed
in every phase, again and again, under every sandbox fault, then left to finish."""

from __future__ import annotations

from pathlib import Path

import pytest

from soak import CONCURRENCY, SoakPlan, soak

pytestmark = pytest.mark.slow


async def test_killed_again_and_again_under_faults_every_row_ends_once_never_twice(
        tmp_path: Path) -> None:
    plan = SoakPlan(seed=17, files=48, clients=3, kills=6)
    result = await soak(plan, tmp_path)
    print(result.figures())
    # most runs were killed (a run that outpaces its kill point simply finishes)
    assert result.kills >= plan.kills * 2 // 3, result.figures()
    assert result.duplicates == 0, result.figures()  # one record per client and file name
    assert result.lost == 0 and result.wrong_record == 0, result.figures()
    assert result.final_exit == 0 and result.rows_in_report == plan.files
    assert set(result.statuses) <= {"validated", "skipped"}
    assert result.runs_left_running == 0  # killed runs show `interrupted`
    assert result.runs_interrupted >= 1
    # each kill may cut `upload.concurrency` uploads short; those are sent again
    assert result.s3_posts <= 1.3 * plan.files + result.kills * CONCURRENCY
    assert result.problems() == []
