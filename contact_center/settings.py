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
    console_cache_seconds: float = Field(default=5.0, ge=0, le=60)
    """How long a web process reuses a checked console session and a computed inbox page
    (0 switches both caches off); changes made through this process and (for the inbox)
    domain events show at once, other changes within twice this time."""


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


_PORTS = {"plain": 143, "starttls": 143, "tls": 993}
_SMTP_PORTS = {"plain": 25, "starttls": 587, "tls": 465}
DEFAULT_BLOCKED_EXTENSIONS = [
    ".exe", ".bat", ".cmd", ".com", ".scr", ".pif", ".vbs", ".vbe", ".js", ".jse", ".wsf",
    ".wsh", ".msi", ".msp", ".hta", ".cpl", ".jar", ".ps1", ".lnk", ".reg",
]


def _secret(value: SecretStr | None, env_name: str | None, what: str) -> str | None:
    """A password given inline or through an environment variable named in the config."""
    if env_name:
        found = os.environ.get(env_name)
        if found is None:
            raise ValueError(f"{what}: environment variable {env_name} is not set")
        return found
    return value.get_secret_value() if value is not None else None


class MailboxSettings(BaseModel):
    """One IMAP mailbox read by the contact center (``[[email.mailboxes]]``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,50}$")
    host: str
    username: str
    password: SecretStr | None = None
    password_env: str | None = None
    """Name of an environment variable holding the password (keeps it out of files)."""
    address: str | None = None
    """The address customers write to; replies to its mail leave from it."""
    security: Literal["plain", "starttls", "tls"] = "tls"
    port: int | None = Field(default=None, ge=1, le=65535)
    folder: str = "INBOX"
    processed_folder: str | None = None
    """Move handled mail here; unset: mark it read and leave it."""
    team: str | None = None
    """Team that gets this mailbox's new tickets unless a routing rule says otherwise."""
    idle: bool = True
    poll_seconds: float = Field(default=60.0, gt=0)
    fetch_batch: int = Field(default=25, ge=1, le=500)
    verify_tls: bool = True

    @model_validator(mode="after")
    def _password(self) -> MailboxSettings:
        if self.password is None and not self.password_env:
            raise ValueError(f"mailbox {self.name!r}: set password or password_env")
        _secret(self.password, self.password_env, f"mailbox {self.name!r}")
        return self

    @property
    def effective_port(self) -> int:
        """The configured port, or the standard one for the security mode."""
        return self.port or _PORTS[self.security]

    def resolved_password(self) -> str:
        """The password, from the config or its environment variable."""
        return _secret(self.password, self.password_env, f"mailbox {self.name!r}") or ""


