"""Organizations: the companies whose people are our customers."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.errors import ValidationError
from crm_core.models import Organization
from crm_core.services import audit


async def find_organization(session: AsyncSession, name: str) -> Organization | None:
    """The live organization of exactly this name (ignoring case and outer spaces)."""
    cleaned = name.strip()
    return await session.scalar(
        select(Organization)
        .where(func.lower(Organization.name) == cleaned.lower(), Organization.deleted_at.is_(None))
        .order_by(Organization.id)
        .limit(1)
    )


async def get_or_create_organization(
    session: AsyncSession, name: str, *, actor: str, industry: str | None = None
) -> Organization:
    """Find an organization by name, creating (and auditing) it when there is none."""
    cleaned = name.strip()
    if not cleaned:
        raise ValidationError("organization", name, "empty name")
    if len(cleaned) > 200:
        raise ValidationError("organization", name, "longer than 200 characters")
    existing = await find_organization(session, cleaned)
    if existing is not None:
        return existing
    org = Organization(name=cleaned, industry=industry)
    session.add(org)
    await session.flush()
    audit.record(
        session,
        actor=actor,
        action="create",
        entity_type="organization",
        entity_id=org.id,
        after={"name": org.name, "industry": industry},
    )
    return org
