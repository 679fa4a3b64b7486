"""Show, never obey: text from the input, PracSuite or S3, made safe to print.

A manifest value, a file name or an error text from a server may hold bytes that a
terminal obeys instead of showing: ESC sequences (set the window title, clear the
screen, rewrite a line), BEL, backspaces, C1 controls (CSI U+009B is ESC [), and
invisible characters that reorder or hide text (bidi overrides and isolates,
zero-width spaces). `visible` turns each into a readable escape (`\\x1b`, `\\u202e`);
it is the one function every boundary to a terminal calls: console logs, the
progress display, the summary, the dry-run plan, fatal messages.

`name_problem` is the stricter rule for a file name that would be *sent*: such a
character makes the row `invalid` rather than a name that reads differently from
what it is (`invoice\\u202efdp.exe` shows as `invoiceexe.pdf`).
"""

from __future__ import annotations

import re

# C0 (but newline and tab, see keep_lines), DEL and C1; the bidi embeddings, overrides,
# isolates and marks (U+061C, U+200E-200F, U+202A-202E, U+2066-2069); zero-width space,
# word joiner and the BOM; the line and paragraph separators. ZWNJ and ZWJ (U+200C-200D)
# are left: they spell Persian, Indic and emoji text and reorder nothing.
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_INVISIBLE = "\u200b\u2060\ufeff\u2028\u2029"
_UNSAFE = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}{_INVISIBLE}]")
_UNSAFE_KEEP_LINES = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}{_INVISIBLE}]")
_NAME_UNSAFE = re.compile(f"[\x80-\x9f{_BIDI}{_INVISIBLE}]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str, *, keep_lines: bool = False) -> str:
    """`text` with every control and invisible formatting character shown as an escape.

    Pure and cheap on clean text (one regex search). `keep_lines` leaves newlines and
    tabs as they are (a traceback, the multi-line summary) but still escapes CR, ESC
    and the rest.
    """
    pattern = _UNSAFE_KEEP_LINES if keep_lines else _UNSAFE
    if pattern.search(text) is None:
        return text
    return pattern.sub(_escape, text)


def name_problem(file_name: str) -> str | None:
    """Why a file name with a C1 control, a bidi control or an invisible character is
    refused (None when it has none); C0 and DEL are `local_check.file_name_problem`'s."""
    found = _NAME_UNSAFE.search(file_name)
    if found is None:
        return None
    shown = _escape(found)
    return (f"file_name contains an invisible or text-reordering character ({shown}), so it "
            "would read differently from what it is; rename the file")
