"""Configuration: a TOML file, then environment variables, then command-line flags.

Every key of docs/contract.md, nothing else: an unknown key, a missing key or a bad value is a
`ConfigError` naming the key (exit 2, nothing sent). Keys are `SecretStr`, so that a
repr, a log line or a traceback never shows them.
"""

from __future__ import annotations

import codecs
import os
import ssl
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from pracsuite_ingest import own_files
from pracsuite_ingest.errors import ConfigError
from pracsuite_ingest.guards import cleartext_problem, tls_context
from pracsuite_ingest.localfs import folder_problem
from pracsuite_ingest.rate_gate import DEFAULT_MAX_RPS

DEFAULT_CONFIG = Path("pracsuite-ingest.toml")
ENV_PREFIX = "PRACSUITE_INGEST_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiSettings(_Section):
    base_url: str = "https://api.pracsuite.com/v1"
    vendor_api_key: SecretStr = SecretStr("")
    practice_api_key: SecretStr = SecretStr("")
    vendor_api_key_file: str = ""
    practice_api_key_file: str = ""
    # A number, or "auto" (rate_gate.py): find PracSuite's unpublished limit while running
    requests_per_second: Annotated[float, Field(gt=0, le=1000)] | Literal["auto"] = 3.0
    max_requests_per_second: float = Field(default=DEFAULT_MAX_RPS, gt=0, le=1000)
    # "redis://HOST:PORT/DB": one budget for every process on this vendor key
    # (shared_limit.py); "" = this process paces itself
    shared_limit: str = ""
    timeout_s: float = Field(default=30.0, gt=0)
    list_key: str = ""
    page_size: int = Field(default=100, ge=1, le=100)
    max_attempts: int = Field(default=6, ge=1, le=50)
    max_wait_s: float = Field(default=120.0, gt=0, le=3600)
    ca_file: str = ""

    @field_validator("base_url")
    @classmethod
    def _base_url_is_http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with https:// (or http:// for the sandbox)")
        problem = cleartext_problem(value, "the URL")
        if problem:  # the keys would cross the network in clear text
            raise ValueError(problem)
        return value

    @field_validator("shared_limit")
    @classmethod
    def _shared_limit_is_redis(cls, value: str) -> str:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a Redis URL: redis://HOST:PORT/DB (rediss:// for TLS)")
        return value

    @field_validator("ca_file")
    @classmethod
    def _ca_file_loads(cls, value: str) -> str:
        if value:
            try:
                tls_context(value)
            except (OSError, ssl.SSLError) as exc:
                reason = getattr(exc, "strerror", None) or str(exc)
                raise ValueError(f"cannot load a CA certificate from {value}: {reason}"
                                 ) from None
        return value


class InputSettings(_Section):
    manifest: str = ""
    source_dir: str = ""
    follow_symlinks: bool = False
    root: str = ""
    encoding: str = ""
    rehash: bool = False  # read every file, even one whose identity on disk is unchanged

    @field_validator("encoding")
    @classmethod
    def _encoding_is_known(cls, value: str) -> str:
        if value:
            try:
                codecs.lookup(value)
            except LookupError:
                raise ValueError(f"unknown encoding {value!r}; e.g. cp1252, latin-1, "
                                 "utf-16-le, or empty for UTF-8") from None
        return value


class UploadSettings(_Section):
    concurrency: int = Field(default=8, ge=1, le=256)
    presign_concurrency: int = Field(default=8, ge=1, le=64)
    timeout_s: float = Field(default=900.0, gt=0)
    grace_s: float = Field(default=30.0, ge=0)
    max_bytes_per_second: int = Field(default=0, ge=0)  # all uploads together; 0 = no cap
    empty_files: Literal["send", "refuse"] = "send"  # refusals.py: PracSuite's rule unknown


class ReconcileSettings(_Section):
    deadline_s: float = Field(default=900.0, ge=0)
    poll_interval_s: float = Field(default=10.0, gt=0)
    verify: Literal["off", "ambiguous", "all"] = "ambiguous"
    verify_concurrency: int = Field(default=8, ge=1, le=64)
    max_resends: int = Field(default=2, ge=0, le=100)  # over all runs, for a `missing` file


class StateSettings(_Section):
    path: str = "pracsuite-ingest.db"


class ReportSettings(_Section):
    dir: str = "reports"


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "console", "json"] = "auto"
    file_names: bool = False
    progress_interval_s: float = Field(default=60.0, gt=0)  # off a terminal: one JSON line


