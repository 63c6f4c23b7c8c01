"""The customers area: list and search, create, edit, delete, merge, CSV import and export,
categories and tiers, segments, and the communication records query.

Who may do what (server-side, whatever the page shows):

- everybody: search the customers they may see (``policy.customer_filter``: agents their
  own customers and those of their conversations, deals and care tasks; supervisors and
  admins all),
  create customers (an agent becomes the owner), edit the ones they see, read the code
  tables and query the communication records of conversations they may see;
- supervisors and admins: delete, restore, merge, import, export, edit categories and
  tiers, and keep segments.

Every change goes through ``crm_core`` services, which audit it with the agent's login.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tempfile
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pydantic
import structlog
from aiohttp import web
from aiohttp.web_request import FileField
from multidict import MultiDictProxy
from sqlalchemy import (
    ColumnElement,
    Select,
    func,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession

from contact_center.app import ENGINE_KEY
from contact_center.web.areas import (
    Pager,
    business_zone,
    conversation_url,
    customer_url,
    error_message,
    int_value,
    local_time,
    not_found,
    page_number,
    pretty,
    settings_of,
    stream_csv,
    text_value,
)
from contact_center.web.auth import (
    DATABASE,
    PREFIX,
    context,
    current_agent,
    forbidden,
    requires,
)
from contact_center.web.customer360 import customer_visible
from contact_center.web.forms import actor_of, safe_next, with_notice
from contact_center.web.policy import conversation_filter, customer_filter, is_supervisor
from contact_center.web.render import page
from crm_core.errors import CrmError, NotFoundError, ValidationError
from crm_core.models import (
    Agent,
    AgentRole,
    AuditLog,
    Channel,
    Conversation,
    Customer,
    CustomerCategory,
    CustomerTier,
    Direction,
    DuplicateSuggestion,
    Interaction,
    LifecycleStage,
)
from crm_core.services import audit
from crm_core.services import classification as classes
from crm_core.services import segments as segment_service
from crm_core.services.csv_columns import split_list, split_phones, split_tags
from crm_core.services.customer_query import (
    CustomerPage,
    CustomerQuery,
    name_query_text,
    search_customers,
)
from crm_core.services.customers import (
    CUSTOMER_LOAD_OPTIONS,
    create_customer,
    delete_customer,
    get_customer,
    restore_customer,
    update_customer,
)
from crm_core.services.interaction_query import RecordQuery, export_records, search_records
from crm_core.services.merge import merge_customers
from routing.events import (
    CUSTOMER_CREATED,
    CUSTOMER_DELETED,
    CUSTOMER_MERGED,
    CUSTOMER_UPDATED,
    Event,
    changing,
)

log = structlog.get_logger(__name__)

AREA = f"{PREFIX}/customers"
PAGE_SIZES = (25, 50, 100)
MAX_SHOWN_IMPORT_ERRORS = 500
FUZZY_WINDOW = 500
"""How many near misses an agent's fuzzy search looks through before narrowing."""
EXPORT_ENCODINGS = ("utf-8-sig", "gbk")
IMPORT_ENCODINGS = ("", "utf-8", "gbk")
SUPERVISORS = (AgentRole.SUPERVISOR, AgentRole.ADMIN)
_SAFE_NAME = re.compile(r"[^\w.\-]+")
_QUERY_KEYS = {
    "q": "text", "name": "name", "phone": "phone", "email": "email",
    "organization": "organization", "category": "category", "tier": "tier", "tag": "tag",
    "owner": "owner_id", "lifecycle": "lifecycle", "created_from": "created_from",
    "created_to": "created_to", "sort": "sort",
}
_SORTS: dict[str, Any] = {
    "name": Customer.name_key, "created_at": Customer.created_at,
    "updated_at": Customer.updated_at, "lifetime_value": Customer.lifetime_value,
    "id": Customer.id,
}


def notices(gettext: Any) -> dict[str, str]:
    """The short confirmations shown after a change (``?notice=``)."""
    return {
        "created": gettext("Customer created."),
        "saved": gettext("Changes saved."),
        "deleted": gettext("Customer deleted. Supervisors can restore it."),
        "restored": gettext("Customer restored."),
        "merged": gettext("Records merged."),
        "segment_saved": gettext("Segment saved."),
        "segment_deleted": gettext("Segment deleted."),
        "class_saved": gettext("Code table saved."),
        "class_deleted": gettext("Entry deleted."),
    }


# -- who sees which customer ------------------------------------------------------------


def record_visibility(agent: Agent, team_ids: set[int]) -> list[ColumnElement[bool]]:
    """Communication records an agent may read: those of conversations they may see and of
    the customers they own. Supervisors and admins read every record."""
    if is_supervisor(agent):
        return []
    visible = select(Conversation.id).where(conversation_filter(agent, team_ids))
    return [or_(Interaction.conversation_id.in_(visible), Customer.owner_agent_id == agent.id)]


def _changing(
    request: web.Request,
) -> AbstractAsyncContextManager[tuple[AsyncSession, list[Event]]]:
    """A write transaction whose events reach webhooks (in it) and live consoles (after)."""
    return changing(request.app[DATABASE], request.app[ENGINE_KEY].events)


async def visible_customer(session: AsyncSession, request: web.Request, customer_id: int, *,
                           include_deleted: bool = False) -> Customer:
    """The customer, loaded, if the agent may see it: 404 when missing, 403 when not theirs."""
    try:
        customer = await get_customer(session, customer_id, include_deleted=include_deleted)
    except NotFoundError:
        raise not_found(request) from None
    agent = current_agent(request)
    if not await customer_visible(session, agent, context(request).team_ids, customer):
        log.warning("console.customer_forbidden", agent_id=agent.id, customer_id=customer_id)
        raise forbidden(request)
    return customer


