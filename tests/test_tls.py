"""TLS is always verified; `api.ca_file` adds a CA; plain http only to a loopback host."""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from e2e import run_cli
from pracsuite_ingest.cli import main
from pracsuite_ingest.connection import make_client, make_session
from pracsuite_ingest.errors import ConfigError, Retryable
from pracsuite_ingest.settings import Settings, load_settings

SRC = Path(__file__).parent.parent / "src"
KEYS = {"vendor_api_key": "vendor-key-0123456789", "practice_api_key": "practice-key-987654"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for k in [k for k in os.environ if k.startswith("PRACSUITE")]:
        monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@asynccontextmanager
async def tls_api(ca: trustme.CA, *names: str) -> AsyncIterator[str]:
    """A PracSuite stand-in on https://127.0.0.1:<port> with a certificate from `ca`."""
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response({"patient_attachments": [], "total_entries": 0, "links": {}})

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(ctx)
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx).start()
    try:
        yield f"https://127.0.0.1:{runner.addresses[0][1]}/v1"
    finally:
        await runner.cleanup()


def settings_for(base_url: str, ca_file: str = "") -> Settings:
    return load_settings(None, {"api": {"base_url": base_url, "ca_file": ca_file, **KEYS}},
                         require_input=False)


async def probe(settings: Settings) -> None:
    async with make_session(settings) as session:
        await make_client(settings, session).probe()


async def test_a_certificate_from_an_unknown_ca_is_refused(ca: trustme.CA) -> None:
    async with tls_api(ca, "127.0.0.1") as base:
        with pytest.raises(Retryable, match="CertificateError"):
            await probe(settings_for(base))


async def test_ca_file_makes_a_private_ca_trusted(ca: trustme.CA, tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with tls_api(ca, "127.0.0.1") as base:
        await probe(settings_for(base, str(ca_file)))  # no error: the call went through


async def test_the_host_name_is_still_checked_with_a_ca_file(ca: trustme.CA,
                                                             tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with tls_api(ca, "pracsuite.example") as base:  # a cert for another name
        with pytest.raises(Retryable, match="CertificateError"):
            await probe(settings_for(base, str(ca_file)))


async def test_check_command_uses_the_ca_file(ca: trustme.CA, tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with tls_api(ca, "127.0.0.1") as base:
        cfg = tmp_path / "c.toml"
        keys = "".join(f'{k} = "{v}"\n' for k, v in KEYS.items())
        cfg.write_text(f'[api]\nbase_url = "{base}"\n{keys}max_attempts = 1\n'
                       f'[state]\npath = "{tmp_path}/s.db"\n[report]\ndir = "{tmp_path}/r"\n')
        refused = await run_cli("check", "--config", str(cfg), cwd=tmp_path)
        cfg.write_text(cfg.read_text().replace("[state]", f'ca_file = "{ca_file}"\n[state]'))
        trusted = await run_cli("check", "--config", str(cfg), cwd=tmp_path)
    assert refused.code == 3 and "CertificateError" in refused.stderr, refused.stderr
    assert trusted.code == 0, trusted.stderr


@pytest.mark.parametrize(("url", "ok"), [
    ("https://api.pracsuite.com/v1", True),
    ("http://127.0.0.1:8700/v1", True),
    ("http://127.9.9.9/v1", True),
    ("http://localhost:8700/v1", True),
    ("http://[::1]:8700/v1", True),
    ("http://api.pracsuite.com/v1", False),
    ("http://10.0.0.5/v1", False),
    ("http://localhost.evil.example/v1", False),
    ("http://127.0.0.1.nip.io/v1", False),
])
def test_plain_http_only_for_a_loopback_host(url: str, ok: bool) -> None:
    if ok:
        assert settings_for(url).api.base_url == url
    else:
        with pytest.raises(ConfigError, match=r"'api\.base_url'.*only https://"):
            settings_for(url)


def test_plain_http_elsewhere_exits_2_before_anything_is_sent(
        capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--dry-run", "--manifest", "m.csv", "--base-url",
                 "http://api.pracsuite.com/v1"])
    assert code == 2
    assert "api.base_url" in capsys.readouterr().err


@pytest.mark.parametrize("content", [None, b"not a certificate\n"])
def test_a_ca_file_that_cannot_be_loaded_is_a_configuration_error(
        tmp_path: Path, content: bytes | None) -> None:
    ca_file = tmp_path / "ca.pem"
    if content is not None:
        ca_file.write_bytes(content)
    with pytest.raises(ConfigError, match=r"'api\.ca_file'.*cannot load a CA certificate"):
        settings_for("https://api.pracsuite.com/v1", str(ca_file))


def test_no_code_turns_tls_verification_off() -> None:
    relaxed = re.compile(r"ssl\s*=\s*False|verify_ssl|CERT_NONE|check_hostname\s*=\s*False"
                         r"|_create_unverified_context|ssl\.PROTOCOL_TLS\b")
    found = [f"{p}:{n}" for p in SRC.rglob("*.py")
             for n, line in enumerate(p.read_text().splitlines(), 1) if relaxed.search(line)]
    assert found == []
