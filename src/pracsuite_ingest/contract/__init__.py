"""PracSuite's documented API surface as OpenAPI 3 (`pracsuite-openapi.yaml`).

Written from pracsuite-api.md (PracSuite's public reference): the worker calls only
these operations, and the sandbox serves only these. The test suite validates the
sandbox's answers, and every request the worker sends in the end-to-end tests,
against it. Nothing at run time reads it.
"""

from __future__ import annotations

from pathlib import Path

OPENAPI_PATH = Path(__file__).with_name("pracsuite-openapi.yaml")