# -- the query behind the list ----------------------------------------------------------


def customer_query(values: Mapping[str, Any] | MultiDictProxy[Any], *, agent: Agent,
                   page: int = 1, page_size: int = 50) -> CustomerQuery:
    """A customer query from the list's parameters (also a segment's filter form)."""
    data: dict[str, Any] = {}
    for key, field in _QUERY_KEYS.items():
        value = text_value(values, key, 200)
        if value:
            data[field] = value
    if is_supervisor(agent) and text_value(values, "deleted", 5) == "1":
        data["include_deleted"] = True
    data.update(page=page, page_size=page_size)
    try:
        return CustomerQuery.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"]) or "query"
        raise ValidationError(name, first.get("input"), first["msg"]) from None


def query_params(query: CustomerQuery) -> dict[str, str]:
    """The list parameters of a query (the inverse of ``customer_query``)."""
    fields = {field: key for key, field in _QUERY_KEYS.items()}
    params: dict[str, str] = {}
    for name, value in query.model_dump(mode="json", exclude_defaults=True,
                                        exclude_none=True).items():
        if name in fields:
            params[fields[name]] = str(value)
        elif name == "include_deleted" and value:
            params["deleted"] = "1"
    return params


def _ordered(stmt: Select[Any], sort: str) -> Select[Any]:
    key = sort.lstrip("-")
    column = _SORTS.get(key, Customer.created_at)
    if sort.startswith("-") or key not in _SORTS:
        return stmt.order_by(column.desc(), Customer.id.desc())
    return stmt.order_by(column.asc(), Customer.id.asc())


async def find_customers(session: AsyncSession, request: web.Request,
                         query: CustomerQuery) -> CustomerPage:
    """A page of the customers matching ``query`` that the agent may see.

    Supervisors and admins get ``search_customers`` as it is (with its fuzzy fallback);
    an agent's search adds the visibility condition to the same criteria, and on no exact
    hit narrows the fuzzy near misses to the visible ones.
    """
    from crm_core.services.csv_export import export_conditions

    settings = settings_of(request)
    region, zone = settings.locale.default_region, settings.locale.timezone
    agent = current_agent(request)
    if is_supervisor(agent):
        return await search_customers(session, query, region=region, timezone=zone)
    visibility = customer_filter(agent, context(request).team_ids)
    conditions = [*export_conditions(query, region=region, timezone=zone), visibility]
    stmt = select(Customer).where(*conditions)
    total = int(await session.scalar(select(func.count()).select_from(stmt.subquery())) or 0)
    if total == 0 and name_query_text(query):
        near = await search_customers(
            session, query.model_copy(update={"page": 1, "page_size": FUZZY_WINDOW}),
            region=region, timezone=zone)
        if near.fuzzy and near.items:
            ids = [c.id for c in near.items]
            allowed = set(await session.scalars(
                select(Customer.id).where(Customer.id.in_(ids), visibility)))
            kept = [c for c in near.items if c.id in allowed]
            start = (query.page - 1) * query.page_size
            return CustomerPage(kept[start:start + query.page_size], len(kept), query.page,
                                query.page_size, fuzzy=True)
    rows = await session.scalars(
        _ordered(stmt, query.sort).options(*CUSTOMER_LOAD_OPTIONS)
        .limit(query.page_size).offset((query.page - 1) * query.page_size))
    return CustomerPage(list(rows), total, query.page, query.page_size)


async def _choices(session: AsyncSession, language: str) -> dict[str, Any]:
    """Categories, tiers and agents for the selects, and names to show for codes."""
    categories = await classes.list_categories(session)
    tiers = await classes.list_tiers(session)
    agents = list(await session.scalars(
        select(Agent).where(Agent.active.is_(True)).order_by(Agent.display_name)))
    return {
        "categories": categories, "tiers": tiers,
        "category_labels": {c.code: class_name(c, language) for c in categories},
        "tier_labels": {t.code: class_name(t, language) for t in tiers},
        "agents": [{"id": a.id, "name": a.display_name} for a in agents],
        "agent_names": {a.id: a.display_name for a in agents},
        "lifecycles": [s.value for s in LifecycleStage],
        "channels": [c.value for c in Channel if c != Channel.INTERNAL],
    }


def class_name(row: CustomerCategory | CustomerTier | None, language: str) -> str:
    """A category's or tier's name in the console's language."""
    if row is None:
        return ""
    return (row.name_zh or row.name) if language == "zh-CN" else row.name


# -- list -------------------------------------------------------------------------------


async def list_page(request: web.Request) -> web.StreamResponse:
    """``/console/customers``: search, filters and pages of the customers one may see."""
    agent = current_agent(request)
    ctx = context(request)
    size = int_value(request.query, "size") or 50
    size = size if size in PAGE_SIZES else 50
    error = None
    result = CustomerPage([], 0, 1, size)
    database = request.app[DATABASE]
    async with database.sessions() as session:
        choices = await _choices(session, context(request).language)
        try:
            query = customer_query(request.query, agent=agent, page=page_number(request),
                                   page_size=size)
            result = await find_customers(session, request, query)
        except CrmError as exc:
            query = CustomerQuery(page_size=size)
            error = error_message(ctx.gettext, exc)
    log.info("console.customers_listed", agent_id=agent.id, total=result.total,
             fuzzy=result.fuzzy)
    return page(
        request, "customers_list.html", result=result, error=error,
        params=request.query, query=query, size=size, sizes=PAGE_SIZES,
        pager=Pager.of(request, page=result.page, page_size=size, total=result.total),
        can_manage=is_supervisor(agent), notice=notices(ctx.gettext).get(
            request.query.get("notice", "")),
        link=lambda cid: customer_url(request.app, cid),
        encodings=EXPORT_ENCODINGS, class_name=class_name,
        filter_json=json.dumps(segment_service.check_filter(query), ensure_ascii=False),
        **choices)


