"""``/metrics`` in the Prometheus text format, the webhook failure counter, and a small
metrics server for processes without a web server of their own (``worker --metrics-port``).

Every process serves its own numbers: behind a load balancer scrape each ``serve``
process directly (not through the proxy), and each worker on its metrics port.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from sqlalchemy import func, select

from crm_core.db import Database
from crm_core.models import OutboxMessage
from routing import metrics
from routing.engine import INBOUND_TOPIC

log = structlog.get_logger(__name__)
SAMPLE_TIMEOUT = 2.0
WEBHOOK_PREFIX = "/webhooks/"
"""Paths whose error answers count as webhook failures (the webhook's name follows)."""


async def sample_gauges(database: Database, bus: Any | None) -> None:
    """Refresh the gauges read from the bus and the database; a failure leaves the last
    value and counts as an error (the scrape itself still answers)."""
    try:
        async with asyncio.timeout(SAMPLE_TIMEOUT):
            if bus is not None:
                metrics.BUS_PENDING.labels(INBOUND_TOPIC).set(await bus.pending(INBOUND_TOPIC))
            async with database.sessions() as session:
                pending = await session.scalar(
                    select(func.count())
                    .select_from(OutboxMessage)
                    .where(OutboxMessage.status.in_(("pending", "sending")))
                )
            metrics.OUTBOX_PENDING.set(int(pending or 0))
    except Exception as exc:
        metrics.ERRORS.labels("metrics").inc()
        log.warning("metrics.sample_failed", error=f"{type(exc).__name__}: {exc}")


def metrics_handler(
    database: Database, bus: Any | None
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A ``GET /metrics`` handler for this process's registry."""

    async def handle(_request: web.Request) -> web.Response:
        await sample_gauges(database, bus)
        body = generate_latest(REGISTRY)
        response = web.Response(body=body)
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    return handle


def webhook_name(path: str) -> str | None:
    """The webhook a path belongs to (``telegram``, ``voice``, ``cti``…), else ``None``."""
    if not path.startswith(WEBHOOK_PREFIX):
        return None
    return path[len(WEBHOOK_PREFIX) :].split("/", 1)[0] or "unknown"


@web.middleware
async def count_webhook_failures(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Count webhook answers with an error status (or an exception) per webhook."""
    name = webhook_name(request.path)
    if name is None:
        return await handler(request)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400:
            metrics.WEBHOOK_FAILURES.labels(name, str(exc.status)).inc()
        raise
    except Exception:
        metrics.WEBHOOK_FAILURES.labels(name, "500").inc()
        metrics.ERRORS.labels("webhook").inc()
        raise
    if response.status >= 400:
        metrics.WEBHOOK_FAILURES.labels(name, str(response.status)).inc()
    return response


async def start_metrics_server(
    host: str, port: int, database: Database, bus: Any | None
) -> web.AppRunner:
    """Serve ``/metrics`` and ``/healthz`` on a port of its own; returns the runner to
    clean up."""
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(database, bus))

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("metrics.listening", host=host, port=port)
    return runner
