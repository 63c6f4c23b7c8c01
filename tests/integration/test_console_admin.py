"""The admin area of the console on SQLite and PostgreSQL: agents (one-time passwords and
set-up links), teams, channel and system settings read-only with secrets masked, business
hours and SLA, canned responses, the audit log."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select, update

from contact_center.settings import Settings
from contact_center.web.display import Display
from crm_core.db import Database
from crm_core.models import Agent, AgentRole, AgentSession, AuditLog, CannedResponse
from crm_core.services.agents import get_agent
from tests.integration.areas_support import (
    PASSWORD,
    World,
    actor,
    app_client,
    ids_in,
    seed_world,
)
from tests.integration.console_support import second_client


@pytest.fixture
async def world(db: Database) -> World:
    """The seeded teams, people and records."""
    return await seed_world(db)


@pytest.fixture
async def client(db: Database, tmp_path: Path) -> AsyncIterator[TestClient]:
    """The app on the test database."""
    async with app_client(db, tmp_path) as test_client:
        yield test_client


ADMIN_PAGES = ("/console/admin", "/console/admin/agents", "/console/admin/agents/new",
               "/console/admin/teams", "/console/admin/channels", "/console/admin/rules",
               "/console/admin/settings", "/console/admin/canned", "/console/admin/canned/new",
               "/console/admin/audit")


async def login_status(client: TestClient, login: str, password: str) -> int:
    """Post the login form; 302 means logged in."""
    response = await client.post("/console/login", data={"login": login, "password": password},
                                 allow_redirects=False)
    return response.status


async def test_only_admins_enter(client: TestClient, world: World) -> None:
    """Supervisors and agents get 403 on every admin page; admins 200."""
    for path in ADMIN_PAGES:
        for role in ("agent_a", "supervisor"):
            assert (await actor(client, world, role).get(path)).status == 403, (role, path)
        assert (await actor(client, world, "admin").get(path)).status == 200, path


async def test_new_agent_gets_a_one_time_password_shown_once(
    client: TestClient, world: World, db: Database,
) -> None:
    """The password works for the login; no page ever shows a password hash."""
    admin = actor(client, world, "admin")
    response = await admin.post("/console/admin/agents/new", {
        "login": "Xiao.Ming", "display_name": "小明", "email": "xm@shop.example",
        "phone": "138 0013 9999", "role": "agent", "capacity": "6",
        "skills": "billing，technical", "languages": "zh-CN, en",
        "team_ids": str(world.ids["team_a"]), "credential": "password"})
    html = await response.text()
    assert response.status == 200, html
    found = re.search(r'data-testid="one-time-password">([^<]+)<', html)
    assert found is not None
    password = found.group(1)
    assert len(password) >= 12
    async with db.sessions() as session:
        agent = await session.scalar(select(Agent).where(Agent.login == "xiao.ming"))
        assert agent is not None
        agent = await get_agent(session, agent.id)
    assert (agent.phone, agent.capacity, agent.skills, agent.languages) == (
        "+8613800139999", 6, ["billing", "technical"], ["zh-CN", "en"])
    assert [t.id for t in agent.teams] == [world.ids["team_a"]]
    assert await login_status(client, "xiao.ming", password) == 302
    assert await login_status(client, "xiao.ming", "wrong password!") == 401

    pages = [html]
    for path in (*ADMIN_PAGES, f"/console/admin/agents/{agent.id}", "/console/admin/audit?"
                 "entity_type=agent", "/console/customers"):
        page = await admin.get(path)
        pages.append(await page.text())
    for text in pages:
        assert agent.password_hash not in text and "$argon2" not in text
    again = await admin.get(f"/console/admin/agents/{agent.id}")
    assert password not in await again.text()  # shown once only
    created = (await admin.get("/console/admin/audit?entity_type=agent&action=create"))
    assert "xiao.ming" in await created.text()

    taken = await admin.post("/console/admin/agents/new", {
        "login": "xiao.ming", "display_name": "Again", "role": "agent", "capacity": "5"})
    assert taken.status == 400 and "xiao.ming" in await taken.text()
    bad_phone = await admin.post("/console/admin/agents/new", {
        "login": "someone", "display_name": "S", "role": "agent", "capacity": "5",
        "phone": "12"})
    assert bad_phone.status == 400
    async with db.sessions() as session:
        assert await session.scalar(select(Agent).where(Agent.login == "someone")) is None


async def test_set_up_link_lets_the_agent_choose_a_password(
    client: TestClient, world: World,
) -> None:
    """The link (shown once) opens the reset page; the chosen password logs in."""
    admin = actor(client, world, "admin")
    response = await admin.post("/console/admin/agents/new", {
        "login": "link-user", "display_name": "Link User", "role": "supervisor",
        "capacity": "10", "credential": "link"})
    html = await response.text()
    link = re.search(r'data-testid="setup-link">[^<]*(/console/reset/[^<]+)<', html)
    assert link is not None and "one-time-password" not in html
    chosen = "my own long passphrase"
    done = await client.post(link.group(1), data={"password": chosen, "password_again": chosen},
                             allow_redirects=False)
    assert done.status == 302
    assert await login_status(client, "link-user", chosen) == 302


async def test_edit_agent_role_teams_and_deactivate(
    client: TestClient, world: World, db: Database,
) -> None:
    """Changes are audited; a deactivated agent's sessions end; the last admin stays."""
    admin = actor(client, world, "admin")
    agent_id = world.ids["agent_b_id"]
    saved = await admin.post(f"/console/admin/agents/{agent_id}", {
        "display_name": "Agent B", "role": "supervisor", "capacity": "3",
        "team_ids": [str(world.ids["team_a"]), str(world.ids["team_b"])],
        "skills": "vip", "languages": "en", "phone": "client:agent-b", "active": "1"})
    assert saved.status == 303, await saved.text()
    async with db.sessions() as session:
        agent = await get_agent(session, agent_id)
        entry = (await session.scalars(select(AuditLog).where(
            AuditLog.entity_type == "agent", AuditLog.action == "update",
            AuditLog.entity_id == str(agent_id)))).one()
    assert agent.role == AgentRole.SUPERVISOR and len(agent.teams) == 2
    assert agent.phone == "client:agent-b"
    assert entry.actor == "agent:admin" and entry.before["role"] == "agent"
    assert entry.after["role"] == "supervisor" and "password_hash" not in entry.after

    off = await admin.post(f"/console/admin/agents/{agent_id}", {
        "display_name": "Agent B", "role": "supervisor", "capacity": "3"})
    assert off.status == 303
    async with db.sessions() as session:
        assert await session.scalar(select(AgentSession).where(
            AgentSession.agent_id == agent_id)) is None
    assert (await actor(client, world, "agent_b").get("/console/customers")).status == 302

    last = await admin.post(f"/console/admin/agents/{world.ids['admin_id']}", {
        "display_name": "Admin", "role": "agent", "capacity": "3", "active": "1"})
    assert last.status == 400 and "last active admin" in await last.text()
    bad = await admin.post(f"/console/admin/agents/{agent_id}", {
        "display_name": "Agent B", "role": "boss", "capacity": "3"})
    assert bad.status == 400
    missing = await admin.get("/console/admin/agents/9999")
    assert missing.status == 404


