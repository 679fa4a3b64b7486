"""Configuration: file, then environment, then flags; every error names its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pracsuite_ingest.errors import ConfigError
from pracsuite_ingest.settings import load_settings

GOOD = """
[api]
vendor_api_key = "vendor-secret"
practice_api_key = "practice-secret"
[input]
manifest = "m.csv"
[upload]
concurrency = 3
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for k in list(os.environ):
        if k.startswith("PRACSUITE_"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)


def cfg(tmp_path: Path, text: str = GOOD) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_file_then_env_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(cfg(tmp_path)).upload.concurrency == 3
    monkeypatch.setenv("PRACSUITE_INGEST_UPLOAD__CONCURRENCY", "16")
    assert load_settings(cfg(tmp_path)).upload.concurrency == 16
    s = load_settings(cfg(tmp_path), {"upload": {"concurrency": 5}})
    assert s.upload.concurrency == 5 and s.upload.presign_concurrency == 8


@pytest.mark.parametrize(("text", "env", "named"), [
    (GOOD + "[bogus]\nx = 1\n", {}, "bogus"),
    (GOOD.replace("concurrency = 3", "concurency = 3"), {}, "upload.concurency"),
    (GOOD.replace("concurrency = 3", "concurrency = 0"), {}, "upload.concurrency"),
    (GOOD, {"PRACSUITE_INGEST_UPLOAD__CONCURRENCY": "many"}, "upload.concurrency"),
    (GOOD, {"PRACSUITE_INGEST_UPLOAD__CONCURENCY": "3"}, "PRACSUITE_INGEST_UPLOAD__CONCURENCY"),
    (GOOD.replace('practice_api_key = "practice-secret"', ""), {}, "api.practice_api_key"),
    (GOOD.replace('manifest = "m.csv"', ""), {}, "input.manifest"),
    (GOOD.replace("[input]", '[input]\nsource_dir = "d"'), {}, "input.source_dir"),
    (GOOD.replace("[api]", '[api]\nbase_url = "ftp://x"'), {}, "api.base_url"),
    (GOOD + "[log]\nlevel = \"loud\"\n", {}, "log.level"),
    (GOOD.replace("[api]", '[api]\nrequests_per_second = "fast"'), {},
     "api.requests_per_second"),
    (GOOD, {"PRACSUITE_INGEST_API__REQUESTS_PER_SECOND": "0"}, "api.requests_per_second"),
])
def test_bad_config_names_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str,
                                  env: dict[str, str], named: str) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_settings(cfg(tmp_path, text))


def test_keys_from_env_names_and_files_never_show_in_repr(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret_file = tmp_path / "vendor"
    secret_file.write_text("from-file\n")
    text = GOOD.replace('vendor_api_key = "vendor-secret"',
                        f'vendor_api_key_file = "{secret_file}"')
    text = text.replace('practice_api_key = "practice-secret"', "")
    monkeypatch.setenv("PRACSUITE_PRACTICE_API_KEY", "from-env")
    s = load_settings(cfg(tmp_path, text))
    assert s.api.vendor_api_key.get_secret_value() == "from-file"
    assert s.api.practice_api_key.get_secret_value() == "from-env"
    assert "from-file" not in repr(s) and "from-env" not in repr(s)


def test_the_rate_is_a_number_or_auto_from_the_file_or_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(cfg(tmp_path)).api.requests_per_second == 3.0
    auto = load_settings(cfg(tmp_path, GOOD.replace(
        "[api]", '[api]\nrequests_per_second = "auto"\nmax_requests_per_second = 12')))
    assert auto.api.requests_per_second == "auto" and auto.api.max_requests_per_second == 12
    monkeypatch.setenv("PRACSUITE_INGEST_API__REQUESTS_PER_SECOND", "auto")
    assert load_settings(cfg(tmp_path)).api.requests_per_second == "auto"
    monkeypatch.setenv("PRACSUITE_INGEST_API__REQUESTS_PER_SECOND", "7.5")
    assert load_settings(cfg(tmp_path)).api.requests_per_second == 7.5