# -- create and edit --------------------------------------------------------------------


def customer_fields(form: MultiDictProxy[Any], *, agent: Agent, creating: bool) -> dict[str, Any]:
    """``CustomerFields`` input from the customer form (blank fields clear on edit)."""
    data: dict[str, Any] = {}
    for name in ("display_name", "given_name", "family_name", "job_title", "industry",
                 "street", "city", "postcode", "province", "notes"):
        value = text_value(form, name, 5000)
        if value or not creating:
            data[name] = value or None
    data["organization_name"] = text_value(form, "organization_name", 200)
    for name in ("country", "language", "timezone", "birthday", "tier_code",
                 "category_code", "preferred_channel"):
        data[name] = text_value(form, name, 100) or None
    stage = text_value(form, "lifecycle_stage", 20)
    if stage:
        data["lifecycle_stage"] = stage
    data["emails"] = split_list(text_value(form, "emails", 2000))
    data["phones"] = split_phones(text_value(form, "phones", 2000))
    data["tags"] = split_tags(text_value(form, "tags", 2000))
    data["do_not_contact"] = text_value(form, "do_not_contact", 5) == "1"
    if is_supervisor(agent):
        data["owner_agent_id"] = int_value(form, "owner_agent_id")
        value = text_value(form, "lifetime_value", 30).replace(",", "")
        if value:
            data["lifetime_value"] = value
    elif creating:
        data["owner_agent_id"] = agent.id
    return data


def form_values(customer: Customer | None, form: MultiDictProxy[Any] | None) -> dict[str, Any]:
    """What the form shows: the posted values after an error, else the customer's."""
    if form is not None:
        return {k: v for k, v in form.items() if isinstance(v, str)}
    if customer is None:
        return {}
    return {
        "display_name": customer.display_name, "given_name": customer.given_name or "",
        "family_name": customer.family_name or "",
        "organization_name": customer.organization.name if customer.organization else "",
        "job_title": customer.job_title or "", "industry": customer.industry or "",
        "emails": ", ".join(customer.emails), "phones": ", ".join(customer.phones),
        "street": customer.street or "", "city": customer.city or "",
        "postcode": customer.postcode or "", "province": customer.province or "",
        "country": customer.country or "", "language": customer.language or "",
        "timezone": customer.timezone or "",
        "birthday": customer.birthday.isoformat() if customer.birthday else "",
        "lifecycle_stage": customer.lifecycle_stage.value,
        "tier_code": customer.tier_code or "", "category_code": customer.category_code or "",
        "tags": ", ".join(customer.tags),
        "owner_agent_id": str(customer.owner_agent_id or ""),
        "lifetime_value": str(customer.lifetime_value or ""),
        "preferred_channel": customer.preferred_channel.value
        if customer.preferred_channel else "",
        "do_not_contact": "1" if customer.do_not_contact else "",
        "notes": customer.notes or "",
    }


def _short(value: Any) -> str:
    text = "—" if value in (None, "", [], {}) else (
        ", ".join(map(str, value)) if isinstance(value, list) else str(value))
    return text if len(text) <= 60 else text[:59] + "…"


def change_summary(entry: AuditLog) -> str:
    """What an audit entry changed, for a customer's history (``city: — → 杭州``)."""
    before, after = entry.before or {}, entry.after or {}
    if entry.action == "create":
        return ""
    if entry.action in ("update", "merge", "classify", "lifecycle"):
        keys = [k for k in after if k not in ("moved", "reason")]
        return "; ".join(f"{k}: {_short(before.get(k))} → {_short(after.get(k))}"
                         for k in keys)
    return ", ".join(f"{k}: {_short(v)}" for k, v in after.items())


async def _form_page(request: web.Request, *, customer: Customer | None,
                     form: MultiDictProxy[Any] | None = None, error: str | None = None,
                     status: int = 200, conflict_id: int | None = None) -> web.Response:
    agent = current_agent(request)
    database = request.app[DATABASE]
    history: list[Any] = []
    async with database.sessions() as session:
        choices = await _choices(session, context(request).language)
        if customer is not None:
            history = await audit.history(session, "customer", customer.id, limit=20)
    zone = business_zone(request)
    return page(request, "customers_form.html", status=status, customer=customer,
                values=form_values(customer, form), error=error, can_manage=is_supervisor(agent),
                history=history, when=lambda v: local_time(v, zone), summary=change_summary,
                notice=notices(context(request).gettext).get(request.query.get("notice", "")),
                conflict_link=customer_url(request.app, conflict_id) if conflict_id else None,
                class_name=class_name, **choices)


async def new_page(request: web.Request) -> web.StreamResponse:
    """The empty customer form."""
    return await _form_page(request, customer=None)


