"""Checks at the trust boundaries: where the keys may go, what a connection must prove,
and how much of an answer is read.

- `same_origin`: the API keys go only to `api.base_url`'s scheme, host and port; a
  `links.next` (or any URL) pointing elsewhere is refused before anything is sent.
- `cleartext_problem`: plain `http://` is only for a loopback host, and for the
  storage only when `api.base_url` is loopback http:// too (the sandbox); anywhere
  else a key or a patient file would cross the network in clear text.
- `tls_context`: certificate and host name verification always on; `api.ca_file`
  adds a CA (a TLS-inspecting proxy's, a private PracSuite test host's) to the
  system's, and never turns verification off.
- `read_capped`: an answer body is read up to a limit, never whole whatever its size.
"""

from __future__ import annotations

import functools
import ipaddress
import ssl
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:  # settings.py imports this module: `status` needs no aiohttp
    import aiohttp

DEFAULT_PORTS = {"http": 80, "https": 443}
LIST_BODY_LIMIT = 10 * 1024 * 1024  # one page of at most 100 records is a few hundred KB
SMALL_BODY_LIMIT = 64 * 1024  # a presign answer, a record, an error: a few KB
READ_CHUNK = 64 * 1024

Origin = tuple[str, str, int]


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback address (127.0.0.0/8, ::1); never a name that resolves."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def origin(url: str) -> Origin | None:
    """(scheme, host, port) of an http(s) URL, default ports filled in; None otherwise."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:  # a port that is not a number, a bracket left open
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if scheme not in DEFAULT_PORTS or not host:
        return None
    return scheme, host, port if port is not None else DEFAULT_PORTS[scheme]


def same_origin(url: str, base: Origin | None) -> bool:
    found = origin(url)
    return found is not None and found == base


def describe_origin(url: str) -> str:
    """`scheme://host:port` of `url` for a message: never its path or query."""
    found = origin(url)
    if found is None:
        return "a URL that is not http(s)"
    scheme, host, port = found
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}"


def is_sandbox(base_url: str) -> bool:
    """Whether `base_url` is plain http:// on a loopback host: the sandbox, the only
    setup in which anything may go in clear text."""
    found = origin(base_url)
    return found is not None and found[0] == "http" and is_loopback(found[1])


@functools.lru_cache(maxsize=256)  # every presign names the same bucket URL: decided once
def cleartext_problem(url: str, what: str, base_url: str | None = None) -> str | None:
    """Why `url` must not be used for `what`, or None.

    https always; plain http only to a loopback host, and (when `base_url`, the API's,
    is given) only when `base_url` is itself loopback http (the sandbox): with the API
    on https, an http:// answer, even to 127.0.0.1, would send a patient's file in clear
    to whatever listens there. `base_url` None judges `api.base_url` itself.
    """
    found = origin(url)
    if found is None:
        return f"{what} is not an http(s) URL"
    scheme, host, _ = found
    if scheme != "http":
        return None
    if not is_loopback(host):
        return (f"{what} uses plain http:// to {describe_origin(url)}; only https:// is "
                "allowed (http:// only for a loopback host such as the sandbox)")
    if base_url is not None and not is_sandbox(base_url):
        return (f"{what} uses plain http:// to {describe_origin(url)} while api.base_url "
                "is not loopback http://; only https:// is allowed (http:// only when "
                "api.base_url is the sandbox's)")
    return None


def tls_context(ca_file: str = "") -> ssl.SSLContext:
    """The client TLS context: the system's CAs (plus `ca_file`), verification required.

    Raises OSError / ssl.SSLError when `ca_file` cannot be read or holds no certificate.
    """
    ctx = ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    # create_default_context already requires both; stated so that nothing relaxes them.
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class BodyTooLarge(Exception):
    """The answer's body is larger than the limit; nothing past the limit was kept."""


async def read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, or `BodyTooLarge` as soon as it passes `limit` bytes (after decoding)."""
    declared = resp.content_length
    if declared is not None and declared > limit:
        raise BodyTooLarge(f"{declared:,} bytes declared")
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(READ_CHUNK):
        buf += chunk
        if len(buf) > limit:
            raise BodyTooLarge(f"more than {limit:,} bytes")
    return bytes(buf)
