"""``/tickets``: list with filters, read, open, change (status moves checked), audited."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from contact_center.api.common import changing, database, decode_cursor, next_cursor
from contact_center.api.errors import ApiError
from contact_center.api.framework import ApiCall, ApiRouter
from contact_center.api.models import TicketFilter, TicketIn, TicketOut, TicketPage, TicketPatch
from crm_core.models import (
    Agent,
    Conversation,
    Customer,
    Ticket,
    TicketStatus,
    ticket_number,
    utcnow,
)
from crm_core.services import audit
from routing.events import TICKET_CREATED, TICKET_UPDATED, Event

router = ApiRouter()
TAG = "tickets"
OPEN_STATUSES = (TicketStatus.NEW, TicketStatus.OPEN, TicketStatus.PENDING)
MOVES: dict[TicketStatus, set[TicketStatus]] = {
    TicketStatus.NEW: {TicketStatus.OPEN, TicketStatus.PENDING, TicketStatus.RESOLVED,
                       TicketStatus.CLOSED},
    TicketStatus.OPEN: {TicketStatus.PENDING, TicketStatus.RESOLVED, TicketStatus.CLOSED},
    TicketStatus.PENDING: {TicketStatus.OPEN, TicketStatus.RESOLVED, TicketStatus.CLOSED},
    TicketStatus.RESOLVED: {TicketStatus.OPEN, TicketStatus.CLOSED},
    TicketStatus.CLOSED: {TicketStatus.OPEN},
}
"""Status moves the API allows (reopening counts)."""


def ticket_out(ticket: Ticket) -> TicketOut:
    """The API view of a ticket."""
    return TicketOut.model_validate(ticket, from_attributes=True)


def _tags(tags: list[str]) -> list[str]:
    cleaned = sorted({t.strip() for t in tags if t.strip()})
    if any(len(t) > 50 for t in cleaned):
        raise ApiError(400, "validation_error", "tags are at most 50 characters", "tags")
    return cleaned


def _state(ticket: Ticket) -> dict[str, Any]:
    return audit.jsonable({"status": ticket.status, "priority": ticket.priority,
                           "category": ticket.category, "assignee_id": ticket.assignee_id,
                           "subject": ticket.subject, "tags": list(ticket.tags)})


def apply_status(ticket: Ticket, status: TicketStatus, now: datetime) -> None:
    """Move a ticket, keeping its resolved/closed times and reopen count true."""
    if status == ticket.status:
        return
    if status not in MOVES[ticket.status]:
        raise ApiError(409, "invalid_state", f"a {ticket.status.value} ticket cannot become "
                                             f"{status.value}", "status")
    if ticket.status in (TicketStatus.RESOLVED, TicketStatus.CLOSED):
        ticket.reopen_count += 1
    ticket.status = status
    if status == TicketStatus.RESOLVED:
        ticket.resolved_at = ticket.resolved_at or now
        ticket.closed_at = None
    elif status == TicketStatus.CLOSED:
        ticket.resolved_at = ticket.resolved_at or now
        ticket.closed_at = ticket.closed_at or now
    else:
        ticket.resolved_at = None
        ticket.closed_at = None


@router.route("GET", "/tickets", scope="tickets:read", summary="List tickets", tag=TAG,
              query=TicketFilter, response=TicketPage)
async def list_tickets(call: ApiCall) -> TicketPage:
    """Newest first; ``open=true`` for new, open and pending ones."""
    f: TicketFilter = call.query
    stmt = select(Ticket)
    if f.status:
        stmt = stmt.where(Ticket.status.in_(f.status))
    if f.open is True:
        stmt = stmt.where(Ticket.status.in_(OPEN_STATUSES))
    elif f.open is False:
        stmt = stmt.where(Ticket.status.not_in(OPEN_STATUSES))
    for column, value in ((Ticket.customer_id, f.customer_id),
                          (Ticket.assignee_id, f.assignee_id),
                          (Ticket.priority, f.priority), (Ticket.category, f.category)):
        if value is not None:
            stmt = stmt.where(column == value)
    after = decode_cursor(f.cursor)
    if after is not None:
        stmt = stmt.where(Ticket.id < after)
    async with database(call).sessions() as session:
        rows = list(await session.scalars(stmt.order_by(Ticket.id.desc()).limit(f.limit + 1)))
    return TicketPage(items=[ticket_out(t) for t in rows[: f.limit]],
                      next_cursor=next_cursor(rows, f.limit))


@router.route("GET", "/tickets/{ticket_id}", scope="tickets:read", summary="Read a ticket",
              tag=TAG, response=TicketOut)
async def get_ticket(call: ApiCall) -> TicketOut:
    """One ticket."""
    async with database(call).sessions() as session:
        ticket = await session.get(Ticket, call.params["ticket_id"])
    if ticket is None:
        raise ApiError(404, "not_found", "no such ticket")
    return ticket_out(ticket)


async def _check_refs(session: Any, assignee_id: int | None,
                      conversation_id: int | None = None,
                      customer_id: int | None = None) -> None:
    if assignee_id is not None and await session.get(Agent, assignee_id) is None:
        raise ApiError(400, "validation_error", "no such agent", "assignee_id")
    if conversation_id is not None:
        conversation = await session.get(Conversation, conversation_id)
        if conversation is None or conversation.customer_id != customer_id:
            raise ApiError(400, "validation_error", "no such conversation of this customer",
                           "conversation_id")


@router.route("POST", "/tickets", scope="tickets:write", summary="Open a ticket", tag=TAG,
              body=TicketIn, response=TicketOut, status=201)
async def create_ticket(call: ApiCall) -> TicketOut:
    """For a known customer, optionally tied to one of their conversations."""
    body: TicketIn = call.body
    async with changing(call) as (session, events):
        customer = await session.get(Customer, body.customer_id)
        if customer is None or customer.deleted_at is not None:
            raise ApiError(400, "validation_error", "no such customer", "customer_id")
        await _check_refs(session, body.assignee_id, body.conversation_id, body.customer_id)
        ticket = Ticket(subject=body.subject, description=body.description,
                        category=body.category, priority=body.priority,
                        status=TicketStatus.NEW, customer_id=body.customer_id,
                        conversation_id=body.conversation_id, assignee_id=body.assignee_id,
                        tags=_tags(body.tags))
        session.add(ticket)
        await session.flush()
        ticket.number = ticket_number(ticket.id)
        audit.record(session, actor=call.actor, action="create", entity_type="ticket",
                     entity_id=ticket.id, after=_state(ticket))
        await session.flush()
        result = ticket_out(ticket)
        events.append(Event(TICKET_CREATED, {
            "ticket_id": result.id, "number": result.number, "customer_id": result.customer_id,
            "category": result.category.value, "priority": result.priority.value}))
    return result


@router.route("PATCH", "/tickets/{ticket_id}", scope="tickets:write", summary="Change a ticket",
              tag=TAG, body=TicketPatch, response=TicketOut, errors=(409,))
async def update_ticket(call: ApiCall) -> TicketOut:
    """Status, priority, category, assignee, subject, tags; audited before and after."""
    body: TicketPatch = call.body
    given = body.model_fields_set
    async with changing(call) as (session, events):
        ticket = await session.get(Ticket, call.params["ticket_id"])
        if ticket is None:
            raise ApiError(404, "not_found", "no such ticket")
        before = _state(ticket)
        now = utcnow()
        if "assignee_id" in given:
            await _check_refs(session, body.assignee_id)
            ticket.assignee_id = body.assignee_id
        for name in ("subject", "category", "priority"):
            value = getattr(body, name)
            if name in given and value is not None:
                setattr(ticket, name, value)
        if "description" in given:
            ticket.description = body.description
        if "tags" in given and body.tags is not None:
            ticket.tags = _tags(body.tags)
        if "status" in given and body.status is not None:
            apply_status(ticket, body.status, now)
        ticket.updated_at = now
        old, new = audit.diff(before, _state(ticket))
        if new:
            audit.record(session, actor=call.actor, action="update", entity_type="ticket",
                         entity_id=ticket.id, before=old, after=new)
        await session.flush()
        result = ticket_out(ticket)
        if new:
            events.append(Event(TICKET_UPDATED, {"ticket_id": result.id, "change": "api",
                                                 "fields": sorted(new),
                                                 "customer_id": result.customer_id}))
    return result
