"""The worker, as a real process, against a hostile PracSuite stand-in on loopback."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from e2e import CliResult, run_cli
from test_hostile_answers import PRACTICE, VENDOR


async def accepting_s3(_: web.Request) -> web.StreamResponse:
    """An S3 stand-in that takes every POST (and keeps nothing)."""
    return web.Response(status=204)


async def run_against(tmp_path: Path, base_url: str, *, api_extra: str = "",
                      limit_s: float = 240) -> CliResult:
    """`run` of `tmp_path/m.csv` against the API at `base_url` (both keys, 2 attempts,
    a 0.5 s reconcile); state `s.db`, reports in `r`."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[api]\nbase_url = "{base_url}"\nvendor_api_key = "{VENDOR}"\n'
                   f'practice_api_key = "{PRACTICE}"\nmax_attempts = 2\ntimeout_s = 5.0\n'
                   f'{api_extra}[reconcile]\ndeadline_s = 0.5\npoll_interval_s = 0.2\n'
                   '[log]\nformat = "json"\n')
    return await run_cli("run", "--config", str(cfg), "--manifest", str(tmp_path / "m.csv"),
                         "--state", str(tmp_path / "s.db"), "--report-dir",
                         str(tmp_path / "r"), cwd=tmp_path, limit_s=limit_s)
