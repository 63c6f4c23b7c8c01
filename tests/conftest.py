"""Shared fixtures: a migrated database on SQLite and on PostgreSQL for every service test.

PostgreSQL comes from ``CC_TEST_POSTGRES_URL`` (an admin URL; default the local server).
A private database is created for the run and dropped after it. When a service is missing
the test is skipped on a developer machine and fails under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from crm_core import models, schema
from crm_core.db import Database, create_engine, normalize_database_url
from tests.mailservers import (
    DovecotServer,
    SmtpSink,
    make_self_signed_cert,
    server_tls_context,
)

POSTGRES_ADMIN_URL = os.environ.get(
    "CC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
def _keep_structlog_uncached() -> None:
    """CLI tests configure logging as the real program does, which caches each logger on
    first use; a cached logger keeps the processors of that moment and escapes
    ``structlog.testing.capture_logs`` in every later test. The test process keeps the
    program's configuration but not the cache (patched at import, so session fixtures
    that run the CLI are covered too)."""
    import structlog

    from contact_center import runtime

    original = runtime.configure_logging

    def configure(settings: Any) -> None:
        original(settings)
        structlog.configure(cache_logger_on_first_use=False)

    runtime.configure_logging = configure  # type: ignore[assignment]


_keep_structlog_uncached()

T = TypeVar("T")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_service(name: str, problem: str | None) -> None:
    """Skip (developer machine) or fail (CI) when a service the test needs is missing."""
    if problem is None:
        return
    message = f"{name} is not available: {problem}"
    if IN_CI:
        pytest.fail(message + " (CI=true: a missing service fails the run)")
    pytest.skip(message)


def run_blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion in a thread of its own (safe inside a running loop)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _admin_execute(statement: str) -> None:
    engine = create_engine(POSTGRES_ADMIN_URL)
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def _migrate(url: str) -> None:
    engine = create_engine(url)
    try:
        await schema.upgrade(engine)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a freshly created, migrated PostgreSQL database private to this test run."""
    name = f"cc_test_{uuid.uuid4().hex[:12]}"
    try:
        run_blocking(_admin_execute(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        require_service("PostgreSQL", f"{POSTGRES_ADMIN_URL}: {exc}")
    url = make_url(normalize_database_url(POSTGRES_ADMIN_URL)).set(database=name)
    rendered = url.render_as_string(hide_password=False)
    run_blocking(_migrate(rendered))
    yield rendered
    run_blocking(_admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies, so migrating happens once."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    run_blocking(_migrate(f"sqlite:///{path}"))
    return path


_EMPTY_ALL = """
DO $$
DECLARE item record;
BEGIN
    SET LOCAL session_replication_role = replica;  -- no foreign-key checks: any order
    FOR item IN SELECT unnest(ARRAY[{tables}]) AS name LOOP
        EXECUTE format('DELETE FROM %I', item.name);
    END LOOP;
    FOR item IN SELECT c.oid::regclass AS name FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind = 'S' AND n.nspname = current_schema() LOOP
        EXECUTE format('ALTER SEQUENCE %s RESTART', item.name);
    END LOOP;
END $$
"""


async def truncate_all(database: Database) -> None:
    """Empty every table of a PostgreSQL test database and reset its id sequences.

    DELETE on the few rows a test leaves is ~10× cheaper than TRUNCATE, which gives every
    table a new file (≈ 0.4 s for 58 tables, times a thousand PostgreSQL tests); without
    the rights to skip foreign-key checks it falls back to TRUNCATE."""
    names = [t.name for t in models.Base.metadata.sorted_tables]
    quoted = ", ".join("'" + name.replace("'", "''") + "'" for name in names)
    try:
        async with database.engine.begin() as conn:
            await conn.execute(text(_EMPTY_ALL.format(tables=quoted)))
    except DBAPIError:
        tables = ", ".join(f'"{name}"' for name in names)
        async with database.engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@asynccontextmanager
async def _database(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Database]:
    if kind == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "cc.db"
        shutil.copyfile(template, path)
        database = Database(f"sqlite:///{path}")
    else:
        database = Database(request.getfixturevalue("postgres_url"))
        await truncate_all(database)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated, empty database: once on SQLite, once on PostgreSQL."""
    async with _database(request.param, request, tmp_path) as database:
        yield database


@pytest.fixture
async def sqlite_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated, empty SQLite database (the embedded stack)."""
    async with _database("sqlite", request, tmp_path) as database:
        yield database


@pytest.fixture
async def postgres_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """The migrated, emptied PostgreSQL test database (the scale-out stack)."""
    async with _database("postgres", request, tmp_path) as database:
        yield database


@pytest.fixture
def clean_settings_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No CC_* or database variables from the developer's shell; run in an empty folder
    (for tests of settings loading and of CLI commands)."""
    for name in list(os.environ):
        if name.upper().startswith("CC_") or name.upper() in {"DATABASE_URL", "REDIS_URL"}:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


REDIS_URL = os.environ.get("CC_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
async def redis_client() -> AsyncIterator[Any]:
    """A Redis client on the test server; every key the test made is removed after it."""
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        require_service("Redis", f"{REDIS_URL}: {exc}")
    yield client
    await client.aclose()


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix private to one test."""
    return f"cctest:{uuid.uuid4().hex[:10]}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the PostgreSQL variants, so ``-m 'not postgres'`` runs SQLite only."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and callspec.params.get("db") == "postgres"
        if on_postgres or "postgres_db" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


# -- mail servers ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotServer]:
    """A private Dovecot IMAP server on 127.0.0.1 for the whole run (any user, one password).

    Its mail is owned by ``nobody``, which cannot enter pytest's 0700 temporary
    directories, so the server lives in a private directory under the system temp dir;
    its log and configuration are copied to a pytest ``dovecot`` temp dir at the end.
    """
    if shutil.which("dovecot") is None and not Path("/usr/sbin/dovecot").exists():
        require_service("Dovecot", "the dovecot binary is missing (apt-get install dovecot-imapd)")
    root = Path(tempfile.mkdtemp(prefix="cc-dovecot-"))
    server = DovecotServer()
    try:
        server.start(root)
    except Exception as exc:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
        require_service("Dovecot", f"it did not start: {exc}")
    try:
        yield server
    finally:
        server.stop()
        keep = tmp_path_factory.mktemp("dovecot")
        for name in ("dovecot.log", "dovecot.conf"):
            if (root / name).exists():
                shutil.copyfile(root / name, keep / name)
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Mailbox:
    """One fresh IMAP account on the test Dovecot server."""

    host: str
    port: int
    user: str
    password: str
    server: DovecotServer

    def deliver(self, raw: bytes, folder: str | None = None, *, flags: str = "") -> Path:
        """Put a message into INBOX (or ``folder``) as an MDA would; returns its file."""
        return self.server.deliver(self.user, raw, folder, flags=flags)

    def create_folder(self, name: str) -> Path:
        """Create a folder (``.`` separates levels) and return its directory."""
        return self.server.create_folder(self.user, name)

    def reset_uidvalidity(self, folder: str | None = None) -> None:
        """Give the folder a new UIDVALIDITY, keeping its messages (see DovecotServer)."""
        self.server.reset_uidvalidity(self.user, folder)

    def delete_all(self, folder: str | None = None) -> int:
        """Remove every message of a folder behind Dovecot's back."""
        return self.server.delete_all(self.user, folder)


@pytest.fixture
def mailbox(dovecot: DovecotServer) -> Mailbox:
    """A fresh, empty account (unique user name) on the session's Dovecot server."""
    user = f"u{uuid.uuid4().hex[:12]}"
    dovecot.maildir(user)
    return Mailbox(dovecot.host, dovecot.port, user, dovecot.password, dovecot)


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A started SMTP sink on 127.0.0.1 (no AUTH) that keeps every message; stopped after."""
    sink = SmtpSink()
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


# -- mail servers with TLS ------------------------------------------------------------


@dataclass(frozen=True)
class TlsCert:
    """A throwaway self-signed certificate for 127.0.0.1/localhost (PEM files)."""

    cert: Path
    key: Path

    @property
    def paths(self) -> tuple[Path, Path]:
        """``(cert, key)``, as ``DovecotServer.start(tls=...)`` takes them."""
        return self.cert, self.key


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> TlsCert:
    """A self-signed certificate for the run, made with the ``openssl`` tool."""
    if shutil.which("openssl") is None:
        require_service("openssl", "the openssl command-line tool is missing")
    cert, key = make_self_signed_cert(tmp_path_factory.mktemp("tls"))
    return TlsCert(cert, key)


@pytest.fixture(scope="session")
def dovecot_tls(
    tmp_path_factory: pytest.TempPathFactory, tls_cert: TlsCert
) -> Iterator[DovecotServer]:
    """A second private Dovecot with TLS: STARTTLS on ``port``, implicit TLS on ``tls_port``.

    Lives outside pytest's temp dirs for the same reason as ``dovecot``.
    """
    if shutil.which("dovecot") is None and not Path("/usr/sbin/dovecot").exists():
        require_service("Dovecot", "the dovecot binary is missing (apt-get install dovecot-imapd)")
    root = Path(tempfile.mkdtemp(prefix="cc-dovecot-tls-"))
    server = DovecotServer()
    try:
        server.start(root, tls=tls_cert.paths)
    except Exception as exc:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
        require_service("Dovecot", f"it did not start with TLS: {exc}")
    try:
        yield server
    finally:
        server.stop()
        keep = tmp_path_factory.mktemp("dovecot-tls")
        for name in ("dovecot.log", "dovecot.conf"):
            if (root / name).exists():
                shutil.copyfile(root / name, keep / name)
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class TlsMailbox(Mailbox):
    """A fresh account on the TLS Dovecot: ``port`` is plain+STARTTLS, ``tls_port`` imaps."""

    tls_port: int = 0
    cert: Path | None = None


@pytest.fixture
def tls_mailbox(dovecot_tls: DovecotServer, tls_cert: TlsCert) -> TlsMailbox:
    """A fresh, empty account (unique user name) on the session's TLS Dovecot server."""
    user = f"u{uuid.uuid4().hex[:12]}"
    dovecot_tls.maildir(user)
    return TlsMailbox(
        dovecot_tls.host,
        dovecot_tls.port,
        user,
        dovecot_tls.password,
        dovecot_tls,
        tls_port=dovecot_tls.tls_port,
        cert=tls_cert.cert,
    )


@pytest.fixture
def smtp_tls_sink(tls_cert: TlsCert) -> Iterator[SmtpSink]:
    """A started SMTP sink with TLS and AUTH: STARTTLS required on ``port`` (AUTH only
    after it), implicit TLS on ``tls_port``; user ``smtp-user``, password ``smtp-secret``."""
    sink = SmtpSink(
        auth_required=True,
        tls_context=server_tls_context(tls_cert.cert, tls_cert.key),
        require_starttls=True,
        implicit_tls=True,
    )
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()
