"""Database engines and sessions for SQLite (embedded) and PostgreSQL (scale-out)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

SQLITE_BEGIN_OPTION = "sqlite_begin"
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=10000",
)


def normalize_database_url(url: str) -> str:
    """Return ``url`` with the async driver this project uses for its backend.

    ``sqlite:///x.db`` becomes ``sqlite+aiosqlite:///x.db`` and ``postgresql://``
    (or ``postgres://``) becomes ``postgresql+asyncpg://``, so deployers can paste
    the URLs their tools print.
    """
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    parsed = make_url(url)
    if parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def is_sqlite(url_or_engine: str | AsyncEngine) -> bool:
    """Tell whether a URL or engine points at SQLite."""
    if isinstance(url_or_engine, AsyncEngine):
        return url_or_engine.dialect.name == "sqlite"
    return make_url(normalize_database_url(url_or_engine)).get_backend_name() == "sqlite"


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # The driver's own implicit BEGIN is switched off; ``_begin_sqlite`` emits ours,
    # which makes SAVEPOINT work and lets writers take the lock up front.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in SQLITE_PRAGMAS:
        cursor.execute(pragma)
    cursor.close()


class InlineWhenLockedConnection(aiosqlite.Connection):
    """An aiosqlite connection that runs its calls on the event loop's own thread while
    it holds the SQLite write lock (``inline``), and on aiosqlite's thread otherwise.

    Inside ``BEGIN IMMEDIATE`` no statement can wait for a lock, so the hop to the
    worker thread and back (four per statement: cursor, execute, fetch, close) is pure
    overhead — 60 % of the routing engine's time on SQLite before this class. Waiting
    for the lock (the ``BEGIN`` itself) and every read outside a write transaction still
    run on the worker thread, so the loop never blocks on another writer.
    """

    inline: bool = False

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.inline and self._connection is not None and self._running:
            return fn(*args, **kwargs)
        return await super()._execute(fn, *args, **kwargs)


def _connect_sqlite(database: str, **kwargs: Any) -> InlineWhenLockedConnection:
    # The sqlite3 connection is opened on aiosqlite's thread and used on the loop's
    # thread while inline; calls never overlap (each is awaited), so this is safe.
    kwargs["check_same_thread"] = False
    connection = InlineWhenLockedConnection(
        lambda: sqlite3.connect(database, **kwargs), iter_chunk_size=64)
    connection._thread.daemon = True
    return connection


def _inline_switch(connection: Any) -> InlineWhenLockedConnection | None:
    adapted = getattr(connection.connection, "dbapi_connection", None)
    raw = getattr(adapted, "_connection", None)
    return raw if isinstance(raw, InlineWhenLockedConnection) else None


def _begin_sqlite(connection: Any) -> None:
    """BEGIN IMMEDIATE for write transactions, so concurrent writers queue on the busy
    timeout instead of failing with "database is locked" when a read upgrades to a write.

    Once the lock is held, the connection's statements run inline (see
    :class:`InlineWhenLockedConnection`) until the next transaction begins.
    """
    mode = connection.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")
    switch = _inline_switch(connection)
    if switch is not None:
        switch.inline = False
    connection.exec_driver_sql(f"BEGIN {mode}")
    if switch is not None and mode == "IMMEDIATE":
        switch.inline = True


def create_engine(url: str, *, echo: bool = False, pool_size: int = 10) -> AsyncEngine:
    """Create an async engine; SQLite gets WAL, foreign keys and a busy timeout."""
    url = normalize_database_url(url)
    kwargs: dict[str, Any] = {"echo": echo}
    if not is_sqlite(url):
        kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
    else:
        kwargs["connect_args"] = {"async_creator_fn": _connect_sqlite}
    engine = create_async_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _set_sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _begin_sqlite)
    return engine


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """A session factory whose objects stay readable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


class Database:
    """One database: its engine and session factory, opened from a URL."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = normalize_database_url(url)
        self.engine = create_engine(self.url, echo=echo)
        self.sessions = create_session_factory(self.engine)
        """Sessions for reading (and short writes that do not read first)."""
        self.write_sessions = create_session_factory(
            self.engine.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
            if self.engine.dialect.name == "sqlite"
            else self.engine
        )
        """Sessions whose transactions take the SQLite write lock when they begin."""

    @property
    def is_sqlite(self) -> bool:
        """Whether this database is an SQLite file."""
        return self.engine.dialect.name == "sqlite"

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A write transaction, committed on success, rolled back on error."""
        async with self.write_sessions() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()
