"""Next steps printed for a person, in words that work when typed (pure).

`program_name` is how this program was started, so that a hint names a command that
runs: `pracsuite-ingest` where that name on PATH is this program, else the path it was
started by (`.venv/bin/pracsuite-ingest` after `make demo`), or `python -m
pracsuite_ingest`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pracsuite_ingest.plural import counted, plural

NAME = "pracsuite-ingest"


def program_name(argv0: str, *, cwd: str, path: str | None,
                 executable: str = "python") -> str:
    """The words that start this program again, from `sys.argv[0]`, the working folder,
    $PATH and, for `python -m`, the interpreter (`sys.executable`)."""
    if not argv0 or argv0 == "-m" or Path(argv0).name in ("__main__.py", "-c"):
        return f"{_shown(executable, cwd, path)} -m pracsuite_ingest"
    name = Path(argv0).name
    on_path = shutil.which(name, path=path) if path else None
    started = argv0 if os.sep in argv0 else on_path
    if on_path is not None and started is not None and _same(on_path, started, cwd):
        return name
    if started is None:
        return name
    return _shown(started, cwd, None)


def _shown(started: str, cwd: str, path: str | None) -> str:
    """A program's path as a person types it: its bare name where that name on `path`
    is it, else relative to `cwd` when below it, else absolute."""
    name = Path(started).name
    on_path = shutil.which(name, path=path) if path else None
    if on_path is not None and _same(on_path, started, cwd):
        return name
    full = Path(cwd, started)
    relative = os.path.relpath(full, cwd)
    shown = relative if not relative.startswith("..") else os.path.normpath(full)
    return shown if os.sep in shown else f".{os.sep}{shown}"


def _same(a: str, b: str, cwd: str) -> bool:
    try:
        return Path(cwd, a).samefile(Path(cwd, b))
    except OSError:
        return False


def resume_text(pending: int) -> str:
    """What an interrupted run says last, on stdout."""
    if pending:
        left = (f"{counted(pending, 'item')} {plural('is', pending)} pending; "
                "the state file keeps what was done")
    else:
        left = "nothing is pending"
    return f"interrupted: {left}. Run the same command again to resume."
