"""What every report shares: the period, the result shape, and SQL helpers that behave
the same on SQLite and PostgreSQL (durations in seconds, percentiles, month keys)."""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Float, cast, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

DEFAULT_CURRENCY = "CNY"


@dataclass(frozen=True)
class Period:
    """The days ``first``–``last`` (inclusive) in the business time zone, as the UTC
    half-open interval ``[start, end)`` queries use."""

    first: date
    last: date
    zone: str = "Asia/Shanghai"

    @property
    def tz(self) -> ZoneInfo:
        """The business time zone."""
        return ZoneInfo(self.zone)

    @property
    def start(self) -> datetime:
        """The first instant, UTC."""
        return datetime.combine(self.first, time(0), tzinfo=self.tz).astimezone(UTC)

    @property
    def end(self) -> datetime:
        """The instant after the last day, UTC."""
        return datetime.combine(self.last + timedelta(days=1), time(0),
                                tzinfo=self.tz).astimezone(UTC)

    @property
    def days(self) -> int:
        """How many days the period has."""
        return (self.last - self.first).days + 1

    def previous(self) -> Period:
        """The period of the same length just before this one."""
        return Period(self.first - timedelta(days=self.days), self.first - timedelta(days=1),
                      self.zone)

    def months(self) -> list[str]:
        """``YYYY-MM`` of every month the period touches, in order."""
        keys, day = [], self.first.replace(day=1)
        while day <= self.last:
            keys.append(f"{day.year:04d}-{day.month:02d}")
            day = (day + timedelta(days=32)).replace(day=1)
        return keys

    @classmethod
    def ending(cls, today: date, days: int, zone: str) -> Period:
        """The ``days`` days up to and including ``today``."""
        return cls(today - timedelta(days=days - 1), today, zone)


@dataclass
class Table:
    """One result table: column keys and rows of plain values (str, int, float)."""

    key: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)

    def column(self, name: str) -> list[Any]:
        """The values of one column."""
        index = self.columns.index(name)
        return [row[index] for row in self.rows]

    def as_dicts(self) -> list[dict[str, Any]]:
        """Rows as dictionaries."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


@dataclass(frozen=True)
class Chart:
    """How the console draws a table: ``kind`` (bar, line, doughnut), the label column and
    the value columns."""

    table: str
    kind: str
    label: str
    values: tuple[str, ...]


@dataclass
class Report:
    """A computed report: its tables (by key, in order) and the charts drawn from them."""

    name: str
    period: Period
    tables: dict[str, Table] = field(default_factory=dict)
    charts: list[Chart] = field(default_factory=list)

    def add(self, table: Table, *charts: Chart) -> Table:
        """Add a table and the charts of it."""
        self.tables[table.key] = table
        self.charts.extend(charts)
        return table

    def figure(self, table: str, metric: str) -> Any:
        """A value of a two-column ``metric``/``value`` table."""
        for row in self.tables[table].rows:
            if row[0] == metric:
                return row[1]
        raise KeyError(metric)


# --- SQL helpers ----------------------------------------------------------------------------


def dialect_of(session: AsyncSession) -> str:
    """``sqlite`` or ``postgresql``."""
    bind = session.bind
    assert bind is not None
    return bind.dialect.name


def seconds_between(later: Any, earlier: Any, dialect: str) -> ColumnElement[float]:
    """``later - earlier`` in seconds, as a float, on either database."""
    if dialect == "postgresql":
        return cast(func.extract("epoch", later - earlier), Float)
    return (func.julianday(later) - func.julianday(earlier)) * 86400.0


def month_key(column: Any, dialect: str, zone: str) -> ColumnElement[str]:
    """``YYYY-MM`` of a timestamp in the business time zone (SQLite: shifted by the zone's
    current UTC offset, exact for zones without daylight saving such as Asia/Shanghai)."""
    if dialect == "postgresql":
        return func.to_char(func.timezone(zone, column), "YYYY-MM")
    offset = int(datetime.now(ZoneInfo(zone)).utcoffset().total_seconds() // 60)  # type: ignore[union-attr]
    return func.strftime("%Y-%m", column, f"{offset:+d} minutes")


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The continuous percentile (linear interpolation, as PostgreSQL's
    ``percentile_cont``) of sorted ``values``."""
    if not values:
        return None
    position = fraction * (len(values) - 1)
    low, high = math.floor(position), math.ceil(position)
    return values[low] + (values[high] - values[low]) * (position - low)


