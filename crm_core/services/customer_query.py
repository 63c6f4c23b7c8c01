"""Finding customers: by name in any script, phone in any format, e-mail, class, tag, owner, dates.

Names match on a search key that holds the folded name and its pinyin, so ``张``,
``zhang`` and ``Zhang Wei`` all find 张伟. When no name contains the query, a bounded
fuzzy pass ranks near misses (typos, homophones) with rapidfuzz.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, tzinfo
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field
from rapidfuzz import fuzz
from sqlalchemy import ColumnElement, Select, and_, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.errors import ValidationError
from crm_core.models import (
    Customer,
    CustomerIdentity,
    CustomerTag,
    IdentityKind,
    LifecycleStage,
    Organization,
)
from crm_core.normalize import (
    fold,
    has_han,
    looks_like_phone,
    phone_digits,
    pinyin_of,
    search_tokens,
    try_normalize_phone,
)
from crm_core.services.customers import CUSTOMER_LOAD_OPTIONS

SortKey = Literal[
    "relevance", "name", "-name", "created_at", "-created_at", "updated_at", "-updated_at",
    "lifetime_value", "-lifetime_value", "id", "-id",
]
FUZZY_CANDIDATES = 5000
FUZZY_MIN_SCORE = 70.0
RELEVANCE_WINDOW = 2000


class CustomerQuery(BaseModel):
    """A customer search; every given criterion must hold. Saved as a segment's filter."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    text: str | None = None
    """Free text: an e-mail, a phone number or a name, recognised by its shape."""
    name: str | None = None
    phone: str | None = None
    email: str | None = None
    organization: str | None = None
    category: str | None = None
    tier: str | None = None
    tag: str | None = None
    owner_id: int | None = None
    lifecycle: LifecycleStage | None = None
    created_from: date | datetime | None = None
    created_to: date | datetime | None = None
    include_deleted: bool = False
    sort: SortKey = "-created_at"
    page: int = Field(default=1, ge=1)
    page_size: int = Field(default=50, ge=1, le=500)


@dataclass
class CustomerPage:
    """One page of results, with the total across pages."""

    items: list[Customer]
    total: int
    page: int
    page_size: int
    fuzzy: bool = False
    """True when nothing matched exactly and these are the nearest names instead."""


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _contains(column: Any, text: str) -> ColumnElement[bool]:
    return column.like(f"%{_like_escape(text)}%", escape="\\")


def _identity_filter(kind: IdentityKind, condition: ColumnElement[bool]) -> ColumnElement[bool]:
    return exists().where(
        CustomerIdentity.customer_id == Customer.id,
        CustomerIdentity.kind == kind,
        condition,
    )


def phone_condition(text: str, region: str) -> ColumnElement[bool]:
    """Exact E.164 match when the text is a full number, else a digits-substring match."""
    e164 = try_normalize_phone(text, region)
    if e164 is not None:
        return _identity_filter(IdentityKind.PHONE, CustomerIdentity.value == e164)
    digits = phone_digits(text)
    if len(digits) < 3:
        raise ValidationError("phone", text, "type at least 3 digits")
    return _identity_filter(IdentityKind.PHONE, _contains(CustomerIdentity.value, digits))


def email_condition(text: str) -> ColumnElement[bool]:
    """Exact match on a whole address, substring match on a part (``@example.com``)."""
    folded = text.strip().lower()
    return _identity_filter(IdentityKind.EMAIL, _contains(CustomerIdentity.value, folded))


def name_condition(text: str) -> ColumnElement[bool]:
    """Every word of the query appears in the name key (characters or pinyin)."""
    tokens = search_tokens(text)
    if not tokens:
        raise ValidationError("name", text, "empty name")
    return and_(*(_contains(Customer.name_key, token) for token in tokens))


