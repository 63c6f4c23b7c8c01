"""``/customers``: list with filters, read, create, change, delete, merge, identities,
PII export and erasure (both audited)."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from sqlalchemy import delete, select

from contact_center.api.common import (
    changing,
    database,
    decode_cursor,
    next_cursor,
    settings,
)
from contact_center.api.customer_reads import read_customers
from contact_center.api.errors import ApiError, from_domain
from contact_center.api.framework import ApiCall, ApiRouter
from contact_center.api.models import (
    CustomerExport,
    CustomerFilter,
    CustomerIn,
    CustomerOut,
    CustomerPage,
    EraseIn,
    EraseOut,
    IdentityIn,
    IdentityList,
    IdentityOut,
    MergeIn,
    MergeOut,
)
from crm_core.errors import CrmError, NotFoundError
from crm_core.models import (
    CampaignSend,
    CareTask,
    Conversation,
    Customer,
    CustomerIdentity,
    FeedbackResponse,
    Interaction,
    Ticket,
)
from crm_core.services import audit
from crm_core.services import customers as svc
from crm_core.services.customer_query import (
    CustomerQuery,
    build_filters,
    name_condition,
    name_query_text,
    resolve_free_text,
)
from crm_core.services.merge import erase_customer, merge_customers
from routing.events import (
    CUSTOMER_CREATED,
    CUSTOMER_DELETED,
    CUSTOMER_ERASED,
    CUSTOMER_MERGED,
    CUSTOMER_UPDATED,
    Event,
)

router = ApiRouter()
TAG = "customers"


def customer_out(customer: Customer) -> CustomerOut:
    """The API view of a loaded customer."""
    data = {name: getattr(customer, name) for name in CustomerOut.model_fields
            if name not in {"tags", "identities"}}
    return CustomerOut(
        **data, tags=list(customer.tags),
        identities=[IdentityOut(id=i.id, kind=i.kind, value=i.value, label=i.label,
                                verified=bool(i.verified)) for i in customer.identities])


def _region(call: ApiCall) -> str:
    return settings(call).locale.default_region


@router.route("GET", "/customers", scope="customers:read", summary="List and search customers",
              tag=TAG, query=CustomerFilter, response=CustomerPage)
async def list_customers(call: ApiCall) -> CustomerPage:
    """Newest first. ``q`` recognises an e-mail, a phone number or a name (pinyin too)."""
    f: CustomerFilter = call.query
    try:
        query = resolve_free_text(CustomerQuery(text=f.q, email=f.email, phone=f.phone,
                                                tag=f.tag, lifecycle=f.lifecycle))
        conditions = build_filters(query, region=_region(call),
                                   timezone=settings(call).locale.timezone)
    except CrmError as exc:
        raise from_domain(exc) from None
    name = name_query_text(query)
    if name:
        conditions.append(name_condition(name))
    if f.updated_since is not None:
        since = f.updated_since if f.updated_since.tzinfo else f.updated_since.replace(
            tzinfo=UTC)
        conditions.append(Customer.updated_at >= since)
    after = decode_cursor(f.cursor)
    if after is not None:
        conditions.append(Customer.id < after)
    async with database(call).sessions() as session:
        rows = await read_customers(session, conditions, limit=f.limit + 1)
    return CustomerPage(items=rows[: f.limit], next_cursor=next_cursor(rows, f.limit))


@router.route("POST", "/customers", scope="customers:write", summary="Create a customer",
              tag=TAG, body=CustomerIn, response=CustomerOut, status=201, errors=(409,))
async def create_customer(call: ApiCall) -> CustomerOut:
    """Refused with 409 when an e-mail or phone already belongs to another customer."""
    body: CustomerIn = call.body
    try:
        async with changing(call) as (session, events):
            created = await svc.create_customer(session, body.model_dump(exclude_unset=True),
                                                actor=call.actor, region=_region(call))
            result = customer_out(await svc.get_customer(session, created.id))
            events.append(Event(CUSTOMER_CREATED, {"customer_id": result.id, "channel": "api"}))
    except CrmError as exc:
        raise from_domain(exc) from None
    return result


@router.route("GET", "/customers/{customer_id}", scope="customers:read", tag=TAG,
              summary="Read a customer", response=CustomerOut)
async def get_customer(call: ApiCall) -> CustomerOut:
    """One customer with identities and tags."""
    customer_id = call.params["customer_id"]
    async with database(call).sessions() as session:
        found = await read_customers(
            session, [Customer.id == customer_id, Customer.deleted_at.is_(None)], limit=1)
    if not found:
        raise from_domain(NotFoundError("customer", customer_id))
    return found[0]


@router.route("PATCH", "/customers/{customer_id}", scope="customers:write", tag=TAG,
              summary="Change a customer", body=CustomerIn, response=CustomerOut,
              errors=(409,))
async def update_customer(call: ApiCall) -> CustomerOut:
    """Only the fields given change; ``emails``/``phones`` replace those identities."""
    body: CustomerIn = call.body
    customer_id = call.params["customer_id"]
    try:
        async with changing(call) as (session, events):
            await svc.update_customer(session, customer_id, body.model_dump(exclude_unset=True),
                                      actor=call.actor, region=_region(call))
            result = customer_out(await svc.get_customer(session, customer_id))
            events.append(Event(CUSTOMER_UPDATED, {"customer_id": customer_id,
                                                   "fields": sorted(body.model_fields_set)}))
    except CrmError as exc:
        raise from_domain(exc) from None
    return result


@router.route("DELETE", "/customers/{customer_id}", scope="customers:write", tag=TAG,
              summary="Delete a customer (restorable)", status=204)
async def delete_customer(call: ApiCall) -> None:
    """A soft delete: the record leaves lists and can be restored in the console."""
    customer_id = call.params["customer_id"]
    try:
        async with changing(call) as (session, events):
            await svc.delete_customer(session, customer_id, actor=call.actor)
            events.append(Event(CUSTOMER_DELETED, {"customer_id": customer_id}))
    except CrmError as exc:
        raise from_domain(exc) from None


@router.route("POST", "/customers/{customer_id}/merge", scope="customers:write", tag=TAG,
              summary="Merge another record into this one", body=MergeIn, response=MergeOut,
              errors=(409,))
async def merge_customer(call: ApiCall) -> MergeOut:
    """Identities, history and tickets of ``merged_id`` move to this customer."""
    body: MergeIn = call.body
    survivor = call.params["customer_id"]
    try:
        async with changing(call) as (session, events):
            record = await merge_customers(session, survivor, body.merged_id,
                                           actor=call.actor, reason=body.reason)
            record_id = record.id
            events.append(Event(CUSTOMER_MERGED, {"customer_id": survivor,
                                                  "merged_id": body.merged_id}))
    except CrmError as exc:
        raise from_domain(exc) from None
    return MergeOut(survivor_id=survivor, merged_id=body.merged_id, merge_record_id=record_id)


@router.route("GET", "/customers/{customer_id}/identities", scope="customers:read", tag=TAG,
              summary="List a customer's identities", response=IdentityList)
async def list_identities(call: ApiCall) -> IdentityList:
    """E-mail addresses, phone numbers, Telegram and web chat ids, external ids."""
    try:
        async with database(call).sessions() as session:
            customer = await svc.get_customer(session, call.params["customer_id"])
    except CrmError as exc:
        raise from_domain(exc) from None
    return IdentityList(items=[IdentityOut(id=i.id, kind=i.kind, value=i.value, label=i.label,
                                           verified=bool(i.verified))
                               for i in customer.identities])


@router.route("POST", "/customers/{customer_id}/identities", scope="customers:write", tag=TAG,
              summary="Attach an identity", body=IdentityIn, response=CustomerOut,
              status=201, errors=(409,))
async def add_identity(call: ApiCall) -> CustomerOut:
    """Normalized like everywhere else (E.164 phones, lower-case e-mail domains)."""
    body: IdentityIn = call.body
    customer_id = call.params["customer_id"]
    try:
        async with changing(call) as (session, events):
            customer = await svc.get_customer(session, customer_id)
            same_kind = [{"kind": i.kind, "value": i.value, "label": i.label}
                         for i in customer.identities if i.kind == body.kind]
            same_kind.append(body.model_dump())
            await svc.update_customer(session, customer_id, {"identities": same_kind},
                                      actor=call.actor, region=_region(call))
            result = customer_out(await svc.get_customer(session, customer_id))
            events.append(Event(CUSTOMER_UPDATED, {"customer_id": customer_id,
                                                   "fields": ["identities"]}))
    except CrmError as exc:
        raise from_domain(exc) from None
    return result


@router.route("DELETE", "/customers/{customer_id}/identities/{identity_id}", tag=TAG,
              scope="customers:write", summary="Detach an identity", status=204)
async def remove_identity(call: ApiCall) -> None:
    """The handle no longer identifies this customer (audited)."""
    customer_id, identity_id = call.params["customer_id"], call.params["identity_id"]
    async with changing(call) as (session, events):
        identity = await session.get(CustomerIdentity, identity_id)
        if identity is None or identity.customer_id != customer_id:
            raise ApiError(404, "not_found", f"customer {customer_id} has no identity "
                                             f"{identity_id}")
        audit.record(session, actor=call.actor, action="update", entity_type="customer",
                     entity_id=customer_id,
                     before={"identity": f"{identity.kind.value}:{identity.value}"},
                     after={"identity": None})
        await session.execute(delete(CustomerIdentity).where(CustomerIdentity.id == identity_id))
        events.append(Event(CUSTOMER_UPDATED, {"customer_id": customer_id,
                                               "fields": ["identities"]}))


def _row(obj: Any, *skip: str) -> dict[str, Any]:
    return audit.jsonable({c.key: getattr(obj, c.key) for c in obj.__table__.columns
                           if c.key not in skip})


@router.route("GET", "/customers/{customer_id}/export", scope="pii:export", tag=TAG,
              summary="Export all data of a customer", response=CustomerExport)
async def export_customer(call: ApiCall) -> CustomerExport:
    """Everything stored about the person, as JSON (a data subject access request). The
    export itself is written to the audit trail."""
    customer_id = call.params["customer_id"]
    try:
        async with database(call).transaction() as session:
            customer = await svc.get_customer(session, customer_id, include_deleted=True)
            ids = [customer_id, *await session.scalars(
                select(Customer.id).where(Customer.merged_into_id == customer_id))]

            async def rows(model: Any, column: Any) -> list[dict[str, Any]]:
                found = await session.scalars(select(model).where(column.in_(ids))
                                              .order_by(model.id))
                return [_row(r) for r in found]

            export = CustomerExport(
                customer=_row(customer, "name_key") | {"tags": list(customer.tags)},
                identities=[_row(i) for i in customer.identities],
                conversations=await rows(Conversation, Conversation.customer_id),
                interactions=await rows(Interaction, Interaction.customer_id),
                tickets=await rows(Ticket, Ticket.customer_id),
                feedback=await rows(FeedbackResponse, FeedbackResponse.customer_id),
                campaign_sends=await rows(CampaignSend, CampaignSend.customer_id),
                care_tasks=await rows(CareTask, CareTask.customer_id),
                audit=[_row(a) for a in await audit.history(session, "customer", customer_id)],
            )
            audit.record(session, actor=call.actor, action="export", entity_type="customer",
                         entity_id=customer_id, after={"records": sum(
                             len(v) for v in export.model_dump().values() if isinstance(v, list))})
    except CrmError as exc:
        raise from_domain(exc) from None
    return export


@router.route("POST", "/customers/{customer_id}/erase", scope="pii:erase", tag=TAG,
              summary="Erase a customer for good", body=EraseIn, response=EraseOut,
              errors=(409,))
async def erase(call: ApiCall) -> EraseOut:
    """Personal data is removed; anonymous counts stay. Audited, cannot be undone."""
    body: EraseIn = call.body
    customer_id = call.params["customer_id"]
    try:
        async with changing(call) as (session, events):
            counts = await erase_customer(session, customer_id, actor=call.actor,
                                          reason=body.reason)
            events.append(Event(CUSTOMER_ERASED, {"customer_id": customer_id}))
    except CrmError as exc:
        raise from_domain(exc) from None
    removed = {k: int(v) for k, v in counts.items() if isinstance(v, int)}
    return EraseOut(customer_id=customer_id, removed=removed)

