"""The inbox: views by role, filters, full-text search in Chinese and English, SLA order."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import delete

from contact_center.app import ENGINE_KEY
from contact_center.web.auth import SESSION_CACHE
from contact_center.web.inbox import INBOX_CACHE
from crm_core.db import Database
from crm_core.models import (
    AgentRole,
    AgentSession,
    Channel,
    TicketCategory,
    TicketPriority,
    TicketStatus,
    utcnow,
)
from routing.events import Event
from tests.integration.console_support import (
    Seeded,
    add_agent,
    add_team,
    login,
    row_ids,
    seed_conversation,
    start_client,
    view_count,
)


@dataclass
class Floor:
    """Two teams, their people and five conversations."""

    client: TestClient
    agent_a: int
    agent_b: int
    mine: Seeded  # assigned to A (team X)
    queue_x: Seeded  # unassigned, team X
    queue_y: Seeded  # unassigned, team Y
    colleague: Seeded  # assigned to B (team X)
    nobody: Seeded  # unassigned, no team


@pytest.fixture
async def floor(db: Database, tmp_path: Path) -> AsyncIterator[Floor]:
    team_x = await add_team(db, "售后服务 After-sales")
    team_y = await add_team(db, "VIP desk")
    agent_a = await add_agent(db, "li", teams=(team_x,), name="李娜")
    agent_b = await add_agent(db, "wang", teams=(team_x,), name="王芳")
    await add_agent(db, "zhao", role=AgentRole.SUPERVISOR, teams=(team_x,))
    await add_agent(db, "root", role=AgentRole.ADMIN)
    now = utcnow()
    mine = await seed_conversation(
        db, name="张伟", subject="发票抬头错了", text="你好，我的发票抬头写错了，请帮忙重开。",
        assignee_id=agent_a, team_id=team_x, priority=TicketPriority.HIGH,
        category=TicketCategory.COMPLAINT, tags=["invoice", "vip"],
        first_response_due_at=now - timedelta(hours=1))
    queue_x = await seed_conversation(
        db, name="Alice Smith", email="alice@example.com", subject="Refund request",
        text="Please REFUND my order #123, it arrived broken.", team_id=team_x,
        channel=Channel.EMAIL, first_response_due_at=now + timedelta(hours=2))
    queue_y = await seed_conversation(
        db, name="于先生", email="yu@example.cn", subject="订座", text="还是老位置，发票也要。",
        team_id=team_y, first_response_due_at=now + timedelta(minutes=30))
    colleague = await seed_conversation(
        db, name="Bob", email="bob@example.com", subject="Invoice copy",
        text="Could you resend the invoice?", assignee_id=agent_b, team_id=team_x)
    nobody = await seed_conversation(
        db, name="匿名访客", email=None, channel=Channel.WEBCHAT, subject="网页咨询",
        text="请问营业时间？", thread_key="v-1234567890abcdef",
        status=TicketStatus.NEW, first_response_due_at=now + timedelta(hours=8))
    client = await start_client(db, tmp_path)
    try:
        yield Floor(client, agent_a, agent_b, mine, queue_x, queue_y, colleague, nobody)
    finally:
        await client.close()


async def inbox(client: TestClient, query: str = "") -> str:
    response = await client.get(f"/console/inbox?{query}")
    assert response.status == 200, await response.text()
    return await response.text()


async def test_views_follow_the_role_rules(floor: Floor) -> None:
    """Agent: own + team queue + unassigned without team; supervisor: the team; admin: all."""
    client = floor.client
    await login(client, "li")
    page = await inbox(client)
    assert row_ids(page) == [floor.mine.conversation_id]
    assert view_count(page, "mine") == 1
    assert view_count(page, "unassigned") == 2
    assert view_count(page, "teams") == 2  # mine and the team queue; not B's conversation
    assert 'data-testid="view-all"' not in page
    assert set(row_ids(await inbox(client, "view=unassigned"))) == {
        floor.queue_x.conversation_id, floor.nobody.conversation_id}
    refused = await client.get("/console/inbox?view=all")
    assert refused.status == 403

    client.session.cookie_jar.clear()
    await login(client, "zhao")
    page = await inbox(client, "view=all")
    assert set(row_ids(page)) == {floor.mine.conversation_id, floor.queue_x.conversation_id,
                                  floor.colleague.conversation_id,
                                  floor.nobody.conversation_id}
    assert view_count(page, "teams") == 3

    client.session.cookie_jar.clear()
    await login(client, "root")
    page = await inbox(client, "view=all")
    assert len(row_ids(page)) == 5 and view_count(page, "all") == 5


async def test_rows_are_sorted_by_sla_due_and_show_breaches(floor: Floor) -> None:
    """The most urgent deadline first; a passed first-response due time is a breach."""
    client = floor.client
    await login(client, "root")
    page = await inbox(client, "view=all")
    ids = row_ids(page)
    assert ids[:3] == [floor.mine.conversation_id, floor.queue_y.conversation_id,
                       floor.queue_x.conversation_id]
    assert page.count('class="badge breach"') == 1
    breached = row_ids(await inbox(client, "view=all&breach=1"))
    assert breached == [floor.mine.conversation_id]


async def test_filters(floor: Floor) -> None:
    """Channel, status, priority, category and tag narrow the rows."""
    client = floor.client
    await login(client, "root")
    assert row_ids(await inbox(client, "view=all&channel=webchat")) == [
        floor.nobody.conversation_id]
    assert row_ids(await inbox(client, "view=all&status=new")) == [floor.nobody.conversation_id]
    assert row_ids(await inbox(client, "view=all&priority=high")) == [floor.mine.conversation_id]
    assert row_ids(await inbox(client, "view=all&category=complaint")) == [
        floor.mine.conversation_id]
    assert row_ids(await inbox(client, "view=all&tag=vip")) == [floor.mine.conversation_id]
    assert row_ids(await inbox(client, "view=all&tag=nothing")) == []
    assert row_ids(await inbox(client, "view=all&status=resolved")) == []
    # Bad values are ignored rather than failing.
    assert len(row_ids(await inbox(client, "view=all&priority=bogus&status=x"))) == 5


@pytest.mark.parametrize(("query", "expected"), [
    ("发票", {"mine", "queue_y"}),  # two characters: below the trigram size (LIKE)
    ("发票抬头", {"mine"}),  # four characters: the trigram index
    ("老位置", {"queue_y"}),
    ("refund", {"queue_x"}),  # case-insensitive English
    ("Refund broken", {"queue_x"}),  # every term in one message
    ("refund 发票", set()),
    ("invoice", {"colleague"}),
    ("Alice", {"queue_x"}),  # a customer's name
    ("营业", {"nobody"}),
    ('"100%_', set()),  # query syntax and wildcards are plain text
])
async def test_search_finds_chinese_and_english(floor: Floor, query: str,
                                                expected: set[str]) -> None:
    """Full-text search over message texts and subjects, through the database's index."""
    client = floor.client
    await login(client, "root")
    from urllib.parse import quote

    page = await inbox(client, f"view=all&status=any&q={quote(query)}")
    names = {name for name in ("mine", "queue_x", "queue_y", "colleague", "nobody")
             if getattr(floor, name).conversation_id in row_ids(page)}
    assert names == expected