class MetricsSettings(_Section):
    textfile: str = ""
    pushgateway_url: str = ""
    job: str = Field(default="pracsuite_ingest", min_length=1)

    @field_validator("textfile")
    @classmethod
    def _textfile_is_prom(cls, value: str) -> str:
        if value and not value.endswith(".prom"):
            raise ValueError("must end in .prom (node-exporter's textfile collector reads "
                             "only those), e.g. /var/lib/node_exporter/pracsuite_ingest.prom")
        return value

    @field_validator("pushgateway_url")
    @classmethod
    def _pushgateway_is_http(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://, e.g. http://pushgateway:9091")
        return value


class Settings(BaseSettings):
    """The whole configuration, validated. Build it with `load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        secrets_dir=None,
    )

    api: ApiSettings = ApiSettings()
    input: InputSettings = InputSettings()
    upload: UploadSettings = UploadSettings()
    reconcile: ReconcileSettings = ReconcileSettings()
    state: StateSettings = StateSettings()
    report: ReportSettings = ReportSettings()
    log: LogSettings = LogSettings()
    metrics: MetricsSettings = MetricsSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = _TOML_FILE.get("path")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


# pydantic-settings takes its sources from a classmethod; the file is passed through here.
_TOML_FILE: dict[str, Path | None] = {"path": None}


def _unknown_env_keys(environ: dict[str, str]) -> list[str]:
    """PRACSUITE_INGEST_* variables that name no key (pydantic-settings ignores them)."""
    unknown = []
    sections = Settings.model_fields
    for name in environ:
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section, _, key = rest.partition("__")
        if section in ("shard", "secrets_dir"):  # read elsewhere, not settings keys
            continue
        annotation = sections.get(section)
        model = annotation.annotation if annotation is not None else None
        if model is None or not key or key not in getattr(model, "model_fields", {}):
            unknown.append(name)
    return unknown


def _read_secret_file(path: str, key: str) -> SecretStr:
    try:
        return SecretStr(Path(path).read_text(encoding="utf-8").strip())
    except OSError as exc:
        raise ConfigError(f"api.{key}_file: cannot read {path}: {exc.strerror}") from None


def _fill_secrets(settings: Settings, environ: dict[str, str]) -> Settings:
    """Keys from `*_file` keys, a secrets dir, or the short env names docs/contract.md gives."""
    api = settings.api
    updates: dict[str, SecretStr] = {}
    secrets_dir = environ.get("PRACSUITE_INGEST_SECRETS_DIR", "")
    for key, env_name in (
        ("vendor_api_key", "PRACSUITE_VENDOR_API_KEY"),
        ("practice_api_key", "PRACSUITE_PRACTICE_API_KEY"),
    ):
        current: SecretStr = getattr(api, key)
        if current.get_secret_value():
            continue
        file_path = getattr(api, f"{key}_file")
        if file_path:
            updates[key] = _read_secret_file(file_path, key)
        elif environ.get(env_name):
            updates[key] = SecretStr(environ[env_name].strip())
        elif secrets_dir and (Path(secrets_dir) / key).is_file():
            updates[key] = _read_secret_file(str(Path(secrets_dir) / key), key)
    if not updates:
        return settings
    return settings.model_copy(update={"api": api.model_copy(update=updates)})


def _format_validation_error(exc: ValidationError, origin: str) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown key '{where}' in {origin} (config.example.toml lists "
                         "every key; a misspelling?)")
        else:
            lines.append(f"bad value for '{where}': {err['msg']}")
    return "; ".join(lines)


def load_settings(
    config_file: Path | None,
    overrides: dict[str, dict[str, Any]] | None = None,
    *,
    require_keys: bool = True,
    require_input: bool = True,
) -> Settings:
    """Settings from the file (or ./pracsuite-ingest.toml if present), env, then flags.

    `overrides` holds the command-line flags as `{section: {key: value}}`.
    Raises `ConfigError` naming the key when anything is wrong.
    """
    env = dict(os.environ)
    if config_file is None and DEFAULT_CONFIG.is_file():
        config_file = DEFAULT_CONFIG
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"--config: no such file {config_file}")
    unknown = _unknown_env_keys(env)
    if unknown:
        raise ConfigError(f"unknown configuration variable(s): {', '.join(sorted(unknown))}")
    _TOML_FILE["path"] = config_file
    try:
        flags: Any = overrides or {}
        settings = Settings(**flags)
    except ValidationError as exc:
        origin = str(config_file) if config_file else "the environment or the flags"
        raise ConfigError(_format_validation_error(exc, origin)) from None
    except (ValueError, OSError) as exc:  # tomllib.TOMLDecodeError is a ValueError
        raise ConfigError(f"{config_file}: {exc}") from None
    finally:
        _TOML_FILE["path"] = None
    settings = _fill_secrets(settings, env)
    own_files.guard("settings", own_files.settings_files(
        config_file, [(f"api.{k}", getattr(settings.api, k)) for k in
                      ("vendor_api_key_file", "practice_api_key_file")],
        env.get("PRACSUITE_INGEST_SECRETS_DIR", ""), settings.report.dir))
    for label, folder in (("state.path", Path(settings.state.path).parent),
                          ("report.dir", Path(settings.report.dir))):
        problem = folder_problem(folder, label)
        if problem is not None:
            raise ConfigError(problem)
    validate_completeness(settings, require_keys=require_keys, require_input=require_input)
    return settings


def validate_completeness(settings: Settings, *, require_keys: bool, require_input: bool) -> None:
    """The checks that span keys: both API keys present, exactly one input."""
    if require_keys:
        for key, env_name in (
            ("vendor_api_key", "PRACSUITE_VENDOR_API_KEY"),
            ("practice_api_key", "PRACSUITE_PRACTICE_API_KEY"),
        ):
            if not getattr(settings.api, key).get_secret_value():
                raise ConfigError(
                    f"missing key 'api.{key}': set it in the config file, "
                    f"in {env_name}, or in api.{key}_file"
                )
    if require_input:
        manifest, source_dir = settings.input.manifest, settings.input.source_dir
        if bool(manifest) == bool(source_dir):
            raise ConfigError(
                "set exactly one of 'input.manifest' and 'input.source_dir' "
                "(config file, environment, --manifest or --source-dir)"
            )
