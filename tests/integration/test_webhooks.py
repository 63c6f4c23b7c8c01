"""Outbound webhooks: events become durable deliveries, posted with a verifiable HMAC
signature to a receiving server, retried with backoff, and hooks switched off after
repeated failures."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import select

from contact_center.webhooks import (
    EVENT_ID_HEADER,
    PUBLIC_EVENTS,
    SIGNATURE_HEADER,
    WebhookSender,
    sign,
    verify,
)
from crm_core.db import Database
from crm_core.models import WebhookDelivery, WebhookSubscription, utcnow
from crm_core.services import webhooks as svc
from routing.bus import DatabaseBus, RetryPolicy
from routing.context import RoutingConfig
from routing.engine import RoutingEngine
from routing.envelope import InboundMessage, SenderHandles
from routing.events import Event, EventBus, changing
from routing.rules import RuleSet
from tests.integration.api_support import api_client, bearer, issue_token

SECRET = "whsec_test_secret_0123456789"


@dataclass
class Receiver:
    """A test server on 127.0.0.1 that checks signatures and answers ``statuses`` in turn."""

    statuses: list[int] = field(default_factory=list)
    received: list[dict] = field(default_factory=list)
    signatures_ok: list[bool] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.signatures_ok.append(verify(SECRET, request.headers[SIGNATURE_HEADER], body))
        self.event_ids.append(request.headers[EVENT_ID_HEADER])
        self.received.append(json.loads(body))
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()
    app = web.Application()
    app.router.add_post("/hook", state.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    state.url = str(server.make_url("/hook"))
    yield state
    await server.close()


async def subscribe(db: Database, url: str, events: list[str]) -> int:
    async with db.transaction() as session:
        row = await svc.create_subscription(session, name="shop", url=url, events=events,
                                            known_events=PUBLIC_EVENTS, actor="test",
                                            secret=SECRET)
        return row.id


class Clock:
    """A settable clock for the sender."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


def test_signature_round_trip_and_tampering() -> None:
    body = b'{"event":"ticket.created"}'
    header = sign(SECRET, 1_700_000_000, body)
    assert verify(SECRET, header, body, now=1_700_000_010)
    assert not verify(SECRET, header, body + b" ", now=1_700_000_010)
    assert not verify("another-secret-value", header, body, now=1_700_000_010)
    assert not verify(SECRET, header, body, now=1_700_000_000 + 301)  # replayed too late
    assert not verify(SECRET, "garbage", body)


async def test_events_reach_the_receiver_signed(db: Database, receiver: Receiver) -> None:
    await subscribe(db, receiver.url, ["ticket.created", "message.created"])
    async with changing(db, EventBus()) as (_session, events):
        events.extend([
            Event("ticket.created", {"ticket_id": 7, "number": "T-000007"}),
            Event("interaction.logged", {"interaction_id": 3, "conversation_id": 2}),
            Event("interaction.logged", {"interaction_id": 4, "direction": "internal",
                                         "channel": "internal"}),  # a note: not a message
            Event("ticket.updated", {"ticket_id": 7}),  # not subscribed
            Event("notification", {"x": 1}),  # internal only
        ])
    sender = WebhookSender(db)
    try:
        assert await sender.send_once() == 2
        assert await sender.send_once() == 0
    finally:
        await sender.close()
    assert sorted(r["event"] for r in receiver.received) == ["message.created",
                                                             "ticket.created"]
    assert all(receiver.signatures_ok)
    ticket = next(r for r in receiver.received if r["event"] == "ticket.created")
    assert ticket["data"] == {"ticket_id": 7, "number": "T-000007"}
    assert receiver.event_ids == [r["id"] for r in receiver.received]
    async with db.sessions() as session:
        statuses = set(await session.scalars(select(WebhookDelivery.status)))
    assert statuses == {"delivered"}


async def test_failures_are_retried_with_backoff_then_given_up(db: Database,
                                                              receiver: Receiver) -> None:
    await subscribe(db, receiver.url, ["*"])
    async with db.transaction() as session:
        [delivery] = await svc.enqueue_event(session, "ticket.created", {"ticket_id": 1})
    receiver.statuses = [500, 503, 200]
    clock = Clock()
    policy = svc.RetryPolicy(max_attempts=5, backoff_seconds=10, disable_after=50)
    sender = WebhookSender(db, policy=policy, clock=clock)
    try:
        assert await sender.send_once() == 1  # 500
        assert await sender.send_once() == 0  # not due yet
        async with db.sessions() as session:
            row = await session.get(WebhookDelivery, delivery.id)
            assert row is not None and row.status == "pending" and row.attempts == 1
            assert row.last_status_code == 500
            assert row.next_attempt_at - clock.now == timedelta(seconds=10)
        clock.now += timedelta(seconds=10)
        assert await sender.send_once() == 1  # 503, next wait doubles
        async with db.sessions() as session:
            row = await session.get(WebhookDelivery, delivery.id)
            assert row is not None and row.next_attempt_at - clock.now == timedelta(seconds=20)
        clock.now += timedelta(seconds=20)
        assert await sender.send_once() == 1  # 200
    finally:
        await sender.close()
    async with db.sessions() as session:
        row = await session.get(WebhookDelivery, delivery.id)
        assert row is not None and row.status == "delivered" and row.attempts == 3
    assert len({r["id"] for r in receiver.received}) == 1  # the same event id each time

    async with db.transaction() as session:
        [last] = await svc.enqueue_event(session, "ticket.created", {"ticket_id": 2})
    receiver.statuses = [500] * 5
    sender = WebhookSender(db, policy=svc.RetryPolicy(max_attempts=2, backoff_seconds=1,
                                                      disable_after=50), clock=clock)
    try:
        await sender.send_once()
        clock.now += timedelta(seconds=1)
        await sender.send_once()
    finally:
        await sender.close()
    async with db.sessions() as session:
        row = await session.get(WebhookDelivery, last.id)
        assert row is not None and row.status == "failed" and row.attempts == 2


