"""``/metrics`` in the Prometheus format, the worker's metrics port, and ``/readyz`` with Redis."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import ClientSession
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from contact_center.app import ENGINE_KEY, create_app
from contact_center.observability import start_metrics_server, webhook_name
from contact_center.settings import Settings
from crm_core.db import Database
from crm_core.models import Channel
from routing.envelope import InboundMessage, SenderHandles, ThreadHints
from tests.conftest import REDIS_URL
from tests.mailservers import free_port


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape by name and sorted labels (the parser rejects bad text)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def chat(key: str) -> InboundMessage:
    """A Telegram message."""
    return InboundMessage(
        channel=Channel.TELEGRAM, idempotency_key=key, received_at=datetime.now(UTC),
        sender=SenderHandles(telegram_id="777", display_name="Metrics"),
        thread=ThreadHints(chat_id="777"), text="hello",
    )


async def test_metrics_count_routed_messages_and_sample_the_queues(db: Database) -> None:
    app = create_app(Settings(database_url=db.url), database=db)
    engine = app[ENGINE_KEY]
    async with TestClient(TestServer(app)) as client:
        before = samples(await (await client.get("/metrics")).text())
        await engine.publish(chat(f"tg:{uuid.uuid4().hex}"))
        await engine.publish(chat(f"tg:{uuid.uuid4().hex}"))
        queued = samples(await (await client.get("/metrics")).text())
        await engine.run_once("metrics-test")
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        after = samples(await response.text())
    routed = ("cc_messages_in_total", (("channel", "telegram"), ("outcome", "routed")))
    published = ("cc_messages_published_total", (("channel", "telegram"),))
    pending = ("cc_bus_pending", (("topic", "inbound"),))
    assert after[routed] - before.get(routed, 0) == 2
    assert after[published] - before.get(published, 0) == 2
    assert queued[pending] == 2 and after[pending] == 0
    latency = ("cc_routing_processing_seconds_count", (("channel", "telegram"),))
    assert after[latency] - before.get(latency, 0) == 2
    assert ("cc_outbox_pending", ()) in after


async def test_webhook_errors_are_counted(sqlite_db: Database) -> None:
    assert webhook_name("/webhooks/telegram") == "telegram"
    assert webhook_name("/webhooks/voice/incoming") == "voice"
    assert webhook_name("/console/inbox") is None
    app = create_app(Settings(database_url=sqlite_db.url), database=sqlite_db)
    failed = ("cc_webhook_failures_total", (("status", "404"), ("webhook", "telegram")))
    async with TestClient(TestServer(app)) as client:
        before = samples(await (await client.get("/metrics")).text()).get(failed, 0)
        # no bot configured: the webhook is not there
        assert (await client.post("/webhooks/telegram", json={})).status == 404
        await client.get("/console/nothing-here")  # not a webhook: not counted
        after = samples(await (await client.get("/metrics")).text())
    assert after[failed] - before == 1


async def test_worker_metrics_port_serves_the_registry(db: Database) -> None:
    port = free_port()
    runner = await start_metrics_server("127.0.0.1", port, db, None)
    try:
        async with ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                assert response.status == 200
                found = samples(await response.text())
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
    finally:
        await runner.cleanup()
    assert ("cc_outbox_pending", ()) in found


async def test_readyz_checks_redis(sqlite_db: Database, redis_client: Any) -> None:
    good = create_app(Settings(database_url=sqlite_db.url, redis_url=REDIS_URL),
                      database=sqlite_db)
    async with TestClient(TestServer(good)) as client:
        response = await client.get("/readyz")
        assert response.status == 200
        assert (await response.json())["redis"] == "ok"
    bad = create_app(Settings(database_url=sqlite_db.url, redis_url="redis://127.0.0.1:1/0"),
                     database=sqlite_db)
    async with TestClient(TestServer(bad)) as client:
        response = await client.get("/readyz")
        assert response.status == 503
        assert (await response.json())["status"] == "unavailable"
