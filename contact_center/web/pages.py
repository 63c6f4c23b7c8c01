"""The console's pages; each area registers its routes here."""

from __future__ import annotations

from aiohttp import web

from contact_center.settings import Settings
from crm_core.db import Database
from routing.engine import RoutingEngine


def setup_pages(app: web.Application, settings: Settings, database: Database,
                engine: RoutingEngine) -> None:
    """Register every console area's routes (inbox, conversations, customers, admin …)."""
    del app, settings, database, engine  # areas add themselves here as they are built