def _date_bound(value: date | datetime, *, end: bool, zone: tzinfo) -> datetime:
    """A date is a whole day in the business time zone; a naive time is taken in it too."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=zone)
    moment = time.max if end else time.min
    return datetime.combine(value, moment, tzinfo=zone)


def build_filters(
    query: CustomerQuery, *, region: str, timezone: str = "UTC"
) -> list[ColumnElement[bool]]:
    """The SQL conditions of a query, except the name, which search handles itself.

    Date bounds are whole days in ``timezone`` (the business time zone).
    """
    zone = ZoneInfo(timezone)
    conditions: list[ColumnElement[bool]] = []
    if not query.include_deleted:
        conditions.append(Customer.deleted_at.is_(None))
    if query.phone:
        conditions.append(phone_condition(query.phone, region))
    if query.email:
        conditions.append(email_condition(query.email))
    if query.organization:
        conditions.append(
            Customer.organization_id.in_(
                select(Organization.id).where(
                    _contains(func.lower(Organization.name), query.organization.lower())
                )
            )
        )
    if query.category:
        conditions.append(Customer.category_code == query.category)
    if query.tier:
        conditions.append(Customer.tier_code == query.tier)
    if query.tag:
        conditions.append(
            exists().where(CustomerTag.customer_id == Customer.id, CustomerTag.tag == query.tag)
        )
    if query.owner_id is not None:
        conditions.append(Customer.owner_agent_id == query.owner_id)
    if query.lifecycle is not None:
        conditions.append(Customer.lifecycle_stage == query.lifecycle)
    if query.created_from is not None:
        start = _date_bound(query.created_from, end=False, zone=zone)
        conditions.append(Customer.created_at >= start)
    if query.created_to is not None:
        end = _date_bound(query.created_to, end=True, zone=zone)
        conditions.append(Customer.created_at <= end)
    return conditions


def name_query_text(query: CustomerQuery) -> str | None:
    """The name part of a query: ``name`` plus free text that is not an e-mail or phone."""
    text = query.name
    if query.text and not ("@" in query.text or looks_like_phone(query.text)):
        text = f"{text} {query.text}" if text else query.text
    return text


def resolve_free_text(query: CustomerQuery) -> CustomerQuery:
    """Route free text to the e-mail or phone criterion when it looks like one."""
    if not query.text:
        return query
    if "@" in query.text:
        return query.model_copy(update={"email": query.text})
    if looks_like_phone(query.text):
        return query.model_copy(update={"phone": query.text})
    return query


_SORTS: dict[str, Any] = {
    "name": Customer.name_key,
    "created_at": Customer.created_at,
    "updated_at": Customer.updated_at,
    "lifetime_value": Customer.lifetime_value,
    "id": Customer.id,
}


def _ordered(stmt: Select[Any], sort: str) -> Select[Any]:
    key = sort.lstrip("-")
    column = _SORTS.get(key, Customer.created_at)
    if sort.startswith("-"):
        return stmt.order_by(column.desc(), Customer.id.desc())
    return stmt.order_by(column.asc(), Customer.id.asc())


def _compact_pinyin(text: str) -> str:
    return (pinyin_of(text) if has_han(text) else text).replace(" ", "")


def name_score(query: str, customer: Customer) -> float:
    """How well a customer's names match the query, 0 to 100, across scripts."""
    folded = fold(query)
    names = [fold(customer.display_name)]
    if customer.family_name or customer.given_name:
        names.append(fold(f"{customer.family_name or ''}{customer.given_name or ''}"))
    best = max(fuzz.ratio(folded, n) for n in names)
    query_pinyin = _compact_pinyin(folded)
    for name in names:
        name_pinyin = _compact_pinyin(name)
        best = max(best, fuzz.ratio(query_pinyin, name_pinyin) * 0.95)
        if folded in name:
            best = max(best, 80 + 20 * len(folded) / max(len(name), 1))
    return best


def _fuzzy_candidates(text: str) -> ColumnElement[bool] | None:
    """A cheap superset of near misses: any Chinese character, or a word's first letters.

    ``None`` when the text is too short to have near misses (a single letter).
    """
    tokens = search_tokens(text)
    conditions: list[ColumnElement[bool]] = []
    for token in tokens:
        if has_han(token):
            conditions.extend(_contains(Customer.name_key, ch) for ch in token if has_han(ch))
        elif len(token) >= 2:
            conditions.append(_contains(Customer.name_key, token[:2]))
    if not conditions:
        return None
    return or_(*conditions)


async def _page_of(
    session: AsyncSession, stmt: Select[Any], query: CustomerQuery
) -> tuple[list[Customer], int]:
    total = await session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = await session.scalars(
        _ordered(stmt, query.sort)
        .options(*CUSTOMER_LOAD_OPTIONS)
        .limit(query.page_size)
        .offset((query.page - 1) * query.page_size)
    )
    return list(rows), total


async def _ranked(
    session: AsyncSession, stmt: Select[Any], name: str, query: CustomerQuery, *, limit: int,
    min_score: float = 0.0,
) -> tuple[list[Customer], int]:
    rows = list(await session.scalars(stmt.options(*CUSTOMER_LOAD_OPTIONS).limit(limit)))
    scored = [(name_score(name, c), c) for c in rows]
    scored = [(s, c) for s, c in scored if s >= min_score]
    scored.sort(key=lambda pair: (-pair[0], pair[1].id))
    start = (query.page - 1) * query.page_size
    return [c for _, c in scored[start : start + query.page_size]], len(scored)


async def search_customers(
    session: AsyncSession,
    query: CustomerQuery | dict[str, Any],
    *,
    region: str,
    timezone: str = "UTC",
) -> CustomerPage:
    """Run a customer query: filtered, sorted and paginated, with a fuzzy fallback on names."""
    if isinstance(query, dict):
        query = CustomerQuery.model_validate(query)
    name = name_query_text(query)
    query = resolve_free_text(query)
    base = select(Customer).where(*build_filters(query, region=region, timezone=timezone))
    if not name:
        items, total = await _page_of(session, base, query)
        return CustomerPage(items, total, query.page, query.page_size)
    exact = base.where(name_condition(name))
    if query.sort == "relevance":
        items, total = await _ranked(session, exact, name, query, limit=RELEVANCE_WINDOW)
    else:
        items, total = await _page_of(session, exact, query)
    if total:
        return CustomerPage(items, total, query.page, query.page_size)
    candidates = _fuzzy_candidates(name)
    if candidates is None:  # nothing matched and the text is too short for near misses
        return CustomerPage([], 0, query.page, query.page_size)
    fuzzy = base.where(candidates).order_by(Customer.id)
    items, total = await _ranked(
        session, fuzzy, name, query, limit=FUZZY_CANDIDATES, min_score=FUZZY_MIN_SCORE
    )
    return CustomerPage(items, total, query.page, query.page_size, fuzzy=True)
