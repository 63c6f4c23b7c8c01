"""The console's API page: an admin issues a token (shown once, working against the API),
sees its last use, revokes it; subscribes a webhook and queues a test send."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from crm_core.db import Database
from crm_core.models import ApiToken, WebhookDelivery, WebhookSubscription
from tests.integration.areas_support import World, actor, app_client, seed_world


@pytest.fixture
async def world(db: Database) -> World:
    """The seeded teams, people and records."""
    return await seed_world(db)


@pytest.fixture
async def client(db: Database, tmp_path: Path) -> AsyncIterator[TestClient]:
    """The app on the test database."""
    async with app_client(db, tmp_path) as test_client:
        yield test_client


async def test_token_is_shown_once_works_and_can_be_revoked(
    client: TestClient, world: World, db: Database,
) -> None:
    admin = actor(client, world, "admin")
    created = await admin.post("/console/admin/api/tokens", {
        "name": "ERP", "scope": ["customers:read", "tickets:read"], "rate_limit": "100"})
    assert created.status == 200
    html = await created.text()
    token = re.search(r'<code class="secret">(cct_[^<]+)</code>', html)
    assert token is not None
    async with db.sessions() as session:
        row = await session.scalar(select(ApiToken))
        assert row is not None and row.scopes == ["customers:read", "tickets:read"]
    again = await (await admin.get("/console/admin/api")).text()
    assert token.group(1) not in again and "Never" in again

    headers = {"Authorization": f"Bearer {token.group(1)}"}
    assert (await client.get("/api/v1/customers", headers=headers)).status == 200
    seen = await (await admin.get("/console/admin/api")).text()
    assert "Never" not in seen  # the last use is shown

    no_scope = await admin.post("/console/admin/api/tokens", {"name": "x"})
    assert no_scope.status == 400
    revoked = await admin.post(f"/console/admin/api/tokens/{row.id}/revoke")
    assert revoked.status == 303
    assert (await client.get("/api/v1/customers", headers=headers)).status == 401


async def test_webhook_subscribe_and_test_send(client: TestClient, world: World,
                                               db: Database) -> None:
    admin = actor(client, world, "admin")
    bad = await admin.post("/console/admin/api/webhooks", {
        "name": "shop", "url": "javascript:alert(1)", "event": ["ticket.created"]})
    assert bad.status == 400
    created = await admin.post("/console/admin/api/webhooks", {
        "name": "shop", "url": "https://shop.example.com/hooks", "event": ["ticket.created"]})
    assert created.status == 200
    assert "whsec_" in await created.text()
    async with db.sessions() as session:
        hook = await session.scalar(select(WebhookSubscription))
        assert hook is not None
    queued = await admin.post(f"/console/admin/api/webhooks/{hook.id}/test")
    assert queued.status == 303
    detail = await (await admin.get(f"/console/admin/api/webhooks/{hook.id}")).text()
    assert "webhook.test" in detail and "whsec_" not in detail
    async with db.sessions() as session:
        delivery = await session.scalar(select(WebhookDelivery))
        assert delivery is not None and delivery.event == "webhook.test"
    off = await admin.post(f"/console/admin/api/webhooks/{hook.id}/toggle", {"active": "0"})
    assert off.status == 303
    async with db.sessions() as session:
        hook = await session.get(WebhookSubscription, hook.id)
        assert hook is not None and not hook.active