async def test_search_respects_the_policy(floor: Floor) -> None:
    """An agent's search never finds another team's conversation."""
    client = floor.client
    await login(client, "li")
    page = await inbox(client, "view=teams&q=发票")
    assert row_ids(page) == [floor.mine.conversation_id]
    unassigned = await inbox(client, "view=unassigned&q=老位置")
    assert floor.queue_y.conversation_id not in row_ids(unassigned)
    results = await (await client.get("/console/search?q=老位置")).text()
    assert "于先生" not in results
    results = await (await client.get("/console/search?q=发票抬头")).text()
    assert f"/console/conversations/{floor.mine.conversation_id}#" in results


async def test_rows_fragment_for_the_live_region(floor: Floor) -> None:
    """The live region reloads a fragment: tabs and rows, without the page around them."""
    client = floor.client
    await login(client, "li")
    response = await client.get("/console/inbox/rows?view=mine")
    html = await response.text()
    assert response.status == 200 and "<html" not in html
    assert row_ids(html) == [floor.mine.conversation_id]
    page = await inbox(client)
    assert 'data-live="interaction.logged ticket.created ticket.updated conversation.assigned"' \
        in page
    assert 'data-live-src="/console/inbox/rows?view=mine"' in page


async def test_search_uses_the_databases_text_index(db: Database) -> None:
    """SQLite answers 3+ characters from the FTS5 trigram table; PostgreSQL's ILIKE can use
    the pg_trgm GIN index (shown with sequential scans switched off)."""
    from sqlalchemy import select, text

    from contact_center.web.search import interaction_text_condition
    from crm_core.models import Interaction

    await seed_conversation(db)
    query = select(Interaction.id).where(
        interaction_text_condition("发票抬头", sqlite=db.is_sqlite))
    async with db.sessions() as session:
        compiled = query.compile(dialect=session.bind.dialect,
                                 compile_kwargs={"literal_binds": True})
        if db.is_sqlite:
            plan = " ".join(str(row) for row in await session.execute(
                text(f"EXPLAIN QUERY PLAN {compiled}")))
            assert "interactions_fts VIRTUAL TABLE INDEX" in plan, plan
        else:
            await session.execute(text("SET LOCAL enable_seqscan = off"))
            plan = " ".join(str(row) for row in await session.execute(
                text(f"EXPLAIN {compiled}")))
            assert "ix_interactions_text_trgm" in plan, plan
        found = list(await session.scalars(query))
    assert len(found) == 1


