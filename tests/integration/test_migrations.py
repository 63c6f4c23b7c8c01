"""Migrations and models agree, on SQLite and PostgreSQL, and migrations run both ways."""

from __future__ import annotations

from crm_core import schema
from crm_core.db import Database


async def test_models_and_migrations_agree(db: Database) -> None:
    assert await schema.current_revision(db.engine) == schema.head_revision()
    assert await schema.schema_differences(db.engine) == []


async def test_downgrade_to_base_and_upgrade_again(db: Database) -> None:
    await schema.downgrade(db.engine, "base")
    assert await schema.current_revision(db.engine) is None
    await schema.upgrade(db.engine)
    assert await schema.current_revision(db.engine) == schema.head_revision()
    assert await schema.schema_differences(db.engine) == []