async def create(request: web.Request) -> web.StreamResponse:
    """Create a customer from the form; an agent becomes its owner."""
    agent = current_agent(request)
    form = await request.post()
    settings = settings_of(request)
    try:
        async with _changing(request) as (session, events):
            customer = await create_customer(
                session, customer_fields(form, agent=agent, creating=True),
                actor=actor_of(agent), region=settings.locale.default_region)
            customer_id = customer.id
            events.append(Event(CUSTOMER_CREATED, {"customer_id": customer_id,
                                                   "channel": "console"}))
    except CrmError as exc:
        return await _form_page(request, customer=None, form=form, status=400,
                                error=error_message(context(request).gettext, exc),
                                conflict_id=getattr(exc, "customer_id", None))
    log.info("console.customer_created", agent_id=agent.id, customer_id=customer_id)
    raise web.HTTPSeeOther(f"{AREA}/{customer_id}/edit?notice=created")


async def record_link(request: web.Request) -> web.StreamResponse:
    """``/console/customers/{id}``, the short link other pages (sales, care tasks,
    campaign results) give a customer: the customer's record page."""
    raise web.HTTPFound(customer_url(request.app, int(request.match_info["customer_id"])))


async def edit_page(request: web.Request) -> web.StreamResponse:
    """A customer's form with their recent audit history."""
    customer_id = int(request.match_info["customer_id"])
    async with request.app[DATABASE].sessions() as session:
        customer = await visible_customer(session, request, customer_id, include_deleted=True)
    return await _form_page(request, customer=customer)


async def update(request: web.Request) -> web.StreamResponse:
    """Save the form: only changed values are audited (before and after)."""
    agent = current_agent(request)
    customer_id = int(request.match_info["customer_id"])
    form = await request.post()
    settings = settings_of(request)
    async with request.app[DATABASE].sessions() as session:
        customer = await visible_customer(session, request, customer_id)
    try:
        async with _changing(request) as (session, events):
            await update_customer(
                session, customer_id, customer_fields(form, agent=agent, creating=False),
                actor=actor_of(agent), region=settings.locale.default_region,
                reason=text_value(form, "reason", 500) or None)
            events.append(Event(CUSTOMER_UPDATED, {"customer_id": customer_id}))
    except CrmError as exc:
        return await _form_page(request, customer=customer, form=form, status=400,
                                error=error_message(context(request).gettext, exc),
                                conflict_id=getattr(exc, "customer_id", None))
    log.info("console.customer_updated", agent_id=agent.id, customer_id=customer_id)
    raise web.HTTPSeeOther(f"{AREA}/{customer_id}/edit?notice=saved")


# -- delete, restore, merge -------------------------------------------------------------


@requires(*SUPERVISORS)
async def delete_page(request: web.Request) -> web.StreamResponse:
    """Ask before a soft delete."""
    customer_id = int(request.match_info["customer_id"])
    async with request.app[DATABASE].sessions() as session:
        customer = await visible_customer(session, request, customer_id)
    return page(request, "customers_delete.html", customer=customer)


@requires(*SUPERVISORS)
async def delete(request: web.Request) -> web.StreamResponse:
    """Soft-delete a customer (restorable; audited)."""
    agent = current_agent(request)
    customer_id = int(request.match_info["customer_id"])
    try:
        async with _changing(request) as (session, events):
            await delete_customer(session, customer_id, actor=actor_of(agent))
            events.append(Event(CUSTOMER_DELETED, {"customer_id": customer_id}))
    except NotFoundError:
        raise not_found(request) from None
    log.info("console.customer_deleted", agent_id=agent.id, customer_id=customer_id)
    raise web.HTTPSeeOther(f"{AREA}?notice=deleted")


@requires(*SUPERVISORS)
async def restore(request: web.Request) -> web.StreamResponse:
    """Bring a soft-deleted customer back."""
    agent = current_agent(request)
    customer_id = int(request.match_info["customer_id"])
    try:
        async with _changing(request) as (session, events):
            await restore_customer(session, customer_id, actor=actor_of(agent))
            events.append(Event(CUSTOMER_UPDATED, {"customer_id": customer_id,
                                                   "restored": True}))
    except NotFoundError:
        raise not_found(request) from None
    except CrmError as exc:
        return page(request, "error.html", status=409, title=context(request).gettext(
            "Not possible"), message=error_message(context(request).gettext, exc))
    log.info("console.customer_restored", agent_id=agent.id, customer_id=customer_id)
    raise web.HTTPSeeOther(f"{AREA}/{customer_id}/edit?notice=restored")


async def _suggested(session: AsyncSession, customer_id: int) -> list[Customer]:
    """Customers an open duplicate suggestion pairs with this one."""
    rows = await session.execute(
        select(DuplicateSuggestion.customer_id, DuplicateSuggestion.candidate_id)
        .where(DuplicateSuggestion.status == "open",
               or_(DuplicateSuggestion.customer_id == customer_id,
                   DuplicateSuggestion.candidate_id == customer_id))
        .order_by(DuplicateSuggestion.score.desc()).limit(10))
    ids = [b if a == customer_id else a for a, b in rows]
    if not ids:
        return []
    found = await session.scalars(select(Customer).where(
        Customer.id.in_(ids), Customer.deleted_at.is_(None)).options(*CUSTOMER_LOAD_OPTIONS))
    return list(found)


async def _counts(session: AsyncSession, customer_id: int) -> dict[str, int]:
    conversations = await session.scalar(
        select(func.count()).select_from(Conversation).where(
            Conversation.customer_id == customer_id))
    interactions = await session.scalar(
        select(func.count()).select_from(Interaction).where(
            Interaction.customer_id == customer_id))
    return {"conversations": int(conversations or 0), "interactions": int(interactions or 0)}


