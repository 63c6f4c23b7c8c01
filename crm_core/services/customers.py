"""Customer records: create with duplicate check, read, update, lifecycle, delete, restore."""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from crm_core.errors import ConflictError, NotFoundError, StateError, ValidationError
from crm_core.models import (
    Agent,
    Channel,
    Customer,
    CustomerCategory,
    CustomerIdentity,
    CustomerTag,
    CustomerTier,
    IdentityKind,
    LifecycleStage,
    LifecycleTransition,
    Organization,
    utcnow,
)
from crm_core.models.enums import LIFECYCLE_TRANSITIONS
from crm_core.normalize import is_supported_region, name_key, normalize_email, normalize_phone
from crm_core.services import audit
from crm_core.services.organizations import get_or_create_organization

_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_LANGUAGE_ALIASES = {
    "中文": "zh-CN", "简体中文": "zh-CN", "汉语": "zh-CN", "普通话": "zh-CN", "chinese": "zh-CN",
    "繁體中文": "zh-TW", "繁体中文": "zh-TW", "粤语": "zh-HK", "英文": "en", "英语": "en",
    "english": "en", "日语": "ja", "japanese": "ja",
}
_COUNTRY_ALIASES = {
    "中国": "CN", "中华人民共和国": "CN", "china": "CN", "中国大陆": "CN", "香港": "HK",
    "hong kong": "HK", "台湾": "TW", "taiwan": "TW", "美国": "US", "usa": "US",
    "united states": "US", "英国": "GB", "uk": "GB", "united kingdom": "GB", "日本": "JP",
    "japan": "JP", "新加坡": "SG", "singapore": "SG", "德国": "DE", "germany": "DE",
}
MAX_TAG_LENGTH = 100
MAX_LIFETIME_VALUE = Decimal("1000000000000")
"""The column holds 14 digits, 2 after the point."""
CENT = Decimal("0.01")


class IdentityInput(BaseModel):
    """One handle to attach to a customer, as typed."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    kind: IdentityKind
    value: str = Field(min_length=1, max_length=320)
    label: str | None = Field(default=None, max_length=50)


class CustomerFields(BaseModel):
    """The editable facts of a customer. On update, only the fields given are changed."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    display_name: str | None = Field(default=None, max_length=200)
    given_name: str | None = Field(default=None, max_length=100)
    family_name: str | None = Field(default=None, max_length=100)
    organization_id: int | None = None
    organization_name: str | None = Field(default=None, max_length=200)
    job_title: str | None = Field(default=None, max_length=100)
    industry: str | None = Field(default=None, max_length=100)
    street: str | None = Field(default=None, max_length=300)
    city: str | None = Field(default=None, max_length=100)
    postcode: str | None = Field(default=None, max_length=20)
    province: str | None = Field(default=None, max_length=100)
    country: str | None = None
    language: str | None = None
    timezone: str | None = None
    birthday: date | None = None
    lifecycle_stage: LifecycleStage | None = None
    tier_code: str | None = None
    category_code: str | None = None
    lifetime_value: Decimal | None = None
    custom_attributes: dict[str, Any] | None = None
    owner_agent_id: int | None = None
    marketing_opt_in: dict[str, bool] | None = None
    do_not_contact: bool | None = None
    preferred_channel: Channel | None = None
    notes: str | None = None
    source: str | None = Field(default=None, max_length=100)
    emails: list[str] | None = None
    phones: list[str] | None = None
    identities: list[IdentityInput] | None = None
    """Other handles (Telegram, web chat, external ids); on update, replaces those kinds."""
    tags: list[str] | None = None


def parse_fields(data: dict[str, Any] | CustomerFields) -> CustomerFields:
    """Validate a dict into ``CustomerFields``; the first problem becomes a ValidationError."""
    if isinstance(data, CustomerFields):
        return data
    try:
        return CustomerFields.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"]) or "customer"
        raise ValidationError(name, first.get("input"), first["msg"]) from None


@dataclass
class CheckedCustomer:
    """Validated, normalized values ready to be written."""

    columns: dict[str, Any]
    identities: list[tuple[IdentityKind, str, str | None]] | None
    """``None`` when the input named no identity at all (update leaves them as they are)."""
    replaced_kinds: set[IdentityKind] = field(default_factory=set)
    tags: list[str] | None = None
    organization_name: str | None = None


