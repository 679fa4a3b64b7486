"""What a process loads at start-up: each command only the libraries it uses.

Every `run` is a fresh process (a scheduler's job, a shard), so an import it does not
need is CPU spent on every start. Each test runs the CLI in a new interpreter and
looks at `sys.modules` when it is done.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pracsuite_ingest

PROBE = """
import json, sys
from pracsuite_ingest.cli import main
out, argv = sys.argv[1], sys.argv[2:]
try:
    code = main(argv)
except SystemExit as exc:
    code = exc.code
with open(out, "w") as fh:
    json.dump({"code": code, "modules": sorted(sys.modules)}, fh)
"""

# Libraries `--version` has no use for (the version is a string in the package).
NOT_FOR_VERSION = ("asyncio", "aiohttp", "pydantic", "pydantic_settings", "structlog", "rich",
                   "prometheus_client", "importlib.metadata", "pracsuite_ingest.settings",
                   "pracsuite_ingest.pipeline", "pracsuite_ingest.sandbox")
# Loaded by a run only when it shows the display, exports metrics, or is the sandbox.
NOT_FOR_A_PLAIN_RUN = ("pracsuite_ingest.sandbox", "aiohttp.web", "pracsuite_ingest.metrics",
                       "prometheus_client", "pracsuite_ingest.progress_live", "rich.progress",
                       "rich.live")


def cli_in_new_process(tmp_path: Path, *argv: str) -> tuple[Any, set[str], str]:
    """Exit code, the modules loaded, and stdout of `pracsuite-ingest ARGV`."""
    out = tmp_path / "modules.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRACSUITE")}
    proc = subprocess.run([sys.executable, "-c", PROBE, str(out), *argv], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert out.exists(), proc.stderr
    found = json.loads(out.read_text())
    return found["code"], set(found["modules"]), proc.stdout


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return [n for n in names if n in modules]


def test_the_package_version_is_the_installed_distributions() -> None:
    installed = importlib.metadata.version("pracsuite-ingest")
    assert pracsuite_ingest.__version__ == installed, (
        "the installed metadata is stale: `.venv/bin/pip install -e '.[dev]'` again")


def test_version_prints_the_version_and_loads_no_library(tmp_path: Path) -> None:
    code, modules, stdout = cli_in_new_process(tmp_path, "--version")
    assert code == 0
    assert stdout == f"pracsuite-ingest {pracsuite_ingest.__version__}\n"
    assert loaded(modules, NOT_FOR_VERSION) == []


def test_status_loads_neither_aiohttp_nor_the_pipeline(tmp_path: Path) -> None:
    code, modules, stdout = cli_in_new_process(
        tmp_path, "status", "--state", str(tmp_path / "none.db"))
    assert code == 0 and "no state file" in stdout
    assert loaded(modules, ("aiohttp", "pracsuite_ingest.pipeline", "pracsuite_ingest.sandbox",
                            "prometheus_client")) == []


def test_a_run_off_a_terminal_without_metrics_loads_no_sandbox_metrics_or_display(
        tmp_path: Path) -> None:
    (tmp_path / "files" / "7").mkdir(parents=True)
    (tmp_path / "files" / "7" / "a.pdf").write_bytes(b"%PDF-1.4 a letter")
    (tmp_path / "m.csv").write_text("client_id,path\n7,files/7/a.pdf\n", encoding="utf-8")
    code, modules, stdout = cli_in_new_process(
        tmp_path, "run", "--manifest", "m.csv", "--dry-run", "--state", "s.db",
        "--report-dir", "reports")
    assert code == 0, stdout
    assert "pracsuite_ingest.pipeline" in modules  # it did run
    assert loaded(modules, NOT_FOR_A_PLAIN_RUN) == []


def test_a_run_goes_on_uvloop_where_it_is_installed(tmp_path: Path) -> None:
    # A dependency on every platform but Windows (pyproject.toml), so here it must be.
    (tmp_path / "m.csv").write_text("client_id,path\n", encoding="utf-8")
    code, modules, stdout = cli_in_new_process(
        tmp_path, "run", "--manifest", "m.csv", "--dry-run", "--state", "s.db",
        "--report-dir", "reports")
    assert code == 0, stdout
    assert "uvloop" in modules


def test_the_sandbox_command_still_has_its_flags(tmp_path: Path) -> None:
    code, modules, stdout = cli_in_new_process(tmp_path, "sandbox", "--help")
    assert code == 0
    assert "--fail-429" in stdout and "--s3-port" in stdout
    assert "pracsuite_ingest.sandbox" in modules
