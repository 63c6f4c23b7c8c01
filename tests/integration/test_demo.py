"""The demo data set: deterministic, bilingual, loaded once, searchable, and signed into."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from contact_center import demo as demo_module
from contact_center.cli import main
from contact_center.demo import (
    DEMO_ADMIN_LOGIN,
    DEMO_ADMIN_PASSWORD,
    DEMO_AGENT_PASSWORD,
    build_dataset,
    load_demo,
)
from crm_core import schema
from crm_core.db import Database, create_engine
from crm_core.models import (
    Agent,
    AgentRole,
    AuditLog,
    Conversation,
    Customer,
    CustomerCategory,
    CustomerIdentity,
    CustomerTier,
    Direction,
    Interaction,
    Organization,
    Team,
    Ticket,
)
from crm_core.normalize import normalize_email, normalize_phone
from crm_core.services.agents import authenticate
from crm_core.services.customer_query import search_customers
from crm_core.services.customers import get_customer

NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


async def _count(db: Database, model: type) -> int:
    async with db.sessions() as session:
        return await session.scalar(select(func.count()).select_from(model)) or 0


async def _counts(db: Database) -> dict[str, int]:
    models = (
        Customer, CustomerIdentity, Agent, Team, Organization, Conversation, Interaction,
        Ticket, AuditLog, CustomerCategory, CustomerTier,
    )
    return {m.__name__: await _count(db, m) for m in models}


def test_dataset_is_deterministic() -> None:
    assert build_dataset(now=NOW) == build_dataset(now=NOW)
    assert build_dataset(seed=7, now=NOW).customers != build_dataset(now=NOW).customers


def test_dataset_shape() -> None:
    data = build_dataset(now=NOW)
    assert len(data.customers) == 200
    assert len(data.conversations) == 25
    assert len(data.organizations) >= 30
    languages = Counter(c.fields["language"] for c in data.customers)
    assert 130 <= languages["zh-CN"] <= 150
    assert sum(c.fields.get("family_name") == "张" for c in data.customers) >= 5
    emails = [normalize_email(e) for c in data.customers for e in c.emails]
    assert len(emails) == len(set(emails))
    phones = [normalize_phone(p, "CN") for c in data.customers for p in c.phones]
    assert len(phones) == len(set(phones))
    assert sum(p.startswith("+86") for p in phones) > 100
    assert any(p.startswith("+44") for p in phones) and any(p.startswith("+1") for p in phones)
    assert sum(c.organization is not None for c in data.customers) >= 70
    assert {c.fields["lifecycle_stage"] for c in data.customers} == {
        "lead", "prospect", "active", "dormant", "churned"
    }
    for conversation in data.conversations:
        assert 2 <= len(conversation.interactions) <= 5
        assert conversation.interactions[0].direction == Direction.INBOUND
        assert NOW - timedelta(days=61) <= conversation.started_at <= NOW
        moments = [i.occurred_at for i in conversation.interactions]
        assert moments == sorted(moments) and moments[-1] <= NOW
    channels = {c.channel.value for c in data.conversations}
    assert channels == {"email", "telegram", "webchat", "phone"}
    texts = " ".join(i.text for c in data.conversations for i in c.interactions)
    assert re.search(r"[\u4e00-\u9fff]", texts) and re.search(r"\bthe\b", texts)


async def test_load_demo_creates_the_data_set(db: Database) -> None:
    summary = await load_demo(db, region="CN")
    assert summary.loaded
    assert summary.customers == 200 and summary.skipped_customers == 0
    assert summary.seconds < 30
    counts = await _counts(db)
    assert counts["Customer"] == 200
    assert counts["Agent"] == summary.agents == 8
    assert counts["Team"] == summary.teams == 4
    assert counts["CustomerCategory"] == 5 and counts["CustomerTier"] == 4
    assert counts["Organization"] >= 30
    assert counts["Conversation"] == counts["Ticket"] == 25
    assert 50 <= counts["Interaction"] == summary.interactions <= 125
    assert counts["AuditLog"] >= 200  # every customer creation is audited

    async with db.sessions() as session:
        numbers = list(await session.scalars(select(Ticket.number).order_by(Ticket.id)))
        assert all(re.fullmatch(r"T-\d{6}", n or "") for n in numbers)
        assert len(set(numbers)) == 25
        tickets = list(await session.scalars(select(Ticket)))
        assert {t.status.value for t in tickets} >= {"new", "open", "resolved"}
        assert any(t.assignee_id is not None for t in tickets)
        assert all(t.team_id is not None for t in tickets)
        assert all(t.created_at.tzinfo is not None for t in tickets)
        directions = set(await session.scalars(select(Interaction.direction)))
        assert directions == {Direction.INBOUND, Direction.OUTBOUND}
        admins = list(await session.scalars(select(Agent).where(Agent.role == AgentRole.ADMIN)))
        assert [a.login for a in admins] == [DEMO_ADMIN_LOGIN]
        roles = Counter(a.role for a in await session.scalars(select(Agent)))
        assert roles[AgentRole.SUPERVISOR] == 1 and roles[AgentRole.AGENT] == 6

        zhang = (await search_customers(session, {"email": "zhang.wei@example.cn"}, region="CN"))
        assert zhang.total == 1
        record = await get_customer(session, zhang.items[0].id)
        assert record.display_name == "张伟"
        assert record.phones == ["+8613800138000"]
        assert record.tier_code == "vip"
        assert record.organization is not None
        assert record.organization.name == "杭州云帆科技有限公司"
        oldest = await session.scalar(select(func.min(Customer.created_at)))
        assert oldest is not None and oldest < datetime.now(UTC) - timedelta(days=365)

        yu = (await search_customers(session, {"text": "于海"}, region="CN")).items[0]
        assert "靠窗的老位置" in (yu.notes or "") and "老客户" in yu.tags
        emily = (await search_customers(session, {"text": "Emily Carter"}, region="CN")).items[0]
        assert emily.emails == ["emily.carter@example.com"]
        assert emily.phones[0].startswith("+44")


async def test_demo_is_searchable_and_signed_into(db: Database) -> None:
    await load_demo(db, region="CN")
    async with db.sessions() as session:
        by_name = await search_customers(session, {"text": "张", "page_size": 200}, region="CN")
        assert by_name.total >= 5
        assert "张伟" in [c.display_name for c in by_name.items]
        by_phone = await search_customers(session, {"text": "138 0013 8000"}, region="CN")
        assert [c.display_name for c in by_phone.items] == ["张伟"]
        by_pinyin = await search_customers(session, {"text": "zhang wei"}, region="CN")
        assert "张伟" in [c.display_name for c in by_pinyin.items]
    async with db.transaction() as session:
        admin = await authenticate(session, DEMO_ADMIN_LOGIN, DEMO_ADMIN_PASSWORD)
        assert admin is not None and admin.role == AgentRole.ADMIN
        assert await authenticate(session, DEMO_ADMIN_LOGIN, DEMO_AGENT_PASSWORD) is None
        agent = await authenticate(session, "chen.jing", DEMO_AGENT_PASSWORD)
        assert agent is not None and agent.languages == ["zh-CN"]


async def test_second_load_changes_nothing(db: Database) -> None:
    await load_demo(db, region="CN")
    before = await _counts(db)
    again = await load_demo(db, region="CN")
    assert not again.loaded
    assert again.existing_customers == 200
    assert "--force" in again.lines()[0]
    assert await _counts(db) == before


async def test_forced_load_reuses_and_skips_what_exists(db: Database) -> None:
    await load_demo(db, region="CN")
    before = await _counts(db)
    forced = await load_demo(db, region="CN", force=True)
    assert forced.loaded
    assert forced.customers == 0 and forced.skipped_customers == 200
    assert forced.agents == forced.teams == forced.organizations == forced.conversations == 0
    after = await _counts(db)
    assert {k: v for k, v in after.items() if k != "AuditLog"} == {
        k: v for k, v in before.items() if k != "AuditLog"
    }


async def test_a_failed_load_leaves_the_database_empty(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_create = demo_module.create_customer
    calls = 0

    async def failing_create(*args: Any, **kwargs: Any) -> Customer:
        nonlocal calls
        calls += 1
        if calls == 10:
            raise RuntimeError("disk on fire")
        return await real_create(*args, **kwargs)

    monkeypatch.setattr(demo_module, "create_customer", failing_create)
    with pytest.raises(RuntimeError, match="disk on fire"):
        await load_demo(db, region="CN")
    counts = await _counts(db)
    assert all(v == 0 for v in counts.values()), counts


async def _migrate(url: str) -> None:
    engine = create_engine(url)
    try:
        await schema.upgrade(engine)
    finally:
        await engine.dispose()


def test_cli_demo_then_search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    for name in ("CC_CONFIG", "CC_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", url)
    runner = CliRunner()

    unmigrated = runner.invoke(main, ["demo"])
    assert unmigrated.exit_code != 0
    assert "migrate" in unmigrated.output

    asyncio.run(_migrate(url))
    loaded = runner.invoke(main, ["demo"])
    assert loaded.exit_code == 0, loaded.output
    assert "200 customers" in loaded.output
    assert f"{DEMO_ADMIN_LOGIN} / {DEMO_ADMIN_PASSWORD}" in loaded.output
    assert DEMO_AGENT_PASSWORD in loaded.output
    with sqlite3.connect(tmp_path / "cli.db") as conn:   # the reports' roll-ups are built
        assert conn.execute("SELECT count(*) FROM rollup_state").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM rollup_channel_days").fetchone()[0] > 0
        # the duplicate scan ran: the review queue shows the demo's look-alikes
        assert conn.execute("SELECT count(*) FROM duplicate_suggestions "
                            "WHERE source = 'scan'").fetchone()[0] > 0

    found = runner.invoke(main, ["customers", "search", "张"])
    assert found.exit_code == 0, found.output
    assert "张伟" in found.output
    assert "+8613800138000" in found.output

    again = runner.invoke(main, ["demo"])
    assert again.exit_code == 0
    assert "nothing loaded" in again.output
