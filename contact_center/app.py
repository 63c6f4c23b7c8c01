"""The aiohttp application: health checks now; console, API and webhooks join it later."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiohttp import web
from telegram import Bot

from contact_center.runtime import open_database
from contact_center.settings import Settings
from crm_core import schema
from crm_core.db import Database
from routing.engine import RoutingEngine

log = structlog.get_logger(__name__)
DATABASE_KEY = web.AppKey("database", Database)
SETTINGS_KEY = web.AppKey("settings", Settings)
ENGINE_KEY = web.AppKey("engine", RoutingEngine)
TELEGRAM_BOT_KEY = web.AppKey("telegram_bot", Bot)


async def favicon(_request: web.Request) -> web.Response:
    """``/favicon.ico``, which browsers ask for on every page without an icon link: the
    console's icon (instead of a 404 in every browser console)."""
    raise web.HTTPMovedPermanently("/console/static/favicon.svg")


async def healthz(_request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok"})


async def _redis_problem(app: web.Application) -> str | None:
    """Why Redis (when configured) is not usable, else ``None``."""
    redis = getattr(app[ENGINE_KEY].bus, "redis", None)
    if redis is None:
        return None
    try:
        await asyncio.wait_for(redis.ping(), timeout=5)
    except Exception as exc:
        log.warning("readyz.redis_unavailable", error=f"{type(exc).__name__}: {exc}")
        return "unreachable or failing (see the log)"
    return None


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the database answers and its schema is at the code's migration, and
    Redis answers when scale-out is configured."""
    database = request.app[DATABASE_KEY]
    redis_problem = await _redis_problem(request.app)
    if redis_problem is not None:
        return web.json_response({"status": "unavailable", "redis": redis_problem}, status=503)
    try:
        current = await asyncio.wait_for(schema.current_revision(database.engine), timeout=5)
    except Exception as exc:
        # The reason goes to the log only: it can name hosts and users.
        log.warning("readyz.database_unavailable", error=str(exc))
        return web.json_response(
            {"status": "unavailable", "database": "unreachable or failing (see the log)"},
            status=503,
        )
    head = schema.head_revision()
    if current != head:
        return web.json_response(
            {"status": "migrations pending", "database_revision": current, "code_revision": head},
            status=503,
        )
    body: dict[str, object] = {"status": "ready", "database_revision": current}
    if getattr(request.app[ENGINE_KEY].bus, "redis", None) is not None:
        body["redis"] = "ok"
    return web.json_response(body)


LANDING_CSS = """body{font-family:system-ui,"WenQuanYi Micro Hei",sans-serif;margin:3rem;color:#222}
td{padding:.2rem 1rem .2rem 0}"""
PAGE_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'")


@web.middleware
async def security_headers(request: web.Request, handler: Any) -> web.StreamResponse:
    """The usual headers on every answer; a strict CSP on our own HTML pages (the web chat
    widget and the console set their own first)."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _harden(exc)
        raise
    _harden(response)
    return response


def _harden(response: web.StreamResponse) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if (response.content_type or "").startswith("text/html"):
        response.headers.setdefault("Content-Security-Policy", PAGE_CSP)


async def landing_css(_request: web.Request) -> web.Response:
    """The landing page's style sheet (no inline styles under the CSP)."""
    return web.Response(text=LANDING_CSS, content_type="text/css")


INDEX_PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>Contact center · 客户联络中心</title>
<link rel="stylesheet" href="/landing.css"></head>
<body><h1>Contact center · 客户联络中心</h1>
<p>The service is running. 服务运行中。</p>
<p><a href="/console/">Agent console · 坐席工作台</a> ·
<a href="/api/docs">API</a>{webchat}</p>
<p><a href="/healthz">/healthz</a> · <a href="/readyz">/readyz</a></p></body></html>
"""


async def index(request: web.Request) -> web.Response:
    """A bilingual landing page: where the console, the API and the web chat's sample
    page are. It shows no figures of the business (customers, tickets, agents): anyone
    who can reach the server sees it, and the console's dashboard is where they belong."""
    from contact_center.webchat import TRY_PATH, WEBCHAT_KEY

    webchat = (f' · <a href="{TRY_PATH}">Try the web chat · 试用网页聊天</a>'
               if WEBCHAT_KEY in request.app else "")
    return web.Response(text=INDEX_PAGE.format(webchat=webchat), content_type="text/html")


def create_app(
    settings: Settings, database: Database | None = None, *, engine: RoutingEngine | None = None
) -> web.Application:
    """Build the application; the database is opened from settings unless one is given.

    Webhooks publish envelopes through ``engine`` (built from settings when not given:
    the database bus, or Redis Streams when ``REDIS_URL`` is set).
    """
    from contact_center.wiring import build_engine, redis_client

    # Uploads (attachments, CSV imports) up to the attachment limit plus form overhead.
    upload_limit = int(settings.email.max_attachment_mb * 1024 * 1024) + 1024 * 1024
    from contact_center.observability import count_webhook_failures, metrics_handler

    app = web.Application(
        client_max_size=max(upload_limit, 2 * 1024 * 1024), middlewares=[count_webhook_failures]
    )
    app[SETTINGS_KEY] = settings
    owns_database = database is None
    app[DATABASE_KEY] = database or open_database(settings)
    redis = redis_client(settings) if engine is None else None
    app[ENGINE_KEY] = engine or build_engine(settings, app[DATABASE_KEY], redis)

    async def close_database(app: web.Application) -> None:
        if redis is not None:
            await redis.aclose()
        if owns_database:
            await app[DATABASE_KEY].dispose()

    app.on_cleanup.append(close_database)
    _setup_channels(app, settings)
    from contact_center.web import setup_console

    setup_console(app, settings, app[DATABASE_KEY], app[ENGINE_KEY])
    if settings.webchat.enabled:
        from contact_center.webchat import install_webchat

        install_webchat(app, settings, app[DATABASE_KEY], app[ENGINE_KEY])
    from contact_center.unsubscribe import setup_campaign_links

    setup_campaign_links(app, settings, app[DATABASE_KEY], app[ENGINE_KEY])
    from contact_center.api import setup_api

    setup_api(app, settings, app[DATABASE_KEY], app[ENGINE_KEY], redis)
    app.middlewares.append(security_headers)
    app.router.add_get("/", index)
    app.router.add_get("/landing.css", landing_css)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler(app[DATABASE_KEY], app[ENGINE_KEY].bus))
    return app


def _setup_channels(app: web.Application, settings: Settings) -> None:
    """Webhook routes of the configured channels."""
    if settings.voice is not None:
        from contact_center.voice_webhook import setup_voice

        setup_voice(app, settings, app[DATABASE_KEY], app[ENGINE_KEY])
    telegram = settings.telegram
    if telegram is not None and telegram.mode == "webhook":
        from contact_center.channel_setup import telegram_bot, telegram_intake
        from contact_center.telegram_webhook import setup_telegram_webhook

        bot = telegram_bot(settings)
        assert bot is not None
        app[TELEGRAM_BOT_KEY] = bot
        intake = telegram_intake(settings, app[DATABASE_KEY], app[ENGINE_KEY].publish, bot)
        setup_telegram_webhook(app, intake, telegram.resolved_webhook_secret() or "")


async def serve_forever(settings: Settings) -> None:
    """Serve until interrupted; in embedded mode also route messages and send the outbox,
    and read the channels that are polled (mailboxes, a Telegram bot in polling mode)."""
    from contact_center.channel_setup import (
        build_registry,
        imap_readers,
        run_intake,
        telegram_bot,
        telegram_intake,
        telegram_poller,
    )
    from contact_center.wiring import build_dispatcher
    from contact_center.worker import dispatch_loop, handoff_loop, run_routing

    app = create_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, settings.http.host, settings.http.port)
    await site.start()
    log.info("http.listening", host=settings.http.host, port=settings.http.port)
    stop = asyncio.Event()
    background: list[asyncio.Task[None]] = []
    database = app[DATABASE_KEY]
    engine = app[ENGINE_KEY]
    bot = app.get(TELEGRAM_BOT_KEY) or telegram_bot(settings)
    if settings.routing.embedded_worker:
        registry = build_registry(settings, bot)
        if settings.webchat.enabled:
            from contact_center.webchat import webchat_adapter

            registry.register(webchat_adapter(app))
        background.append(asyncio.create_task(run_routing(engine, stop)))
        background.append(asyncio.create_task(
            handoff_loop(engine, stop, settings.bot.handoff_check_seconds)))
        background.append(asyncio.create_task(
            dispatch_loop(build_dispatcher(settings, database, registry, events=engine.events),
                          stop)
        ))
        log.info("routing.embedded", bus=type(engine.bus).__name__)
        from contact_center.scheduler import run_embedded_scheduler

        background.append(asyncio.create_task(
            run_embedded_scheduler(settings, database, engine, stop)))
        from contact_center.webhooks import build_sender, webhook_loop

        background.append(asyncio.create_task(webhook_loop(
            build_sender(settings, database), stop,
            idle_wait=settings.api.webhook_poll_seconds)))
    if settings.email.mailboxes and settings.email.fetch_in_serve:
        readers = imap_readers(settings, database, engine.publish)
        background.append(asyncio.create_task(run_intake(readers, stop)))
        log.info("email.intake", mailboxes=[r.config.name for r in readers])
    telegram = settings.telegram
    if bot is not None and telegram is not None:
        if telegram.mode == "polling" and telegram.run_in_serve:
            poller = telegram_poller(settings, telegram_intake(settings, database,
                                                               engine.publish, bot))
            background.append(asyncio.create_task(poller.run(stop)))
        elif telegram.mode == "webhook" and settings.http.public_base_url:
            background.append(asyncio.create_task(_register_webhook(settings, bot)))
    try:
        await asyncio.Event().wait()
    finally:
        stop.set()
        await asyncio.gather(*background, return_exceptions=True)
        await runner.cleanup()


async def _register_webhook(settings: Settings, bot: Bot) -> None:
    """Tell Telegram where our webhook is (``http.public_base_url`` + the route)."""
    from channels.telegram.intake import ALLOWED_UPDATES
    from contact_center.telegram_webhook import WEBHOOK_PATH

    assert settings.telegram is not None and settings.http.public_base_url
    url = settings.http.public_base_url.rstrip("/") + WEBHOOK_PATH
    try:
        await bot.initialize()
        await bot.set_webhook(url=url, secret_token=settings.telegram.resolved_webhook_secret(),
                              allowed_updates=ALLOWED_UPDATES)
        log.info("telegram.webhook_set", channel="telegram", url=url)
    except Exception as exc:
        log.error("telegram.webhook_not_set", channel="telegram", url=url,
                  error=f"{type(exc).__name__}: {exc}")
