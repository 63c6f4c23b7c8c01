"""The reports area: the dashboard, the reports with their charts, CSV and XLSX exports.

Supervisors and admins see every report. Agents see one: their own performance (the
``agents`` report narrowed to themselves); every other report answers 403.

Filters come from the query string: ``from`` and ``to`` (``YYYY-MM-DD``, inclusive, in
the business time zone; default today for the dashboard, the next 30 days for the
forecast, the last 30 days otherwise), ``channel`` (dashboard) and ``team`` (agents).
Charts are drawn in the browser by Chart.js (vendored in ``static/vendor``) from the
report's tables, which the page embeds as JSON.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from sqlalchemy import select

from contact_center.web.areas import business_zone, settings_of
from contact_center.web.auth import DATABASE, PREFIX, context, current_agent, forbidden
from contact_center.web.render import page
from contact_center.web.report_labels import labels
from crm_core.models import AgentRole, Channel, Team, utcnow
from crm_core.services.analytics.base import Period, Report
from crm_core.services.analytics.export import to_csv, to_xlsx
from crm_core.services.analytics.registry import ALL, FORWARD, REPORTS, Filters, build

AREA = f"{PREFIX}/reports"
MAX_DAYS = 1100
"""The longest range a report may cover (about three years)."""
DEFAULT_DAYS = 30
AGENT_REPORTS = frozenset({"agents"})
"""What an agent may open (narrowed to their own row)."""


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=message)


def _date(request: web.Request, name: str) -> date | None:
    raw = request.query.get(name, "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise _bad_request(context(request).gettext("Dates are written YYYY-MM-DD.")) from None


def period_of(request: web.Request, name: str) -> Period:
    """The report's period from ``from``/``to``, or its default."""
    zone = business_zone(request)
    today = utcnow().astimezone(zone).date()
    if name == "dashboard":
        first, last = today, today
    elif name in FORWARD:
        first, last = today + timedelta(days=1), today + timedelta(days=DEFAULT_DAYS)
    else:
        first, last = today - timedelta(days=DEFAULT_DAYS - 1), today
    first = _date(request, "from") or first
    last = _date(request, "to") or last
    if last < first:
        raise _bad_request(context(request).gettext("The end date is before the start date."))
    if (last - first).days >= MAX_DAYS:
        raise _bad_request(context(request).gettext("The date range is too long."))
    return Period(first, last, zone.key)


def _filters(request: web.Request, name: str) -> Filters:
    agent = current_agent(request)
    channel = request.query.get("channel", "").strip()
    team = request.query.get("team", "").strip()
    try:
        chosen_channel = Channel(channel) if channel else None
        team_id = int(team) if team else None
    except ValueError:
        raise _bad_request(context(request).gettext("Unknown filter value.")) from None
    return Filters(now=utcnow(), currency=settings_of(request).analytics.currency,
                   channel=chosen_channel, team_id=team_id,
                   agent_id=agent.id if agent.role == AgentRole.AGENT else None)


def _allowed(request: web.Request, name: str) -> None:
    if name not in ALL:
        raise web.HTTPNotFound(text=context(request).gettext("Not found."))
    agent = current_agent(request)
    if agent.role == AgentRole.AGENT and name not in AGENT_REPORTS:
        raise forbidden(request)


async def _compute(request: web.Request, name: str) -> Report:
    period = period_of(request, name)
    filters = _filters(request, name)
    async with request.app[DATABASE].sessions() as session:
        return await build(name, session, period, filters)


def _chart_data(report: Report, label: Any) -> list[dict[str, Any]]:
    """What ``reports.js`` draws: per chart its kind, labels and datasets."""
    charts = []
    for chart in report.charts:
        table = report.tables[chart.table]
        names = table.column(chart.label)
        charts.append({
            "kind": chart.kind, "table": chart.table, "title": label(chart.table),
            "labels": [label(str(n)) for n in names],
            "datasets": [{"label": label(v), "data": table.column(v)} for v in chart.values],
        })
    return charts


async def report_page(request: web.Request) -> web.StreamResponse:
    """A report (or the dashboard) with its charts, tables, filters and export links."""
    name = request.match_info["name"]
    _allowed(request, name)
    report = await _compute(request, name)
    agent = current_agent(request)
    label = labels(context(request).gettext)
    query = {k: v for k, v in request.query.items() if k in ("from", "to", "channel", "team")}
    async with request.app[DATABASE].sessions() as session:
        teams = list(await session.execute(select(Team.id, Team.name).order_by(Team.name)))
    return page(
        request, "report.html", name=name, report=report, label=label,
        names=[] if agent.role == AgentRole.AGENT else ["dashboard", *REPORTS],
        chart_json=json.dumps(_chart_data(report, label), ensure_ascii=False),
        export_query=urlencode(query), channels=[c.value for c in Channel], teams=teams,
        selected=request.query)


async def reports_index(request: web.Request) -> web.StreamResponse:
    """Supervisors land on the dashboard; agents on their own performance."""
    agent = current_agent(request)
    target = "agents" if agent.role == AgentRole.AGENT else "dashboard"
    raise web.HTTPFound(f"{AREA}/{target}")


async def export(request: web.Request) -> web.StreamResponse:
    """The report as ``?format=csv`` (default) or ``xlsx``."""
    name = request.match_info["name"]
    _allowed(request, name)
    kind = request.query.get("format", "csv")
    if kind not in ("csv", "xlsx"):
        raise _bad_request(context(request).gettext("Unknown export format."))
    report = await _compute(request, name)
    label = labels(context(request).gettext)
    stem = f"{name}-{report.period.first.isoformat()}-{report.period.last.isoformat()}"
    headers = {"Content-Disposition": f'attachment; filename="{stem}.{kind}"',
               "Cache-Control": "no-store"}
    if kind == "csv":
        # A byte-order mark so spreadsheet programs read the Chinese as UTF-8.
        body = ("\ufeff" + to_csv(report, label)).encode("utf-8")
        return web.Response(body=body, headers={**headers,
                                                "Content-Type": "text/csv; charset=utf-8"})
    return web.Response(body=to_xlsx(report, label), headers={
        **headers,
        "Content-Type": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"})


def setup_reports(app: web.Application) -> None:
    """Register the reports area."""
    app.router.add_get(AREA, reports_index)
    app.router.add_get(f"{AREA}/{{name}}", report_page)
    app.router.add_get(f"{AREA}/{{name}}/export", export)
