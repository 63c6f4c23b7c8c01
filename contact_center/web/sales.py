"""The sales page: follow-ups whose next contact date has come (the console's reminder),
the open pipeline, receivables, and a form to record a follow-up.

Agents see their own reminders and deals and record follow-ups for the customers they
own; supervisors and admins see everyone's, and the receivables.
"""

from __future__ import annotations

from datetime import date

import structlog
from aiohttp import web
from sqlalchemy import select

from contact_center.web.areas import business_zone, error_message, local_time
from contact_center.web.auth import DATABASE, PREFIX, context, current_agent, forbidden
from contact_center.web.policy import is_supervisor
from contact_center.web.render import page
from crm_core.errors import CrmError
from crm_core.models import Agent, Customer, Opportunity, PipelineStage, utcnow
from crm_core.services.sales import ATTITUDES, due_follow_ups, receivables, record_follow_up

log = structlog.get_logger(__name__)

AREA = f"{PREFIX}/sales"
LIST_LIMIT = 100


def attitude_words(gettext: object) -> dict[str, str]:
    """Display names of the customer's attitudes."""
    _ = gettext
    return {"positive": _("Positive"), "neutral": _("Neutral"),  # type: ignore[operator]
            "hesitant": _("Hesitant"), "negative": _("Negative")}  # type: ignore[operator]


async def sales_page(request: web.Request) -> web.StreamResponse:
    """Reminders due, open deals and (supervisors) receivables."""
    agent = current_agent(request)
    zone = business_zone(request)
    today = utcnow().astimezone(zone).date()
    mine = None if is_supervisor(agent) else agent.id
    async with request.app[DATABASE].sessions() as session:
        due = await due_follow_ups(session, today=today, agent_id=mine)
        deals_query = (
            select(Opportunity, Customer.display_name, PipelineStage.name, PipelineStage.name_zh,
                   PipelineStage.probability, Agent.display_name)
            .join(Customer, Customer.id == Opportunity.customer_id)
            .join(PipelineStage, PipelineStage.code == Opportunity.stage_code)
            .outerjoin(Agent, Agent.id == Opportunity.owner_id)
            .where(Opportunity.status == "open", Customer.deleted_at.is_(None))
            .order_by(Opportunity.expected_close_on.is_(None), Opportunity.expected_close_on,
                      Opportunity.id)
            .limit(LIST_LIMIT))
        if mine is not None:
            deals_query = deals_query.where(Opportunity.owner_id == mine)
        deals = list(await session.execute(deals_query))
        open_items = (await receivables(session, today=today, limit=LIST_LIMIT)
                      if mine is None else [])
    gettext = context(request).gettext
    return page(request, "sales.html", due=due, deals=deals, receivables=open_items,
                today=today, attitudes=ATTITUDES, words=attitude_words(gettext),
                when=lambda value: local_time(value, zone), notice=request.query.get("notice"))


async def follow_up_action(request: web.Request) -> web.StreamResponse:
    """Record a follow-up (agents: for customers they own)."""
    agent = current_agent(request)
    form = await request.post()
    gettext = context(request).gettext
    try:
        customer_id = int(str(form.get("customer_id", "")).strip())
    except ValueError:
        raise web.HTTPBadRequest(text=gettext("Please give the customer's number.")) from None
    raw_date = str(form.get("next_contact_on", "")).strip()
    try:
        next_contact = date.fromisoformat(raw_date) if raw_date else None
    except ValueError:
        raise web.HTTPBadRequest(text=gettext("Dates are written YYYY-MM-DD.")) from None
    async with request.app[DATABASE].transaction() as session:
        customer = await session.get(Customer, customer_id)
        if customer is None or customer.deleted_at is not None:
            raise web.HTTPNotFound(text=gettext("Not found."))
        if not is_supervisor(agent) and customer.owner_agent_id != agent.id:
            raise forbidden(request)
        try:
            await record_follow_up(
                session, customer_id=customer_id, agent_id=agent.id, now=utcnow(),
                attitude=str(form.get("attitude", "neutral")),
                note=str(form.get("note", "")).strip()[:4000] or None,
                next_contact_on=next_contact, channel=str(form.get("channel", "")) or None)
        except CrmError as exc:
            raise web.HTTPBadRequest(text=error_message(gettext, exc)) from None
    log.info("console.follow_up", agent_id=agent.id, customer_id=customer_id)
    raise web.HTTPSeeOther(f"{AREA}?notice=saved")


def setup_sales(app: web.Application) -> None:
    """Register the sales page."""
    app.router.add_get(AREA, sales_page)
    app.router.add_post(f"{AREA}/follow-ups", follow_up_action)