async def test_a_failing_hook_is_switched_off(db: Database, receiver: Receiver) -> None:
    hook = await subscribe(db, receiver.url, ["ticket.created"])
    receiver.statuses = [500] * 10
    async with db.transaction() as session:
        for n in range(3):
            await svc.enqueue_event(session, "ticket.created", {"ticket_id": n})
    clock = Clock()
    sender = WebhookSender(db, policy=svc.RetryPolicy(max_attempts=10, backoff_seconds=1,
                                                      disable_after=3), clock=clock)
    try:
        assert await sender.send_once() == 3
        clock.now += timedelta(seconds=5)
        assert await sender.send_once() == 0  # the hook is off: nothing more is sent
    finally:
        await sender.close()
    async with db.sessions() as session:
        row = await session.get(WebhookSubscription, hook)
        assert row is not None and not row.active and row.consecutive_failures == 3
        assert "consecutive" in (row.disabled_reason or "")
        events = await svc.enqueue_event(session, "ticket.created", {"ticket_id": 9})
        assert events == []  # an inactive hook gets no new deliveries


async def test_unreachable_url_counts_as_a_failure(db: Database) -> None:
    await subscribe(db, "http://127.0.0.1:9/nothing-listens", ["*"])
    async with db.transaction() as session:
        await svc.enqueue_event(session, "ticket.created", {"ticket_id": 1})
    sender = WebhookSender(db, timeout=2)
    try:
        assert await sender.send_once() == 1
    finally:
        await sender.close()
    async with db.sessions() as session:
        row = await session.scalar(select(WebhookDelivery))
        assert row is not None and row.status == "pending" and row.last_status_code is None
        assert row.last_error


async def test_api_subscribes_tests_and_lists_deliveries(db: Database, tmp_path: Path,
                                                         receiver: Receiver) -> None:
    client = await api_client(db, tmp_path)
    try:
        headers = bearer(await issue_token(db, ["webhooks:manage"]))
        bad = await client.post("/api/v1/webhooks", headers=headers, json={
            "name": "x", "url": "ftp://x", "events": ["ticket.created"]})
        assert bad.status == 400
        unknown = await client.post("/api/v1/webhooks", headers=headers, json={
            "name": "x", "url": receiver.url, "events": ["ticket.exploded"]})
        assert unknown.status == 400
        created = await client.post("/api/v1/webhooks", headers=headers, json={
            "name": "shop", "url": receiver.url, "events": ["ticket.created"],
            "secret": SECRET})
        assert created.status == 201
        hook = await created.json()
        assert hook["secret"] == SECRET
        listed = await (await client.get("/api/v1/webhooks", headers=headers)).json()
        assert listed["items"][0]["secret"] is None
        queued = await client.post(f"/api/v1/webhooks/{hook['id']}/test", headers=headers)
        assert queued.status == 202
        sender = WebhookSender(db)
        try:
            assert await sender.send_once() == 1
        finally:
            await sender.close()
        assert receiver.received[0]["event"] == "webhook.test" and all(receiver.signatures_ok)
        log = await (await client.get(f"/api/v1/webhooks/{hook['id']}/deliveries",
                                      headers=headers)).json()
        assert [d["status"] for d in log["items"]] == ["delivered"]
        assert (await client.delete(f"/api/v1/webhooks/{hook['id']}",
                                    headers=headers)).status == 204
    finally:
        await client.close()


async def test_api_changes_become_webhook_events(db: Database, tmp_path: Path,
                                                 receiver: Receiver) -> None:
    await subscribe(db, receiver.url, ["customer.created", "customer.updated"])
    client = await api_client(db, tmp_path, EventBus())
    try:
        headers = bearer(await issue_token(db))
        created = await (await client.post("/api/v1/customers", headers=headers,
                                           json={"display_name": "周杰"})).json()
        await client.patch(f"/api/v1/customers/{created['id']}", headers=headers,
                           json={"city": "台北"})
    finally:
        await client.close()
    sender = WebhookSender(db)
    try:
        assert await sender.send_once() == 2
    finally:
        await sender.close()
    assert sorted(r["event"] for r in receiver.received) == ["customer.created",
                                                             "customer.updated"]


