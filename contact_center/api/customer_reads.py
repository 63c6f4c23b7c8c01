"""Customers as API views, read as plain rows: three queries (customers, identities, tags)
and no ORM objects, whose building was the main cost of ``GET /customers``."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from contact_center.api.models import CustomerOut, IdentityOut
from crm_core.models import Customer, CustomerIdentity, CustomerTag

_FIELDS = tuple(n for n in CustomerOut.model_fields if n not in {"tags", "identities"})
# Statements built once (an IN with an expanding parameter): building them per call cost
# a coercion per column and per id, and a cache-key entry per id.
_CUSTOMERS = select(*(getattr(Customer, name) for name in _FIELDS)).order_by(
    Customer.id.desc())
_IDENTITIES = (
    select(CustomerIdentity.customer_id, CustomerIdentity.id, CustomerIdentity.kind,
           CustomerIdentity.value, CustomerIdentity.label, CustomerIdentity.verified)
    .where(CustomerIdentity.customer_id.in_(bindparam("ids", expanding=True)))
    .order_by(CustomerIdentity.id))
_TAGS = (select(CustomerTag.customer_id, CustomerTag.tag)
         .where(CustomerTag.customer_id.in_(bindparam("ids", expanding=True)))
         .order_by(CustomerTag.tag))


async def read_customers(session: AsyncSession, conditions: Sequence[ColumnElement[bool]],
                         *, limit: int) -> list[CustomerOut]:
    """Up to ``limit`` customers matching ``conditions``, newest first."""
    rows = (await session.execute(_CUSTOMERS.where(*conditions).limit(limit))).all()
    if not rows:
        return []
    ids = [row.id for row in rows]
    identities: dict[int, list[IdentityOut]] = defaultdict(list)
    for row in await session.execute(_IDENTITIES, {"ids": ids}):
        identities[row.customer_id].append(IdentityOut(
            id=row.id, kind=row.kind, value=row.value, label=row.label,
            verified=bool(row.verified)))
    tags: dict[int, list[str]] = defaultdict(list)
    for customer_id, tag in await session.execute(_TAGS, {"ids": ids}):
        tags[customer_id].append(tag)
    return [_out(row._asdict(), identities[row.id], tags[row.id]) for row in rows]


def _out(values: dict[str, Any], identities: list[IdentityOut], tags: list[str]) -> CustomerOut:
    return CustomerOut(**values, tags=tags, identities=identities)