async def test_password_reset_by_admin(client: TestClient, world: World, db: Database) -> None:
    """A new one-time password replaces the old one and ends the agent's sessions."""
    admin = actor(client, world, "admin")
    agent_id = world.ids["agent_a_id"]
    response = await admin.post(f"/console/admin/agents/{agent_id}/password",
                                {"credential": "password"})
    found = re.search(r'data-testid="one-time-password">([^<]+)<', await response.text())
    assert found is not None
    assert (await actor(client, world, "agent_a").get("/console/customers")).status == 302
    assert await login_status(client, "agent-a", found.group(1)) == 302
    link = await admin.post(f"/console/admin/agents/{agent_id}/password", {"credential": "link"})
    assert "/console/reset/" in await link.text()
    async with db.sessions() as session:
        actions = list(await session.scalars(select(AuditLog.action).where(
            AuditLog.entity_type == "agent", AuditLog.entity_id == str(agent_id),
            AuditLog.actor == "agent:admin").order_by(AuditLog.id)))
    assert actions == ["password", "reset_link"]


async def test_teams(client: TestClient, world: World) -> None:
    """Create and rename teams; names are unique."""
    admin = actor(client, world, "admin")
    assert (await admin.post("/console/admin/teams", {"name": "VIP 专席"})).status == 303
    assert (await admin.post("/console/admin/teams", {"name": "VIP 专席"})).status == 400
    renamed = await admin.post(f"/console/admin/teams/{world.ids['team_b']}", {
        "name": "售后服务 After-sales", "description": "refunds"})
    assert renamed.status == 303
    html = await (await admin.get("/console/admin/teams")).text()
    assert "VIP 专席" in html and "售后服务 After-sales" in html
    assert (await admin.post("/console/admin/teams/999", {"name": "x"})).status == 404


