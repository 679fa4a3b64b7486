"""`check --client ID`: first contact with a PracSuite, read-only, in every list variant."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from e2e import config, run_cli
from pracsuite_ingest.api import PracSuiteClient
from pracsuite_ingest.discovery import BARE, Findings, discover, render, shown
from pracsuite_ingest.rate_gate import RateGate
from pracsuite_ingest.sandbox import DescriptionMode, Sandbox, SandboxOptions


def _client(session: aiohttp.ClientSession, sb: Sandbox) -> PracSuiteClient:
    return PracSuiteClient(session, sb.base_url, sb.vendor_key, sb.practice_key,
                           RateGate(100.0), timeout_s=10, page_size=50)


@pytest.mark.parametrize(("list_key", "description", "links"), [
    ("patient_attachments", DescriptionMode.EMPTY, True),
    ("bare", DescriptionMode.EMPTY, False),
    ("items", DescriptionMode.FILE_NAME, True),
    ("data", DescriptionMode.TEXT, False),
])
async def test_first_contact_names_the_envelope_and_what_presign_url_tells(
        session: aiohttp.ClientSession, list_key: str, description: DescriptionMode,
        links: bool) -> None:
    options = SandboxOptions(clients=("42",), existing_records_per_client=4,
                             list_key=list_key, description_mode=description,
                             record_links=links)
    async with Sandbox(options) as sb:
        found = await discover(_client(session, sb), "42")
        text = render(found, sb.base_url)
        methods = {ex.method for ex in sb.api_requests}
        presigned = sb.stats()["presigned"]
    assert methods == {"GET"} and presigned == 0  # read-only: nothing presigned or sent
    assert found.envelope == (BARE if list_key == "bare" else list_key)
    assert found.configuration() == {"api.list_key": "" if list_key == "bare" else list_key}
    assert ("a bare array" if list_key == "bare" else f'envelope key "{list_key}"') in text
    assert found.fields and "attachment_client_id" in found.fields
    assert (found.presign_sampled, found.presign_answered, found.presign_named) == (3, 3, 3)
    via = "links.presign_url" if links else "documented path"
    assert found.presign_via == [via]
    assert f"answered for 3 of 3 sampled records (via {via})" in text
    if description is DescriptionMode.FILE_NAME:
        assert found.name_fields == {"description": 3}
        assert "records carry it in: description (3 of 3)" in text
    else:
        assert found.name_fields == {}
        assert "no record field carries the file name: every match needs" in text
    assert found.sort_by_status == 200 and '["file_date"] accepted' in text
    assert found.page_size_honoured is True
    assert len(found.times_ms) == 6 and "response times" in text
    assert "no rate-limit headers seen" in text
    assert "Referral letter" not in text  # file names are health data: never shown


async def test_check_client_on_the_command_line_in_text_and_json(tmp_path: Path) -> None:
    async with Sandbox(SandboxOptions(list_key="attachments", fail_rate_429=0.0)) as sb:
        cfg = config(tmp_path, sb)
        text = await run_cli("check", "--config", str(cfg), "--client", "3", cwd=tmp_path)
        as_json = await run_cli("check", "--config", str(cfg), "--client", "3", "--json",
                                cwd=tmp_path)
        unknown = await run_cli("check", "--config", str(cfg), "--client", "999", cwd=tmp_path)
        methods = {ex.method for ex in sb.api_requests}
    assert methods == {"GET"}
    assert text.code == 0, text.stderr
    assert 'envelope key "attachments"' in text.stdout
    assert 'list_key = "attachments"' in text.stdout
    assert as_json.code == 0, as_json.stderr
    data = json.loads(as_json.stdout)  # stdout holds the JSON only
    assert data["envelope"] == "attachments" and data["presign_answered"] == 3
    assert data["configuration"] == {"api.list_key": "attachments"}
    assert unknown.code == 2
    assert "not read: 404 NOT_FOUND" in unknown.stdout


def test_text_from_pracsuite_is_neutralised_before_it_reaches_a_terminal() -> None:
    hostile = "desc\x1b]0;owned\x07\x1b[2J\r\nfake: ok"
    assert shown(hostile) == "desc\\x1b]0;owned\\x07\\x1b[2J\\x0d\\x0afake: ok"
    assert shown("a\u202eb") == "a\\u202eb"  # bidi overrides too (visible.py)
    found = Findings("7\x1b[31m", list_status=200, envelope="items\x1b[2J", records_on_page=1,
                     fields=["file_size", "evil\x1b[0m\n"],
                     rate_limit_headers={"x-ratelimit-limit": "200\r\nx"})
    text = render(found, "https://api.pracsuite.com/v1")
    assert "\x1b" not in text and "\r" not in text
    assert "\\x1b[2J" in text and "evil\\x1b[0m\\x0a" in text
    assert all(line.isprintable() for line in text.splitlines())


async def test_response_times_leave_out_the_wait_for_our_own_rate_gate(
        session: aiohttp.ClientSession) -> None:
    # At 0.5 requests/s our gate holds each call back ~2 s; the old count included that
    # wait (a median of ~2000 ms here), PracSuite's own answer takes a few ms on loopback.
    # The bound is half the gate's spacing: a structural line, not a speed claim.
    async with Sandbox(SandboxOptions(clients=("42",), existing_records_per_client=4)) as sb:
        client = PracSuiteClient(session, sb.base_url, sb.vendor_key, sb.practice_key,
                                 RateGate(0.5), timeout_s=10, page_size=50)
        found = await discover(client, "42")
        text = render(found, sb.base_url)
    assert len(found.times_ms) == 6
    assert sorted(found.times_ms)[3] < 1000, found.times_ms
    assert "over 6 calls (from sending to the whole answer; the wait for " \
           "api.requests_per_second not counted)" in text
