"""Console login: sessions, CSRF, lock-out with a challenge, password reset, languages."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from contact_center.app import create_app
from contact_center.settings import Settings
from contact_center.web.auth import SECRET, make_challenge
from crm_core.db import Database
from crm_core.models import Agent, AgentRole, AgentSession, OutboxMessage
from crm_core.services.agents import create_agent
from crm_core.services.sessions import CHALLENGE_AFTER, LOCK_AFTER
from routing.bus import DatabaseBus
from routing.context import RoutingConfig
from routing.engine import RoutingEngine
from routing.rules import RuleSet

PASSWORD = "correct horse battery"


@pytest.fixture
async def client(db: Database, tmp_path: Path) -> AsyncIterator[TestClient]:
    """The app with one agent (``li``) whose e-mail is known."""
    async with db.transaction() as session:
        await create_agent(session, login="li", display_name="李娜", password=PASSWORD,
                           actor="test", email="li@shop.example", role=AgentRole.AGENT)
    engine = RoutingEngine(db, DatabaseBus(db), RoutingConfig(region="CN",
                                                              rules=RuleSet.default()))
    app = create_app(Settings(data_dir=tmp_path), db, engine=engine)
    test_client = TestClient(TestServer(app))
    await test_client.start_server()
    yield test_client
    await test_client.close()


async def login(client: TestClient, password: str = PASSWORD, **extra: str) -> int:
    """Post the login form; returns the status (302 on success)."""
    response = await client.post("/console/login", data={"login": "li", "password": password,
                                                        **extra}, allow_redirects=False)
    return response.status


async def csrf_token(db: Database) -> str:
    """The CSRF token of the (only) session, as the logged-in pages carry it."""
    async with db.sessions() as session:
        row = await session.scalar(select(AgentSession).order_by(AgentSession.id.desc()))
    assert row is not None
    return row.csrf_token


async def test_anonymous_visitors_go_to_the_login_page(client: TestClient) -> None:
    """Pages redirect to the login with ``next``; API calls answer 401 JSON."""
    response = await client.get("/console/inbox?status=open", allow_redirects=False)
    assert response.status == 302
    location = urlsplit(response.headers["Location"])
    assert location.path == "/console/login"
    assert parse_qs(location.query)["next"] == ["/console/inbox?status=open"]
    api = await client.get("/console/api/inbox", allow_redirects=False)
    assert api.status == 401 and (await api.json())["error"] == "login required"
    page = await client.get("/console/login", headers={"Accept-Language": "en-GB,en;q=0.8"})
    html = await page.text()
    assert "Log in" in html and "Remember my username" in html
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    chinese = await client.get("/console/login", headers={"Accept-Language": "zh-CN"})
    assert "记住用户名" in await chinese.text()


async def test_login_sets_a_safe_session_cookie_and_logout_needs_csrf(
    client: TestClient, db: Database,
) -> None:
    """HttpOnly, SameSite=Lax; logout without the CSRF token is refused."""
    response = await client.post("/console/login", data={
        "login": " LI ", "password": PASSWORD, "remember": "1", "next": "/console/customers"},
        allow_redirects=False)
    assert response.status == 302 and response.headers["Location"] == "/console/customers"
    cookie = response.cookies["cc_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["path"] == "/console"
    assert response.cookies["cc_login"].value == "li"
    refused = await client.post("/console/logout", allow_redirects=False)
    assert refused.status == 403 and "CSRF" in (await refused.json())["error"]
    token = await csrf_token(db)
    done = await client.post("/console/logout", data={"_csrf": token}, allow_redirects=False)
    assert done.status == 302
    async with db.sessions() as session:
        assert await session.scalar(select(AgentSession)) is None
    again = await client.get("/console/inbox", allow_redirects=False)
    assert again.status == 302


async def test_an_outside_next_is_ignored(client: TestClient) -> None:
    """``next`` cannot send the agent to another site after login."""
    response = await client.post("/console/login", data={
        "login": "li", "password": PASSWORD, "next": "https://evil.example/console/"},
        allow_redirects=False)
    assert response.headers["Location"] == "/console/"


async def test_failures_bring_a_challenge_then_a_lock(client: TestClient, db: Database) -> None:
    """After a few wrong passwords a sum must be solved; after more the account locks."""
    for _ in range(CHALLENGE_AFTER):
        assert await login(client, "wrong") == 401
    page = await client.post("/console/login", data={"login": "li", "password": PASSWORD})
    assert page.status == 401
    html = await page.text()
    match = re.search(r"(\d) \+ (\d)", html)
    token = re.search(r'name="challenge_token" value="([^"]+)"', html)
    assert match and token, html
    wrong_answer = await login(client, PASSWORD, challenge="99",
                               challenge_token=token.group(1))
    assert wrong_answer == 401
    answer = str(int(match.group(1)) + int(match.group(2)))
    assert await login(client, PASSWORD, challenge=answer,
                       challenge_token=token.group(1)) == 302
    async with db.sessions() as session:
        agent = await session.scalar(select(Agent).where(Agent.login == "li"))
    assert agent is not None and agent.failed_logins == 0

    client.session.cookie_jar.clear()  # logged out again
    async with db.transaction() as session:
        agent = await session.scalar(select(Agent).where(Agent.login == "li"))
        assert agent is not None
        agent.failed_logins = LOCK_AFTER - 1
    secret = client.server.app[SECRET]
    question, signed = make_challenge(secret)
    a, b = (int(x) for x in question.split(" + "))
    locked = await client.post("/console/login", data={
        "login": "li", "password": "wrong", "challenge": str(a + b), "challenge_token": signed})
    assert "15" in await locked.text()
    question, signed = make_challenge(secret)
    a, b = (int(x) for x in question.split(" + "))
    still = await login(client, PASSWORD, challenge=str(a + b), challenge_token=signed)
    assert still == 401  # the right password does not open a locked account


async def test_password_reset_by_mailed_one_time_link(client: TestClient, db: Database) -> None:
    """The link is queued as an e-mail, works once, and ends existing sessions."""
    assert await login(client) == 302
    token = await csrf_token(db)
    unknown = await client.post("/console/reset", data={"login": "nobody", "_csrf": token})
    known = await client.post("/console/reset", data={"login": "li@shop.example",
                                                        "_csrf": token})
    assert "已发送" in await unknown.text() and "已发送" in await known.text()
    assert unknown.status == known.status == 200
    async with db.sessions() as session:
        mail = (await session.scalars(select(OutboxMessage))).one()
    assert mail.payload["to"]["email"] == "li@shop.example"
    link = re.search(r"/console/reset/(\S+)", mail.payload["text"])
    assert link is not None
    client.session.cookie_jar.clear()
    token = link.group(1)
    short = await client.post(f"/console/reset/{token}", data={"password": "short",
                                                                "password_again": "short"})
    assert short.status == 400
    new = "a much longer passphrase 2026"
    done = await client.post(f"/console/reset/{token}", data={"password": new,
                                                              "password_again": new},
                             allow_redirects=False)
    assert done.status == 302
    async with db.sessions() as session:
        assert await session.scalar(select(AgentSession)) is None
    reused = await client.post(f"/console/reset/{token}", data={"password": new + "!",
                                                                "password_again": new + "!"})
    assert reused.status == 400
    assert await login(client, PASSWORD) == 401
    assert await login(client, new) == 302


async def test_the_language_switch_is_remembered_for_the_agent(
    client: TestClient, db: Database,
) -> None:
    """中文 ⇄ English: saved on the agent, used on the next login."""
    assert await login(client) == 302
    token = await csrf_token(db)
    response = await client.post("/console/language", data={
        "language": "en", "_csrf": token, "next": "/console/login"}, allow_redirects=False)
    assert response.status == 302
    async with db.sessions() as session:
        agent = await session.scalar(select(Agent).where(Agent.login == "li"))
    assert agent is not None and agent.ui_language == "en"
    refused = await client.post("/console/language", data={"language": "zh-CN"})
    assert refused.status == 403  # logged in: the CSRF token is required here too