@requires(*SUPERVISORS)
async def merge_page(request: web.Request) -> web.StreamResponse:
    """Pick the other record (search or suggestions) and which of the two survives."""
    error: str | None = None
    customer_id = int(request.match_info["customer_id"])
    other_id = int_value(request.query, "other")
    search_text = text_value(request.query, "q", 200)
    settings = settings_of(request)
    candidates: list[Customer] = []
    other = None
    counts: dict[int, dict[str, int]] = {}
    async with request.app[DATABASE].sessions() as session:
        customer = await visible_customer(session, request, customer_id)
        choices = await _choices(session, context(request).language)
        suggested = await _suggested(session, customer_id)
        if search_text:
            try:
                found = await search_customers(
                    session, {"text": search_text, "page_size": 20},
                    region=settings.locale.default_region, timezone=settings.locale.timezone)
                candidates = [c for c in found.items if c.id != customer_id]
            except CrmError as exc:
                error = error_message(context(request).gettext, exc)
        if other_id is not None and other_id != customer_id:
            try:
                other = await get_customer(session, other_id)
            except NotFoundError:
                error = context(request).gettext("Not found.")
        counts[customer.id] = await _counts(session, customer.id)
        if other is not None:
            counts[other.id] = await _counts(session, other.id)
    return page(request, "customers_merge.html", customer=customer, other=other,
                candidates=candidates, suggested=suggested, search_text=search_text,
                counts=counts, error=error, link=lambda cid: customer_url(request.app, cid),
                **choices)


@requires(*SUPERVISORS)
async def merge(request: web.Request) -> web.StreamResponse:
    """Fold one record into the other (identities, history and tickets move; audited)."""
    agent = current_agent(request)
    customer_id = int(request.match_info["customer_id"])
    form = await request.post()
    other_id = int_value(form, "other_id")
    gettext = context(request).gettext
    if other_id is None or other_id == customer_id:
        raise web.HTTPBadRequest(text=gettext("Choose the other record first."))
    survivor, merged = ((other_id, customer_id) if text_value(form, "survivor", 10) == "other"
                        else (customer_id, other_id))
    try:
        async with _changing(request) as (session, events):
            await merge_customers(session, survivor, merged, actor=actor_of(agent),
                                  reason=text_value(form, "reason", 500) or None)
            events.append(Event(CUSTOMER_MERGED, {"customer_id": survivor,
                                                  "merged_id": merged}))
    except NotFoundError:
        raise not_found(request) from None
    except CrmError as exc:
        raise web.HTTPConflict(text=error_message(gettext, exc)) from None
    log.info("console.customers_merged", agent_id=agent.id, survivor_id=survivor,
             merged_id=merged)
    raise web.HTTPSeeOther(with_notice(safe_next(form.get("next"), f"{AREA}/{survivor}/edit"),
                                       "merged"))


# -- import and export ------------------------------------------------------------------


@requires(*SUPERVISORS)
async def import_page(request: web.Request) -> web.StreamResponse:
    """The upload form."""
    return page(request, "customers_import.html", report=None, error=None,
                encodings=IMPORT_ENCODINGS, values={})


def _upload_name(field: FileField) -> str:
    name = Path(field.filename or "").name
    cleaned = _SAFE_NAME.sub("_", name).strip("._")[:80]
    return cleaned or "upload.csv"


def _save_upload(field: FileField, folder: Path) -> Path:
    target = folder / _upload_name(field)
    with target.open("wb") as out:
        shutil.copyfileobj(field.file, out)
    return target


@requires(*SUPERVISORS)
async def import_upload(request: web.Request) -> web.StreamResponse:
    """Import an uploaded CSV with the CLI's importer; show counts and per-row errors."""
    from crm_core.services.csv_columns import parse_mapping_option
    from crm_core.services.csv_import import import_customers

    agent = current_agent(request)
    gettext = context(request).gettext
    form = await request.post()
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    field = form.get("file")
    encoding = text_value(form, "encoding", 20)
    on_conflict = "skip" if text_value(form, "on_conflict", 10) == "skip" else "report"

    def failed(message: str) -> web.Response:
        return page(request, "customers_import.html", status=400, report=None, error=message,
                    encodings=IMPORT_ENCODINGS, values=values)

    if not isinstance(field, FileField) or not field.filename:
        return failed(gettext("Choose a CSV file to import."))
    if encoding not in IMPORT_ENCODINGS:
        return failed(gettext("Unknown encoding."))
    settings = settings_of(request)
    with tempfile.TemporaryDirectory(prefix="cc-import-") as folder:
        path = await asyncio.to_thread(_save_upload, field, Path(folder))
        try:
            mapping = parse_mapping_option(text_value(form, "mapping", 2000) or None)
            report = await import_customers(
                request.app[DATABASE], path, actor=actor_of(agent),
                region=settings.locale.default_region, encoding=encoding or None,
                mapping=mapping, on_conflict=on_conflict,  # type: ignore[arg-type]
                workers=0, max_errors=MAX_SHOWN_IMPORT_ERRORS)
        except CrmError as exc:
            return failed(error_message(gettext, exc))
    log.info("console.customers_imported", agent_id=agent.id, **report.counts())
    return page(request, "customers_import.html", report=report, error=None,
                encodings=IMPORT_ENCODINGS, values=values,
                link=lambda cid: customer_url(request.app, cid))


