"""HTTPS_PROXY / HTTP_PROXY / NO_PROXY are honoured for PracSuite and S3 alike (docs/contract.md),
through a real proxy (Debian's tinyproxy) that the test starts on loopback; `check`
says which proxy it uses, never with the credentials in its URL."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from e2e import config, make_files, run_cli, write_manifest
from needs import program
from pracsuite_ingest.proxy import shown
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions

pytestmark = pytest.mark.slow

PASSWORD = "s3cr3t-proxy-pw"


@dataclass
class Proxy:
    url: str
    log: Path

    def requests(self) -> list[str]:
        return [line for line in self.log.read_text(errors="replace").splitlines()
                if "]: Request (file descriptor" in line]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def tinyproxy(tmp_path: Path) -> Iterator[Proxy]:
    binary = program("tinyproxy", package="tinyproxy")
    port = _free_port()
    log = tmp_path / "tinyproxy.log"
    conf = tmp_path / "tinyproxy.conf"
    conf.write_text(f'Port {port}\nListen 127.0.0.1\nTimeout 60\nLogFile "{log}"\n'
                    "LogLevel Info\nMaxClients 64\nAllow 127.0.0.1\nDisableViaHeader Yes\n")
    proc = subprocess.Popen([binary, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(500):  # until it listens (at most ~5 s)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.01)
        else:
            pytest.fail("tinyproxy did not start listening")
        yield Proxy(f"http://user:{PASSWORD}@127.0.0.1:{port}", log)
    finally:
        proc.terminate()
        proc.wait(10)


def _env(proxy: Proxy, no_proxy: str = "") -> dict[str, str]:
    # The sandbox is on 127.0.0.1 (plain http, as a loopback base_url may be): proxied
    # through HTTP_PROXY unless NO_PROXY names it. Both spellings, so that whatever the
    # machine has set does not decide.
    return {"HTTP_PROXY": proxy.url, "http_proxy": proxy.url, "HTTPS_PROXY": proxy.url,
            "https_proxy": proxy.url, "NO_PROXY": no_proxy, "no_proxy": no_proxy}


async def test_a_run_goes_through_the_proxy_for_pracsuite_and_s3(
        tmp_path: Path, tinyproxy: Proxy) -> None:
    async with Sandbox(SandboxOptions(validation_delay_s=0.1)) as sb:
        manifest = write_manifest(tmp_path, make_files(tmp_path, 3, ["1"], size=200))
        cfg = config(tmp_path, sb)
        result = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                               cwd=tmp_path, env=_env(tinyproxy))
        check = await run_cli("check", "--config", str(cfg), cwd=tmp_path,
                              env=_env(tinyproxy))
        api, s3 = sb.base_url, sb.s3_url
    assert result.code == 0, result.stderr[-2000:]
    seen = tinyproxy.requests()
    presigns = [r for r in seen if f"POST {api}/patient/1/patient_attachment" in r]
    lists = [r for r in seen if f"GET {api}/patient/1/patient_attachment?" in r]
    uploads = [r for r in seen if f"POST {s3}/" in r]
    # every presign and upload went through the proxy (a presign whose answer came late
    # on a loaded machine is asked again: more than 3 presigns is not a leak)
    assert len(presigns) >= 3 and len(uploads) == 3, seen
    assert lists, seen
    assert check.code == 0, check.stderr
    assert f"proxy: PracSuite is reached through {shown(tinyproxy.url)}" in check.stdout
    for text in (result.stdout, result.stderr, check.stdout, check.stderr):
        assert PASSWORD not in text


async def test_no_proxy_sends_straight_to_the_hosts_it_names(
        tmp_path: Path, tinyproxy: Proxy) -> None:
    async with Sandbox(SandboxOptions(validation_delay_s=0.1)) as sb:
        manifest = write_manifest(tmp_path, make_files(tmp_path, 2, ["1"], size=200))
        cfg = config(tmp_path, sb)
        result = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                               cwd=tmp_path, env=_env(tinyproxy, no_proxy="127.0.0.1"))
        check = await run_cli("check", "--config", str(cfg), cwd=tmp_path,
                              env=_env(tinyproxy, no_proxy="127.0.0.1"))
    assert result.code == 0, result.stderr[-2000:]
    assert tinyproxy.requests() == []
    assert "proxy: none for PracSuite" in check.stdout


def test_a_proxy_is_shown_without_its_credentials() -> None:
    assert shown("http://user:pw@proxy.clinic.local:3128") == "http://proxy.clinic.local:3128"
    assert shown("proxy:8080") == "http://proxy:8080"


@pytest.mark.parametrize(("host", "no_proxy", "direct"), [
    ("s3.example.com", "example.com", True),       # a name covers the hosts under it
    ("s3.example.com", ".example.com", True),      # with or without the leading dot
    ("example.com", ".example.com", True),
    ("notexample.com", "example.com", False),      # a suffix of the name is not enough
    ("api.pracsuite.com", "*", True),
    ("api.pracsuite.com", "localhost, 127.0.0.1", False),
    ("127.0.0.1", "localhost,127.0.0.1", True),
    ("10.1.2.3", "10.0.0.0/8", True),              # CIDR, as curl 7.86+
    ("11.1.2.3", "10.0.0.0/8", False),
    ("::1", "::1", True),
    ("[::1]", "[::1]", True),
    ("s3.example.com", "example.com:443", True),   # the port is not matched
    ("S3.Example.COM.", "example.com", True),      # case and a trailing dot
    ("s3.example.com", "", False),
])
def test_no_proxy_is_read_as_curl_reads_it(host: str, no_proxy: str, direct: bool) -> None:
    import os

    from pracsuite_ingest.proxy import bypassed, no_proxy_entries
    old = {k: os.environ.pop(k, None) for k in ("no_proxy", "NO_PROXY")}
    os.environ["NO_PROXY"] = no_proxy
    try:
        assert bypassed(host, no_proxy_entries()) is direct
    finally:
        os.environ.pop("NO_PROXY")
        os.environ.update({k: v for k, v in old.items() if v is not None})


async def test_a_sessions_proxies_are_read_once_and_honour_no_proxy(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import aiohttp

    from pracsuite_ingest.proxy import for_session

    monkeypatch.setenv("HTTPS_PROXY", "http://user:pw@proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "s3.internal")
    for name in ("https_proxy", "no_proxy", "http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    async with aiohttp.ClientSession() as session:
        proxies = for_session(session)
        via = proxies.for_url("https://api.pracsuite.com/v1/x")
        assert str(via["proxy"]) == "http://proxy.example:3128"
        assert (via["proxy_auth"].login, via["proxy_auth"].password) == ("user", "pw")
        assert proxies.for_url("https://bucket.s3.internal/k") == {}
        monkeypatch.setenv("NO_PROXY", "api.pracsuite.com")  # read once: not seen
        assert for_session(session) is proxies
        assert for_session(session).for_url("https://api.pracsuite.com/v1/y") == via
