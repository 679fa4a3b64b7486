"""S3's error document, read safely: `<Error><Code>..</Code><Message>..</Message></Error>`.

Some S3-compatible stores (and proxies in front of them) put a namespace on it
(`<Error xmlns="http://s3.amazonaws.com/doc/2006-03-01/">`); elements are matched by
their local name, so "Policy expired" is still recognised (and the file presigned
again) however it is written. The body comes from the network: a document with a
DOCTYPE (where entities would be declared: the "billion laughs" bomb, external
entities) is not parsed at all, and S3 never sends one. expat from the standard
library, with the DTD refused, instead of a new dependency (defusedxml): nothing else
in this document needs it.
"""

from __future__ import annotations

from xml.parsers import expat

WANTED = ("Code", "Message")


class _Refused(Exception):
    pass


def _refuse(*_: object) -> None:
    raise _Refused


def parse_s3_error(body: bytes) -> tuple[str, str]:
    """`(Code, Message)` of the `Error` document's own children; empty strings when
    the body is not such a document (or declares a DTD)."""
    parser = expat.ParserCreate(namespace_separator="}")
    parser.StartDoctypeDeclHandler = _refuse
    parser.EntityDeclHandler = _refuse
    parser.ExternalEntityRefHandler = _refuse  # type: ignore[assignment]
    stack: list[str] = []
    text: list[str] = []
    found: dict[str, str] = {}

    def start(name: str, _attrs: object) -> None:
        stack.append(name.rpartition("}")[2])
        text.clear()

    def end(_name: str) -> None:
        local = stack.pop()
        if len(stack) == 1 and stack[0] == "Error" and local in WANTED:
            found.setdefault(local, "".join(text).strip())
        text.clear()

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text.append
    try:
        parser.Parse(body, True)
    except (expat.ExpatError, _Refused, ValueError):
        return "", ""
    return found.get("Code", ""), found.get("Message", "")
