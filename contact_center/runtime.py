"""Start-up shared by every process: settings, logging and the database."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import structlog
from sqlalchemy.engine import make_url

from contact_center.settings import Settings
from crm_core.db import Database

SYSTEM_ACTOR = "system"


def configure_logging(settings: Settings) -> None:
    """Structured logs on stderr: one JSON object per event, or readable console lines."""
    level = getattr(logging, settings.log.level)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if settings.log.format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(level, logging.WARNING), stream=sys.stderr)


def ensure_sqlite_directory(url: str) -> None:
    """Create the folder of an SQLite file, so a fresh checkout runs without set-up."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def open_database(settings: Settings) -> Database:
    """The configured database, with its folder created for SQLite."""
    url = settings.sqlalchemy_url
    ensure_sqlite_directory(url)
    return Database(url)


@asynccontextmanager
async def database_of(settings: Settings) -> AsyncIterator[Database]:
    """The configured database for the length of a block, disposed after it."""
    database = open_database(settings)
    try:
        yield database
    finally:
        await database.dispose()
