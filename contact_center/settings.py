"""Settings from environment variables and TOML files, validated at start-up.

Sources, strongest first: keyword arguments, environment variables (``CC_*``, nested
with ``__``, plus ``DATABASE_URL`` and ``REDIS_URL``), the TOML file named by
``CC_CONFIG``, then ``config/default.toml`` shipped with the code.
"""

from __future__ import annotations

import os
import zoneinfo
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from crm_core.db import normalize_database_url
from crm_core.normalize import is_supported_region

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "config" / "default.toml"


class HttpSettings(BaseModel):
    """Where the web server listens and how it is reached from outside."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    public_base_url: str | None = None
    """The URL customers and providers use (behind a proxy); webhooks sign against it."""


class LocaleSettings(BaseModel):
    """Regional defaults: phone region, language and time zone of the business."""

    model_config = ConfigDict(extra="forbid")

    default_region: str = "CN"
    default_language: Literal["zh-CN", "en"] = "zh-CN"
    timezone: str = "Asia/Shanghai"

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not is_supported_region(value):
            raise ValueError(f"{value!r} is not a phone region code such as CN, US or GB")
        return value.upper()

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone such as Asia/Shanghai") from None
        return value


class LogSettings(BaseModel):
    """How the processes log: one JSON object per line, or readable lines for a terminal."""

    model_config = ConfigDict(extra="forbid")

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "console"] = "json"


class RoutingSettings(BaseModel):
    """The routing engine: rules, bus retries, identity thresholds, chat threading."""

    model_config = ConfigDict(extra="forbid")

    rules_file: Path = PROJECT_ROOT / "config" / "rules.toml"
    """Categories, priorities, SLA, business hours, teams and automation rules."""
    batch_size: int = Field(default=50, ge=1, le=1000)
    lease_seconds: float = Field(default=60.0, gt=0)
    """How long a worker may hold a message before another takes it over."""
    max_attempts: int = Field(default=5, ge=1, le=100)
    retry_base_seconds: float = Field(default=2.0, ge=0)
    chat_idle_minutes: int = Field(default=240, ge=1)
    """A chat message after this much silence starts a new conversation."""
    link_threshold: float = Field(default=92.0, ge=0, le=100)
    """Fuzzy identity score at or above which a message is linked to a customer."""
    suggest_threshold: float = Field(default=75.0, ge=0, le=100)
    """Fuzzy identity score at or above which a possible duplicate is suggested."""
    embedded_worker: bool = True
    """Whether ``serve`` also routes messages in-process (embedded mode)."""

    @field_validator("rules_file")
    @classmethod
    def _rules_file(cls, value: Path) -> Path:
        from routing.rules import RulesError, load_rules

        if not value.is_file():
            raise ValueError(f"no such file {str(value)!r}")
        try:
            load_rules(value)
        except RulesError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _thresholds(self) -> RoutingSettings:
        if self.suggest_threshold > self.link_threshold:
            raise ValueError("suggest_threshold must not be above link_threshold")
        return self


class Settings(BaseSettings):
    """Everything a contact-center process needs to know at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="CC_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    database_url: str = Field(
        default="sqlite:///var/contact_center.db",
        validation_alias=AliasChoices("CC_DATABASE_URL", "DATABASE_URL", "database_url"),
    )
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("CC_REDIS_URL", "REDIS_URL", "redis_url")
    )
    secret_key: SecretStr = SecretStr("dev-insecure-change-me")
    data_dir: Path = Path("var")
    http: HttpSettings = HttpSettings()
    locale: LocaleSettings = LocaleSettings()
    log: LogSettings = LogSettings()
    routing: RoutingSettings = Field(default_factory=lambda: RoutingSettings())

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        try:
            url = make_url(normalize_database_url(value))
        except ArgumentError:
            raise ValueError(f"cannot parse database URL {value!r}") from None
        if url.get_backend_name() not in {"sqlite", "postgresql"}:
            raise ValueError("only sqlite:/// and postgresql:// databases are supported")
        return value

    @field_validator("secret_key")
    @classmethod
    def _secret_key(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value or None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments, then environment, then the deployer's TOML, then the defaults."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        local = os.environ.get("CC_CONFIG")
        if local:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(local)))
        if DEFAULT_CONFIG.exists():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=DEFAULT_CONFIG))
        return tuple(sources)

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL with the async driver; relative SQLite paths made absolute."""
        url = make_url(normalize_database_url(self.database_url))
        if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
            path = Path(url.database)
            if not path.is_absolute():
                path = Path.cwd() / path
            url = url.set(database=str(path))
        return url.render_as_string(hide_password=False)

    def masked(self) -> dict[str, Any]:
        """The effective settings with every secret and password hidden."""
        data = self.model_dump(mode="json")
        data["secret_key"] = "********"
        for key in ("database_url", "redis_url"):
            if data.get(key) and "@" in data[key]:
                try:
                    data[key] = make_url(data[key]).render_as_string(hide_password=True)
                except ArgumentError:
                    data[key] = "********"
            if data.get(key) and "password=" in data[key].lower():
                data[key] = _mask_query_password(data[key])
        return data


def _mask_query_password(url: str) -> str:
    """Hide a ``password=`` query parameter (libpq accepts the password there too)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "********"
    query = {
        k: ("***" if k.lower() == "password" else v) for k, v in parsed.query.items()
    }
    return parsed.set(query=query).render_as_string(hide_password=True)


_ALIASED_FIELDS = {"CC_DATABASE_URL": "database_url", "CC_REDIS_URL": "redis_url"}
"""Error locations of aliased fields name the first alias; show the field's own name."""


class SettingsError(Exception):
    """Settings that cannot be used; the message names each bad setting and why."""


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings, or raise SettingsError with a readable message."""
    import pydantic

    config_file = os.environ.get("CC_CONFIG")
    if config_file and not Path(config_file).is_file():
        raise SettingsError(f"CC_CONFIG: no such file {config_file!r}")
    try:
        return Settings(**overrides)
    except pydantic.ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = [str(p) for p in error["loc"]]
            if loc:
                loc[0] = _ALIASED_FIELDS.get(loc[0], loc[0])
            name = ".".join(loc)
            shown = "********" if "secret" in name else repr(error.get("input"))
            lines.append(f"  {name} = {shown}: {error['msg']}")
        raise SettingsError("bad settings:\n" + "\n".join(lines)) from None
    except ValueError as exc:  # malformed TOML
        raise SettingsError(f"cannot read settings: {exc}") from None
