"""The worker process: routes messages from the bus and dispatches the outbox until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket

import structlog

from contact_center.runtime import open_database
from contact_center.settings import Settings
from contact_center.wiring import build_dispatcher, build_engine, redis_client
from routing import metrics
from routing.engine import RoutingEngine
from routing.outbox import OutboxDispatcher

log = structlog.get_logger(__name__)


def worker_name() -> str:
    """A name unique to this process, for leases and consumer groups."""
    return f"{socket.gethostname()}:{os.getpid()}"


async def dispatch_loop(
    dispatcher: OutboxDispatcher, stop: asyncio.Event, idle_wait: float = 0.5
) -> None:
    """Send due outbox messages until stopped."""
    while not stop.is_set():
        try:
            sent = await dispatcher.dispatch_once()
        except Exception:
            metrics.ERRORS.labels("outbox").inc()
            log.exception("outbox.dispatch_failed")
            sent = 0
        if not sent:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=idle_wait)


async def handoff_loop(engine: RoutingEngine, stop: asyncio.Event, interval: float) -> None:
    """Give unanswered bot handoffs back to the bot (when the bot is on)."""
    from routing.steps.bot import expire_handoffs

    runtime = engine.config.bot
    if runtime is None:
        return
    while not stop.is_set():
        try:
            await expire_handoffs(engine.database, runtime)
        except Exception:
            log.exception("bot.handoff_check_failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


async def run_routing(engine: RoutingEngine, stop: asyncio.Event, concurrency: int = 1) -> None:
    """Run ``concurrency`` consumers of the engine in this process."""
    base = worker_name()
    await asyncio.gather(*(engine.run(f"{base}:{i}", stop) for i in range(concurrency)))


async def run_worker(
    settings: Settings, *, concurrency: int = 1, metrics: tuple[str, int] | None = None
) -> None:
    """Route and dispatch until SIGTERM or SIGINT; ``metrics`` (host, port) serves
    ``/metrics`` for this process."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    database = open_database(settings)
    redis = redis_client(settings)
    metrics_runner = None
    try:
        engine = build_engine(settings, database, redis)
        dispatcher = build_dispatcher(settings, database, redis=redis, events=engine.events)
        if metrics is not None:
            from contact_center.observability import start_metrics_server

            metrics_runner = await start_metrics_server(*metrics, database, engine.bus)
        log.info("worker.started", worker=worker_name(), bus=type(engine.bus).__name__,
                 batch_size=engine.batch_size)
        from contact_center.webhooks import build_sender, webhook_loop

        await asyncio.gather(
            run_routing(engine, stop, concurrency), dispatch_loop(dispatcher, stop),
            handoff_loop(engine, stop, settings.bot.handoff_check_seconds),
            webhook_loop(build_sender(settings, database), stop,
                         idle_wait=settings.api.webhook_poll_seconds),
        )
    finally:
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await database.dispose()
        if redis is not None:
            await redis.aclose()