async def test_channels_and_settings_are_read_only_with_secrets_masked(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Passwords, tokens and the secret key never reach the page; the page says where the
    settings are changed."""
    monkeypatch.setenv("SMTP_SECRET_FOR_TEST", "smtp-password-value")
    settings = Settings(
        data_dir=tmp_path, secret_key="the-secret-key-value",
        email={"mailboxes": [{"name": "support", "host": "imap.shop.example",
                              "username": "support", "password": "imap-password-value",
                              "address": "support@shop.example", "team": "Team A 一线"}],
               "smtp": {"host": "smtp.shop.example", "from_address": "support@shop.example",
                        "username": "support", "password_env": "SMTP_SECRET_FOR_TEST"}},
        telegram={"token": "123456:telegram-token-value"},
        voice={"auth_token": "voice-token-value", "cti_token": "cti-token-value"})
    world = await seed_world(db)
    async with app_client(db, tmp_path, settings) as client:
        admin = actor(client, world, "admin")
        channels = await (await admin.get("/console/admin/channels")).text()
        system = await (await admin.get("/console/admin/settings")).text()
    for text in (channels, system):
        for secret in ("imap-password-value", "smtp-password-value", "telegram-token-value",
                       "voice-token-value", "cti-token-value", "the-secret-key-value"):
            assert secret not in text
    assert "imap.shop.example" in channels and "env:SMTP_SECRET_FOR_TEST" in channels
    assert "CC_CONFIG" in channels and "restart" in channels
    assert "email.mailboxes[0].host" in system and "secret_key" in system


async def test_rules_page_shows_the_loaded_file(client: TestClient, world: World) -> None:
    """Opening hours, holidays, make-up days and SLA targets, with the file's path."""
    html = await (await actor(client, world, "admin").get("/console/admin/rules")).text()
    assert "config/rules.toml" in html and "Asia/Shanghai" in html
    assert "2026-10-01" in html and "2026-10-10" in html  # a holiday and a make-up workday
    assert "09:00–12:00" in html and "out of scope" in html
    assert "<td>240</td>" in html  # normal: first response within 240 minutes


async def test_canned_responses(client: TestClient, world: World, db: Database) -> None:
    """Create, list, edit and delete; unknown variables and taken shortcuts are refused."""
    admin = actor(client, world, "admin")
    created = await admin.post("/console/admin/canned/new", {
        "shortcut": "/问候", "language": "zh-CN", "title": "问候",
        "body": "{{customer.name}}您好，我是{{agent.name}}，很高兴为您服务。"})
    assert created.status == 303
    async with db.sessions() as session:
        row = await session.scalar(select(CannedResponse).where(
            CannedResponse.shortcut == "问候"))
    assert row is not None and row.language == "zh-CN"
    listing = await (await admin.get("/console/admin/canned?language=zh-CN")).text()
    assert "/问候" in listing and "customer.name, agent.name" in listing
    assert "/hello" not in listing  # English, filtered out
    found = await (await admin.get("/console/admin/canned?q=hello")).text()
    assert ids_in(found, "data-canned-id") == [world.ids["canned"]]
    unknown = await admin.post("/console/admin/canned/new", {
        "shortcut": "x", "language": "en", "title": "X", "body": "Hi {{customer.secret}}"})
    assert unknown.status == 400 and "customer.secret" in await unknown.text()
    taken = await admin.post("/console/admin/canned/new", {
        "shortcut": "hello", "language": "en", "title": "X", "body": "Hi"})
    assert taken.status == 400
    same_in_chinese = await admin.post("/console/admin/canned/new", {
        "shortcut": "hello", "language": "zh-CN", "title": "你好", "body": "你好"})
    assert same_in_chinese.status == 303
    edited = await admin.post(f"/console/admin/canned/{row.id}", {
        "shortcut": "问候", "language": "zh-CN", "title": "问候语", "body": "您好！"})
    assert edited.status == 303
    deleted = await admin.post(f"/console/admin/canned/{row.id}/delete")
    assert deleted.status == 303
    assert (await admin.get(f"/console/admin/canned/{row.id}")).status == 404
    async with db.sessions() as session:
        actions = list(await session.scalars(select(AuditLog.action).where(
            AuditLog.entity_type == "canned_response", AuditLog.entity_id == str(row.id))
            .order_by(AuditLog.id)))
    assert actions == ["create", "update", "delete"]


async def test_audit_log_filters_and_pages(client: TestClient, world: World,
                                           db: Database) -> None:
    """Actor, action, record type and number, date range; 50 entries a page."""
    admin = actor(client, world, "admin")

    async def shown(query: str) -> list[int]:
        response = await admin.get(f"/console/admin/audit?{query}")
        assert response.status == 200
        return ids_in(await response.text(), "data-audit-id")

    customer_id = world.ids["customer_a"]
    await admin.post(f"/console/customers/{customer_id}/edit", {
        "display_name": "张伟", "phones": "138 0013 8000", "city": "北京",
        "lifecycle_stage": "lead"})
    mine = await shown("actor=agent%3Aadmin")
    assert len(mine) == 1
    assert await shown("actor=ADMIN") == mine  # part of the name, any case
    assert await shown("action=update&entity_type=customer") == mine
    assert len(await shown(f"entity_type=customer&entity_id={customer_id}")) == 2
    assert await shown("actor=nobody") == []
    everything = await shown("")
    async with db.sessions() as session:
        total = len(list(await session.scalars(select(AuditLog.id))))
    assert len(everything) == min(total, 50)
    if total > 50:
        assert len(await shown("page=2")) == min(total - 50, 50)
    async with db.transaction() as session:
        await session.execute(update(AuditLog).where(AuditLog.id == mine[0]).values(
            at=datetime(2026, 1, 15, 20, 0, tzinfo=UTC)))  # 16 January in Shanghai
    assert await shown("date_from=2026-01-16&date_to=2026-01-16") == mine
    assert await shown("date_from=2026-01-15&date_to=2026-01-15") == []
    today = (datetime.now(UTC) + timedelta(hours=8)).date().isoformat()
    assert mine[0] not in await shown(f"date_from={today}")
    html = await (await admin.get(f"/console/admin/audit?entity_id={customer_id}"
                                  "&entity_type=customer")).text()
    assert "北京" in html  # before and after, readable
    assert ">changed</td>" in html and "Customer #" in html  # words, not stored codes
    assert Display("zh-CN", "Asia/Shanghai").label("audit_action", "update") == "修改"
    bad = await admin.get("/console/admin/audit?date_from=yesterday")
    assert "Please check" in await bad.text()


async def test_a_one_time_password_is_replaced_at_the_first_sign_in(
    client: TestClient, world: World, db: Database,
) -> None:
    """The console asks for the agent's own password before anything else; the one-time
    password stops working; an administrator's reset asks again."""
    admin = actor(client, world, "admin")
    response = await admin.post("/console/admin/agents/new", {
        "login": "new.hire", "display_name": "New Hire", "role": "agent", "capacity": "5",
        "credential": "password"})
    found = re.search(r'data-testid="one-time-password">([^<]+)<', await response.text())
    assert found is not None
    one_time = found.group(1)
    browser = await second_client(client)  # a browser of its own, keeping its cookies
    try:
        await _first_sign_in(browser, one_time)
    finally:
        await browser.session.close()
    assert await login_status(client, "new.hire", one_time) == 401
    assert await login_status(client, "new.hire", "my own passphrase") == 302
    async with db.sessions() as session:
        agent = await session.scalar(select(Agent).where(Agent.login == "new.hire"))
        assert agent is not None and agent.password_change_required is False
    # an administrator's reset gives a one-time password again
    reset = await admin.post(f"/console/admin/agents/{agent.id}/password",
                             {"credential": "password"})
    assert reset.status == 200
    async with db.sessions() as session:
        again = await session.get(Agent, agent.id)
        assert again is not None and again.password_change_required is True


async def _first_sign_in(client: TestClient, one_time: str) -> None:
    assert await login_status(client, "new.hire", one_time) == 302

    page = await client.get("/console/customers?q=x", allow_redirects=False)
    assert page.status == 303, page.headers.get("Location")
    assert page.headers["Location"] == "/console/account/password?next=/console/customers?q%3Dx"
    json_call = await client.get("/console/inbox.json", allow_redirects=False,
                                 headers={"Accept": "application/json"})
    assert json_call.status == 403
    form_page = await client.get("/console/account/password?next=/console/customers")
    html = await form_page.text()
    assert 'data-testid="password-change-required"' in html
    csrf = re.search(r'name="_csrf" value="([^"]+)"', html)
    assert csrf is not None

    async def change(current: str, new: str, again: str | None = None) -> Any:
        return await client.post("/console/account/password", allow_redirects=False, data={
            "_csrf": csrf.group(1), "current_password": current, "password": new,
            "password_again": again or new, "next": "/console/customers"})

    assert (await change("not it at all", "my own passphrase")).status == 400
    assert (await change(one_time, one_time)).status == 400  # the same one again
    assert (await change(one_time, "my own passphrase", "another one")).status == 400
    done = await change(one_time, "my own passphrase")
    assert done.status == 303 and done.headers["Location"] == "/console/customers"
    assert (await client.get("/console/customers", allow_redirects=False)).status == 200


async def test_changing_ones_password_ends_the_other_sessions(
    client: TestClient, world: World, db: Database,
) -> None:
    """Agent A changes their password in one browser; their other browser is signed out."""
    other_browser = actor(client, world, "agent_a")
    assert (await other_browser.get("/console/customers")).status == 200
    password = PASSWORD
    browser = await second_client(client)
    try:
        await _change_in(browser, password)
    finally:
        await browser.session.close()
    assert (await other_browser.get("/console/customers")).status == 302  # to the login


async def _change_in(client: TestClient, password: str) -> None:
    assert await login_status(client, "agent-a", password) == 302
    form = await (await client.get("/console/account/password")).text()
    csrf = re.search(r'name="_csrf" value="([^"]+)"', form)
    assert csrf is not None and 'data-testid="password-change-required"' not in form
    done = await client.post("/console/account/password", allow_redirects=False, data={
        "_csrf": csrf.group(1), "current_password": password,
        "password": "a brand new passphrase", "password_again": "a brand new passphrase"})
    assert done.status == 303
    assert (await client.get("/console/customers", allow_redirects=False)).status == 200
