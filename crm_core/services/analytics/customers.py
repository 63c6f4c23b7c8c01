"""Customer analyses: composition (category, industry, region, tier, member level), RFM
segments, satisfaction trend, churn by month and by cohort with reasons, value ranking
(top and rising) and channel mix."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Float, case, cast, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.models import (
    Customer,
    Direction,
    FeedbackResponse,
    Interaction,
    LifecycleStage,
    LifecycleTransition,
    Membership,
    Order,
    RollupChannelDay,
)
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
from crm_core.services.analytics.split import split

UNKNOWN = "(none)"
"""The label of customers without a value."""
SATISFIED = 4
RANKING_SIZE = 20
RFM_SEGMENTS = ("champions", "loyal", "new", "need_attention", "at_risk", "hibernating")


def _month_start(key: str, zone: str) -> datetime:
    year, month = (int(part) for part in key.split("-"))
    return datetime(year, month, 1, tzinfo=ZoneInfo(zone)).astimezone(UTC)


def _live() -> list[ColumnElement[bool]]:
    return [Customer.deleted_at.is_(None), Customer.merged_into_id.is_(None)]


async def composition(session: AsyncSession, period: Period) -> Report:
    """Customers by category, industry, region (province), tier and member level.

    One pass over the customers, grouped by all four dimensions at once (a few thousand
    combinations at most, covered by ``ix_customers_composition``), summed per dimension
    here; member levels from the memberships, less those of removed customers."""
    report = Report("composition", period)
    dimensions = ("category", "industry", "region", "tier")
    columns = (Customer.category_code, Customer.industry, Customer.province,
               Customer.tier_code)
    totals: dict[str, dict[str, int]] = {d: {} for d in dimensions}
    for *values, n in await session.execute(
            select(*columns, func.count()).where(*_live()).group_by(*columns)):
        for dimension, value in zip(dimensions, values, strict=True):
            key = value or UNKNOWN
            totals[dimension][key] = totals[dimension].get(key, 0) + int(n)
    for dimension in dimensions:
        rows = sorted(totals[dimension].items(), key=lambda kv: (-kv[1], kv[0]))
        report.add(Table(dimension, [dimension, "customers"], [list(r) for r in rows]),
                   Chart(dimension, "doughnut", dimension, ("customers",)))
    removed = select(Customer.id).where(
        or_(Customer.deleted_at.is_not(None), Customer.merged_into_id.is_not(None)))
    levels = await session.execute(
        select(Membership.level_code, func.count())
        .where(Membership.customer_id.not_in(removed))
        .group_by(Membership.level_code))
    rows = sorted(((v or UNKNOWN, int(n)) for v, n in levels), key=lambda kv: (-kv[1], kv[0]))
    report.add(Table("level", ["level", "customers"], [list(r) for r in rows]),
               Chart("level", "doughnut", "level", ("customers",)))
    return report


def rfm_segment(recency: int, frequency: int, monetary: int) -> str:
    """The segment of quintile scores (5 = most recent / most often / most spent)."""
    value = frequency + monetary
    if recency >= 4 and value >= 8:
        return "champions"
    if recency >= 3 and value >= 6:
        return "loyal"
    if recency >= 4:
        return "new"
    if recency <= 2 and value >= 6:
        return "at_risk"
    if recency <= 2:
        return "hibernating"
    return "need_attention"


async def rfm(session: AsyncSession, period: Period, *,
              currency: str = DEFAULT_CURRENCY) -> Report:
    """RFM over the confirmed orders of the period: each buying customer scored 1–5 by
    quintile (``ntile``) of last order, order count and spend; table ``segments``."""
    report = Report("rfm", period)
    per_customer = (
        select(Order.customer_id.label("customer_id"),
               func.max(Order.ordered_at).label("last"),
               func.count().label("frequency"), func.sum(Order.amount).label("monetary"))
        .where(Order.status == "confirmed", Order.currency == currency,
               Order.ordered_at >= period.start, Order.ordered_at < period.end)
        .group_by(Order.customer_id).subquery())
    c = per_customer.c
    scored = select(
        func.ntile(5).over(order_by=(c.last, c.customer_id)).label("r"),
        func.ntile(5).over(order_by=(c.frequency, c.customer_id)).label("f"),
        # A float sorts much faster than a numeric; the order of sums of cents is the same.
        func.ntile(5).over(order_by=(cast(c.monetary, Float), c.customer_id)).label("m"),
        c.monetary).subquery()
    rows = await session.execute(
        select(scored.c.r, scored.c.f, scored.c.m, func.count(), func.sum(scored.c.monetary))
        .group_by(scored.c.r, scored.c.f, scored.c.m))
    totals: dict[str, list[float]] = {s: [0, 0.0] for s in RFM_SEGMENTS}
    for r, f, m, n, spend in rows:
        segment = totals[rfm_segment(int(r), int(f), int(m))]
        segment[0] += int(n)
        segment[1] += float(spend or 0)
    report.add(Table("segments", ["segment", "customers", "revenue"],
                     [[s, int(n), number(v)] for s, (n, v) in totals.items()]),
               Chart("segments", "bar", "segment", ("customers",)))
    return report


async def satisfaction(session: AsyncSession, period: Period) -> Report:
    """CSAT by month: average, responses and share satisfied (table ``trend``)."""
    report = Report("satisfaction", period)
    month = month_key(FeedbackResponse.created_at, dialect_of(session), period.zone)
    satisfied = func.count(case((FeedbackResponse.score >= SATISFIED, 1)))
    found = {m: (avg, int(n), int(good or 0)) for m, avg, n, good in await session.execute(
        select(month, func.avg(FeedbackResponse.score), func.count(), satisfied)
        .where(FeedbackResponse.kind == "csat", FeedbackResponse.score.is_not(None),
               FeedbackResponse.created_at >= period.start,
               FeedbackResponse.created_at < period.end)
        .group_by(month))}
    rows = []
    for key in period.months():
        avg, n, good = found.get(key, (None, 0, 0))
        rows.append([key, number(avg) if n else None, n, ratio(good, n)])
    report.add(Table("trend", ["month", "csat_average", "responses", "satisfied"], rows),
               Chart("trend", "line", "month", ("csat_average",)))
    return report


async def churn(session: AsyncSession, period: Period) -> Report:
    """Churn by month (the whole calendar months the period touches): customers who moved
    to *churned* over the customers of the month — those at its start (created before it,
    less churned before it, plus won back before it) and those new in it; churn reasons
    in the period; churn by cohort (month of creation, share now churned).

    Index-only scans: customers who joined before the first month (a count), those who
    joined in the period by month, transitions by month, reasons; the running totals are
    summed here."""
    report = Report("churn", period)
    dialect = dialect_of(session)
    to_churned = LifecycleTransition.to_stage == LifecycleStage.CHURNED
    from_churned = LifecycleTransition.from_stage == LifecycleStage.CHURNED
    months = period.months()
    first_start = _month_start(months[0], period.zone)
    year, month = (int(part) for part in months[-1].split("-"))
    after = _month_start(f"{year + month // 12:04d}-{month % 12 + 1:02d}", period.zone)
    created_month = month_key(Customer.created_at, dialect, period.zone)
    by_creation = {k: (int(n), int(c or 0)) for k, n, c in await session.execute(
        select(created_month, func.count(),
               func.count(case((Customer.lifecycle_stage == LifecycleStage.CHURNED, 1))))
        .where(Customer.created_at >= first_start, Customer.created_at < after, *_live())
        .group_by(created_month))}
    before = int(await session.scalar(
        select(func.count()).select_from(Customer)
        .where(Customer.created_at < first_start, *_live())) or 0)
    moved_month = month_key(LifecycleTransition.at, dialect, period.zone)
    moves = {k: (int(lost), int(back), int(people)) for k, lost, back, people in
             await session.execute(
                 select(moved_month, func.count(case((to_churned, 1))),
                        func.count(case((from_churned, 1))),
                        func.count(func.distinct(case((to_churned,
                                                       LifecycleTransition.customer_id)))))
                 .where(or_(to_churned, from_churned)).group_by(moved_month))}
    at_start = before
    for key in sorted(moves):
        if key >= months[0]:
            break
        at_start += moves[key][1] - moves[key][0]
    rows = []
    for key in months:
        new = by_creation.get(key, (0, 0))[0]
        lost, back, churned = moves.get(key, (0, 0, 0))
        rows.append([key, at_start, new, churned, ratio(churned, at_start + new)])
        at_start += new - lost + back
    report.add(Table("monthly", ["month", "customers_at_start", "new_customers", "churned",
                                 "churn_rate"], rows),
               Chart("monthly", "line", "month", ("churn_rate",)))

    reason = func.coalesce(LifecycleTransition.reason, UNKNOWN)
    reasons = await session.execute(
        select(reason, func.count()).where(to_churned, LifecycleTransition.at >= period.start,
                                           LifecycleTransition.at < period.end)
        .group_by(reason).order_by(func.count().desc(), reason))
    report.add(Table("reasons", ["reason", "churned"], [[r, int(n)] for r, n in reasons]),
               Chart("reasons", "doughnut", "reason", ("churned",)))

    cohorts = {k: v for k, v in by_creation.items() if k in set(months)}
    report.add(Table("cohorts", ["cohort", "customers", "churned", "churn_rate"],
                     [[k, n, c, ratio(c, n)] for k, (n, c) in sorted(cohorts.items())]),
               Chart("cohorts", "bar", "cohort", ("churn_rate",)))
    return report


async def value_ranking(session: AsyncSession, period: Period, *,
                        currency: str = DEFAULT_CURRENCY, size: int = RANKING_SIZE) -> Report:
    """Top customers by revenue in the period (table ``top``) and the fastest risers: the
    largest increase over the previous period of the same length (table ``rising``).

    The orders of both periods are ranked per customer first; only the leaders are then
    looked up among the customers (removed ones are skipped, and the ranking is read
    further when too many were)."""
    report = Report("ranking", period)
    previous = period.previous()

    def revenue_in(p: Period) -> Any:
        return func.sum(Order.amount).filter(Order.ordered_at >= p.start, Order.ordered_at < p.end)

    base = (select(Order.customer_id.label("customer_id"), revenue_in(period).label("now"),
                   revenue_in(previous).label("before"))
            .where(Order.status == "confirmed", Order.currency == currency,
                   Order.ordered_at >= previous.start, Order.ordered_at < period.end)
            .group_by(Order.customer_id).subquery())
    now_value = func.coalesce(base.c.now, 0)
    growth = now_value - func.coalesce(base.c.before, 0)
    top = await _leaders(session, select(base.c.customer_id, now_value, base.c.before)
                         .where(base.c.now.is_not(None))
                         .order_by(now_value.desc(), base.c.customer_id), size)
    report.add(Table("top", ["customer_id", "customer", "revenue", "lifetime_value"],
                     [[c.id, c.display_name, number(now), number(c.lifetime_value)]
                      for c, now, _ in top]),
               Chart("top", "bar", "customer", ("revenue",)))
    rising = await _leaders(session, select(base.c.customer_id, now_value, base.c.before)
                            .where(growth > 0)
                            .order_by(growth.desc(), base.c.customer_id), size)
    report.add(Table("rising", ["customer_id", "customer", "previous", "revenue", "growth"],
                     [[c.id, c.display_name, number(before), number(now),
                       number(float(now or 0) - float(before or 0))]
                      for c, now, before in rising]),
               Chart("rising", "bar", "customer", ("growth",)))
    return report


async def _leaders(session: AsyncSession, ranked: Any, size: int,
                   ) -> list[tuple[Customer, Any, Any]]:
    """The first ``size`` live customers of a ranking of ``(customer_id, now, before)``."""
    limit = size * 2 + 10
    while True:
        rows = list(await session.execute(ranked.limit(limit)))
        found = {c.id: c for c in await session.scalars(
            select(Customer).where(Customer.id.in_([r[0] for r in rows]), *_live()))}
        leaders = [(found[i], now, before) for i, now, before in rows if i in found]
        if len(leaders) >= size or len(rows) < limit:
            return leaders[:size]
        limit *= 4


async def channel_mix(session: AsyncSession, period: Period) -> Report:
    """Interactions by channel and direction in the period, with each channel's share of
    the inbound volume (table ``channels``): whole days from ``rollup_channel_days``,
    the days after them counted live."""
    report = Report("channels", period)
    parts = await split(session, period)
    counts: dict[str, dict[str, int]] = {}
    queries = []
    if parts.rolled is not None:
        day = RollupChannelDay
        queries.append(select(day.channel, day.direction, func.sum(day.interactions))
                       .where(day.day >= parts.rolled.first, day.day <= parts.rolled.last)
                       .group_by(day.channel, day.direction))
    if parts.live is not None:
        queries.append(select(Interaction.channel, Interaction.direction, func.count())
                       .where(Interaction.occurred_at >= parts.live.start,
                              Interaction.occurred_at < parts.live.end)
                       .group_by(Interaction.channel, Interaction.direction))
    for query in queries:
        for channel, direction, n in await session.execute(query):
            found = counts.setdefault(channel.value, {})
            found[direction.value] = found.get(direction.value, 0) + int(n)
    inbound_total = sum(c.get(Direction.INBOUND.value, 0) for c in counts.values())
    table = [[ch, c.get("inbound", 0), c.get("outbound", 0),
              ratio(c.get("inbound", 0), inbound_total)]
             for ch, c in sorted(counts.items(),
                                   key=lambda kv: (-kv[1].get("inbound", 0), kv[0]))]
    report.add(Table("channels", ["channel", "inbound", "outbound", "share"], table),
               Chart("channels", "doughnut", "channel", ("inbound",)))
    return report
