"""A client id is one segment of a URL path: `/patient/{client_id}/patient_attachment`.

`client_id_problem` says why a manifest's or a folder's client id cannot be that
segment. yarl (aiohttp's URL library) resolves `.` and `..` segments even when they
are all the segment holds, so `..` would turn the documented path into another,
undocumented one (`GET /v1/patient_attachment`, with both keys). Separators, control
characters and percent signs (which a server or a proxy may decode into a separator
or a dot after the worker quoted them) are refused too. The scan makes such a row
`invalid` (never sent); the API client refuses to build such a URL at all.
"""

from __future__ import annotations

DOT_SEGMENTS = frozenset({".", ".."})


def client_id_problem(client_id: str) -> str | None:
    """Why `client_id` cannot be sent as a URL path segment, or None. The text quotes
    no more of it than the characters at fault."""
    if not client_id:
        return "empty client_id"
    if client_id in DOT_SEGMENTS:
        return (f"client_id {client_id!r} is not a patient id: in a URL it would change "
                "the path PracSuite is asked for; correct the row's client_id")
    if "/" in client_id or "\\" in client_id:
        return "client_id contains a folder separator (/ or \\); correct the row's client_id"
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in client_id):
        return "client_id contains a control character; correct the row's client_id"
    if "%" in client_id:
        return ("client_id contains a percent sign, which a server may decode into another "
                "path; correct the row's client_id")
    return None
