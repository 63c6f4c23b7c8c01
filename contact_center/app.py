"""The aiohttp application: health checks now; console, API and webhooks join it later."""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from contact_center.runtime import open_database
from contact_center.settings import Settings
from crm_core import schema
from crm_core.db import Database

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
        log.warning("readyz.database_unavailable", error=str(exc))
        return web.json_response({"status": "unavailable", "database": str(exc)}, status=503)
    head = schema.head_revision()
    if current != head:
        return web.json_response(
            {"status": "migrations pending", "database_revision": current, "code_revision": head},
            status=503,
        )
    return web.json_response({"status": "ready", "database_revision": current})


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
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def serve_forever(settings: Settings) -> None:
    """Serve until interrupted."""
    app = create_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, settings.http.host, settings.http.port)
    await site.start()
    log.info("http.listening", host=settings.http.host, port=settings.http.port)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