@requires(*SUPERVISORS)
async def export(request: web.Request) -> web.StreamResponse:
    """Stream the customers matching the list's filters as CSV (UTF-8 for Excel, or GBK)."""
    from crm_core.services.csv_export import export_customers

    agent = current_agent(request)
    encoding = text_value(request.query, "encoding", 20) or "utf-8-sig"
    headers = "zh" if text_value(request.query, "headers", 5) == "zh" else "en"
    if encoding not in EXPORT_ENCODINGS:
        raise web.HTTPBadRequest(text=context(request).gettext("Unknown encoding."))
    try:
        query = customer_query(request.query, agent=agent)
    except CrmError as exc:
        raise web.HTTPBadRequest(text=error_message(context(request).gettext, exc)) from None
    settings = settings_of(request)
    stamp = datetime.now(business_zone(request)).strftime("%Y%m%d-%H%M")
    log.info("console.customers_exported", agent_id=agent.id, encoding=encoding)

    async def produce(sink: Any) -> Any:
        return await export_customers(
            request.app[DATABASE], sink, region=settings.locale.default_region,
            timezone=settings.locale.timezone, query=query, headers=headers, encoding=encoding)

    try:
        return await stream_csv(request, f"customers-{stamp}.csv", produce)
    except CrmError as exc:  # raised before the first byte: the criteria were refused
        raise web.HTTPBadRequest(text=error_message(context(request).gettext, exc)) from None


# -- categories and tiers ---------------------------------------------------------------


async def classes_page(request: web.Request, *, error: str | None = None,
                       status: int = 200) -> web.StreamResponse:
    """The code tables: categories and tiers with their customer counts."""
    agent = current_agent(request)
    async with request.app[DATABASE].sessions() as session:
        categories = await classes.list_categories(session)
        tiers = await classes.list_tiers(session)
        counts = await classes.class_counts(session)
    return page(request, "customers_classes.html", status=status, categories=categories,
                tiers=tiers, counts=counts, error=error, can_manage=is_supervisor(agent),
                notice=notices(context(request).gettext).get(request.query.get("notice", "")))


async def _class_change(request: web.Request, change: Any, notice: str) -> web.StreamResponse:
    agent = current_agent(request)
    form = await request.post()
    try:
        async with request.app[DATABASE].transaction() as session:
            await change(session, form, actor_of(agent))
    except NotFoundError:
        raise not_found(request) from None
    except CrmError as exc:
        return await classes_page(request, status=400,
                                  error=error_message(context(request).gettext, exc))
    log.info("console.code_table_changed", agent_id=agent.id, path=request.path)
    raise web.HTTPSeeOther(f"{AREA}/classes?notice={notice}")


@requires(*SUPERVISORS)
async def category_create(request: web.Request) -> web.StreamResponse:
    """Add a category."""
    async def change(session: AsyncSession, form: MultiDictProxy[Any], actor: str) -> None:
        await classes.create_category(
            session, text_value(form, "code", 50), text_value(form, "name", 100),
            name_zh=text_value(form, "name_zh", 100) or None,
            description=text_value(form, "description", 1000) or None, actor=actor)

    return await _class_change(request, change, "class_saved")


@requires(*SUPERVISORS)
async def category_update(request: web.Request) -> web.StreamResponse:
    """Rename or describe a category."""
    code = request.match_info["code"]

    async def change(session: AsyncSession, form: MultiDictProxy[Any], actor: str) -> None:
        await classes.update_category(
            session, code, name=text_value(form, "name", 100),
            name_zh=text_value(form, "name_zh", 100) or None,
            description=text_value(form, "description", 1000) or None, actor=actor)

    return await _class_change(request, change, "class_saved")


@requires(*SUPERVISORS)
async def category_delete(request: web.Request) -> web.StreamResponse:
    """Delete a category (its customers lose it; refused while a rule assigns it)."""
    code = request.match_info["code"]

    async def change(session: AsyncSession, _form: MultiDictProxy[Any], actor: str) -> None:
        await classes.delete_category(session, code, actor=actor)

    return await _class_change(request, change, "class_deleted")


def _rank(form: MultiDictProxy[Any]) -> int:
    value = text_value(form, "rank", 10) or "0"
    try:
        return int(value)
    except ValueError:
        raise ValidationError("rank", value, "a whole number") from None


@requires(*SUPERVISORS)
async def tier_create(request: web.Request) -> web.StreamResponse:
    """Add a tier."""
    async def change(session: AsyncSession, form: MultiDictProxy[Any], actor: str) -> None:
        await classes.create_tier(
            session, text_value(form, "code", 50), text_value(form, "name", 100),
            rank=_rank(form), name_zh=text_value(form, "name_zh", 100) or None, actor=actor)

    return await _class_change(request, change, "class_saved")


@requires(*SUPERVISORS)
async def tier_update(request: web.Request) -> web.StreamResponse:
    """Rename or re-rank a tier."""
    code = request.match_info["code"]

    async def change(session: AsyncSession, form: MultiDictProxy[Any], actor: str) -> None:
        await classes.update_tier(
            session, code, name=text_value(form, "name", 100),
            name_zh=text_value(form, "name_zh", 100) or None, rank=_rank(form), actor=actor)

    return await _class_change(request, change, "class_saved")


@requires(*SUPERVISORS)
async def tier_delete(request: web.Request) -> web.StreamResponse:
    """Delete a tier (its customers lose it; refused while a rule assigns it)."""
    code = request.match_info["code"]

    async def change(session: AsyncSession, _form: MultiDictProxy[Any], actor: str) -> None:
        await classes.delete_tier(session, code, actor=actor)

    return await _class_change(request, change, "class_deleted")


