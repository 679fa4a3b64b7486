"""Which HTTP proxy a URL goes through: `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY` (or
their lower-case forms), read as curl and the AWS CLI read them (docs/contract.md).

The worker's aiohttp session follows them itself (`trust_env=True`); this module only
tells the operator (`check`) which proxy that is, by the same rules aiohttp applies
(`urllib.request.getproxies` and `proxy_bypass`), without any credentials in its URL,
and hands those credentials to log redaction.
"""

from __future__ import annotations

import urllib.request
from urllib.parse import urlsplit


def proxy_for(url: str) -> str | None:
    """The proxy URL (from the environment) that a request to `url` goes through, or
    None (direct)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host and urllib.request.proxy_bypass(host):
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
