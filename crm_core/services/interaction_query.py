"""Communication records: interactions across customers by date, channel, agent, customer
and keyword, paged for a screen or streamed to CSV.

Keywords are found in subjects and texts. On SQLite a term of three characters or more
uses the FTS5 trigram index ``interactions_fts`` (migration 0008), which finds any
substring, Chinese without word breaks included; shorter terms (``退款``) and PostgreSQL
use ``LIKE`` (served there by the ``pg_trgm`` indexes of the same migration). Every word
of the keyword must appear. Dates are whole days in the business time zone.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any, BinaryIO, Final
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    column,
    func,
    literal_column,
    or_,
    select,
    table,
)
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.errors import ValidationError
from crm_core.models import (
    Agent,
    Channel,
    Customer,
    Direction,
    Interaction,
    InteractionKind,
)
from crm_core.services.customer_query import name_condition

FTS_MIN_CHARS: Final = 3
"""The trigram index needs at least three characters; shorter terms use LIKE."""
EXPORT_BATCH: Final = 1000
_FTS = table("interactions_fts", column("rowid"))
"""The FTS5 trigram index of migration 0008 (SQLite only)."""
EXPORT_COLUMNS: Final = (
    "id", "occurred_at", "channel", "direction", "kind", "customer_id", "customer",
    "agent", "conversation_id", "subject", "text",
)
EXPORT_HEADERS_ZH: Final = (
    "编号", "时间", "渠道", "方向", "类型", "客户编号", "客户", "坐席", "会话编号", "主题", "内容",
)


class RecordQuery(BaseModel):
    """A communication records query; every given criterion must hold."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    date_from: date | None = None
    date_to: date | None = None
    channel: Channel | None = None
    direction: Direction | None = None
    agent_id: int | None = None
    customer_id: int | None = None
    customer: str | None = Field(default=None, max_length=200)
    """A customer's name, in characters or pinyin."""
    keyword: str | None = Field(default=None, max_length=200)
    include_notes: bool = True
    page: int = Field(default=1, ge=1)
    page_size: int = Field(default=50, ge=1, le=500)


@dataclass
class RecordRow:
    """One interaction with the names a list shows."""

    interaction: Interaction
    customer_name: str
    agent_name: str | None


@dataclass
class RecordPage:
    """One page of records and the total across pages."""

    items: list[RecordRow]
    total: int
    page: int
    page_size: int


def _like(column: Any, term: str) -> ColumnElement[bool]:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.ilike(f"%{escaped}%", escape="\\")


def keyword_condition(keyword: str, dialect: str) -> ColumnElement[bool]:
    """Every word of ``keyword`` in the subject or text (FTS on SQLite for 3+ characters)."""
    words = [w for w in keyword.split() if w]
    if not words:
        raise ValidationError("keyword", keyword, "empty keyword")
    conditions: list[ColumnElement[bool]] = []
    long_words = [w for w in words if len(w) >= FTS_MIN_CHARS] if dialect == "sqlite" else []
    if long_words:
        match = " AND ".join('"' + w.replace('"', '""') + '"' for w in long_words)
        conditions.append(Interaction.id.in_(
            select(_FTS.c.rowid).where(literal_column("interactions_fts").op("MATCH")(match))))
    for word in words:
        if word not in long_words:
            conditions.append(or_(_like(Interaction.subject, word),
                                  _like(Interaction.text, word)))
    return and_(*conditions)


def _bound(day: date, zone: ZoneInfo, *, end: bool) -> datetime:
    return datetime.combine(day, time.max if end else time.min, tzinfo=zone)


def record_conditions(
    query: RecordQuery, *, dialect: str, timezone: str = "UTC"
) -> list[ColumnElement[bool]]:
    """The SQL conditions of a query (over ``Interaction`` joined with ``Customer``)."""
    zone = ZoneInfo(timezone)
    conditions: list[ColumnElement[bool]] = []
    if query.date_from and query.date_to and query.date_from > query.date_to:
        raise ValidationError("date_to", query.date_to.isoformat(), "before the start date")
    if query.date_from:
        conditions.append(Interaction.occurred_at >= _bound(query.date_from, zone, end=False))
    if query.date_to:
        conditions.append(Interaction.occurred_at <= _bound(query.date_to, zone, end=True))
    if query.channel:
        conditions.append(Interaction.channel == query.channel)
    if query.direction:
        conditions.append(Interaction.direction == query.direction)
    if query.agent_id is not None:
        conditions.append(Interaction.agent_id == query.agent_id)
    if query.customer_id is not None:
        conditions.append(Interaction.customer_id == query.customer_id)
    if query.customer:
        conditions.append(name_condition(query.customer))
    if query.keyword:
        conditions.append(keyword_condition(query.keyword, dialect))
    if not query.include_notes:
        conditions.append(Interaction.kind != InteractionKind.NOTE)
    conditions.append(Interaction.kind != InteractionKind.SYSTEM)
    return conditions


