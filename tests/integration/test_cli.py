"""The ``contact-center`` command line, against an SQLite file in a temporary folder."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from click.testing import CliRunner, Result

from contact_center.cli import main
from crm_core import schema
from crm_core.db import Database
from crm_core.services.agents import authenticate
from crm_core.services.customers import create_customer, delete_customer

pytestmark = pytest.mark.usefixtures("clean_settings_env")


@pytest.fixture(autouse=True)
def reset_logging() -> Iterator[None]:
    """structlog put back after each command."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/x.db"


def invoke(args: list[str], db_url: str | None = None, **env: str) -> Result:
    environment = dict(env)
    if db_url is not None:
        environment["DATABASE_URL"] = db_url
    return CliRunner().invoke(main, args, env=environment)


def migrated(db_url: str) -> str:
    result = invoke(["migrate"], db_url)
    assert result.exit_code == 0, result.output
    return db_url


def with_database(db_url: str, work: Any) -> Any:
    async def go() -> Any:
        database = Database(db_url)
        try:
            return await work(database)
        finally:
            await database.dispose()

    return asyncio.run(go())


def add_customers(db_url: str, *records: dict[str, Any]) -> list[int]:
    async def work(database: Database) -> list[int]:
        ids = []
        for record in records:
            async with database.transaction() as session:
                customer = await create_customer(session, record, actor="test", region="CN")
                ids.append(customer.id)
        return ids

    result: list[int] = with_database(db_url, work)
    return result


# --- config check -----------------------------------------------------------------------


def test_config_check_prints_masked_settings(db_url: str) -> None:
    result = invoke(
        ["config", "check"],
        "postgresql://crm:hunter2@db.example/crm",
        CC_SECRET_KEY="very-secret-key",
        CC_HTTP__PORT="9090",
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["http"]["port"] == 9090
    assert data["secret_key"] == "********"
    assert "hunter2" not in result.output
    assert "very-secret-key" not in result.output
    assert "db.example" in data["database_url"]
    assert data["locale"]["default_region"] == "CN"


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("CC_LOCALE__DEFAULT_REGION", "XX", "locale.default_region"),
        ("CC_HTTP__PORT", "99999", "http.port"),
        ("DATABASE_URL", "mysql://x", "database_url"),
    ],
)
def test_config_check_fails_naming_the_bad_setting(env: str, value: str, named: str) -> None:
    result = invoke(["config", "check"], **{env: value})
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)
    assert named in result.stderr
    assert value in result.stderr
    assert result.stdout == ""


def test_config_check_with_missing_config_file(tmp_path: Path) -> None:
    result = invoke(["config", "check"], CC_CONFIG=str(tmp_path / "nope.toml"))
    assert result.exit_code != 0
    assert "CC_CONFIG" in result.stderr


def test_config_check_reads_each_invocation_afresh(db_url: str) -> None:
    runner = CliRunner()
    first = runner.invoke(main, ["config", "check"], env={"CC_HTTP__PORT": "9001"})
    second = runner.invoke(main, ["config", "check"], env={"CC_HTTP__PORT": "9002"})
    assert json.loads(first.stdout)["http"]["port"] == 9001
    assert json.loads(second.stdout)["http"]["port"] == 9002


def test_version() -> None:
    result = invoke(["--version"])
    assert result.exit_code == 0
    assert "0.1.0" in result.output


# --- migrate ----------------------------------------------------------------------------


def test_migrate_creates_the_schema(db_url: str) -> None:
    result = invoke(["migrate"], db_url)
    assert result.exit_code == 0, result.output
    head = schema.head_revision()
    assert head is not None
    assert head in result.stdout

    async def revision(database: Database) -> str | None:
        return await schema.current_revision(database.engine)

    assert with_database(db_url, revision) == head
    # running it again is harmless
    again = invoke(["migrate"], db_url)
    assert again.exit_code == 0, again.output
    assert head in again.stdout


def test_migrate_creates_the_folder_of_a_relative_sqlite_path(tmp_path: Path) -> None:
    result = invoke(["migrate"], "sqlite:///data/sub/cc.db")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "sub" / "cc.db").is_file()


def test_migrate_with_bad_settings_does_nothing(tmp_path: Path) -> None:
    result = invoke(["migrate"], f"sqlite:///{tmp_path}/x.db", CC_LOG__LEVEL="CHATTY")
    assert result.exit_code != 0
    assert "log.level" in result.stderr
    assert not (tmp_path / "x.db").exists()


# --- create-admin -----------------------------------------------------------------------


def test_create_admin(db_url: str) -> None:
    migrated(db_url)
    result = invoke(
        ["create-admin", "--login", "Admin", "--name", "管理员", "--password", "s3cret-pass"],
        db_url,
    )
    assert result.exit_code == 0, result.output
    assert "admin" in result.stdout
    assert "s3cret-pass" not in result.output

    async def check(database: Database) -> tuple[str, str, str] | None:
        async with database.transaction() as session:
            agent = await authenticate(session, "admin", "s3cret-pass")
            if agent is None:
                return None
            return agent.login, agent.display_name, agent.role.value

    assert with_database(db_url, check) == ("admin", "管理员", "admin")