@dataclass(frozen=True)
class Spread:
    """Count, median and 90th percentile of a duration, in seconds."""

    count: int
    p50: float | None
    p90: float | None


async def spreads(session: AsyncSession, seconds: ColumnElement[float],
                  where: Iterable[ColumnElement[bool]], *, group: Any | None = None,
                  ) -> dict[Hashable, Spread]:
    """p50/p90 of ``seconds`` over the rows matching ``where``, per ``group`` value (key
    ``None`` without a group). PostgreSQL computes them with ``percentile_cont``; SQLite
    has no percentile aggregate, so the durations are read sorted (one column, indexed
    range) and interpolated here the same way."""
    conditions = list(where)
    dialect = dialect_of(session)
    key = group if group is not None else literal_column("NULL")
    if dialect == "postgresql":
        query = (select(key.label("g"), func.count(),
                        func.percentile_cont(0.5).within_group(seconds),
                        func.percentile_cont(0.9).within_group(seconds))
                 .where(*conditions))
        if group is not None:
            query = query.group_by(group)
        return {g: Spread(int(n), _float(p50), _float(p90))
                for g, n, p50, p90 in await session.execute(query)}
    found: dict[Hashable, list[float]] = {}
    rows = await session.execute(select(key.label("g"), seconds.label("s"))
                                 .where(*conditions).order_by(key, seconds))
    for g, value in rows:
        found.setdefault(g, []).append(float(value))
    return {g: Spread(len(v), percentile(v, 0.5), percentile(v, 0.9)) for g, v in found.items()}


async def spreads_over(session: AsyncSession, source: Any) -> dict[Hashable, Spread]:
    """p50/p90 per group of a subquery with the columns ``g`` (group) and ``s`` (seconds),
    computed as :func:`spreads` does (``percentile_cont``, or sorted and interpolated)."""
    g, s = source.c.g, source.c.s
    if dialect_of(session) == "postgresql":
        return {key: Spread(int(n), _float(p50), _float(p90)) for key, n, p50, p90 in
                await session.execute(
                    select(g, func.count(), func.percentile_cont(0.5).within_group(s),
                           func.percentile_cont(0.9).within_group(s)).group_by(g))}
    found: dict[Hashable, list[float]] = {}
    for key, value in await session.execute(select(g, s).order_by(g, s)):
        found.setdefault(key, []).append(float(value))
    return {k: Spread(len(v), percentile(v, 0.5), percentile(v, 0.9)) for k, v in found.items()}


async def pairs(session: AsyncSession, query: Any) -> dict[Any, Any]:
    """A two-column query as a dictionary."""
    return {key: value for key, value in await session.execute(query)}


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def number(value: Any, places: int = 2) -> float:
    """A SQL number (Decimal, int, float, None) as a rounded float (None → 0)."""
    if value is None:
        return 0.0
    return round(float(value), places)


def minutes(value: float | None) -> float | None:
    """Seconds → minutes, one decimal (``None`` stays)."""
    return None if value is None else round(value / 60.0, 1)


def ratio(part: float, whole: float) -> float | None:
    """``part / whole`` as a fraction with 4 decimals, ``None`` when ``whole`` is 0."""
    return round(part / whole, 4) if whole else None


def as_decimal(value: Any) -> Decimal:
    """A SQL sum as a Decimal."""
    return Decimal(str(value or 0))

