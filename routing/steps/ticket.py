"""ticket: open a ticket for a new conversation, reopen a recently resolved one, or append.

Category and priority come from the keyword rules (Chinese and English) and the
customer's tier; SLA due times follow business hours and holidays.
"""

from __future__ import annotations

from sqlalchemy import select

from crm_core.models import Ticket, TicketStatus, ticket_number, utcnow
from routing.context import RoutingContext
from routing.events import TICKET_CREATED, TICKET_UPDATED

SUBJECT_FROM_TEXT = 80


def _subject(ctx: RoutingContext) -> str:
    envelope = ctx.envelope
    if ctx.bot_subject:
        return ctx.bot_subject[:500]
    if envelope.subject:
        return envelope.subject[:500]
    text = " ".join((envelope.text or "").split())
    if text:
        return text[:SUBJECT_FROM_TEXT] + ("…" if len(text) > SUBJECT_FROM_TEXT else "")
    return f"{envelope.channel.value} message"


def message_text(ctx: RoutingContext) -> str:
    """Subject and body, for keyword rules."""
    return " ".join(p for p in (ctx.envelope.subject, ctx.envelope.text) if p)


async def _open_ticket(ctx: RoutingContext) -> Ticket:
    rules = ctx.config.rules
    text = message_text(ctx)
    category, category_hits = rules.categorize(text)
    priority, priority_hits = rules.priority(ctx.require_customer().tier_code, text)
    opened = ctx.envelope.received_at
    first_due, resolution_due = rules.sla.due_times(priority, opened, rules.calendar)
    ticket = Ticket(
        subject=_subject(ctx),
        category=category,
        priority=priority,
        status=TicketStatus.NEW,
        customer_id=ctx.require_customer().id,
        conversation_id=ctx.require_conversation().id,
        first_response_due_at=first_due,
        resolution_due_at=resolution_due,
        tags=list(dict.fromkeys(
            [str(t) for t in ctx.envelope.metadata.get("ticket_tags", [])] + ctx.bot_tags
        ))[:20],
    )
    ctx.session.add(ticket)
    await ctx.session.flush()
    ticket.number = ticket_number(ticket.id)
    for hit in (*category_hits, *priority_hits):
        ctx.hit(hit)
    return ticket


async def ticket(ctx: RoutingContext) -> None:
    """Set ``ctx.ticket``: the conversation's ticket, reopened or new as the rules say.

    Automated mail (auto-replies, bounces, list mail) touches no ticket: an out-of-office
    answer must neither open a ticket nor count as the customer's reply. Neither does a
    ``log_only`` message (a call that started: it becomes a ticket only with a voicemail,
    a callback request or an agent). ``metadata.ticket_tags`` tag a new ticket.
    """
    if ctx.envelope.automated:
        ctx.hit(f"ticket:skipped-automated:{ctx.envelope.automated}")
        return
    if ctx.envelope.metadata.get("log_only"):
        ctx.hit("ticket:skipped-log-only")
        return
    if ctx.bot_handled:
        ctx.hit("ticket:skipped-bot")
        return
    conversation = ctx.require_conversation()
    # A conversation this envelope opened has no ticket yet: no need to look.
    current = None if ctx.conversation_created else await ctx.session.scalar(
        select(Ticket)
        .where(Ticket.conversation_id == conversation.id)
        .order_by(Ticket.id.desc())
        .limit(1)
    )
    now = ctx.envelope.received_at
    if current is not None and current.status in (TicketStatus.RESOLVED, TicketStatus.CLOSED):
        resolved = current.resolved_at or current.closed_at or current.updated_at
        if now - resolved <= ctx.config.rules.reopen_within:
            current.status = TicketStatus.OPEN
            current.reopen_count += 1
            current.resolved_at = None
            current.closed_at = None
            current.updated_at = utcnow()
            ctx.ticket = current
            ctx.ticket_reopened = True
            ctx.hit(f"ticket:reopened:{current.number}")
            ctx.emit(TICKET_UPDATED, ticket_id=current.id, change="reopened")
            return
        current = None
    if current is None:
        new = await _open_ticket(ctx)
        ctx.ticket = new
        ctx.ticket_created = True
        ctx.hit(f"ticket:created:{new.number}")
        ctx.emit(
            TICKET_CREATED,
            ticket_id=new.id,
            number=new.number,
            customer_id=new.customer_id,
            category=new.category.value,
            priority=new.priority.value,
        )
        return
    if current.status == TicketStatus.PENDING:
        current.status = TicketStatus.OPEN
    current.updated_at = utcnow()
    if ctx.bot_tags:
        current.tags = list(dict.fromkeys([*current.tags, *ctx.bot_tags]))[:20]
    ctx.ticket = current
    ctx.hit(f"ticket:appended:{current.number}")
    ctx.emit(TICKET_UPDATED, ticket_id=current.id, change="customer-replied")
