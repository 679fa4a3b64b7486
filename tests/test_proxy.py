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
    assert (len(presigns), len(uploads)) == (3, 3), seen
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