@lru_cache(maxsize=1)
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def check_country(value: str) -> str:
    """An ISO 3166 alpha-2 code from a code or a common name (``中国`` → ``CN``)."""
    cleaned = value.strip()
    code = _COUNTRY_ALIASES.get(cleaned.lower(), cleaned.upper())
    if len(code) != 2 or not is_supported_region(code):
        raise ValidationError("country", value, "not an ISO 3166 two-letter country code")
    return code


def check_language(value: str) -> str:
    """A BCP 47 language tag from a tag or a common name (``中文`` → ``zh-CN``)."""
    cleaned = value.strip()
    tag = _LANGUAGE_ALIASES.get(cleaned.lower(), cleaned)
    if not _LANGUAGE.match(tag):
        raise ValidationError("language", value, "not a language tag such as zh-CN or en")
    return tag


def check_tags(tags: Iterable[str]) -> list[str]:
    """Stripped, de-duplicated, length-checked tags in their first order."""
    result: list[str] = []
    for tag in tags:
        cleaned = str(tag).strip()
        if not cleaned:
            continue
        if len(cleaned) > MAX_TAG_LENGTH:
            raise ValidationError("tags", tag, f"longer than {MAX_TAG_LENGTH} characters")
        if cleaned not in result:
            result.append(cleaned)
    return result


def derive_display_name(given: str | None, family: str | None) -> str | None:
    """``张`` + ``伟`` → ``张伟``; ``John`` + ``Smith`` → ``John Smith``."""
    if not given and not family:
        return None
    if any("\u4e00" <= ch <= "\u9fff" for ch in (family or "") + (given or "")):
        return f"{family or ''}{given or ''}"
    return " ".join(p for p in (given, family) if p)


_PLAIN_COLUMNS = (
    "given_name", "family_name", "organization_id", "job_title", "industry", "street", "city",
    "postcode", "province", "custom_attributes", "owner_agent_id", "do_not_contact",
    "preferred_channel", "notes", "source", "tier_code", "category_code",
)


def check_customer(
    fields: CustomerFields, *, region: str, creating: bool, today: date | None = None
) -> CheckedCustomer:
    """Validate and normalize every field that was given; pure, touches no database."""
    given = fields.model_fields_set
    columns: dict[str, Any] = {n: getattr(fields, n) for n in _PLAIN_COLUMNS if n in given}
    for name in ("tier_code", "category_code"):
        if columns.get(name) == "":
            columns[name] = None
    if "display_name" in given or creating:
        display = fields.display_name or derive_display_name(fields.given_name, fields.family_name)
        if not display:
            raise ValidationError("display_name", fields.display_name, "a customer needs a name")
        columns["display_name"] = display
    if "country" in given:
        columns["country"] = check_country(fields.country) if fields.country else None
    if "language" in given:
        columns["language"] = check_language(fields.language) if fields.language else None
    if "timezone" in given:
        if fields.timezone and fields.timezone not in _timezones():
            raise ValidationError("timezone", fields.timezone, "not an IANA time zone name")
        columns["timezone"] = fields.timezone or None
    if "birthday" in given:
        today = today or date.today()
        if fields.birthday and not (date(1900, 1, 1) <= fields.birthday <= today):
            raise ValidationError(
                "birthday", fields.birthday.isoformat(), "must be between 1900 and today"
            )
        columns["birthday"] = fields.birthday
    if "lifetime_value" in given:
        value = fields.lifetime_value or Decimal("0")
        if value < 0:
            raise ValidationError("lifetime_value", str(value), "must not be negative")
        # the column is NUMERIC(14, 2): keep cents, so the value read back compares equal
        cents = value
        if value < MAX_LIFETIME_VALUE:
            cents = value.quantize(CENT, rounding=ROUND_HALF_UP)
        if cents >= MAX_LIFETIME_VALUE:
            raise ValidationError(
                "lifetime_value", str(value), f"must be less than {MAX_LIFETIME_VALUE:,}"
            )
        columns["lifetime_value"] = cents
    if "marketing_opt_in" in given:
        opt_in = fields.marketing_opt_in or {}
        for channel in opt_in:
            if channel not in {c.value for c in Channel}:
                raise ValidationError("marketing_opt_in", channel, "not a channel")
        columns["marketing_opt_in"] = dict(opt_in)
    if "custom_attributes" in given:
        columns["custom_attributes"] = dict(fields.custom_attributes or {})
    if "do_not_contact" in given:
        columns["do_not_contact"] = bool(fields.do_not_contact)
    if "lifecycle_stage" in given and fields.lifecycle_stage is not None:
        columns["lifecycle_stage"] = fields.lifecycle_stage

    identities: list[tuple[IdentityKind, str, str | None]] | None = None
    replaced: set[IdentityKind] = set()
    if fields.emails is not None:
        replaced.add(IdentityKind.EMAIL)
        identities = [(IdentityKind.EMAIL, normalize_email(e), None) for e in fields.emails if e]
    if fields.phones is not None:
        replaced.add(IdentityKind.PHONE)
        identities = (identities or []) + [
            (IdentityKind.PHONE, normalize_phone(p, region), None) for p in fields.phones if p
        ]
    if fields.identities is not None:
        identities = identities or []
        for ident in fields.identities:
            replaced.add(ident.kind)
            if ident.kind == IdentityKind.EMAIL:
                identities.append((ident.kind, normalize_email(ident.value), ident.label))
            elif ident.kind == IdentityKind.PHONE:
                identities.append((ident.kind, normalize_phone(ident.value, region), ident.label))
            else:
                identities.append((ident.kind, ident.value, ident.label))
    if identities is not None:
        seen: set[tuple[IdentityKind, str]] = set()
        unique = []
        for kind, value, label in identities:
            if (kind, value) not in seen:
                seen.add((kind, value))
                unique.append((kind, value, label))
        identities = unique
    return CheckedCustomer(
        columns=columns,
        identities=identities,
        replaced_kinds=replaced,
        tags=check_tags(fields.tags) if fields.tags is not None else None,
        organization_name=fields.organization_name if "organization_name" in given else None,
    )


