"""Input -> rows -> local checks. Rows are a stream: never a list of every row.

`read_rows` yields `Row`s from a CSV or JSON Lines manifest or a directory tree; a
malformed row is yielded with `problem` set, so that it still gets a report line.
`check_local` turns a row into a `LocalFile` (size and sha256 known) or a reason.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePath
from typing import Any

import aiofiles.os

from pracsuite_ingest import MAX_FILE_BYTES
from pracsuite_ingest.models import LocalFile, Row

HASH_CHUNK = 1 << 20


def read_rows(manifest: Path | None, source_dir: Path | None) -> Iterator[Row]:
    """Every input row in order, from exactly one of a manifest or a directory."""
    if manifest is not None:
        if manifest.suffix.lower() in (".jsonl", ".ndjson"):
            return _jsonl_rows(manifest)
        return _csv_rows(manifest)
    assert source_dir is not None
    return _dir_rows(source_dir)


def _row_from_mapping(line: int, data: dict[str, Any], base: Path) -> Row:
    client_id = str(data.get("client_id") or "").strip()
    raw_path = str(data.get("path") or "").strip()
    file_name = str(data.get("file_name") or "").strip()
    extra = {k: v for k, v in data.items() if k not in ("client_id", "path", "file_name")}
    problem = None
    missing = [k for k, v in (("client_id", client_id), ("path", raw_path)) if not v]
    if missing:
        problem = f"line {line}: missing {' and '.join(missing)}"
    full = str(base / raw_path) if raw_path else ""
    if not file_name and raw_path:
        file_name = PurePath(raw_path.replace("\\", "/")).name
    return Row(line, client_id, full, file_name, extra, problem)


def _csv_rows(manifest: Path) -> Iterator[Row]:
    base = manifest.parent
    with manifest.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Row(1, "", "", "", {}, f"line 1: the header row cannot be read ({exc})")
            return
        header = [h.strip() for h in header]
        for required in ("client_id", "path"):
            if required not in header:
                yield Row(1, "", "", "", {}, f"line 1: the header has no '{required}' column")
                return
        while True:
            start = reader.line_num + 1
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield Row(start, "", "", "", {}, f"line {start}: malformed CSV ({exc})")
                continue
            if not any(v.strip() for v in values):
                continue  # a blank line is not a row
            if len(values) != len(header):
                partial = dict(zip(header, values, strict=False))
                yield Row(
                    start, str(partial.get("client_id", "")).strip(),
                    str(base / partial["path"]) if partial.get("path") else "",
                    "", {},
                    f"line {start}: {len(values)} fields, the header has {len(header)}",
                )
                continue
            yield _row_from_mapping(start, dict(zip(header, values, strict=True)), base)


def _jsonl_rows(manifest: Path) -> Iterator[Row]:
    base = manifest.parent
    with manifest.open(encoding="utf-8-sig") as fh:
        for number, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                yield Row(number, "", "", "", {}, f"line {number}: not valid JSON ({exc.msg})")
                continue
            if not isinstance(data, dict):
                yield Row(number, "", "", "", {}, f"line {number}: expected a JSON object")
                continue
            yield _row_from_mapping(number, data, base)


def _dir_rows(root: Path) -> Iterator[Row]:
    """`<root>/<client_id>/<any depth>/<file>`, hidden files and folders skipped."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(root)
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            full = Path(dirpath) / name
            if not rel.parts:
                yield Row(0, "", str(full), name, {},
                          "file is not inside a <client_id> folder of the source directory")
                continue
            yield Row(0, rel.parts[0], str(full), name)


def file_name_problem(file_name: str) -> str | None:
    """Why PracSuite would refuse this `file_name`, or None."""
    if not file_name:
        return "no file name"
    if "/" in file_name or "\\" in file_name:
        return "file_name must not contain a folder separator"
    stem, dot, ext = file_name.rpartition(".")
    if not dot or not stem or not ext.strip():
        return "file name has no extension (PracSuite requires one, e.g. .pdf)"
    return None


def hash_file(path: Path) -> tuple[int, str]:
    """(bytes read, sha256 hex), reading in 1 MiB chunks. Blocking: run in a thread."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


async def check_local(row: Row) -> LocalFile | str:
    """The row's file, checked and hashed; or the reason it cannot be sent.

    `stat` goes through aiofiles so that a slow network share does not stall the
    event loop; hashing runs in a worker thread (hashlib releases the GIL).
    """
    if row.problem:
        return row.problem
    if not row.client_id:
        return "empty client_id"
    problem = file_name_problem(row.file_name)
    if problem:
        return problem
    path = Path(row.path)
    try:
        st = await aiofiles.os.stat(path)
    except FileNotFoundError:
        return "file not found"
    except PermissionError:
        return "file not readable (permission denied on a parent folder)"
    except OSError as exc:
        return f"cannot stat file: {exc.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_size > MAX_FILE_BYTES:
        return (f"file is {st.st_size:,} bytes; PracSuite accepts at most "
                f"{MAX_FILE_BYTES:,} bytes (100 MB)")
    try:
        size, sha = await asyncio.to_thread(hash_file, path)
    except PermissionError:
        return "file not readable (permission denied)"
    except OSError as exc:
        return f"cannot read file: {exc.strerror}"
    if size != st.st_size:
        return "file changed while being read; run again once it is complete"
    return LocalFile(row=row, path=path, size=size, sha256=sha)
