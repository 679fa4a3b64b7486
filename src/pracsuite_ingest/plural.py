"""Counts in words: "1 file", "2 files", "1 GET request" (one helper for every count
printed to a person)."""

from __future__ import annotations

IRREGULAR = {"entry": "entries", "retry": "retries", "is": "are", "was": "were",
             "this": "these"}


def plural(word: str, count: int) -> str:
    """`word` for `count` things: "file"/"files"; the last word of a phrase changes
    ("GET request" -> "GET requests")."""
    if count == 1:
        return word
    head, space, last = word.rpartition(" ")
    many = IRREGULAR.get(last) or (last[:-1] + "ies" if last.endswith("y") and
                                   last[-2:-1] not in "aeiou" else last + "s")
    return head + space + many


def counted(count: int, word: str, *, sep: str = " ") -> str:
    """"1 file", "3 files", "1,204 files"."""
    return f"{count:,}{sep}{plural(word, count)}"
