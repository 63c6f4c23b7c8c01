"""The bot's console pages: knowledge-base articles, the flows editor, the metrics, and
the bot's transcript and collected fields beside a conversation."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from crm_core.db import Database
from crm_core.models import (
    AuditLog,
    BotSession,
    FlowDocument,
    KnowledgeArticle,
    UnansweredQuestion,
    utcnow,
)
from routing.bot import BotRuntime
from routing.flows import DEFAULT_FLOWS_PATH
from tests.integration.areas_support import World, actor, app_client, ids_in, seed_world


@pytest.fixture
async def world(db: Database) -> World:
    """The seeded teams, people and records."""
    return await seed_world(db)


@pytest.fixture
async def client(db: Database, tmp_path: Path) -> AsyncIterator[TestClient]:
    """The app on the test database."""
    async with app_client(db, tmp_path) as test_client:
        yield test_client


async def test_supervisor_manages_articles_and_the_bot_uses_them(
    client: TestClient, world: World, db: Database,
) -> None:
    supervisor = actor(client, world, "supervisor")
    refused = await supervisor.post("/console/bot/knowledge/new", {
        "language": "zh-CN", "title": "", "answer": "x"})
    assert refused.status == 400
    assert "title" in await refused.text()
    created = await supervisor.post("/console/bot/knowledge/new", {
        "language": "zh-CN", "title": "开箱验货", "questions": "收到货怎么验货\n可以先验货再签收吗",
        "keywords": "验货", "answer": "请当着快递员的面开箱验货，有问题可拒收。", "enabled": "on"})
    assert created.status == 303
    listing = await (await supervisor.get("/console/bot/knowledge")).text()
    [article_id] = ids_in(listing, "data-article-id")
    runtime = BotRuntime(channels={}, flows_file=DEFAULT_FLOWS_PATH)
    async with db.sessions() as session:
        match = (await runtime.knowledge(session)).match("能先验货再签收吗")
    assert match.confident and match.article is not None and match.article.id == article_id
    # an edit is used at once; a disabled article is not answered
    updated = await supervisor.post(f"/console/bot/knowledge/{article_id}", {
        "language": "zh-CN", "title": "开箱验货", "questions": "可以先验货再签收吗",
        "keywords": "验货", "answer": "新的答案"})
    assert updated.status == 303
    async with db.sessions() as session:
        match = (await runtime.knowledge(session)).match("能先验货再签收吗")
        row = await session.get(KnowledgeArticle, article_id)
    assert row is not None and not row.enabled and match.article is None
    deleted = await supervisor.post(f"/console/bot/knowledge/{article_id}/delete")
    assert deleted.status == 303
    async with db.sessions() as session:
        assert await session.get(KnowledgeArticle, article_id) is None
        actions = [a.action for a in (await session.scalars(
            select(AuditLog).where(AuditLog.entity_type == "kb_article")
            .order_by(AuditLog.id))).all()]
    assert actions == ["create", "update", "delete"]


async def test_admin_edits_flows_with_errors_shown(
    client: TestClient, world: World, db: Database,
) -> None:
    admin = actor(client, world, "admin")
    page = await (await admin.get("/console/bot/flows")).text()
    assert "[flows.bot.nodes.menu]" in page  # the shipped file, not edited yet
    source = DEFAULT_FLOWS_PATH.read_text(encoding="utf-8")
    broken = source.replace('goto = "order_email"', 'goto = "order_emial"', 1)
    response = await admin.post("/console/bot/flows", {"source": broken})
    text = await response.text()
    assert response.status == 400
    assert "flows.bot.nodes.order_number.goto: no node &#39;order_emial&#39;" in text
    async with db.sessions() as session:
        assert await session.scalar(select(FlowDocument.id)) is None
    edited = source.replace("我是智能客服小助手", "我是小助手")
    assert (await admin.post("/console/bot/flows", {"source": edited})).status == 303
    page = await (await admin.get("/console/bot/flows")).text()
    assert "我是小助手" in page
    runtime = BotRuntime(channels={}, flows_file=DEFAULT_FLOWS_PATH)
    async with db.sessions() as session:
        engine = await runtime.engine(session)
    assert "我是小助手" in engine.flows.get("bot").node("menu").prompt.texts["zh-CN"]


async def test_metrics_and_the_conversation_panel(
    client: TestClient, world: World, db: Database,
) -> None:
    now = utcnow()
    conversation_id = world.ids["conversation_a"]
    async with db.transaction() as session:
        session.add_all([
            BotSession(channel="webchat", session_key="k1", flow="bot", node="goodbye",
                       language="en", status="ended", outcome="answered",
                       path=["menu", "question", "more", "goodbye"], fields={}, transcript=[],
                       updated_at=now),
            BotSession(channel="telegram", session_key="k2", flow="bot", node="order_number",
                       language="zh-CN", status="bot", path=["menu", "order_number"],
                       fields={}, transcript=[], updated_at=now - timedelta(hours=2)),
            BotSession(channel="webchat", session_key="k3", flow="bot", node="handoff",
                       language="zh-CN", status="handoff", outcome="handoff",
                       conversation_id=conversation_id, handoff_at=now,
                       handoff_team="一线客服 Front line", path=["menu", "order_number",
                                                              "handoff"],
                       fields={"order_number": "20261205"},
                       transcript=[{"at": now.isoformat(), "from": "customer",
                                    "text": "我的订单还没到"},
                                   {"at": now.isoformat(), "from": "bot",
                                    "text": "请输入订单号"}],
                       updated_at=now),
        ])
        await session.flush()
        for question in ("你们卖二手吗", "你们卖二手吗", "is there a student discount"):
            session.add(UnansweredQuestion(channel="webchat", language="zh-CN",
                                           question=question, normalized=question, score=10))
    supervisor = actor(client, world, "supervisor")
    html = await (await supervisor.get("/console/bot/metrics")).text()
    # one solved, one handed to an agent, one dropped (silent for two hours)
    assert re.search(r'data-testid="containment">33\.3%<', html)
    assert "<code>order_number</code></td><td>1</td><td>2</td>" in html
    assert html.index("你们卖二手吗") < html.index("is there a student discount")
    panel = await (await actor(client, world, "agent_a").get(
        f"/console/conversations/{conversation_id}")).text()
    assert 'data-testid="bot-session"' in panel
    assert "20261205" in panel and "我的订单还没到" in panel and "请输入订单号" in panel
    assert "waiting for an agent" in panel
