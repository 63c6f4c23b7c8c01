"""The console's pages; each area registers its routes here."""

from __future__ import annotations

from aiohttp import web

from contact_center.settings import Settings
from crm_core.db import Database
from routing.engine import RoutingEngine


def setup_pages(app: web.Application, settings: Settings, database: Database,
                engine: RoutingEngine) -> None:
    """Register every console area's routes (inbox, conversations, customers, admin …)."""
    from contact_center.web.conversations import setup_conversations
    from contact_center.web.customer360 import setup_customer360
    from contact_center.web.inbox import setup_inbox
    from contact_center.web.live import setup_live
    from contact_center.web.search import setup_search

    # The agent's daily screens: inbox, conversation, customer card, live updates, search.
    setup_inbox(app)
    setup_conversations(app)
    setup_customer360(app)
    setup_live(app)
    setup_search(app)

    # Customers area and admin area (customers.py, admin.py).
    from contact_center.web.admin import setup_admin
    from contact_center.web.customers import setup_customers
    from contact_center.web.duplicates import setup_duplicates

    setup_customers(app)
    setup_duplicates(app)
    setup_admin(app)
    from contact_center.web.api_admin import setup_api_admin

    setup_api_admin(app)

    # Care campaigns with their results, and care tasks (campaigns.py).
    from contact_center.web.campaigns import setup_campaigns

    setup_campaigns(app)

    # Sales (pipeline, follow-up reminders) and the reports with their charts and exports.
    from contact_center.web.reports import setup_reports
    from contact_center.web.sales import setup_sales

    setup_reports(app)
    setup_sales(app)
    # The self-service bot: knowledge base, flows editor, metrics (bot.py).
    from contact_center.web.bot import setup_bot_pages

    setup_bot_pages(app)
