"""Schema management: upgrade to the newest migration and compare models with the database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_core import models

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """An Alembic config pointing at our migrations, bound to a connection or a URL."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    """The newest revision the code knows."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the database up to ``revision`` (default: the newest)."""
    async with engine.begin() as connection:
        await connection.run_sync(
            lambda sync: command.upgrade(alembic_config(connection=sync), revision)
        )


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    """Take the database back to ``revision`` (``base`` for an empty schema)."""
    async with engine.begin() as connection:
        await connection.run_sync(
            lambda sync: command.downgrade(alembic_config(connection=sync), revision)
        )


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at, or ``None`` for an unmigrated database."""
    async with engine.connect() as connection:
        return await connection.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )


SEARCH_OBJECTS = ("interactions_fts", "ix_interactions_text_trgm", "ix_interactions_subject_trgm")
"""Full-text search objects made by hand in migration 0008 (an FTS5 table and its shadow
tables on SQLite, trigram indexes on PostgreSQL): not in the models, not a difference."""


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any,
                   ) -> bool:
    """Autogenerate's filter: leave the hand-made search objects alone."""
    return not (name and name.startswith(SEARCH_OBJECTS))


async def schema_differences(engine: AsyncEngine) -> list[Any]:
    """What autogenerate would change to make the database match the models (empty: in sync)."""

    def compare(sync: Connection) -> list[Any]:
        context = MigrationContext.configure(
            sync, opts={"compare_type": True, "include_object": include_object})
        return list(compare_metadata(context, models.Base.metadata))

    async with engine.connect() as connection:
        return await connection.run_sync(compare)
