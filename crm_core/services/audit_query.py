"""Reading the audit log: entries by actor, action, record and date range, newest first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.errors import ValidationError
from crm_core.models import AuditLog


class AuditQuery(BaseModel):
    """Filters of the audit log viewer; every given one must hold."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    actor: str | None = Field(default=None, max_length=100)
    """Part of the actor (``admin`` finds ``agent:admin``), ignoring case."""
    action: str | None = Field(default=None, max_length=50)
    entity_type: str | None = Field(default=None, max_length=50)
    entity_id: str | None = Field(default=None, max_length=50)
    date_from: date | None = None
    date_to: date | None = None
    page: int = Field(default=1, ge=1)
    page_size: int = Field(default=50, ge=1, le=500)


@dataclass
class AuditPage:
    """One page of entries and the total across pages."""

    items: list[AuditLog]
    total: int
    page: int
    page_size: int


def audit_conditions(query: AuditQuery, *, timezone: str = "UTC") -> list[ColumnElement[bool]]:
    """The SQL conditions of a query; dates are whole days in ``timezone``."""
    zone = ZoneInfo(timezone)
    conditions: list[ColumnElement[bool]] = []
    if query.date_from and query.date_to and query.date_from > query.date_to:
        raise ValidationError("date_to", query.date_to.isoformat(), "before the start date")
    if query.actor:  # "admin" finds "agent:admin" too
        escaped = query.actor.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conditions.append(AuditLog.actor.ilike(f"%{escaped}%", escape="\\"))
    if query.action:
        conditions.append(AuditLog.action == query.action)
    if query.entity_type:
        conditions.append(AuditLog.entity_type == query.entity_type)
    if query.entity_id:
        conditions.append(AuditLog.entity_id == query.entity_id)
    if query.date_from:
        conditions.append(AuditLog.at >= datetime.combine(query.date_from, time.min, zone))
    if query.date_to:
        conditions.append(AuditLog.at <= datetime.combine(query.date_to, time.max, zone))
    return conditions


async def search_audit(
    session: AsyncSession, query: AuditQuery, *, timezone: str = "UTC"
) -> AuditPage:
    """One page of matching entries, newest first."""
    conditions = audit_conditions(query, timezone=timezone)
    total = await session.scalar(
        select(func.count()).select_from(AuditLog).where(*conditions)) or 0
    rows = await session.scalars(
        select(AuditLog).where(*conditions).order_by(AuditLog.id.desc())
        .limit(query.page_size).offset((query.page - 1) * query.page_size))
    return AuditPage(list(rows), int(total), query.page, query.page_size)


async def audit_vocabulary(session: AsyncSession) -> dict[str, list[str]]:
    """The actions and entity types that occur, for the viewer's choices."""
    actions = await session.scalars(
        select(AuditLog.action).distinct().order_by(AuditLog.action))
    types = await session.scalars(
        select(AuditLog.entity_type).distinct().order_by(AuditLog.entity_type))
    return {"actions": list(actions), "entity_types": list(types)}
