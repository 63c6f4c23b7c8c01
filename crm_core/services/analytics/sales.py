"""Sales figures: the pipeline by stage, orders and revenue by month, payments and
receivables, win rate; and the revenue forecast of the next period from the stage
probabilities of open deals and the contracts up for renewal."""

from __future__ import annotations

from datetime import date

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.models import Contract, Opportunity, Order, Payment, PipelineStage
from crm_core.services.analytics.base import (
    DEFAULT_CURRENCY,
    Chart,
    Period,
    Report,
    Table,
    dialect_of,
    month_key,
    number,
    ratio,
)

DEFAULT_RENEWAL_RATE = 0.5
"""The renewal rate assumed before any contract has ended or renewed."""


async def sales_report(session: AsyncSession, period: Period, *, today: date,
                       currency: str = DEFAULT_CURRENCY) -> Report:
    """Tables ``pipeline`` (open deals by stage), ``monthly`` (orders and revenue by month)
    and ``summary`` (revenue, payments, receivables, win rate)."""
    report = Report("sales", period)
    dialect = dialect_of(session)
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

    month = month_key(Order.ordered_at, dialect, period.zone)
    monthly = {m: (int(n), number(a)) for m, n, a in await session.execute(
        select(month, func.count(), func.sum(Order.amount))
        .where(Order.status == "confirmed", Order.currency == currency,
               Order.ordered_at >= start, Order.ordered_at < end)
        .group_by(month))}
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