def _base(conditions: Sequence[ColumnElement[bool]]) -> Select[Any]:
    return (
        select(Interaction, Customer.display_name, Agent.display_name)
        .join(Customer, Customer.id == Interaction.customer_id)
        .outerjoin(Agent, Agent.id == Interaction.agent_id)
        .where(*conditions)
    )


async def search_records(
    session: AsyncSession,
    query: RecordQuery,
    *,
    timezone: str = "UTC",
    extra: Sequence[ColumnElement[bool]] = (),
) -> RecordPage:
    """One page of matching interactions, newest first. ``extra`` narrows further (e.g.
    to what the asking agent may see)."""
    dialect = session.get_bind().dialect.name
    conditions = [*record_conditions(query, dialect=dialect, timezone=timezone), *extra]
    total = await session.scalar(
        select(func.count()).select_from(
            select(Interaction.id)
            .join(Customer, Customer.id == Interaction.customer_id)
            .where(*conditions).subquery())) or 0
    rows = await session.execute(
        _base(conditions)
        .order_by(Interaction.occurred_at.desc(), Interaction.id.desc())
        .limit(query.page_size)
        .offset((query.page - 1) * query.page_size))
    items = [RecordRow(interaction, customer, agent) for interaction, customer, agent in rows]
    return RecordPage(items, int(total), query.page, query.page_size)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if hasattr(value, "value"):
        return str(value.value)
    return str(value)


async def export_records(
    session: AsyncSession,
    sink: BinaryIO,
    query: RecordQuery,
    *,
    timezone: str = "UTC",
    headers: str = "en",
    encoding: str = "utf-8-sig",
    extra: Sequence[ColumnElement[bool]] = (),
    batch_size: int = EXPORT_BATCH,
) -> int:
    """Write every matching interaction (newest first, by keyset batches) to ``sink`` as
    CSV; returns the number of rows. ``encoding`` gbk writes ``?`` for what GBK lacks."""
    if headers not in ("en", "zh"):
        raise ValidationError("headers", headers, "expected en or zh")
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise ValidationError("encoding", encoding, "unknown encoding") from None
    zone = ZoneInfo(timezone)
    dialect = session.get_bind().dialect.name
    conditions = [*record_conditions(query, dialect=dialect, timezone=timezone), *extra]
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> None:
        data = buffer.getvalue().encode("utf-8" if codec == "utf-8-sig" else encoding,
                                        errors="replace")
        buffer.seek(0)
        buffer.truncate()
        sink.write(data)

    if codec == "utf-8-sig":
        sink.write(codecs.BOM_UTF8)
    writer.writerow(EXPORT_HEADERS_ZH if headers == "zh" else EXPORT_COLUMNS)
    written = 0
    last: tuple[datetime, int] | None = None
    while True:
        stmt = _base(conditions).order_by(Interaction.occurred_at.desc(),
                                          Interaction.id.desc()).limit(batch_size)
        if last is not None:
            stmt = stmt.where(or_(Interaction.occurred_at < last[0],
                                  and_(Interaction.occurred_at == last[0],
                                       Interaction.id < last[1])))
        rows = (await session.execute(stmt)).all()
        for interaction, customer, agent in rows:
            writer.writerow([
                interaction.id, interaction.occurred_at.astimezone(zone).isoformat(
                    timespec="seconds"), _cell(interaction.channel),
                _cell(interaction.direction), _cell(interaction.kind), interaction.customer_id,
                customer, agent or "", _cell(interaction.conversation_id),
                interaction.subject or "", interaction.text or "",
            ])
        written += len(rows)
        flush()
        if len(rows) < batch_size:
            break
        last = (rows[-1][0].occurred_at, rows[-1][0].id)
    return written
