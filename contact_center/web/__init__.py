"""The agent console: server-rendered pages under ``/console`` (aiohttp + Jinja2)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from contact_center.settings import Settings
from contact_center.web.auth import PREFIX, setup_auth
from crm_core.db import Database
from routing.engine import RoutingEngine

STATIC = Path(__file__).resolve().parent / "static"


async def home(_request: web.Request) -> web.StreamResponse:
    """The console's start page is the inbox."""
    raise web.HTTPFound(f"{PREFIX}/inbox")


def setup_console(app: web.Application, settings: Settings, database: Database,
                  engine: RoutingEngine) -> None:
    """Mount the console on ``app``: login, pages, live updates, static files."""
    setup_auth(app, database, settings.secret_key.get_secret_value().encode(),
               settings.http.public_base_url,
               session_cache_seconds=settings.http.console_cache_seconds)
    app.router.add_static(f"{PREFIX}/static/", STATIC, append_version=False)
    app.router.add_get(f"{PREFIX}/", home)
    from contact_center.web import pages

    pages.setup_pages(app, settings, database, engine)
