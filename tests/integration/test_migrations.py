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


async def test_upgrade_keeps_existing_rows(db: Database) -> None:
    """Columns added later get defaults on rows written by older versions."""
    from datetime import UTC, datetime

    from sqlalchemy import text

    await schema.downgrade(db.engine, "0002")
    async with db.engine.begin() as conn:
        now = datetime(2026, 1, 1, tzinfo=UTC)
        await conn.execute(
            text(
                "INSERT INTO customers (display_name, name_key, lifecycle_stage, lifetime_value,"
                " custom_attributes, marketing_opt_in, do_not_contact, created_at, updated_at)"
                " VALUES ('张伟', '张伟', 'lead', 0, '{}', '{}', false, :now, :now)"
            ),
            {"now": now},
        )
        await conn.execute(
            text(
                "INSERT INTO conversations (customer_id, channel, status, created_at, updated_at)"
                " VALUES (1, 'email', 'open', :now, :now)"
            ),
            {"now": now},
        )
    await schema.upgrade(db.engine)
    async with db.engine.connect() as conn:
        participants = await conn.scalar(text("SELECT participants FROM conversations"))
    assert participants in ([], "[]")
