"""Fixtures shared by the test files, and the suite-wide API contract check."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from contract import request_problems
from pracsuite_ingest.sandbox import Sandbox


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain aiohttp client session, closed after the test."""
    async with aiohttp.ClientSession() as client:
        yield client


def check_worker_requests(sandbox: Sandbox) -> None:
    """Fail when the worker sent the sandbox a request PracSuite does not document."""
    problems = request_problems(sandbox.api_requests)
    if problems:
        shown = "\n  ".join(problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise AssertionError(
            f"the worker made {len(problems)} request(s) that match no operation in "
            f"pracsuite-openapi.yaml (PracSuite answers an undocumented path with 403 "
            f"MISSING_AUTHENTICATION_TOKEN):\n  {shown}{more}")


@pytest.fixture(autouse=True)
def api_contract() -> Iterator[None]:
    """Every sandbox a test starts checks, as its block ends, that each request the
    worker sent it is a documented operation (tests/contract.py)."""
    Sandbox.stop_hooks.append(check_worker_requests)
    try:
        yield
    finally:
        Sandbox.stop_hooks.remove(check_worker_requests)
