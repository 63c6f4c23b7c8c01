"""Sales figures: the pipeline by stage, orders and revenue by month, payments and
receivables, win rate; and the revenue forecast of the next period from the stage
probabilities of open deals and the contracts up for renewal."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.models import Contract, Opportunity, Order, Payment, PipelineStage, RollupOrderDay
from crm_core.services.analytics.base import (
    DEFAULT_CURRENCY,
    Chart,
    Period,
    Report,
    Table,
    as_decimal,
    dialect_of,
    month_key,
    number,
    ratio,
)
from crm_core.services.analytics.rollups import as_date
from crm_core.services.analytics.split import split

DEFAULT_RENEWAL_RATE = 0.5
"""The renewal rate assumed before any contract has ended or renewed."""


async def sales_report(session: AsyncSession, period: Period, *, today: date,
                       currency: str = DEFAULT_CURRENCY) -> Report:
    """Tables ``pipeline`` (open deals by stage), ``monthly`` (orders and revenue by month)
    and ``summary`` (revenue, payments, receivables, win rate)."""
    report = Report("sales", period)
    start, end = period.start, period.end
    probability = func.coalesce(Opportunity.probability, PipelineStage.probability)
    pipeline = await session.execute(
        select(PipelineStage.code, func.count(Opportunity.id),
               func.coalesce(func.sum(Opportunity.amount), 0),
               func.coalesce(func.sum(Opportunity.amount * probability), 0))
        .outerjoin(Opportunity, (Opportunity.stage_code == PipelineStage.code)
                   & (Opportunity.status == "open") & (Opportunity.currency == currency))
        .where(PipelineStage.outcome == "open")
        .group_by(PipelineStage.code, PipelineStage.position)
        .order_by(PipelineStage.position, PipelineStage.code))
    report.add(Table("pipeline", ["stage", "deals", "amount", "weighted"],
                     [[s, int(n), number(a), number(w)] for s, n, a, w in pipeline]),
               Chart("pipeline", "bar", "stage", ("amount", "weighted")))

    monthly = await _monthly_orders(session, period, currency)
    report.add(Table("monthly", ["month", "orders", "revenue"],
                     [[m, *monthly.get(m, (0, 0.0))] for m in period.months()]),
               Chart("monthly", "line", "month", ("revenue",)))

    revenue = sum(r for _, r in monthly.values())
    paid = await session.scalar(
        select(func.sum(Payment.amount))
        .where(Payment.currency == currency, Payment.paid_at >= start, Payment.paid_at < end))
    open_balance, overdue = (await session.execute(
        select(func.coalesce(func.sum(Order.amount - Order.paid_amount), 0),
               func.coalesce(func.sum(case((Order.due_on < today,
                                            Order.amount - Order.paid_amount), else_=0)), 0))
        .where(Order.status == "confirmed", Order.currency == currency,
               Order.paid_amount < Order.amount))).one()
    won, lost = (await session.execute(
        select(func.count(case((Opportunity.status == "won", 1))),
               func.count(case((Opportunity.status == "lost", 1))))
        .where(Opportunity.closed_at >= start, Opportunity.closed_at < end))).one()
    report.add(Table("summary", ["metric", "value"], [
        ["revenue", number(revenue)],
        ["orders", sum(n for n, _ in monthly.values())],
        ["payments", number(paid)],
        ["receivables", number(open_balance)],
        ["receivables_overdue", number(overdue)],
        ["deals_won", int(won)],
        ["deals_lost", int(lost)],
        ["win_rate", ratio(won, won + lost)],
    ]))
    return report


async def _monthly_orders(session: AsyncSession, period: Period, currency: str,
                          ) -> dict[str, tuple[int, float]]:
    """Confirmed orders and revenue by month: whole days from ``rollup_order_days``, the
    days after them counted live."""
    parts = await split(session, period)
    found: dict[str, tuple[int, Decimal]] = {}

    def add(key: str, n: Any, amount: Any) -> None:
        count, total = found.get(key, (0, Decimal(0)))
        found[key] = (count + int(n), total + as_decimal(amount))

    if parts.rolled is not None:
        day = RollupOrderDay
        for d, n, amount in await session.execute(
                select(day.day, func.sum(day.orders), func.sum(day.revenue))
                .where(day.currency == currency, day.day >= parts.rolled.first,
                       day.day <= parts.rolled.last)
                .group_by(day.day)):
            add(as_date(d).strftime("%Y-%m"), n, amount)
    if parts.live is not None:
        month = month_key(Order.ordered_at, dialect_of(session), period.zone)
        for key, n, amount in await session.execute(
                select(month, func.count(), func.sum(Order.amount))
                .where(Order.status == "confirmed", Order.currency == currency,
                       Order.ordered_at >= parts.live.start, Order.ordered_at < parts.live.end)
                .group_by(month)):
            add(key, n, amount)
    return {key: (n, number(total)) for key, (n, total) in found.items()}


async def renewal_rate(session: AsyncSession) -> float:
    """Of the contracts whose term is over, the share that was renewed."""
    renewed, finished = (await session.execute(
        select(func.count(case((Contract.status == "renewed", 1))), func.count())
        .where(Contract.status.in_(["renewed", "ended"])))).one()
    return round(renewed / finished, 4) if finished else DEFAULT_RENEWAL_RATE


async def forecast(session: AsyncSession, period: Period, *,
                   currency: str = DEFAULT_CURRENCY) -> Report:
    """Expected revenue in ``period`` (a coming one): open deals expected to close in it,
    weighted by probability (their own, else their stage's), plus active contracts ending
    in it times the renewal rate. Table ``forecast``: source, count, amount, expected."""
    report = Report("forecast", period)
    probability = func.coalesce(Opportunity.probability, PipelineStage.probability)
    deals = await session.execute(
        select(PipelineStage.code, func.count(), func.sum(Opportunity.amount),
               func.sum(Opportunity.amount * probability))
        .join(PipelineStage, PipelineStage.code == Opportunity.stage_code)
        .where(Opportunity.status == "open", Opportunity.currency == currency,
               Opportunity.expected_close_on >= period.first,
               Opportunity.expected_close_on <= period.last)
        .group_by(PipelineStage.code, PipelineStage.position)
        .order_by(PipelineStage.position, PipelineStage.code))
    rows: list[list[object]] = [[f"stage:{s}", int(n), number(a), number(w)]
                                for s, n, a, w in deals]
    rate = await renewal_rate(session)
    renewals, renewal_amount = (await session.execute(
        select(func.count(), func.coalesce(func.sum(Contract.amount), 0))
        .where(Contract.status == "active", Contract.currency == currency,
               Contract.end_on >= period.first, Contract.end_on <= period.last))).one()
    rows.append(["renewals", int(renewals), number(renewal_amount),
                 number(float(renewal_amount) * rate)])
    table = report.add(Table("forecast", ["source", "count", "amount", "expected"], rows),
                       Chart("forecast", "bar", "source", ("amount", "expected")))
    report.add(Table("summary", ["metric", "value"], [
        ["pipeline_expected", number(sum(r[3] for r in rows[:-1]))],  # type: ignore[misc]
        ["renewal_rate", rate],
        ["renewals_expected", rows[-1][3]],
        ["total_expected", number(sum(table.column("expected")))],
    ]))
    return report
