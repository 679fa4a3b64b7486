"""config.example.toml documents every key, and is itself a valid configuration."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from pracsuite_ingest.settings import Settings, load_settings

EXAMPLE = Path(__file__).parent.parent / "config.example.toml"


def test_example_names_exactly_the_settings_keys() -> None:
    doc = tomllib.loads(EXAMPLE.read_text())
    expected = {s: set(f.annotation.model_fields) for s, f in Settings.model_fields.items()
                if f.annotation is not None}
    assert {s: set(v) for s, v in doc.items()} == expected


def test_example_loads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings(EXAMPLE, require_keys=False, require_input=False)
    assert s.upload.concurrency == 8
