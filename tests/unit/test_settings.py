"""Settings: defaults, environment, the CC_CONFIG TOML overlay, validation and masking."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from contact_center.settings import Settings, SettingsError, load_settings

pytestmark = pytest.mark.usefixtures("clean_settings_env")

def write_toml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def settings_error(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> str:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    return str(info.value)


# --- defaults and sources ---------------------------------------------------------------


def test_defaults() -> None:
    settings = load_settings()
    assert settings.database_url == "sqlite:///var/contact_center.db"
    assert settings.redis_url is None
    assert settings.http.host == "127.0.0.1"
    assert settings.http.port == 8080
    assert settings.http.public_base_url is None
    assert settings.locale.default_region == "CN"
    assert settings.locale.default_language == "zh-CN"
    assert settings.locale.timezone == "Asia/Shanghai"
    assert settings.log.level == "INFO"
    assert settings.log.format == "json"
    assert settings.data_dir == Path("var")
    assert settings.secret_key.get_secret_value()


def test_env_overrides_nested_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC_HTTP__PORT", "9001")
    monkeypatch.setenv("CC_HTTP__HOST", "0.0.0.0")
    monkeypatch.setenv("CC_LOCALE__DEFAULT_REGION", "us")
    monkeypatch.setenv("CC_LOG__FORMAT", "console")
    settings = load_settings()
    assert settings.http.port == 9001
    assert settings.http.host == "0.0.0.0"
    assert settings.locale.default_region == "US"
    assert settings.log.format == "console"
    # the rest of the nested group keeps its defaults
    assert settings.locale.timezone == "Asia/Shanghai"


def test_database_url_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db.example/crm")
    assert load_settings().database_url == "postgresql://u:p@db.example/crm"


def test_cc_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC_DATABASE_URL", "sqlite:////srv/cc.db")
    assert load_settings().database_url == "sqlite:////srv/cc.db"


def test_redis_url_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://localhost:6379/0")
    assert load_settings().redis_url == "redis://localhost:6379/0"


def test_empty_redis_url_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "")
    assert load_settings().redis_url is None


def test_keyword_arguments_win_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "sqlite:///env.db")
    settings = load_settings(database_url="sqlite:///kw.db")
    assert settings.database_url == "sqlite:///kw.db"


def test_other_cc_variables_are_not_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # CC_ADMIN_PASSWORD is read by create-admin, CC_CONFIG by the loader itself
    monkeypatch.setenv("CC_ADMIN_PASSWORD", "secret-admin-pw")
    assert load_settings().http.port == 8080


def test_toml_overlay(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write_toml(
        tmp_path / "site.toml",
        'database_url = "postgresql://crm@db/crm"\n'
        "[http]\nport = 9100\n"
        '[locale]\ntimezone = "Europe/London"\n',
    )
    monkeypatch.setenv("CC_CONFIG", str(path))
    settings = load_settings()
    assert settings.database_url == "postgresql://crm@db/crm"
    assert settings.http.port == 9100
    assert settings.locale.timezone == "Europe/London"
    # keys the overlay does not name keep the shipped defaults
    assert settings.http.host == "127.0.0.1"
    assert settings.locale.default_region == "CN"


def test_env_wins_over_toml_overlay(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write_toml(tmp_path / "site.toml", "[http]\nport = 9100\n")
    monkeypatch.setenv("CC_CONFIG", str(path))
    monkeypatch.setenv("CC_HTTP__PORT", "9200")
    assert load_settings().http.port == 9200


def test_database_url_env_wins_over_toml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write_toml(tmp_path / "site.toml", 'database_url = "sqlite:///toml.db"\n')
    monkeypatch.setenv("CC_CONFIG", str(path))
    monkeypatch.setenv("DATABASE_URL", "sqlite:///env.db")
    assert load_settings().database_url == "sqlite:///env.db"


def test_missing_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    message = settings_error(monkeypatch, "CC_CONFIG", str(missing))
    assert "CC_CONFIG" in message
    assert str(missing) in message


def test_config_file_that_is_a_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    message = settings_error(monkeypatch, "CC_CONFIG", str(tmp_path))
    assert "CC_CONFIG" in message


def test_malformed_toml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write_toml(tmp_path / "bad.toml", "[http\nport = \n")
    message = settings_error(monkeypatch, "CC_CONFIG", str(path))
    assert "cannot read settings" in message


def test_unknown_key_in_toml_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write_toml(tmp_path / "site.toml", "[http]\nprot = 9000\n")
    message = settings_error(monkeypatch, "CC_CONFIG", str(path))
    assert "http.prot" in message


def test_bad_value_in_toml_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write_toml(tmp_path / "site.toml", '[locale]\ndefault_region = "XX"\n')
    message = settings_error(monkeypatch, "CC_CONFIG", str(path))
    assert "locale.default_region" in message
    assert "XX" in message


# --- bad values -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("CC_HTTP__PORT", "0", "http.port"),
        ("CC_HTTP__PORT", "70000", "http.port"),
        ("CC_HTTP__PORT", "eighty", "http.port"),
        ("CC_LOCALE__DEFAULT_REGION", "XX", "locale.default_region"),
        ("CC_LOCALE__DEFAULT_LANGUAGE", "fr", "locale.default_language"),
        ("CC_LOCALE__TIMEZONE", "Mars/Olympus", "locale.timezone"),
        ("CC_LOG__LEVEL", "TRACE", "log.level"),
        ("CC_LOG__FORMAT", "xml", "log.format"),
        ("REDIS_URL", "http://cache:6379", "redis_url"),
    ],
)
def test_bad_value_names_the_setting_and_value(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, named: str
) -> None:
    message = settings_error(monkeypatch, env, value)
    assert named in message.lower()
    assert value in message


@pytest.mark.parametrize("url", ["mysql://u@h/db", "oracle://h/x", "::not a url::"])
def test_bad_database_url_is_named(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    message = settings_error(monkeypatch, "DATABASE_URL", url)
    assert "database_url" in message.lower()
    assert url in message


def test_database_url_error_does_not_name_a_variable_that_was_not_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = settings_error(monkeypatch, "DATABASE_URL", "mysql://x")
    assert "CC_DATABASE_URL" not in message


def test_several_bad_values_are_all_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC_HTTP__PORT", "0")
    monkeypatch.setenv("CC_LOG__LEVEL", "LOUD")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "http.port" in str(info.value)
    assert "log.level" in str(info.value)


def test_empty_secret_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    message = settings_error(monkeypatch, "CC_SECRET_KEY", "")
    assert "secret_key" in message


def test_bad_secret_key_value_is_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC_SECRET_KEY", "   ")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "secret_key" in str(info.value)
    assert "********" in str(info.value)


# --- masking and the engine URL ---------------------------------------------------------


def test_masked_hides_secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC_SECRET_KEY", "super-secret-value")
    masked = load_settings().masked()
    assert masked["secret_key"] == "********"
    assert "super-secret-value" not in repr(masked)


def test_masked_hides_database_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:secret@h/db")
    masked = load_settings().masked()
    assert "secret" not in masked["database_url"]
    assert make_url(masked["database_url"]).username == "u"
    assert make_url(masked["database_url"]).host == "h"


def test_masked_hides_database_password_in_query(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://h/db?user=u&password=secret")
    masked = load_settings().masked()
    assert "secret" not in masked["database_url"]


def test_masked_hides_redis_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://:rsecret@cache:6379/0")
    masked = load_settings().masked()
    assert "rsecret" not in masked["redis_url"]
    assert "cache" in masked["redis_url"]


def test_masked_keeps_plain_values() -> None:
    masked = load_settings().masked()
    assert masked["database_url"] == "sqlite:///var/contact_center.db"
    assert masked["http"] == {"host": "127.0.0.1", "port": 8080, "public_base_url": None,
                              "console_cache_seconds": 5.0}
    assert masked["locale"]["default_region"] == "CN"


def test_secret_key_hidden_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC_SECRET_KEY", "super-secret-value")
    assert "super-secret-value" not in repr(load_settings())


def test_sqlalchemy_url_for_relative_sqlite_path(tmp_path: Path) -> None:
    settings = Settings(database_url="sqlite:///var/x.db")
    url = make_url(settings.sqlalchemy_url)
    assert url.drivername == "sqlite+aiosqlite"
    assert url.database is not None
    assert Path(url.database).is_absolute()
    assert Path(url.database) == tmp_path / "var" / "x.db"


def test_sqlalchemy_url_for_absolute_sqlite_path(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/abs.db")
    url = make_url(settings.sqlalchemy_url)
    assert url.drivername == "sqlite+aiosqlite"
    assert url.database == str(tmp_path / "abs.db")


def test_sqlalchemy_url_for_memory_sqlite() -> None:
    url = make_url(Settings(database_url="sqlite:///:memory:").sqlalchemy_url)
    assert url.drivername == "sqlite+aiosqlite"
    assert url.database == ":memory:"


@pytest.mark.parametrize(
    "typed", ["postgresql://u:p%40ss@h:5433/crm", "postgres://u:p%40ss@h:5433/crm"]
)
def test_sqlalchemy_url_for_postgres(typed: str) -> None:
    url = make_url(Settings(database_url=typed).sqlalchemy_url)
    assert url.drivername == "postgresql+asyncpg"
    assert url.username == "u"
    assert url.password == "p@ss"
    assert url.host == "h"
    assert url.port == 5433
    assert url.database == "crm"


def test_async_driver_already_given_is_kept() -> None:
    url = make_url(Settings(database_url="postgresql+asyncpg://h/crm").sqlalchemy_url)
    assert url.drivername == "postgresql+asyncpg"


def test_unknown_top_level_key_in_toml_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write_toml(tmp_path / "site.toml", 'databse_url = "sqlite:///x.db"\n')
    message = settings_error(monkeypatch, "CC_CONFIG", str(path))
    assert "databse_url" in message


def test_misspelt_nested_env_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    message = settings_error(monkeypatch, "CC_HTTP__PROT", "9000")
    assert "http.prot" in message.lower()


# --- the e-mail channel ------------------------------------------------------------------

EMAIL_EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "email.example.toml"


def test_the_email_example_loads_with_its_passwords_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """config/email.example.toml is valid; ports default by security; secrets stay masked."""
    monkeypatch.setenv("CC_CONFIG", str(EMAIL_EXAMPLE))
    for name in ("SUPPORT_IMAP_PASSWORD", "SALES_IMAP_PASSWORD", "SMTP_PASSWORD"):
        monkeypatch.setenv(name, f"pw-{name}")
    settings = load_settings()
    support, sales = settings.email.mailboxes
    assert (support.name, support.effective_port, support.processed_folder) == (
        "support", 993, "Processed")
    assert support.resolved_password() == "pw-SUPPORT_IMAP_PASSWORD"
    assert (sales.effective_port, sales.idle) == (143, False)
    assert settings.email.smtp is not None and settings.email.smtp.effective_port == 587
    assert "pw-" not in repr(settings.masked())


def test_a_mailbox_whose_password_variable_is_missing_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A missing secret stops start-up naming the mailbox and the variable."""
    monkeypatch.setenv("CC_CONFIG", str(EMAIL_EXAMPLE))
    monkeypatch.setenv("SALES_IMAP_PASSWORD", "x")
    monkeypatch.setenv("SMTP_PASSWORD", "x")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "SUPPORT_IMAP_PASSWORD is not set" in str(info.value)
    assert "'support'" in str(info.value)