@pytest.mark.parametrize("url", ["http://127.0.0.1/x", "http://localhost:8080/x",
                                 "http://10.0.0.5/x", "http://[::1]/x",
                                 "http://169.254.169.254/latest"])
async def test_private_targets_refused_when_configured(sqlite_db: Database, tmp_path: Path,
                                                       url: str) -> None:
    client = await api_client(sqlite_db, tmp_path, api={"webhook_allow_private": False})
    try:
        headers = bearer(await issue_token(sqlite_db, ["webhooks:manage"]))
        refused = await client.post("/api/v1/webhooks", headers=headers, json={
            "name": "x", "url": url, "events": ["*"]})
        assert refused.status == 400
        assert (await refused.json())["error"]["field"] == "url"
        allowed = await client.post("/api/v1/webhooks", headers=headers, json={
            "name": "x", "url": "https://shop.example.com/hook", "events": ["*"]})
        assert allowed.status == 201
    finally:
        await client.close()


async def deliveries(db: Database) -> list[WebhookDelivery]:
    async with db.sessions() as session:
        return list(await session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


async def test_unwanted_events_cost_no_query_until_the_cache_expires(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr(svc, "WANTED", svc.WantedEvents(2.0, monotonic=lambda: now[0]))

    async def record(event: Event) -> None:
        async with changing(db, None) as (_session, events):
            events.append(event)

    await record(Event("ticket.created", {"ticket_id": 1}))  # nobody subscribed yet
    async with db.transaction() as session:  # another process subscribes: not forgotten
        session.add(WebhookSubscription(name="other", url="https://shop.example.com/hook",
                                        events=["ticket.created"], secret=SECRET, active=True,
                                        consecutive_failures=0, created_by="test"))
    await record(Event("ticket.created", {"ticket_id": 2}))  # still the cached answer
    now[0] = 2.5
    await record(Event("ticket.created", {"ticket_id": 3}))
    await record(Event("customer.updated", {"customer_id": 1}))  # not wanted
    assert [r.payload["data"] for r in await deliveries(db)] == [{"ticket_id": 3}]
    # A subscription made through the service in this process counts at once.
    await subscribe(db, "https://shop.example.com/other", ["customer.updated"])
    await record(Event("customer.updated", {"customer_id": 2}))
    assert [r.event for r in await deliveries(db)] == ["ticket.created", "customer.updated"]


async def test_rolled_back_change_leaves_no_delivery_and_publishes_nothing(
        db: Database) -> None:
    await subscribe(db, "https://shop.example.com/hook", ["*"])
    bus, heard = EventBus(), []

    async def listener(event: Event) -> None:
        heard.append(event)

    bus.subscribe("*", listener)
    with pytest.raises(RuntimeError):
        async with changing(db, bus) as (_session, events):
            events.append(Event("ticket.created", {"ticket_id": 1}))
            raise RuntimeError("the change failed after its event was built")
    assert await deliveries(db) == [] and heard == []


async def test_deliveries_are_committed_before_any_listener_hears(db: Database) -> None:
    """The rows are in the change's own transaction: when the listeners run (after the
    commit) another session already sees them, so a crash at that moment loses none."""
    await subscribe(db, "https://shop.example.com/hook", ["customer.created"])
    bus, seen_rows = EventBus(), []

    async def listener(event: Event) -> None:
        seen_rows.append(len(await deliveries(db)))

    bus.subscribe("*", listener)
    async with changing(db, bus) as (_session, events):
        events.append(Event("customer.created", {"customer_id": 5}))
        assert await deliveries(db) == []  # not visible before the commit
    assert seen_rows == [1]


async def test_routing_commit_carries_its_deliveries_when_the_process_dies_after_it(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    await subscribe(db, "https://shop.example.com/hook", ["ticket.created", "message.created",
                                                          "customer.created"])
    policy = RetryPolicy(max_attempts=2, base_delay=timedelta(0), lease=timedelta(seconds=30))
    engine = RoutingEngine(db, DatabaseBus(db, policy),
                           RoutingConfig(region="CN", rules=RuleSet.default()), EventBus())

    async def die(_taken: object) -> None:  # the process stops right after the commit
        raise SystemExit

    monkeypatch.setattr(engine, "_after_commit", die)
    await engine.publish(InboundMessage(
        channel="email", idempotency_key="imap:9:1", received_at=utcnow(),
        sender=SenderHandles(email="li.na@example.cn"), subject="发票", text="请开发票"))
    with pytest.raises(SystemExit):
        await engine.run_once("test-worker")
    assert sorted(r.event for r in await deliveries(db)) == [
        "customer.created", "message.created", "ticket.created"]
