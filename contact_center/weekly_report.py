"""The weekly report e-mailed to supervisors: last week's service, sales and churn figures.

The scheduler calls :func:`send_weekly_report` on every tick; from the configured weekday
and local hour on (``[analytics]``), it writes one outbox e-mail per active supervisor
with an address, for the previous Monday–Sunday. A ``report_deliveries`` row with the key
``weekly:<ISO year>-W<week>`` is inserted in the same transaction: its unique key makes
the report go out once per week however many schedulers tick, and a crash before the
commit leaves nothing half-sent. The outbox dispatcher does the sending.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from html import escape
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from crm_core.db import Database
from crm_core.models import Agent, AgentRole, Channel, OutboxMessage, ReportDelivery
from crm_core.services.analytics.base import Period, Report
from crm_core.services.analytics.registry import Filters, build

log = structlog.get_logger(__name__)

LINES = (
    ("dashboard", "summary", "inbound_total", "进线量 Inbound"),
    ("dashboard", "summary", "first_response_p50_min", "首次响应 P50 (分钟 min)"),
    ("dashboard", "summary", "first_response_p90_min", "首次响应 P90 (分钟 min)"),
    ("dashboard", "summary", "resolution_p50_min", "解决时长 P50 (分钟 min)"),
    ("dashboard", "summary", "sla_attainment", "SLA 达成率 attainment"),
    ("dashboard", "summary", "csat_average", "满意度 CSAT"),
    ("dashboard", "summary", "open_tickets", "未结工单 Open tickets"),
    ("dashboard", "summary", "overdue_tickets", "超时工单 Overdue tickets"),
    ("sales", "summary", "revenue", "收入 Revenue"),
    ("sales", "summary", "orders", "订单 Orders"),
    ("sales", "summary", "payments", "回款 Payments"),
    ("sales", "summary", "receivables_overdue", "逾期应收 Receivables overdue"),
    ("sales", "summary", "win_rate", "赢单率 Win rate"),
)


def report_week(now: datetime, zone: ZoneInfo, weekday: int, hour: int,
                ) -> tuple[str, Period] | None:
    """The delivery key and last week's period when the report is due at ``now``."""
    local = now.astimezone(zone)
    monday = local.date() - timedelta(days=local.weekday())
    due = datetime.combine(monday + timedelta(days=weekday), time(hour), tzinfo=zone)
    if local < due:
        return None
    year, week, _ = monday.isocalendar()
    last = monday - timedelta(days=1)
    return f"weekly:{year}-W{week:02d}", Period(last - timedelta(days=6), last, zone.key)


def _value(report: Report, table: str, metric: str) -> str:
    value = report.figure(table, metric)
    if value is None:
        return "–"
    if metric in ("sla_attainment", "win_rate"):
        return f"{value * 100:.1f}%"
    return str(value)


def compose(period: Period, reports: dict[str, Report], agents: Report, churned: int,
            console_url: str) -> tuple[str, str, str]:
    """Subject, text and HTML of the report."""
    first, last = period.first.isoformat(), period.last.isoformat()
    subject = f"周报 Weekly report {first} – {last}"
    rows = [(label, _value(reports[name], table, metric))
            for name, table, metric, label in LINES]
    rows.append(("流失客户 Churned customers", str(churned)))
    top = sorted(agents.tables["agents"].as_dicts(), key=lambda r: -r["conversations"])[:5]
    link = f"{console_url}/console/reports/dashboard?from={first}&to={last}"
    text = "\n".join([subject, "", *(f"{label}: {value}" for label, value in rows), "",
                      "坐席 Top agents:",
                      *(f"  {r['agent']}: {r['conversations']} / CSAT {r['csat_average'] or '–'}"
                        for r in top), "", link])
    html = (f"<h2>{escape(subject)}</h2><table>"
            + "".join(f"<tr><td>{escape(label)}</td><td>{escape(value)}</td></tr>"
                      for label, value in rows)
            + "</table><h3>坐席 Top agents</h3><ul>"
            + "".join(f"<li>{escape(str(r['agent']))}: {r['conversations']}</li>" for r in top)
            + f'</ul><p><a href="{escape(link)}">{escape(link)}</a></p>')
    return subject, text, html


async def send_weekly_report(database: Database, *, now: datetime, zone: str, currency: str,
                             weekday: int = 0, hour: int = 9,
                             console_url: str = "http://127.0.0.1:8080") -> int:
    """Queue last week's report for every active supervisor once it is due and not yet
    sent; returns how many e-mails were queued (0 when not due, sent, or nobody to send
    to)."""
    due = report_week(now, ZoneInfo(zone), weekday, hour)
    if due is None:
        return 0
    key, period = due
    async with database.sessions() as session:
        if await session.scalar(select(ReportDelivery.id).where(ReportDelivery.key == key)):
            return 0
    filters = Filters(now=now, currency=currency)
    try:
        async with database.transaction() as session:
            recipients = list(await session.execute(
                select(Agent.email, Agent.display_name)
                .where(Agent.active.is_(True), Agent.role == AgentRole.SUPERVISOR,
                       Agent.email.is_not(None), Agent.email != "")
                .order_by(Agent.id)))
            session.add(ReportDelivery(key=key, recipients=[r[0] for r in recipients],
                                       sent_at=now))
            await session.flush()
            reports = {name: await build(name, session, period, filters)
                       for name in ("dashboard", "sales")}
            agents = await build("agents", session, period, filters)
            churn = await build("churn", session, period, filters)
            churned = sum(n for _, n in churn.tables["reasons"].rows)
            subject, text, html = compose(period, reports, agents, churned, console_url)
            for email, name in recipients:
                session.add(OutboxMessage(
                    channel=Channel.EMAIL, customer_id=None, next_attempt_at=now,
                    payload={"to": {"email": email, "display_name": name},
                             "subject": subject, "text": text, "html": html,
                             "metadata": {"report": key}}))
    except IntegrityError:  # another scheduler sent it first
        return 0
    log.info("weekly_report.queued", key=key, recipients=len(recipients))
    return len(recipients)


def last_week(today: date) -> tuple[date, date]:
    """Monday and Sunday of the week before ``today``'s (for callers and tests)."""
    monday = today - timedelta(days=today.weekday())
    return monday - timedelta(days=7), monday - timedelta(days=1)