async def test_inbox_json_has_the_same_rows_and_counts_as_the_page(floor: Floor) -> None:
    """The console's JSON data of the inbox follows the same role rules as the page."""
    client = floor.client
    await login(client, "li")
    response = await client.get("/console/inbox.json?view=unassigned")
    assert response.status == 200
    data = await response.json()
    page = await inbox(client, "view=unassigned")
    assert [row["conversation_id"] for row in data["rows"]] == row_ids(page)
    assert data["counts"]["unassigned"] == view_count(page, "unassigned") == 2
    assert "all" not in data["counts"]
    first = data["rows"][0]
    assert first["ticket"]["number"] and first["customer"]["name"] and first["snippet"]
    refused = await client.get("/console/inbox.json?view=all")
    assert refused.status == 403
    assert "error" in await refused.json()


async def unassigned(client: TestClient) -> dict:
    response = await client.get("/console/inbox.json?view=unassigned")
    assert response.status == 200, await response.text()
    return await response.json()


async def test_the_inbox_is_computed_again_only_after_an_event_or_a_change(
        floor: Floor, db: Database) -> None:
    """Consoles asking again get the page from memory until a domain event arrives or a
    change is made through this process."""
    client = floor.client
    csrf = await login(client, "li")
    cache = client.server.app[INBOX_CACHE]
    first = await unassigned(client)
    computed = cache.computed
    assert await unassigned(client) == first
    assert cache.computed == computed
    # written by another process, its event not here yet: the page is not computed again
    late = await seed_conversation(db, name="Carol", email="carol@example.com",
                                   subject="Late parcel", text="Where is my parcel?")
    assert (await unassigned(client))["counts"]["unassigned"] == 2
    await client.server.app[ENGINE_KEY].events.publish([Event(
        "ticket.created", {"ticket_id": late.ticket_id,
                           "conversation_id": late.conversation_id})])
    fresh = await unassigned(client)
    assert fresh["counts"]["unassigned"] == 3
    assert late.conversation_id in [row["conversation_id"] for row in fresh["rows"]]
    computed = cache.computed
    response = await client.post("/console/language", allow_redirects=False,
                                 data={"language": "zh-CN", "_csrf": csrf})
    assert response.status == 302
    await unassigned(client)
    assert cache.computed == computed + 1


async def test_session_changes_show_at_once_here_and_within_the_cache_age_elsewhere(
        floor: Floor, db: Database) -> None:
    """A logout or a language switch through this process counts on the next request; a
    session ended through another process stops working once the cache entry is old."""
    client = floor.client
    csrf = await login(client, "li")
    assert "收件箱" not in await inbox(client)
    await client.post("/console/language", data={"language": "zh-CN", "_csrf": csrf})
    assert "收件箱" in await inbox(client)
    token = client.session.cookie_jar.filter_cookies(
        client.make_url("/console/"))["cc_session"].value
    await client.post("/console/logout", data={"_csrf": csrf}, allow_redirects=False)
    assert await answer_status(client, {"cc_session": token}) == 401

    await login(client, "li")
    assert await answer_status(client) == 200
    async with db.transaction() as session:
        await session.execute(delete(AgentSession))
    assert await answer_status(client) == 200  # remembered
    sessions = client.server.app[SESSION_CACHE]
    sessions.clock = lambda: time.monotonic() + 2 * sessions.max_age + 1
    assert await answer_status(client) == 401


async def answer_status(client: TestClient, cookies: dict[str, str] | None = None) -> int:
    """The status of the inbox JSON for a script (no redirect to the login page)."""
    response = await client.get("/console/inbox.json", cookies=cookies,
                                headers={"Accept": "application/json"},
                                allow_redirects=False)
    return response.status