class SmtpSettings(BaseModel):
    """The SMTP server replies leave through (``[email.smtp]``)."""

    model_config = ConfigDict(extra="forbid")

    host: str
    from_address: str
    from_name: str | None = None
    security: Literal["plain", "starttls", "tls"] = "starttls"
    port: int | None = Field(default=None, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    password_env: str | None = None
    message_id_domain: str | None = None
    verify_tls: bool = True

    @field_validator("from_address")
    @classmethod
    def _from_address(cls, value: str) -> str:
        from crm_core.errors import ValidationError as CrmValidationError
        from crm_core.normalize import normalize_email

        try:
            return normalize_email(value)
        except CrmValidationError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _password(self) -> SmtpSettings:
        _secret(self.password, self.password_env, "smtp")
        return self

    @property
    def effective_port(self) -> int:
        """The configured port, or the standard one for the security mode."""
        return self.port or _SMTP_PORTS[self.security]

    def resolved_password(self) -> str | None:
        """The password, from the config or its environment variable."""
        return _secret(self.password, self.password_env, "smtp")


class EmailSettings(BaseModel):
    """The e-mail channel: mailboxes to read, the SMTP server, attachment limits."""

    model_config = ConfigDict(extra="forbid")

    mailboxes: list[MailboxSettings] = Field(default_factory=list)
    smtp: SmtpSettings | None = None
    fetch_in_serve: bool = True
    """Whether ``serve`` reads the mailboxes (set false where ``email fetch`` runs)."""
    max_attachment_mb: float = Field(default=25.0, gt=0)
    blocked_extensions: list[str] = Field(default_factory=lambda: list(DEFAULT_BLOCKED_EXTENSIONS))
    templates_dir: Path | None = None
    """Directory whose ``reply.<lang>.txt.j2`` / ``.html.j2`` override the shipped ones."""

    @model_validator(mode="after")
    def _unique_names(self) -> EmailSettings:
        names = [m.name for m in self.mailboxes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"mailbox names must be unique: {', '.join(duplicates)}")
        return self


class TelegramSettings(BaseModel):
    """The Telegram bot (``[telegram]``): polling, or a webhook served by our app."""

    model_config = ConfigDict(extra="forbid")

    token: SecretStr | None = None
    token_env: str | None = None
    """Name of an environment variable holding the bot token."""
    mode: Literal["polling", "webhook"] = "polling"
    webhook_secret: SecretStr | None = None
    webhook_secret_env: str | None = None
    """Checked against ``X-Telegram-Bot-Api-Secret-Token`` on every webhook call."""
    api_base_url: str = "https://api.telegram.org/bot"
    api_file_url: str = "https://api.telegram.org/file/bot"
    poll_timeout: int = Field(default=25, ge=0, le=50)
    max_file_mb: float = Field(default=20.0, gt=0)
    allow_groups: bool = False
    """Log group and channel messages too (by default only private chats are read)."""
    team: str | None = None
    run_in_serve: bool = True
    """Whether ``serve`` polls (polling mode); set false where ``telegram poll`` runs."""

    @model_validator(mode="after")
    def _secrets(self) -> TelegramSettings:
        token = _secret(self.token, self.token_env, "telegram token")
        if not token:
            raise ValueError("set token or token_env")
        if ":" not in token:
            raise ValueError("the bot token looks wrong (expected '<id>:<secret>')")
        if self.mode == "webhook" and not _secret(
            self.webhook_secret, self.webhook_secret_env, "telegram webhook_secret"
        ):
            raise ValueError("webhook mode needs webhook_secret or webhook_secret_env")
        return self

    def resolved_token(self) -> str:
        """The bot token."""
        return _secret(self.token, self.token_env, "telegram token") or ""

    def resolved_webhook_secret(self) -> str | None:
        """The webhook secret token, if set."""
        return _secret(self.webhook_secret, self.webhook_secret_env, "telegram webhook_secret")


class WebchatSettings(BaseModel):
    """The web chat widget (``[webchat]``): who may embed it, limits and its texts."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    allowed_origins: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:8080", "http://localhost:8080"]
    )
    """Pages (``scheme://host[:port]``) that may open a chat socket; ``"*"`` allows any."""
    rate_burst: int = Field(default=5, ge=1, le=1000)
    """Messages a visitor may send at once before the sustained rate applies."""
    rate_per_second: float = Field(default=1.0, gt=0, le=1000)
    max_message_chars: int = Field(default=4000, ge=1, le=20000)
    prechat_form: Literal["off", "optional", "required"] = "optional"
    """Ask name, e-mail and phone before the first message (the visitor may skip: optional)."""
    title_zh: str = Field(default="在线客服", min_length=1, max_length=100)
    title_en: str = Field(default="Chat with us", min_length=1, max_length=100)
    greeting_zh: str = Field(default="您好！请问有什么可以帮您？", max_length=500)
    greeting_en: str = Field(default="Hello! How can we help you?", max_length=500)
    presence_cache_seconds: float = Field(default=5.0, ge=0, le=300)
    """How long the answer to "is any agent online?" is reused."""

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        from channels.webchat.origins import invalid_origins

        bad = invalid_origins(value)
        if bad:
            raise ValueError(
                f"not an origin (scheme://host[:port], or \"*\"): {', '.join(map(repr, bad))}"
            )
        return value


class VoiceSettings(BaseModel):
    """The phone channel (``[voice]``): a TwiML provider's webhooks and a PBX's CTI events."""

    model_config = ConfigDict(extra="forbid")

    auth_token: SecretStr | None = None
    auth_token_env: str | None = None
    """The provider's auth token: every webhook's ``X-Twilio-Signature`` is checked with it."""
    flows_file: Path = PROJECT_ROOT / "config" / "flows.toml"
    flow: str = "main"
    team: str | None = None
    """Team whose online agents take calls (unset: any online agent with a phone)."""
    say_languages: dict[str, str] = Field(
        default_factory=lambda: {"zh-CN": "zh-CN", "en": "en-US"})
    """Flow language → the provider's ``<Say language>``."""
    hold_music_url: str | None = None
    dial_timeout_seconds: int = Field(default=20, ge=5, le=120)
    caller_id: str | None = None
    """Number shown to agents' phones when a call is put through (default: the caller's)."""
    cti_token: SecretStr | None = None
    cti_token_env: str | None = None
    """Bearer token of the generic CTI webhook (``/webhooks/cti``); unset: CTI is off."""

    @field_validator("flows_file")
    @classmethod
    def _flows_file(cls, value: Path) -> Path:
        from routing.flows import FlowError, load_flows

        if not value.is_file():
            raise ValueError(f"no such file {str(value)!r}")
        try:
            load_flows(value)
        except FlowError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _secrets(self) -> VoiceSettings:
        if not _secret(self.auth_token, self.auth_token_env, "voice auth_token") and not (
            _secret(self.cti_token, self.cti_token_env, "voice cti_token")
        ):
            raise ValueError("set auth_token(_env) for a TwiML provider, cti_token(_env) for "
                             "a PBX, or both")
        from routing.flows import load_flows

        if self.flow not in load_flows(self.flows_file).flows:
            raise ValueError(f"no flow {self.flow!r} in {self.flows_file}")
        return self

    def resolved_auth_token(self) -> str | None:
        """The provider's auth token, if configured."""
        return _secret(self.auth_token, self.auth_token_env, "voice auth_token")

    def resolved_cti_token(self) -> str | None:
        """The CTI bearer token, if configured."""
        return _secret(self.cti_token, self.cti_token_env, "voice cti_token")


class BotSettings(BaseModel):
    """``[bot]``: the self-service bot of the chat channels (flows + knowledge base)."""

    model_config = ConfigDict(extra="forbid")

    channels: dict[str, str] = Field(default_factory=dict)
    """Which flow answers each channel, e.g. ``{ telegram = "bot", webchat = "bot" }``
    (``email`` too: menus become numbered lists). Empty: the bot is off."""
    flows_file: Path = PROJECT_ROOT / "config" / "flows.toml"
    """The flows used until an administrator saves flows in the console."""
    knowledge_file: Path = PROJECT_ROOT / "config" / "knowledge.toml"
    """Synonyms and the confidence threshold of knowledge-base answers."""
    handoff_check_seconds: float = Field(default=15.0, gt=0, le=3600)
    """How often handoffs nobody answered are looked for."""

    @model_validator(mode="after")
    def _check(self) -> BotSettings:
        from routing.flows import FlowError, load_flows
        from routing.knowledge import KnowledgeError, load_config

        unknown = set(self.channels) - {"telegram", "webchat", "email"}
        if unknown:
            raise ValueError(f"bot channels: {sorted(unknown)[0]!r} is not one of telegram, "
                             "webchat, email")
        try:
            flows = load_flows(self.flows_file)
            load_config(self.knowledge_file)
        except (FlowError, KnowledgeError) as exc:
            raise ValueError(str(exc)) from None
        for channel, flow in self.channels.items():
            if flow not in flows.flows:
                raise ValueError(f"bot channels.{channel}: no flow {flow!r} in "
                                 f"{self.flows_file}; known: {', '.join(flows.flows)}")
        return self


class CampaignSettings(BaseModel):
    """``[campaigns]``: care campaigns and the scheduler that runs them."""

    model_config = ConfigDict(extra="forbid")

    file: Path = PROJECT_ROOT / "config" / "campaigns.toml"
    """Campaigns, their templates, and the [feedback] rules."""
    tick_seconds: float = Field(default=15.0, gt=0, le=3600)
    """How often the scheduler looks for due work when it found none."""
    batch_size: int = Field(default=200, ge=1, le=5000)
    """Sends handled per transaction."""

    @field_validator("file")
    @classmethod
    def _file(cls, value: Path) -> Path:
        from crm_core.services.campaign_config import CampaignConfigError, load_campaigns

        try:
            load_campaigns(value)
        except CampaignConfigError as exc:
            raise ValueError(str(exc)) from None
        return value


class AnalyticsSettings(BaseModel):
    """``[analytics]``: reports, the reporting currency and the weekly report e-mail."""

    model_config = ConfigDict(extra="forbid")

    currency: str = Field(default="CNY", pattern=r"^[A-Z]{3}$")
    """Money figures (revenue, lifetime value, forecast) count orders in this currency."""
    weekly_report: bool = True
    """E-mail the weekly report to active supervisors (with an address) via the outbox."""
    weekly_report_weekday: int = Field(default=0, ge=0, le=6)
    """The day it goes out: 0 = Monday … 6 = Sunday (business time zone)."""
    weekly_report_hour: int = Field(default=9, ge=0, le=23)
    """The local hour from which it goes out on that day."""


class ApiSettings(BaseModel):
    """``[api]``: the public REST API and outbound webhooks."""

    model_config = ConfigDict(extra="forbid")

    rate_limit_per_minute: int = Field(default=600, ge=1, le=1_000_000)
    """Requests one token may make per minute unless the token sets its own limit."""
    max_body_kb: int = Field(default=1024, ge=1, le=102_400)
    """Largest JSON body accepted; bigger requests get 413."""
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    webhook_max_attempts: int = Field(default=8, ge=1, le=50)
    """Attempts per delivery (exponential backoff between them) before it is given up."""
    webhook_backoff_seconds: float = Field(default=10.0, gt=0, le=3600)
    """The first retry waits this long; each next one twice as long (capped at a day)."""
    webhook_disable_after: int = Field(default=20, ge=1, le=10_000)
    """Consecutive failed attempts after which a subscription is switched off."""
    webhook_poll_seconds: float = Field(default=1.0, gt=0, le=600)
    """How often the delivery loop looks for due deliveries when it found none."""
    webhook_allow_private: bool = True
    """Whether webhook URLs may point at loopback/private addresses (off for SaaS-like setups)."""


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
    email: EmailSettings = EmailSettings()
    telegram: TelegramSettings | None = None
    webchat: WebchatSettings = WebchatSettings()
    voice: VoiceSettings | None = None
    campaigns: CampaignSettings = Field(default_factory=lambda: CampaignSettings())
    analytics: AnalyticsSettings = AnalyticsSettings()
    bot: BotSettings = Field(default_factory=lambda: BotSettings())
    api: ApiSettings = ApiSettings()

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

    @property
    def blob_dir(self) -> Path:
        """Where raw originals and attachments are kept (``data_dir/blobs``)."""
        root = self.data_dir if self.data_dir.is_absolute() else Path.cwd() / self.data_dir
        return root / "blobs"

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
