"""The campaigns area: care campaigns with their results (supervisors and admins), and the
care tasks agents work through (everyone; agents see and close their own).

Results are computed on request from ``campaign_sends``, the outbox, interactions and
feedback (``crm_core.services.campaigns.campaign_results``): sent, delivered, failed,
skipped by reason, opted out, clicked, replied and CSAT after — for the messaged group and
for the holdout, so the page shows what the campaign changed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from aiohttp import web
from sqlalchemy import select

from contact_center.web.auth import DATABASE, PREFIX, context, current_agent, requires
from contact_center.web.render import page
from crm_core.errors import CrmError
from crm_core.models import (
    Agent,
    AgentRole,
    Campaign,
    CampaignSend,
    CareTask,
    Customer,
    utcnow,
)
from crm_core.services.campaign_results import CampaignResults, campaign_results
from crm_core.services.care_tasks import OUTCOMES, complete_task, list_tasks
from crm_core.services.feedback import feedback_statistics

log = structlog.get_logger(__name__)

AREA = f"{PREFIX}/campaigns"
TASKS = f"{PREFIX}/care-tasks"
SUPERVISORS = (AgentRole.SUPERVISOR, AgentRole.ADMIN)
EVERYONE = (AgentRole.AGENT, AgentRole.SUPERVISOR, AgentRole.ADMIN)
RECENT_SENDS = 50


def _zone(request: web.Request) -> ZoneInfo:
    from contact_center.app import SETTINGS_KEY

    return ZoneInfo(request.app[SETTINGS_KEY].locale.timezone)


def _when(value: Any, zone: ZoneInfo) -> str:
    return value.astimezone(zone).strftime("%Y-%m-%d %H:%M") if value else ""


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def _reply_window(campaign: Campaign) -> timedelta:
    days = (campaign.definition or {}).get("reply_window_days", 7)
    return timedelta(days=float(days) if isinstance(days, int | float) else 7.0)


def words(gettext: Any) -> dict[str, str]:
    """Display names of actions, triggers, statuses and skip reasons."""
    return {
        "message": gettext("Message"), "survey": gettext("Survey"), "task": gettext("Care task"),
        "once": gettext("One-off"), "cron": gettext("Schedule"),
        "ticket_resolved": gettext("Ticket resolved"),
        "customer_created": gettext("Customer created"), "birthday": gettext("Birthday"),
        "contract_end": gettext("Contract end"), "no_interaction": gettext("No interaction"),
        "lifecycle_change": gettext("Lifecycle change"), "tier_change": gettext("Tier change"),
        "active": gettext("Active"), "retired": gettext("Removed from the file"),
        "paused": gettext("Paused"), "pending": gettext("Pending"), "queued": gettext("Sent"),
        "holdout": gettext("Holdout"), "skipped": gettext("Skipped"), "failed": gettext("Failed"),
        "do_not_contact": gettext("Do not contact"), "opted_out": gettext("Opted out"),
        "no_channel": gettext("No usable channel"), "left_audience": gettext("Left the audience"),
        "frequency_cap": gettext("Frequency cap"),
        "campaign_frequency_cap": gettext("Campaign frequency cap"),
        "campaign_ended": gettext("Campaign ended"), "customer_gone": gettext("Customer removed"),
        "campaign_removed": gettext("Campaign removed"),
        "template_error": gettext("Template error"),
        "open": gettext("Open"), "done": gettext("Done"), "cancelled": gettext("Cancelled"),
        "reached": gettext("Reached"), "no_answer": gettext("No answer"),
        "resolved": gettext("Resolved"), "declined": gettext("Declined"),
        "rescheduled": gettext("Rescheduled"), "other": gettext("Other"),
        "complaint": gettext("Complaint"), "suggestion": gettext("Suggestion"),
        "praise": gettext("Praise"), "question": gettext("Question"),
    }


def _row(campaign: Campaign, results: CampaignResults) -> dict[str, Any]:
    return {
        "campaign": campaign, "results": results,
        "reply_rate": _percent(results.treatment.reply_rate),
        "holdout_rate": _percent(results.holdout.reply_rate) if results.holdout.size else "",
        "lift": _percent(results.reply_lift) if results.reply_lift is not None else "",
    }


@requires(*SUPERVISORS)
async def campaigns_page(request: web.Request) -> web.StreamResponse:
    """Every campaign with its results, and satisfaction over the last 30 days."""
    async with request.app[DATABASE].sessions() as session:
        rows = []
        for campaign in await session.scalars(select(Campaign).order_by(
                Campaign.status, Campaign.id)):
            results = await campaign_results(session, campaign.id,
                                             reply_window=_reply_window(campaign))
            rows.append(_row(campaign, results))
        stats = await feedback_statistics(session, since=utcnow() - timedelta(days=30))
    return page(request, "campaigns_list.html", rows=rows, stats=stats,
                words=words(context(request).gettext))


@requires(*SUPERVISORS)
async def campaign_page(request: web.Request) -> web.StreamResponse:
    """One campaign: results by group and variant, skip reasons, the latest sends."""
    try:
        campaign_id = int(request.match_info["campaign_id"])
    except ValueError:
        raise web.HTTPNotFound() from None
    async with request.app[DATABASE].sessions() as session:
        campaign = await session.get(Campaign, campaign_id)
        if campaign is None:
            raise web.HTTPNotFound(text=context(request).gettext("No such campaign."))
        results = await campaign_results(session, campaign.id,
                                         reply_window=_reply_window(campaign))
        recent = list((await session.execute(
            select(CampaignSend, Customer.display_name)
            .join(Customer, Customer.id == CampaignSend.customer_id)
            .where(CampaignSend.campaign_id == campaign.id)
            .order_by(CampaignSend.id.desc()).limit(RECENT_SENDS))).all())
        stats = await feedback_statistics(session, campaign_id=campaign.id)
    zone = _zone(request)
    return page(request, "campaigns_detail.html", campaign=campaign, row=_row(campaign, results),
                results=results, recent=recent, stats=stats,
                words=words(context(request).gettext), when=lambda v: _when(v, zone))


# -- care tasks -----------------------------------------------------------------------------


@requires(*EVERYONE)
async def tasks_page(request: web.Request) -> web.StreamResponse:
    """Open care tasks by due time: an agent's own, or everyone's for supervisors."""
    agent = current_agent(request)
    mine_only = agent.role == AgentRole.AGENT or request.query.get("mine") == "1"
    async with request.app[DATABASE].sessions() as session:
        tasks = await list_tasks(session, assignee_id=agent.id if mine_only else None)
        names = {row[0]: row[1] for row in await session.execute(
            select(Customer.id, Customer.display_name)
            .where(Customer.id.in_({t.customer_id for t in tasks})))}
        agents = {row[0]: row[1] for row in await session.execute(
            select(Agent.id, Agent.display_name)
            .where(Agent.id.in_({t.assignee_id for t in tasks if t.assignee_id})))}
    zone = _zone(request)
    now = utcnow()
    return page(request, "care_tasks.html", tasks=tasks, names=names, agents=agents,
                outcomes=OUTCOMES, mine_only=mine_only, now=now, notice=request.query.get(
                    "notice"), words=words(context(request).gettext),
                when=lambda v: _when(v, zone))


@requires(*EVERYONE)
async def complete_task_action(request: web.Request) -> web.StreamResponse:
    """Record a task's outcome (agents: only their own tasks)."""
    agent = current_agent(request)
    try:
        task_id = int(request.match_info["task_id"])
    except ValueError:
        raise web.HTTPNotFound() from None
    form = await request.post()
    outcome = str(form.get("outcome", "")).strip()
    note = str(form.get("note", "")).strip()
    async with request.app[DATABASE].transaction() as session:
        task = await session.get(CareTask, task_id)
        if task is None:
            raise web.HTTPNotFound()
        if agent.role == AgentRole.AGENT and task.assignee_id != agent.id:
            raise web.HTTPForbidden(text=context(request).gettext(
                "You are not allowed to see this."))
        try:
            await complete_task(session, task_id, outcome=outcome, note=note or None,
                                actor=agent.login, now=utcnow())
        except CrmError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
    log.info("console.care_task_done", care_task_id=task_id, agent_id=agent.id)
    raise web.HTTPFound(f"{TASKS}?notice=done")


def setup_campaigns(app: web.Application) -> None:
    """Register the campaigns and care-task pages."""
    app.router.add_get(AREA, campaigns_page)
    app.router.add_get(f"{AREA}/{{campaign_id}}", campaign_page)
    app.router.add_get(TASKS, tasks_page)
    app.router.add_post(f"{TASKS}/{{task_id}}", complete_task_action)
