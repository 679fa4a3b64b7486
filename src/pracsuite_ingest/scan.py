"""Input -> rows. Rows are a stream: never a list of every row.

`read_rows` yields `Row`s from a CSV or JSON Lines manifest or a directory tree; a
malformed row is yielded with `problem` set, so that it still gets a report line.
`local_check.check_local` then turns a row into a `LocalFile` or a reason.

Manifests and folders are untrusted input: bytes that are not UTF-8, NUL bytes, huge
lines and fields, wrong JSON types become that row's problem, never an exception that
stops the run; every physical row is accounted for. Folders are walked by
`localfs.walk` (links and special files refused); `input.root`, when set, confines
every path.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path, PurePath
from typing import Any, TextIO

from pracsuite_ingest import manifest_format as mf
from pracsuite_ingest.localfs import (
    has_surrogates,
    printable,
    walk,
)
from pracsuite_ingest.models import Row

MAX_LINE_CHARS = 1 << 20  # one manifest line; csv's own field limit (128 KiB) also holds


def read_rows(manifest: Path | None, source_dir: Path | None, *,
              follow_symlinks: bool = False, root: Path | None = None,
              encoding: str = "") -> Iterator[Row]:
    """Every input row in order, from exactly one of a manifest or a directory.

    `follow_symlinks` applies to the directory walk; `root`, when given, makes every
    row whose path resolves outside it a problem row. `encoding` is `input.encoding`
    (a manifest's BOM wins over it; see `manifest_format`).
    """
    rows: Iterator[Row]
    if manifest is not None:
        if manifest.suffix.lower() in (".jsonl", ".ndjson"):
            rows = _jsonl_rows(manifest, encoding)
        else:
            rows = _csv_rows(manifest, encoding)
    else:
        assert source_dir is not None
        rows = _dir_rows(source_dir, follow_symlinks)
    return rows if root is None else _confined(rows, root)


def _confined(rows: Iterator[Row], root: Path) -> Iterator[Row]:
    """Rows whose path resolves (links followed) outside `root` become problem rows."""
    real_root = Path(os.path.realpath(root))
    for row in rows:
        if row.problem is None and row.path:
            real = Path(os.path.realpath(row.path))
            if real != real_root and not real.is_relative_to(real_root):
                where = f"line {row.line}: " if row.line else ""
                row = Row(row.line, row.client_id, row.path, row.file_name, row.extra,
                          f"{where}path is outside input.root ({root}); not read")
        yield row


def _field(data: dict[str, Any], key: str, *, numbers: bool = False) -> str | None:
    """The value of a row's `key` as text; None when it has a type no row may have.

    Values are kept exactly as written (a file name's spaces are part of the name, and a
    path names a file whose name may begin or end with spaces), except `client_id`:
    PracSuite's ids never hold spaces, so those a spreadsheet pads one with are dropped.
    """
    value = data.get(key)
    if value is None:
        return ""
    if isinstance(value, str):
        return client_id_text(value) if key == "client_id" else value
    if numbers and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def client_id_text(value: str) -> str:
    """A client id as read from a manifest or a folder name: surrounding spaces
    dropped (`_field`)."""
    return value.strip()


def _row_from_mapping(line: int, data: dict[str, Any], base: Path) -> Row:
    client_id = _field(data, "client_id", numbers=True)
    raw_path = _field(data, "path")
    file_name = _field(data, "file_name")
    extra = {k: v for k, v in data.items() if k not in ("client_id", "path", "file_name")}
    wrong = [k for k, v in (("client_id", client_id), ("path", raw_path),
                            ("file_name", file_name)) if v is None]
    client_id, raw_path, file_name = client_id or "", raw_path or "", file_name or ""
    if wrong:
        return Row(line, client_id, "", "", extra,
                   f"line {line}: {' and '.join(wrong)} must be text"
                   + (" or a whole number" if wrong == ["client_id"] else ""))
    nul = [k for k, v in (("client_id", client_id), ("path", raw_path),
                          ("file_name", file_name)) if "\x00" in v]
    if nul:
        return Row(line, client_id.replace("\x00", ""), raw_path.replace("\x00", ""),
                   file_name.replace("\x00", ""), extra,
                   f"line {line}: {' and '.join(nul)} contains a NUL byte")
    problem = None
    missing = [k for k, v in (("client_id", client_id), ("path", raw_path)) if not v.strip()]
    if missing:
        problem = f"line {line}: missing {' and '.join(missing)}"
    full = str(base / raw_path) if raw_path else ""
    if not file_name and raw_path:
        file_name = PurePath(raw_path.replace("\\", "/")).name
    return Row(line, client_id, full, file_name, extra, problem)


class _Lines:
    """A text file's physical lines for `csv.reader`, each cut at MAX_LINE_CHARS.

    `cut` holds the numbers of the lines that were longer (their rest is skipped), so
    that the row they belong to is reported instead of read whole into memory.
    """

    def __init__(self, fh: TextIO) -> None:
        self._fh = fh
        self.number = 0
        self.cut: set[int] = set()

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self._fh.readline(MAX_LINE_CHARS)
        if not line:
            raise StopIteration
        self.number += 1
        if len(line) == MAX_LINE_CHARS and not line.endswith(("\n", "\r")):
            self.cut.add(self.number)
            while (rest := self._fh.readline(MAX_LINE_CHARS)) and not rest.endswith(
                    ("\n", "\r")):
                pass
            line += "\n"
        return line


def _values_problem(values: list[str], lines: _Lines, start: int, end: int,
                    enc: mf.Encoding) -> str | None:
    if any(n in lines.cut for n in range(start, end + 1)):
        return f"line {start}: longer than {MAX_LINE_CHARS:,} characters"
    if any(has_surrogates(v) for v in values):
        return f"line {start}: {enc.undecodable()}"
    mangled = mf.mojibake_problem(values, enc)
    if mangled:
        return f"line {start}: {mangled}"
    return None


def _csv_rows(manifest: Path, encoding: str = "") -> Iterator[Row]:
    """Rows of a CSV manifest in its encoding, with its delimiter (`manifest_format`)."""
    base = manifest.parent
    # Undecodable bytes become marks that spoil their own row, not the stream.
    fh, enc = mf.open_text(manifest, encoding)
    with fh:
        lines = _Lines(fh)
        try:
            first = next(lines)
        except StopIteration:
            return
        if mf.looks_utf16_without_bom(first):
            yield Row(1, "", "", "", {}, "line 1: the manifest looks like UTF-16 without a "
                      "BOM: set input.encoding = \"utf-16-le\" (or save it as UTF-8)")
            return
        reader = csv.reader(itertools.chain([first], lines), strict=True,
                            delimiter=mf.delimiter_of(first))
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Row(1, "", "", "", {}, f"line 1: the header row cannot be read ({exc})")
            return
        problem = _values_problem(header, lines, 1, reader.line_num, enc)
        if problem is not None:
            yield Row(1, "", "", "", {}, f"{problem}: the header row")
            return
        header = [mf.canonical(h) for h in header]
        problem = mf.header_problem(header)
        if problem is not None:
            yield Row(1, "", "", "", {}, f"line 1: {problem}")
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
            problem = _values_problem(values, lines, start, reader.line_num, enc)
            if problem is not None:
                partial = dict(zip(header, values, strict=False))
                raw_path = printable(partial.get("path", "").replace("\x00", ""))
                yield Row(start, printable(client_id_text(partial.get("client_id", ""))),
                          str(base / raw_path) if raw_path else "", "", {}, problem)
                continue
            if not any(v.strip() for v in values):
                continue  # a blank line is not a row
            if len(values) != len(header):
                partial = dict(zip(header, values, strict=False))
                yield Row(
                    start, client_id_text(partial.get("client_id", "")).replace("\x00", ""),
                    str(base / partial["path"].replace("\x00", ""))
                    if partial.get("path") else "",
                    "", {},
                    f"line {start}: {len(values)} fields, the header has {len(header)}",
                )
                continue
            yield _row_from_mapping(start, dict(zip(header, values, strict=True)), base)


def _jsonl_rows(manifest: Path, encoding: str = "") -> Iterator[Row]:
    base = manifest.parent
    fh, enc = mf.open_text(manifest, encoding, newline=None)  # PowerShell's `>`: UTF-16
    with fh:
        number = 0
        while text := fh.readline(MAX_LINE_CHARS):
            number += 1
            if len(text) == MAX_LINE_CHARS and not text.endswith("\n"):
                while (rest := fh.readline(MAX_LINE_CHARS)) and not rest.endswith("\n"):
                    pass
                yield Row(number, "", "", "", {},
                          f"line {number}: longer than {MAX_LINE_CHARS:,} characters")
                continue
            if not text.strip():
                continue
            if has_surrogates(text):
                yield Row(number, "", "", "", {}, f"line {number}: {enc.undecodable()}")
                continue
            try:
                data = json.loads(text, parse_constant=mf.no_constants,
                                  object_pairs_hook=mf.no_duplicates)
                # an escaped lone surrogate ("\\ud800") parses, but cannot be stored
                json.dumps(data, ensure_ascii=False).encode("utf-8")
            except json.JSONDecodeError as exc:
                yield Row(number, "", "", "", {}, f"line {number}: not valid JSON ({exc.msg})")
                continue
            except mf.DuplicateKey as exc:
                yield Row(number, "", "", "", {}, f"line {number}: {exc}; keep one")
                continue
            except (ValueError, RecursionError) as exc:  # huge numbers, NaN, deep nesting
                reason = "nested too deeply" if isinstance(exc, RecursionError) else (
                    "an unpaired surrogate escape" if isinstance(exc, UnicodeError) else exc)
                yield Row(number, "", "", "", {}, f"line {number}: not valid JSON ({reason})")
                continue
            if not isinstance(data, dict):
                yield Row(number, "", "", "", {}, f"line {number}: expected a JSON object")
                continue
            yield _row_from_mapping(number, data, base)


def _dir_rows(root: Path, follow_symlinks: bool) -> Iterator[Row]:
    """`<root>/<client_id>/<any depth>/<file>`, hidden files and folders skipped."""
    for entry in walk(root, follow_symlinks=follow_symlinks):
        name = printable(entry.parts[-1]) if entry.parts else ""
        # a client's own folder that cannot be read is that client's row
        client_id = (client_id_text(printable(entry.parts[0]))
                     if len(entry.parts) > 1 or (entry.folder and entry.parts) else "")
        path = printable(str(entry.path))
        if entry.problem is not None:
            yield Row(0, client_id, path, name, {}, entry.problem)
        elif len(entry.parts) < 2:
            yield Row(0, "", path, name, {},
                      "file is not inside a <client_id> folder of the source directory")
        else:
            yield Row(0, client_id, path, name)