def test_bad_email_settings_are_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Unknown security modes, bad sender addresses and duplicate names are refused."""
    config = write_toml(tmp_path / "bad.toml", """
[[email.mailboxes]]
name = "a"
host = "h"
username = "u"
password = "p"
security = "ssl"

[email.smtp]
host = "h"
from_address = "not an address"
""")
    monkeypatch.setenv("CC_CONFIG", str(config))
    with pytest.raises(SettingsError) as info:
        load_settings()
    text = str(info.value)
    assert "email.mailboxes.0.security" in text and "email.smtp.from_address" in text
    duplicate = write_toml(tmp_path / "dup.toml", """
[[email.mailboxes]]
name = "a"
host = "h"
username = "u"
password = "p"

[[email.mailboxes]]
name = "a"
host = "h2"
username = "u"
password = "p"
""")
    monkeypatch.setenv("CC_CONFIG", str(duplicate))
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "mailbox names must be unique: a" in str(info.value)


TELEGRAM_EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "telegram.example.toml"


def test_the_telegram_example_loads_and_bad_tokens_are_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """config/telegram.example.toml is valid; a malformed token or missing secret is named."""
    monkeypatch.setenv("CC_CONFIG", str(TELEGRAM_EXAMPLE))
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123456:ABC-def")
    monkeypatch.setenv("TELEGRAM_WEBHOOK_SECRET", "s3cret")
    telegram = load_settings().telegram
    assert telegram is not None and telegram.mode == "webhook"
    assert telegram.resolved_token() == "123456:ABC-def"
    assert "ABC-def" not in repr(load_settings().masked())
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "no-colon")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "bot token looks wrong" in str(info.value)
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123456:ABC-def")
    monkeypatch.delenv("TELEGRAM_WEBHOOK_SECRET")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "TELEGRAM_WEBHOOK_SECRET is not set" in str(info.value)


VOICE_EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "voice.example.toml"


def test_the_voice_example_loads_and_a_bad_flow_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """config/voice.example.toml is valid; a flow file with an error stops start-up."""
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    monkeypatch.setenv("CC_CONFIG", str(VOICE_EXAMPLE))
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "tok")
    monkeypatch.setenv("CTI_TOKEN", "cti")
    voice = load_settings().voice
    assert voice is not None and voice.flow == "main" and voice.resolved_cti_token() == "cti"
    broken = write_toml(tmp_path / "flows.toml", """
[flows.main]
start = "menu"

[flows.main.nodes.menu]
kind = "menu"
say = { "zh-CN" = "按1", en = "Press 1" }
options = [{ digit = "1", goto = "nowhere" }]
""")
    monkeypatch.setenv("CC_VOICE__FLOWS_FILE", str(broken))
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "nowhere" in str(info.value)