# -- segments ---------------------------------------------------------------------------


def _segment_filter(form: MultiDictProxy[Any], agent: Agent) -> dict[str, Any]:
    """The filter of a segment form: the JSON field when given, else the filter fields."""
    raw = text_value(form, "filter_json", 5000)
    if raw:
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValidationError("filter", raw[:50], f"not JSON ({exc.msg})") from None
        if not isinstance(data, dict):
            raise ValidationError("filter", raw[:50], "a JSON object is expected")
        return segment_service.check_filter(data)
    return segment_service.check_filter(customer_query(form, agent=agent))


@requires(*SUPERVISORS)
async def segments_page(request: web.Request) -> web.StreamResponse:
    """Saved segments and a form for a new one."""
    return await _segments_view(request)


async def _segments_view(request: web.Request, *, error: str | None = None,
                         status: int = 200, values: Mapping[str, Any] | None = None,
                         ) -> web.Response:
    async with request.app[DATABASE].sessions() as session:
        segments = await segment_service.list_segments(session)
        choices = await _choices(session, context(request).language)
    return page(request, "customers_segments.html", status=status, segments=segments,
                error=error, values=values or {}, class_name=class_name, pretty=pretty,
                notice=notices(context(request).gettext).get(request.query.get("notice", "")),
                **choices)


@requires(*SUPERVISORS)
async def segment_create(request: web.Request) -> web.StreamResponse:
    """Save a segment (from the list's current filters or the segment form)."""
    agent = current_agent(request)
    form = await request.post()
    try:
        async with request.app[DATABASE].transaction() as session:
            segment = await segment_service.create_segment(
                session, name=text_value(form, "segment_name", 200),
                description=text_value(form, "description", 2000) or None,
                filter=_segment_filter(form, agent), owner_id=agent.id, actor=actor_of(agent))
            segment_id = segment.id
    except CrmError as exc:
        return await _segments_view(request, status=400, values=form,
                                   error=error_message(context(request).gettext, exc))
    log.info("console.segment_created", agent_id=agent.id, segment_id=segment_id)
    raise web.HTTPSeeOther(f"{AREA}/segments/{segment_id}?notice=segment_saved")


@requires(*SUPERVISORS)
async def segment_page(request: web.Request) -> web.StreamResponse:
    """A segment's members (paged) and its filter, editable."""
    return await _segment_view(request)


async def _segment_view(request: web.Request, *, error: str | None = None, status: int = 200,
                        form: MultiDictProxy[Any] | None = None) -> web.Response:
    segment_id = int(request.match_info["segment_id"])
    settings = settings_of(request)
    members = None
    async with request.app[DATABASE].sessions() as session:
        try:
            segment = await segment_service.get_segment(session, segment_id)
        except NotFoundError:
            raise not_found(request) from None
        choices = await _choices(session, context(request).language)
        try:
            members = await segment_service.segment_members(
                session, segment, region=settings.locale.default_region,
                timezone=settings.locale.timezone, page=page_number(request))
        except CrmError as exc:
            error = error or error_message(context(request).gettext, exc)
    params = query_params(CustomerQuery.model_validate(segment.filter or {}))
    values = ({k: v for k, v in form.items() if isinstance(v, str)} if form is not None else {
        **params, "segment_name": segment.name, "description": segment.description or ""})
    total = members.total if members else 0
    return page(request, "customers_segment.html", status=status, segment=segment,
                members=members, error=error, values=values, class_name=class_name, pretty=pretty,
                filter_json=json.dumps(segment.filter or {}, ensure_ascii=False, indent=1),
                list_link=f"{AREA}?{urlencode(params)}",
                pager=Pager.of(request, page=page_number(request), page_size=50, total=total),
                link=lambda cid: customer_url(request.app, cid),
                notice=notices(context(request).gettext).get(request.query.get("notice", "")),
                **choices)


@requires(*SUPERVISORS)
async def segment_update(request: web.Request) -> web.StreamResponse:
    """Rename a segment or change its filter."""
    agent = current_agent(request)
    segment_id = int(request.match_info["segment_id"])
    form = await request.post()
    try:
        async with request.app[DATABASE].transaction() as session:
            await segment_service.update_segment(
                session, segment_id, name=text_value(form, "segment_name", 200),
                description=text_value(form, "description", 2000) or None,
                filter=_segment_filter(form, agent), actor=actor_of(agent))
    except NotFoundError:
        raise not_found(request) from None
    except CrmError as exc:
        return await _segment_view(request, status=400, form=form,
                                  error=error_message(context(request).gettext, exc))
    log.info("console.segment_updated", agent_id=agent.id, segment_id=segment_id)
    raise web.HTTPSeeOther(f"{AREA}/segments/{segment_id}?notice=segment_saved")


@requires(*SUPERVISORS)
async def segment_delete(request: web.Request) -> web.StreamResponse:
    """Delete a segment."""
    agent = current_agent(request)
    segment_id = int(request.match_info["segment_id"])
    try:
        async with request.app[DATABASE].transaction() as session:
            await segment_service.delete_segment(session, segment_id, actor=actor_of(agent))
    except NotFoundError:
        raise not_found(request) from None
    log.info("console.segment_deleted", agent_id=agent.id, segment_id=segment_id)
    raise web.HTTPSeeOther(f"{AREA}/segments?notice=segment_deleted")


# -- communication records --------------------------------------------------------------


