"""A system program a test needs: its path, or a skip that prints why (a failure under CI,
where .ci/run installs it)."""

from __future__ import annotations

import os
import shutil

import pytest


def program(*names: str, package: str) -> str:
    """The first of `names` on PATH; without one, skip (or fail when CI=true)."""
    for name in names:
        found = shutil.which(name)
        if found is not None:
            return found
    reason = f"{names[0]} is not installed (Debian: apt-get install {package})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must install it (.ci/run does)")
    print(f"SKIPPED: {reason}")
    pytest.skip(reason)
