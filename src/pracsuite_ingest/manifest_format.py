"""How a manifest file is written, as practice systems and spreadsheets export it.

- the encoding: a BOM says it (UTF-8, or UTF-16 as Excel's "Unicode Text" writes it),
  else `input.encoding` (e.g. `cp1252` for an older Windows export), else UTF-8;
- the CSV delimiter: comma, semicolon (European Excel) or tab, read off the header;
- the header names `client_id`, `path`, `file_name`, matched ignoring case and
  surrounding spaces.

Bytes that are not text in that encoding are never guessed at: they decode to lone
surrogates (U+DC80-U+DCFF, as `surrogateescape` does), which make their row a problem
(`localfs.has_surrogates`), so a file name is never sent mangled. Pure, except `open_text`.
"""

from __future__ import annotations

import codecs
import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

KNOWN_COLUMNS = ("client_id", "path", "file_name")
DELIMITERS = (",", ";", "\t")
_MARK = "pracsuite-undecodable"


def _mark_undecodable(exc: UnicodeError) -> tuple[str, int]:
    """Each byte that is not text becomes a lone surrogate (never a guess)."""
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    bad = exc.object[exc.start:exc.end]
    return "".join(chr(0xDC80 | (b & 0x7F)) for b in bad), exc.end


codecs.register_error(_MARK, _mark_undecodable)


@dataclass(frozen=True, slots=True)
class Encoding:
    """The codec a manifest is read with, and its name for an operator."""

    codec: str
    label: str
    setting: bool = False  # chosen by input.encoding (not by a BOM or the default)

    def undecodable(self) -> str:
        """A row's problem when its bytes are not text in this encoding."""
        if self.setting:
            return (f"not valid {self.label} (input.encoding = \"{self.label}\"): set "
                    "input.encoding to the manifest's encoding, or save it as UTF-8")
        return (f"not valid {self.label} (save the manifest as UTF-8, e.g. Excel's \"CSV "
                "UTF-8\", or set input.encoding to its encoding, e.g. cp1252 for an older "
                "Windows export)")


def encoding_of(head: bytes, setting: str) -> Encoding:
    """The encoding of a manifest starting with `head`: its BOM, else `setting`, else UTF-8."""
    if head.startswith(codecs.BOM_UTF8):
        return Encoding("utf-8-sig", "UTF-8")
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return Encoding("utf-16", "UTF-16")
    if setting:
        name = codecs.lookup(setting).name
        if name not in ("utf-8", "utf-8-sig"):
            return Encoding(setting, setting, setting=True)
    return Encoding("utf-8-sig", "UTF-8")


def open_text(path: Path, setting: str, newline: str | None = "") -> tuple[TextIO, Encoding]:
    """`path` open for text in its encoding (`encoding_of`); by default newlines are
    left to csv."""
    with path.open("rb") as fh:
        head = fh.read(4)
    enc = encoding_of(head, setting)
    # UTF-8: surrogateescape, as before; others: the same marks for any byte.
    errors = "surrogateescape" if enc.codec == "utf-8-sig" else _MARK
    return path.open(newline=newline, encoding=enc.codec, errors=errors), enc


def delimiter_of(header_line: str) -> str:
    """The delimiter that makes the header name `client_id` and `path`; failing that,
    the most frequent of comma, semicolon and tab (comma on a tie)."""
    for delimiter in DELIMITERS:
        try:
            names = next(csv.reader([header_line], delimiter=delimiter))
        except (csv.Error, StopIteration):
            continue
        canon = {canonical(n) for n in names}
        if {"client_id", "path"} <= canon:
            return delimiter
    return max(DELIMITERS, key=header_line.count)


def canonical(name: str) -> str:
    """A header name as the reader knows it: `client_id`, `path` and `file_name` in any
    case and with spaces (or a stray BOM) around them; any other column as written,
    stripped."""
    stripped = name.strip().strip("\ufeff").strip()
    low = stripped.casefold()
    return low if low in KNOWN_COLUMNS else stripped


def header_problem(names: list[str]) -> str | None:
    """Why this (canonical) header cannot be read, or None."""
    for required in ("client_id", "path"):
        if required not in names:
            return f"the header has no '{required}' column"
    for known in KNOWN_COLUMNS:
        if names.count(known) > 1:
            return f"the header has {names.count(known)} '{known}' columns"
    return None


def looks_utf16_without_bom(header_line: str) -> bool:
    """A UTF-16 file without a BOM read as UTF-8: every other character is NUL."""
    return header_line.count("\x00") * 3 > len(header_line)


def mojibake_problem(values: list[str], enc: Encoding) -> str | None:
    """UTF-8 read through a one-byte `input.encoding` (`Ã©` for `é`): the row would send
    a mangled name. None when the values are plausibly that encoding's text."""
    if not enc.setting:
        return None
    for value in values:
        if value.isascii():
            continue
        try:
            again = value.encode(enc.codec).decode("utf-8")
        except (UnicodeError, LookupError):
            continue
        if again != value:
            return (f"reads as UTF-8, not {enc.label}: remove input.encoding (or save "
                    f"the manifest as {enc.label})")
    return None


# ------------------------------------------------------------ JSON Lines objects
def no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


class DuplicateKey(ValueError):
    """A JSON object names a key twice: which value is meant cannot be told."""


def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's keys, each once (`json`'s `object_pairs_hook`): as the CSV reader
    refuses a header naming a column twice, a line naming a key twice is refused, never
    read as its last value."""
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            shown = key.encode("utf-8", "replace").decode()[:40]  # a lone surrogate too
            raise DuplicateKey(f"the key {shown!r} appears twice in one object")
        data[key] = value
    return data
