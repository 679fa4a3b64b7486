"""The HTTP session and the PracSuite client a command works with, built from the settings."""

from __future__ import annotations

import aiohttp

from pracsuite_ingest.api import PracSuiteClient
from pracsuite_ingest.guards import tls_context
from pracsuite_ingest.rate_gate import RateGate
from pracsuite_ingest.settings import Settings
from pracsuite_ingest.shared_limit import shared_limit_of


def make_session(settings: Settings) -> aiohttp.ClientSession:
    limit = settings.upload.concurrency + settings.upload.presign_concurrency + 4
    return aiohttp.ClientSession(
        # TLS verified always; api.ca_file adds a CA, never turns verification off.
        connector=aiohttp.TCPConnector(limit=limit, limit_per_host=limit,
                                       ssl=tls_context(settings.api.ca_file)),
        # PracSuite's answers are small; S3 bodies are streamed from disk.
        auto_decompress=True,
        # HTTPS_PROXY / HTTP_PROXY / NO_PROXY, for PracSuite and S3 alike (docs/contract.md).
        trust_env=True,
    )


def make_client(settings: Settings, session: aiohttp.ClientSession) -> PracSuiteClient:
    return PracSuiteClient(
        session,
        settings.api.base_url,
        settings.api.vendor_api_key.get_secret_value(),
        settings.api.practice_api_key.get_secret_value(),
        RateGate.for_setting(settings.api.requests_per_second,
                             settings.api.max_requests_per_second, shared_limit_of(settings)),
        timeout_s=settings.api.timeout_s,
        list_key=settings.api.list_key,
        page_size=settings.api.page_size,
        max_wait_s=settings.api.max_wait_s,
    )
