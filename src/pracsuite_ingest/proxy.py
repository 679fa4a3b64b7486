"""Which HTTP proxy a URL goes through: `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY` (or
their lower-case forms), read as curl and the AWS CLI read them (docs/contract.md).

Every request of the worker takes its proxy from `EnvProxies`, read from the
environment once per HTTP session (`for_session`) and decided once per scheme and host:
aiohttp's `trust_env` read the variables and ~/.netrc again on every request, in two
thread hand-offs (13% of a run's CPU, bench/results/2026-12-04-profile.md on the
`peers` branch), and sent ~/.netrc's Basic auth for the target host too, which the
worker never wants. This module also tells the operator (`check`) which proxy that is,
by the same rules, without any credentials in its URL, and hands those credentials to
log redaction.

`NO_PROXY` is read as curl reads it (`no_proxy` first): names separated by commas;
`*` alone bypasses every host; a name matches that host and every host under it, with
or without a leading dot; an IP address matches itself, and a CIDR block (`10.0.0.0/8`)
the addresses in it; a port is not part of the match.
"""

from __future__ import annotations

import ipaddress
import os
import urllib.request
import weakref
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:  # `status` and the log set-up import this module without aiohttp
    import aiohttp
    from aiohttp.helpers import ProxyInfo
    from yarl import URL


def no_proxy_entries() -> tuple[str, ...]:
    raw = os.environ.get("no_proxy") or os.environ.get("NO_PROXY") or ""
    return tuple(e.strip().lower() for e in raw.split(",") if e.strip())


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def bypassed(host: str, entries: tuple[str, ...]) -> bool:
    """Whether `NO_PROXY` (its `entries`) sends requests to `host` direct (curl's rules)."""
    host = host.lower().rstrip(".").strip("[]")
    if not host:
        return False
    address = _address(host)
    for entry in entries:
        if entry == "*":
            return True
        if "/" in entry:  # CIDR
            try:
                if address is not None and address in ipaddress.ip_network(entry,
                                                                           strict=False):
                    return True
            except ValueError:
                pass
            continue
        name = entry.lstrip(".").rstrip(".")
        if not (entry.startswith("[") or _address(name) is not None) and ":" in name:
            name = name.rsplit(":", 1)[0]  # host:port: the port is not matched
        name = name.strip("[]")
        if name and (host == name or (address is None and host.endswith("." + name))):
            return True
    return False


class EnvProxies:
    """The environment's proxy settings, read once; `for_url` decides once per scheme
    and host (aiohttp's `proxies_from_env` for the proxies, with a proxy's credentials
    from its URL or ~/.netrc; `NO_PROXY` by `bypassed`)."""

    def __init__(self) -> None:
        from aiohttp.helpers import proxies_from_env

        self._proxies: dict[str, ProxyInfo] = proxies_from_env()
        self._no_proxy = no_proxy_entries()
        self._decided: dict[tuple[str, str], dict[str, Any]] = {}
        self._by_start: dict[str, dict[str, Any]] = {}  # "scheme://authority" -> as above

    def for_url(self, url: str | URL) -> dict[str, Any]:
        """`proxy` and `proxy_auth` for a request to `url` (empty: direct)."""
        if isinstance(url, str):
            # Decided once per scheme and authority (the text before the path): the
            # same few for every request of a run, without parsing each URL again.
            cut = url.find("/", url.find("://") + 3)
            start = url[:cut] if cut >= 0 else url
            found = self._by_start.get(start)
            if found is None:
                found = self._by_start[start] = self._decide(start)
            return found
        return self._decide(url)

    def _decide(self, url: str | URL) -> dict[str, Any]:
        from yarl import URL

        u = url if isinstance(url, URL) else URL(url, encoded=True)
        key = (u.scheme, u.host or "")
        found = self._decided.get(key)
        if found is None:
            found = {}
            info = self._proxies.get(u.scheme)
            if info is not None and not bypassed(u.host or "", self._no_proxy):
                found = {"proxy": info.proxy, "proxy_auth": info.proxy_auth}
            self._decided[key] = found
        return found


_BY_SESSION: weakref.WeakKeyDictionary[aiohttp.ClientSession, EnvProxies] = (
    weakref.WeakKeyDictionary())  # (annotations are not evaluated: no aiohttp import)


def for_session(session: aiohttp.ClientSession) -> EnvProxies:
    """The proxy settings of `session`'s requests: read from the environment at its
    first request, kept for the session's life."""
    found = _BY_SESSION.get(session)
    if found is None:
        found = _BY_SESSION[session] = EnvProxies()
    return found


def proxy_for(url: str) -> str | None:
    """The proxy URL (from the environment) that a request to `url` goes through, or
    None (direct)."""
    parts = urlsplit(url)
    if bypassed(parts.hostname or "", no_proxy_entries()):
        return None
    proxy = urllib.request.getproxies().get(parts.scheme)
    return proxy or None


def shown(proxy: str) -> str:
    """The proxy URL without user name or password."""
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def proxy_secrets() -> list[str]:
    """Passwords written into any proxy URL of the environment (to be masked in logs)."""
    out = []
    for proxy in urllib.request.getproxies().values():
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if parts.password:
            out.append(parts.password)
    return out


def describe(base_url: str) -> str:
    """One line for `check`: which proxy PracSuite's calls go through (S3's follow the
    same variables for its own host)."""
    proxy = proxy_for(base_url)
    if proxy is None:
        return ("proxy: none for PracSuite (no HTTPS_PROXY/HTTP_PROXY for its scheme, or "
                "NO_PROXY names its host); S3 uploads follow the same variables")
    if proxy.startswith("https://"):
        return (f"proxy: {shown(proxy)} is an https:// proxy, which the HTTP client cannot "
                "use (it is ignored): give the proxy as http://host:port (TLS to PracSuite "
                "still runs end to end through it)")
    return (f"proxy: PracSuite is reached through {shown(proxy)}; S3 uploads follow the "
            "same variables (HTTPS_PROXY, HTTP_PROXY, NO_PROXY)")
