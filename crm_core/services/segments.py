"""Segments: saved customer filters (a name and a ``CustomerQuery``) and their members.

A segment stores the criteria of a customer search, not a list of customers: its
members are whoever matches the criteria now. Creating, changing and deleting a segment
is audited (entity type ``segment``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.errors import NotFoundError, ValidationError
from crm_core.models import Segment, utcnow
from crm_core.services import audit
from crm_core.services.customer_query import CustomerPage, CustomerQuery, search_customers

ENTITY = "segment"
MAX_NAME_LENGTH = 200
_NOT_SAVED = frozenset({"page", "page_size"})
"""Paging belongs to a view of the members, not to the segment."""


def check_filter(data: Mapping[str, Any] | CustomerQuery) -> dict[str, Any]:
    """A filter validated as a customer query, kept as JSON without defaults or paging."""
    try:
        query = data if isinstance(data, CustomerQuery) else CustomerQuery.model_validate(
            dict(data))
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"]) or "filter"
        raise ValidationError(name, first.get("input"), first["msg"]) from None
    dumped = query.model_dump(mode="json", exclude_defaults=True, exclude_none=True)
    return {k: v for k, v in dumped.items() if k not in _NOT_SAVED}


def _check_name(name: str) -> str:
    cleaned = (name or "").strip()
    if not cleaned:
        raise ValidationError("name", name, "a segment needs a name")
    if len(cleaned) > MAX_NAME_LENGTH:
        raise ValidationError("name", name, f"longer than {MAX_NAME_LENGTH} characters")
    return cleaned


def _snapshot(segment: Segment) -> dict[str, Any]:
    return {"name": segment.name, "description": segment.description,
            "filter": dict(segment.filter or {})}


async def _name_taken(session: AsyncSession, name: str, own_id: int | None) -> bool:
    found = await session.scalar(
        select(Segment.id).where(func.lower(Segment.name) == name.lower()))
    return found is not None and found != own_id


async def list_segments(session: AsyncSession) -> list[Segment]:
    """Every segment, by name."""
    return list(await session.scalars(select(Segment).order_by(Segment.name, Segment.id)))


async def get_segment(session: AsyncSession, segment_id: int) -> Segment:
    """A segment by id; NotFoundError otherwise."""
    segment = await session.get(Segment, segment_id)
    if segment is None:
        raise NotFoundError("segment", segment_id)
    return segment


async def create_segment(
    session: AsyncSession,
    *,
    name: str,
    filter: Mapping[str, Any] | CustomerQuery,
    actor: str,
    description: str | None = None,
    owner_id: int | None = None,
) -> Segment:
    """Save a filter under a name (names are unique, ignoring case)."""
    cleaned = _check_name(name)
    criteria = check_filter(filter)
    if await _name_taken(session, cleaned, None):
        raise ValidationError("name", cleaned, "a segment with this name exists")
    segment = Segment(name=cleaned, description=(description or "").strip() or None,
                      filter=criteria, owner_id=owner_id)
    session.add(segment)
    await session.flush()
    audit.record(session, actor=actor, action="create", entity_type=ENTITY,
                 entity_id=segment.id, after=_snapshot(segment))
    return segment


async def update_segment(
    session: AsyncSession,
    segment_id: int,
    *,
    name: str,
    filter: Mapping[str, Any] | CustomerQuery,
    actor: str,
    description: str | None = None,
) -> Segment:
    """Rename a segment or change its filter; audited when something changed."""
    segment = await get_segment(session, segment_id)
    cleaned = _check_name(name)
    criteria = check_filter(filter)
    if await _name_taken(session, cleaned, segment.id):
        raise ValidationError("name", cleaned, "a segment with this name exists")
    before = _snapshot(segment)
    segment.name = cleaned
    segment.description = (description or "").strip() or None
    segment.filter = criteria
    old, new = audit.diff(before, _snapshot(segment))
    if new:
        segment.updated_at = utcnow()
        await session.flush()
        audit.record(session, actor=actor, action="update", entity_type=ENTITY,
                     entity_id=segment.id, before=old, after=new)
    return segment


async def delete_segment(session: AsyncSession, segment_id: int, *, actor: str) -> None:
    """Delete a segment (its customers are untouched)."""
    segment = await get_segment(session, segment_id)
    before = _snapshot(segment)
    await session.delete(segment)
    await session.flush()
    audit.record(session, actor=actor, action="delete", entity_type=ENTITY,
                 entity_id=segment_id, before=before)


def segment_query(segment: Segment, *, page: int = 1, page_size: int = 50) -> CustomerQuery:
    """The customer query of a segment, for one page of its members."""
    return CustomerQuery.model_validate({**(segment.filter or {}), "page": page,
                                         "page_size": page_size})


async def segment_members(
    session: AsyncSession,
    segment: Segment,
    *,
    region: str,
    timezone: str = "UTC",
    page: int = 1,
    page_size: int = 50,
) -> CustomerPage:
    """One page of the customers matching the segment's filter now."""
    return await search_customers(session, segment_query(segment, page=page, page_size=page_size),
                                  region=region, timezone=timezone)