async def find_identity_owners(
    session: AsyncSession, identities: Sequence[tuple[IdentityKind, str]]
) -> dict[tuple[IdentityKind, str], tuple[int, str, bool]]:
    """Which customer already holds each (kind, value): id, name and whether deleted."""
    if not identities:
        return {}
    wanted = set(identities)
    by_kind: dict[IdentityKind, set[str]] = {}
    for kind, value in wanted:
        by_kind.setdefault(kind, set()).add(value)
    # One (kind, value IN …) term per kind, so the unique (kind, value) index serves it.
    rows = await session.execute(
        select(
            CustomerIdentity.kind,
            CustomerIdentity.value,
            Customer.id,
            Customer.display_name,
            Customer.deleted_at,
        )
        .join(Customer, Customer.id == CustomerIdentity.customer_id)
        .where(
            or_(
                *(
                    and_(CustomerIdentity.kind == kind, CustomerIdentity.value.in_(values))
                    for kind, values in by_kind.items()
                )
            )
        )
    )
    return {
        (kind, value): (cid, name, deleted is not None)
        for kind, value, cid, name, deleted in rows
        if (kind, value) in wanted
    }


async def _check_references(session: AsyncSession, columns: dict[str, Any]) -> None:
    checks = (
        ("tier_code", CustomerTier, "no such tier"),
        ("category_code", CustomerCategory, "no such category"),
        ("owner_agent_id", Agent, "no such agent"),
        ("organization_id", Organization, "no such organization"),
    )
    for name, model, reason in checks:
        value = columns.get(name)
        if value is not None and await session.get(model, value) is None:
            raise ValidationError(name, value, reason)


async def _check_no_conflicts(
    session: AsyncSession,
    identities: Sequence[tuple[IdentityKind, str, str | None]],
    own_id: int | None,
) -> None:
    owners = await find_identity_owners(session, [(k, v) for k, v, _ in identities])
    for (kind, value), (cid, name, deleted) in owners.items():
        if cid != own_id:
            raise ConflictError(kind.value, value, cid, f"{name}, deleted" if deleted else name)


CUSTOMER_LOAD_OPTIONS = (
    selectinload(Customer.identities),
    selectinload(Customer.tag_rows),
    selectinload(Customer.organization),
)


