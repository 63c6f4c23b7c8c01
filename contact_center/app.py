"""The aiohttp application: health checks now; console, API and webhooks join it later."""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web
from sqlalchemy import func, select

from contact_center.runtime import open_database
from contact_center.settings import Settings
from crm_core import schema
from crm_core.db import Database
from crm_core.models import Agent, Customer, Ticket, TicketStatus

log = structlog.get_logger(__name__)
DATABASE_KEY = web.AppKey("database", Database)
SETTINGS_KEY = web.AppKey("settings", Settings)


async def healthz(_request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the database answers and its schema is at the code's migration."""
    database = request.app[DATABASE_KEY]
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
    return web.json_response({"status": "ready", "database_revision": current})


INDEX_PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>Contact center · 客户联络中心</title>
<style>body{{font-family:system-ui,"WenQuanYi Micro Hei",sans-serif;margin:3rem;color:#222}}
td{{padding:.2rem 1rem .2rem 0}}</style></head>
<body><h1>Contact center · 客户联络中心</h1>
<p>The service is running. 服务运行中。</p>
<table><tr><td>Customers · 客户</td><td>{customers}</td></tr>
<tr><td>Open tickets · 未结工单</td><td>{tickets}</td></tr>
<tr><td>Agents · 坐席</td><td>{agents}</td></tr></table>
<p>The agent console arrives with the next release; until then use the
<code>contact-center</code> command. 坐席工作台即将推出，目前请使用命令行。</p>
<p><a href="/healthz">/healthz</a> · <a href="/readyz">/readyz</a></p></body></html>
"""


async def index(request: web.Request) -> web.Response:
    """A bilingual landing page with the size of the data set."""
    database = request.app[DATABASE_KEY]
    async with database.sessions() as session:
        customers = await session.scalar(
            select(func.count()).select_from(Customer).where(Customer.deleted_at.is_(None))
        )
        tickets = await session.scalar(
            select(func.count())
            .select_from(Ticket)
            .where(Ticket.status.not_in([TicketStatus.RESOLVED, TicketStatus.CLOSED]))
        )
        agents = await session.scalar(
            select(func.count()).select_from(Agent).where(Agent.active.is_(True))
        )
    body = INDEX_PAGE.format(customers=customers, tickets=tickets, agents=agents)
    return web.Response(text=body, content_type="text/html")


def create_app(settings: Settings, database: Database | None = None) -> web.Application:
    """Build the application; the database is opened from settings unless one is given."""
    app = web.Application()
    app[SETTINGS_KEY] = settings
    owns_database = database is None
    app[DATABASE_KEY] = database or open_database(settings)

    async def close_database(app: web.Application) -> None:
        if owns_database:
            await app[DATABASE_KEY].dispose()

    app.on_cleanup.append(close_database)
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def serve_forever(settings: Settings) -> None:
    """Serve until interrupted; in embedded mode also route messages and send the outbox."""
    from contact_center.channel_setup import imap_readers, run_intake
    from contact_center.wiring import build_dispatcher, build_engine, redis_client
    from contact_center.worker import dispatch_loop, run_routing

    app = create_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, settings.http.host, settings.http.port)
    await site.start()
    log.info("http.listening", host=settings.http.host, port=settings.http.port)
    stop = asyncio.Event()
    background: list[asyncio.Task[None]] = []
    redis = redis_client(settings)
    database = app[DATABASE_KEY]
    engine = build_engine(settings, database, redis)
    if settings.routing.embedded_worker:
        background.append(asyncio.create_task(run_routing(engine, stop)))
        background.append(
            asyncio.create_task(dispatch_loop(build_dispatcher(settings, database), stop))
        )
        log.info("routing.embedded", bus=type(engine.bus).__name__)
    if settings.email.mailboxes and settings.email.fetch_in_serve:
        readers = imap_readers(settings, database, engine.publish)
        background.append(asyncio.create_task(run_intake(readers, stop)))
        log.info("email.intake", mailboxes=[r.config.name for r in readers])
    try:
        await asyncio.Event().wait()
    finally:
        stop.set()
        await asyncio.gather(*background, return_exceptions=True)
        if redis is not None:
            await redis.aclose()
        await runner.cleanup()