def record_query(values: MultiDictProxy[Any], *, page: int = 1) -> RecordQuery:
    """A records query from the page's parameters."""
    data: dict[str, Any] = {"page": page}
    for key in ("date_from", "date_to", "channel", "direction", "customer", "keyword"):
        value = text_value(values, key, 200)
        if value:
            data[key] = value
    for key, field in (("agent", "agent_id"), ("customer_id", "customer_id")):
        value = text_value(values, key, 20)
        if value:
            data[field] = value
    try:
        return RecordQuery.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"]) or "query"
        raise ValidationError(name, first.get("input"), first["msg"]) from None


async def records_page(request: web.Request) -> web.StreamResponse:
    """``/console/customers/records``: interactions across customers, filtered and paged."""
    agent = current_agent(request)
    ctx = context(request)
    zone = business_zone(request)
    result = None
    error = None
    async with request.app[DATABASE].sessions() as session:
        choices = await _choices(session, context(request).language)
        try:
            query = record_query(request.query, page=page_number(request))
            result = await search_records(session, query, timezone=zone.key,
                                          extra=record_visibility(agent, ctx.team_ids))
        except CrmError as exc:
            error = error_message(ctx.gettext, exc)
        # An agent reads the records of their own customers in every conversation, but
        # opens only the conversations they may see: the others get no link.
        shown = {row.interaction.conversation_id for row in (result.items if result else [])}
        shown.discard(None)
        openable = set(await session.scalars(
            select(Conversation.id).where(Conversation.id.in_(shown),
                                          conversation_filter(agent, ctx.team_ids))
        )) if shown else set()
    log.info("console.records_queried", agent_id=agent.id,
             total=result.total if result else None)
    total = result.total if result else 0
    pager = Pager.of(request, page=page_number(request), page_size=50, total=total)
    return page(request, "customers_records.html", result=result, error=error,
                params=request.query, can_manage=is_supervisor(agent),
                pager=pager, when=lambda v: local_time(v, zone), encodings=EXPORT_ENCODINGS,
                link=lambda cid: customer_url(request.app, cid),
                conversation_link=lambda cid: (conversation_url(request.app, cid)
                                               if cid in openable else None),
                directions=[d.value for d in Direction], **choices)


@requires(*SUPERVISORS)
async def records_export(request: web.Request) -> web.StreamResponse:
    """Stream the matching records as CSV."""
    agent = current_agent(request)
    encoding = text_value(request.query, "encoding", 20) or "utf-8-sig"
    headers = "zh" if text_value(request.query, "headers", 5) == "zh" else "en"
    if encoding not in EXPORT_ENCODINGS:
        raise web.HTTPBadRequest(text=context(request).gettext("Unknown encoding."))
    try:
        query = record_query(request.query)
    except CrmError as exc:
        raise web.HTTPBadRequest(text=error_message(context(request).gettext, exc)) from None
    zone = business_zone(request)
    stamp = datetime.now(zone).strftime("%Y%m%d-%H%M")
    log.info("console.records_exported", agent_id=agent.id, encoding=encoding)

    async def produce(sink: Any) -> int:
        async with request.app[DATABASE].sessions() as session:
            return await export_records(session, sink, query, timezone=zone.key,
                                        headers=headers, encoding=encoding)

    try:
        return await stream_csv(request, f"records-{stamp}.csv", produce)
    except CrmError as exc:
        raise web.HTTPBadRequest(text=error_message(context(request).gettext, exc)) from None


# -- routes -----------------------------------------------------------------------------


def setup_customers(app: web.Application) -> None:
    """Register the customers area (fixed paths such as ``/new`` before any ``{id}`` one;
    ids are digits only, so the two never meet)."""
    cid = "{customer_id:\\d+}"
    sid = "{segment_id:\\d+}"
    code = "{code:[a-z0-9_-]{1,50}}"
    router = app.router
    router.add_get(AREA, list_page)
    router.add_get(f"{AREA}/new", new_page)
    router.add_post(f"{AREA}/new", create)
    router.add_get(f"{AREA}/import", import_page)
    router.add_post(f"{AREA}/import", import_upload)
    router.add_get(f"{AREA}/export", export)
    router.add_get(f"{AREA}/classes", classes_page)
    router.add_post(f"{AREA}/classes/categories", category_create)
    router.add_post(f"{AREA}/classes/categories/{code}", category_update)
    router.add_post(f"{AREA}/classes/categories/{code}/delete", category_delete)
    router.add_post(f"{AREA}/classes/tiers", tier_create)
    router.add_post(f"{AREA}/classes/tiers/{code}", tier_update)
    router.add_post(f"{AREA}/classes/tiers/{code}/delete", tier_delete)
    router.add_get(f"{AREA}/segments", segments_page)
    router.add_post(f"{AREA}/segments", segment_create)
    router.add_get(f"{AREA}/segments/{sid}", segment_page)
    router.add_post(f"{AREA}/segments/{sid}", segment_update)
    router.add_post(f"{AREA}/segments/{sid}/delete", segment_delete)
    router.add_get(f"{AREA}/records", records_page)
    router.add_get(f"{AREA}/records/export", records_export)
    router.add_get(f"{AREA}/{cid}", record_link)
    router.add_get(f"{AREA}/{cid}/edit", edit_page)
    router.add_post(f"{AREA}/{cid}/edit", update)
    router.add_get(f"{AREA}/{cid}/delete", delete_page)
    router.add_post(f"{AREA}/{cid}/delete", delete)
    router.add_post(f"{AREA}/{cid}/restore", restore)
    router.add_get(f"{AREA}/{cid}/merge", merge_page)
    router.add_post(f"{AREA}/{cid}/merge", merge)

