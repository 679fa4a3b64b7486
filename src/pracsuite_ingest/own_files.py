"""The worker's own files are never a patient's document.

A manifest row may name any path; without `input.root` nothing confines it. Whatever
path or link reaches them, these are refused at the check, by identity (st_dev,
st_ino) of the file actually opened:

- the configuration file, the API key files (`api.*_key_file`) and every file in the
  secrets folder (`PRACSUITE_INGEST_SECRETS_DIR`);
- the state file, its lock, its `-wal` and `-shm`;
- the reports in the report folder (and in a shard's folder below it).

`guard` names them (the settings when they are loaded, the state file when it is
opened; each replaces what it named before); `refusal` judges one opened file.
Process-wide, as `logs.register_secret` is: the check runs in worker threads that
are handed a row and nothing else.

`root_unset_warning` is what `check` says when `input.root` is not set.
"""

from __future__ import annotations

import fnmatch
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

FileId = tuple[int, int]
REPORT_NAMES = ("*.json", "*.csv", "*.html", ".*.tmp")


@dataclass(frozen=True, slots=True)
class Guarded:
    """One of the worker's own files (or folders, whose every file is guarded)."""

    path: Path
    label: str  # what it is, for the reason: never its content
    folder: bool = False
    # A folder's files only this far down (1: its own files), named like these; a
    # report folder set above the input (report.dir = "/data") must not swallow it.
    depth: int = 0  # 0: any depth
    patterns: tuple[str, ...] = ()


_lock = threading.Lock()
_guarded: dict[str, tuple[Guarded, ...]] = {}


def guard(slot: str, items: Iterable[Guarded]) -> None:
    """Guard `items` from now on, in place of what `slot` guarded before."""
    with _lock:
        _guarded[slot] = tuple(items)


def guarded() -> tuple[Guarded, ...]:
    with _lock:
        return tuple(g for items in _guarded.values() for g in items)


def _file_id(path: Path) -> FileId | None:
    try:
        st = path.stat()
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def _ancestor_ids(real: Path | None) -> list[FileId | None]:
    """Identities of the folders above the opened file (through its real path),
    nearest first."""
    if real is None:
        return []
    return [_file_id(folder) for folder in real.parents]


def match(opened: FileId, name: str, ancestors: list[FileId | None],
          known: Iterable[tuple[Guarded, FileId | None]]) -> Guarded | None:
    """The guarded file `opened` is, or the guarded folder it lies in; None if neither.
    Pure: `known` pairs each guarded path with its identity now (None: not there);
    `ancestors` are the opened file's folders, nearest first; `name` its name."""
    for item, ident in known:
        if ident is None:
            continue
        if not item.folder:
            if ident == opened:
                return item
            continue
        above = ancestors[:item.depth] if item.depth else ancestors
        named = not item.patterns or any(fnmatch.fnmatchcase(name, p) for p in item.patterns)
        if named and ident in above:
            return item
    return None


def reason(item: Guarded) -> str:
    """Why the row is refused, and what to do: names what the file is, never its path."""
    return (f"refused: this path leads to the worker's own {item.label}, which is never "
            "sent as a patient's document; correct the row's path (and set input.root to "
            "the folder holding the documents)")


def refusal(st: os.stat_result, real: Path | None) -> str | None:
    """Why the file open with status `st` (real path `real`) must not be sent, or None.

    Identities are looked up now, not when guarded: the state file's -wal and the
    report folder may be created after the settings were loaded.
    """
    items = guarded()
    if not items:
        return None
    ancestors = _ancestor_ids(real) if any(g.folder for g in items) else []
    found = match((st.st_dev, st.st_ino), real.name if real is not None else "", ancestors,
                  ((g, _file_id(g.path)) for g in items))
    return reason(found) if found is not None else None


def settings_files(config_file: Path | None, key_files: Iterable[tuple[str, str]],
                   secrets_dir: str, report_dir: str) -> list[Guarded]:
    """What the loaded settings name: the config, the key files, the secrets folder and
    the report folder."""
    items = []
    if config_file is not None:
        items.append(Guarded(config_file, "configuration file"))
    items += [Guarded(Path(path), f"API key file ({setting})")
              for setting, path in key_files if path]
    if secrets_dir:
        items.append(Guarded(Path(secrets_dir), "secrets folder (PRACSUITE_INGEST_SECRETS_DIR)",
                             folder=True))
    if report_dir:
        # its reports (<run>.json/.csv/.html, latest.*, their temporary files), and a
        # shard's folder below it
        items.append(Guarded(Path(report_dir), "report folder (report.dir)", folder=True,
                             depth=2, patterns=REPORT_NAMES))
    return items


def state_files(path: Path) -> list[Guarded]:
    """The state file and the files SQLite, the lock and the send log keep beside it."""
    return [Guarded(Path(f"{path}{suffix}"), f"state file{label} (state.path)")
            for suffix, label in (("", ""), (".lock", "'s lock"), ("-wal", "'s -wal"),
                                  ("-shm", "'s -shm"), ("-journal", "'s journal"),
                                  (".sends", "'s send log"))]


def root_unset_warning(root: str) -> str | None:
    """What `check` says when `input.root` is unset: a manifest row can then name any
    file this user may read."""
    if root:
        return None
    return ("warning: input.root is not set: a manifest row may name any file this user "
            "can read (the worker's own key, config and state files are always refused); "
            "set input.root to the folder that holds the documents")