def test_create_admin_twice_conflicts(db_url: str) -> None:
    migrated(db_url)
    first = invoke(["create-admin", "--login", "root", "--password", "long-password"], db_url)
    assert first.exit_code == 0, first.output
    second = invoke(["create-admin", "--login", "root", "--password", "long-password"], db_url)
    assert second.exit_code != 0
    assert "root" in second.output
    assert isinstance(second.exception, SystemExit)  # a clean error, no traceback


def test_create_admin_short_password(db_url: str) -> None:
    migrated(db_url)
    result = invoke(["create-admin", "--login", "root", "--password", "short"], db_url)
    assert result.exit_code != 0
    assert "password" in result.output
    assert isinstance(result.exception, SystemExit)


def test_create_admin_password_from_env(db_url: str) -> None:
    migrated(db_url)
    result = invoke(
        ["create-admin", "--login", "envadmin"], db_url, CC_ADMIN_PASSWORD="from-the-env"
    )
    assert result.exit_code == 0, result.output


# --- customers search -------------------------------------------------------------------


@pytest.fixture
def customers_db(db_url: str) -> tuple[str, list[int]]:
    migrated(db_url)
    ids = add_customers(
        db_url,
        {"family_name": "张", "given_name": "伟", "phones": ["138 0013 8000"],
         "emails": ["zhang.wei@example.com"], "organization_name": "北京科技"},
        {"family_name": "张", "given_name": "伟明", "phones": ["13900139000"]},
        {"given_name": "John", "family_name": "Smith", "emails": ["john@acme.com"]},
    )
    return db_url, ids


def search(db_url: str, *args: str) -> Result:
    result = invoke(["customers", "search", *args], db_url)
    assert result.exit_code == 0, result.output
    return result


def lines(result: Result) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.strip()]


def test_search_by_pinyin(customers_db: tuple[str, list[int]]) -> None:
    url, ids = customers_db
    result = search(url, "zhang wei")
    out = lines(result)
    assert len(out) == 2
    assert out[0].startswith(f"#{ids[0]}")  # relevance: the closer name first
    assert "张伟" in out[0]
    assert "+8613800138000" in out[0]
    assert "zhang.wei@example.com" in out[0]
    assert "(北京科技)" in out[0]
    assert "lead" in out[0]
    assert "1-2 of 2" in result.stderr


def test_search_by_phone_and_email(customers_db: tuple[str, list[int]]) -> None:
    url, ids = customers_db
    assert [line.split()[0] for line in lines(search(url, "+86 138-0013-8000"))] == [
        f"#{ids[0]}"
    ]
    assert [line.split()[0] for line in lines(search(url, "--phone", "0086 13900139000"))] == [
        f"#{ids[1]}"
    ]
    assert [line.split()[0] for line in lines(search(url, "JOHN@ACME.COM"))] == [f"#{ids[2]}"]


def test_search_without_criteria_lists_everyone(customers_db: tuple[str, list[int]]) -> None:
    url, ids = customers_db
    result = search(url)
    assert [line.split()[0] for line in lines(result)] == [f"#{i}" for i in reversed(ids)]
    assert "of 3" in result.stderr


def test_search_pages(customers_db: tuple[str, list[int]]) -> None:
    url, ids = customers_db
    result = search(url, "--sort", "id", "--page", "2", "--page-size", "2")
    assert [line.split()[0] for line in lines(result)] == [f"#{ids[2]}"]
    assert "3-3 of 3" in result.stderr


def test_search_fuzzy_is_announced(customers_db: tuple[str, list[int]]) -> None:
    url, ids = customers_db
    result = search(url, "Jonh Smith")
    assert lines(result)[0].startswith(f"#{ids[2]}")
    assert "no exact match" in result.stderr


def test_search_nothing_found(customers_db: tuple[str, list[int]]) -> None:
    url, _ = customers_db
    result = search(url, "Bartholomew")
    assert lines(result) == []
    assert "0-0 of 0" in result.stderr


def test_search_deleted(customers_db: tuple[str, list[int]]) -> None:
    url, ids = customers_db

    async def remove(database: Database) -> None:
        async with database.transaction() as session:
            await delete_customer(session, ids[2], actor="test")

    with_database(url, remove)
    assert lines(search(url, "smith")) == []
    shown = lines(search(url, "smith", "--deleted"))
    assert len(shown) == 1
    assert "(deleted)" in shown[0]


def test_search_bad_option_is_named(customers_db: tuple[str, list[int]]) -> None:
    url, _ = customers_db
    result = invoke(["customers", "search", "--lifecycle", "zombie"], url)
    assert result.exit_code != 0
    assert "lifecycle" in result.output
    assert isinstance(result.exception, SystemExit)
    result = invoke(["customers", "search", "--sort", "shoe_size"], url)
    assert result.exit_code != 0
    assert "sort" in result.output


def test_search_too_short_phone_is_an_error_not_a_crash(
    customers_db: tuple[str, list[int]],
) -> None:
    url, _ = customers_db
    result = invoke(["customers", "search", "--phone", "12"], url)
    assert result.exit_code != 0
    assert "phone" in result.output
    assert isinstance(result.exception, SystemExit)