async def get_customer(
    session: AsyncSession, customer_id: int, *, include_deleted: bool = False
) -> Customer:
    """A customer with identities, tags and organization loaded; NotFoundError otherwise."""
    customer = await session.scalar(
        select(Customer)
        .where(Customer.id == customer_id)
        .options(*CUSTOMER_LOAD_OPTIONS)
        .execution_options(populate_existing=True)
    )
    if customer is None or (customer.deleted_at is not None and not include_deleted):
        raise NotFoundError("customer", customer_id)
    return customer


def snapshot(customer: Customer) -> dict[str, Any]:
    """Every stored fact of a loaded customer, JSON-ready (for audit and merge records)."""
    data = {
        column.key: getattr(customer, column.key)
        for column in Customer.__table__.columns
        if column.key not in {"name_key", "created_at", "updated_at"}
    }
    data["identities"] = sorted(f"{i.kind.value}:{i.value}" for i in customer.identities)
    data["tags"] = customer.tags
    return audit.jsonable(data)


def _apply_identities(
    customer: Customer,
    identities: list[tuple[IdentityKind, str, str | None]],
    replaced: set[IdentityKind],
) -> None:
    wanted = {(k, v): label for k, v, label in identities}
    for ident in list(customer.identities):
        if ident.kind in replaced and (ident.kind, ident.value) not in wanted:
            customer.identities.remove(ident)
    have = {(i.kind, i.value) for i in customer.identities}
    for (kind, value), label in wanted.items():
        if (kind, value) not in have:
            customer.identities.append(CustomerIdentity(kind=kind, value=value, label=label))


def _apply_tags(customer: Customer, tags: list[str]) -> None:
    wanted = set(tags)
    for row in list(customer.tag_rows):
        if row.tag not in wanted:
            customer.tag_rows.remove(row)
    have = set(customer.tags)
    for tag in tags:
        if tag not in have:
            customer.tag_rows.append(CustomerTag(tag=tag))


def _record_transition(
    session: AsyncSession,
    customer: Customer,
    to_stage: LifecycleStage,
    *,
    from_stage: LifecycleStage | None,
    reason: str | None,
    actor: str,
) -> None:
    session.add(
        LifecycleTransition(
            customer_id=customer.id,
            from_stage=from_stage,
            to_stage=to_stage,
            reason=reason,
            actor=actor,
        )
    )


async def create_customer(
    session: AsyncSession,
    data: dict[str, Any] | CustomerFields,
    *,
    actor: str,
    region: str,
) -> Customer:
    """Create a customer after validation and a duplicate check on every identity."""
    fields = parse_fields(data)
    checked = check_customer(fields, region=region, creating=True)
    await _check_references(session, checked.columns)
    identities = checked.identities or []
    await _check_no_conflicts(session, identities, None)
    columns = dict(checked.columns)
    if checked.organization_name:
        org = await get_or_create_organization(session, checked.organization_name, actor=actor)
        columns["organization_id"] = org.id
    stage = columns.pop("lifecycle_stage", LifecycleStage.LEAD)
    customer = Customer(**columns, lifecycle_stage=stage, identities=[], tag_rows=[])
    customer.name_key = name_key(customer.display_name, customer.given_name, customer.family_name)
    _apply_identities(customer, identities, set())
    _apply_tags(customer, checked.tags or [])
    session.add(customer)
    await session.flush()
    _record_transition(
        session, customer, stage, from_stage=None, reason="created", actor=actor
    )
    audit.record(
        session,
        actor=actor,
        action="create",
        entity_type="customer",
        entity_id=customer.id,
        after=snapshot(customer),
    )
    return customer


def check_transition(current: LifecycleStage, target: LifecycleStage) -> None:
    """Raise StateError unless the lifecycle may move from ``current`` to ``target``."""
    if target != current and target not in LIFECYCLE_TRANSITIONS[current]:
        allowed = ", ".join(sorted(s.value for s in LIFECYCLE_TRANSITIONS[current]))
        raise StateError(
            f"lifecycle cannot move from {current.value} to {target.value} (allowed: {allowed})"
        )


async def update_customer(
    session: AsyncSession,
    customer_id: int,
    data: dict[str, Any] | CustomerFields,
    *,
    actor: str,
    region: str,
    reason: str | None = None,
) -> Customer:
    """Change the given fields, audited with the values before and after."""
    fields = parse_fields(data)
    checked = check_customer(fields, region=region, creating=False)
    customer = await get_customer(session, customer_id)
    if customer.erased_at is not None:
        raise StateError(f"customer #{customer_id} was erased and cannot be changed")
    await _check_references(session, checked.columns)
    if checked.identities is not None:
        await _check_no_conflicts(session, checked.identities, customer.id)
    before = snapshot(customer)
    columns = dict(checked.columns)
    if checked.organization_name:
        org = await get_or_create_organization(session, checked.organization_name, actor=actor)
        columns["organization_id"] = org.id
    elif checked.organization_name is not None:  # "" clears it, as "" does for tier and country
        columns["organization_id"] = None
    new_stage = columns.pop("lifecycle_stage", None)
    if new_stage is not None and new_stage != customer.lifecycle_stage:
        check_transition(customer.lifecycle_stage, new_stage)
        _record_transition(
            session,
            customer,
            new_stage,
            from_stage=customer.lifecycle_stage,
            reason=reason,
            actor=actor,
        )
        customer.lifecycle_stage = new_stage
    for name, value in columns.items():
        setattr(customer, name, value)
    customer.name_key = name_key(customer.display_name, customer.given_name, customer.family_name)
    if checked.identities is not None:
        _apply_identities(customer, checked.identities, checked.replaced_kinds)
    if checked.tags is not None:
        _apply_tags(customer, checked.tags)
    customer.updated_at = utcnow()
    await session.flush()
    old, new = audit.diff(before, snapshot(customer))
    if new:
        audit.record(
            session,
            actor=actor,
            action="update",
            entity_type="customer",
            entity_id=customer.id,
            before=old,
            after=new,
        )
    return customer


async def change_lifecycle(
    session: AsyncSession,
    customer_id: int,
    stage: LifecycleStage,
    *,
    actor: str,
    reason: str | None = None,
) -> Customer:
    """Move a customer to another lifecycle stage, keeping the transition with its reason."""
    customer = await get_customer(session, customer_id)
    if customer.erased_at is not None:
        raise StateError(f"customer #{customer_id} was erased")
    if stage == customer.lifecycle_stage:
        return customer
    check_transition(customer.lifecycle_stage, stage)
    before = customer.lifecycle_stage
    _record_transition(session, customer, stage, from_stage=before, reason=reason, actor=actor)
    customer.lifecycle_stage = stage
    audit.record(
        session,
        actor=actor,
        action="lifecycle",
        entity_type="customer",
        entity_id=customer.id,
        before={"lifecycle_stage": before.value},
        after={"lifecycle_stage": stage.value, "reason": reason},
    )
    await session.flush()
    return customer


async def lifecycle_history(session: AsyncSession, customer_id: int) -> list[LifecycleTransition]:
    """Every lifecycle move of a customer, oldest first."""
    rows = await session.scalars(
        select(LifecycleTransition)
        .where(LifecycleTransition.customer_id == customer_id)
        .order_by(LifecycleTransition.id)
    )
    return list(rows)


async def delete_customer(session: AsyncSession, customer_id: int, *, actor: str) -> Customer:
    """Soft-delete: the record disappears from queries and can be restored."""
    customer = await get_customer(session, customer_id)
    customer.deleted_at = utcnow()
    audit.record(
        session, actor=actor, action="delete", entity_type="customer", entity_id=customer.id,
        before={"deleted_at": None}, after={"deleted_at": customer.deleted_at},
    )
    await session.flush()
    return customer


async def restore_customer(session: AsyncSession, customer_id: int, *, actor: str) -> Customer:
    """Undo a soft delete; erased and merged-away customers cannot come back."""
    customer = await get_customer(session, customer_id, include_deleted=True)
    if customer.erased_at is not None:
        raise StateError(f"customer #{customer_id} was erased and cannot be restored")
    if customer.merged_into_id is not None:
        raise StateError(
            f"customer #{customer_id} was merged into #{customer.merged_into_id}; "
            "open that record instead"
        )
    if customer.deleted_at is None:
        return customer
    before = customer.deleted_at
    customer.deleted_at = None
    audit.record(
        session, actor=actor, action="restore", entity_type="customer", entity_id=customer.id,
        before={"deleted_at": before}, after={"deleted_at": None},
    )
    await session.flush()
    return customer
