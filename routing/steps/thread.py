"""thread: put a message into its conversation.

E-mail: by In-Reply-To / References against logged Message-IDs, then by a ticket
number in the subject (``[T-000123]``). A mail from someone who is not a participant
of the thread it points at never joins it silently: it opens its own conversation,
linked to the other. Chats: by chat id, a new conversation after an idle gap.
Calls: by call id.
"""

from __future__ import annotations

import re

from sqlalchemy import select

from crm_core.errors import ValidationError
from crm_core.models import (
    Channel,
    Conversation,
    ConversationStatus,
    Interaction,
    Ticket,
)
from crm_core.normalize import normalize_email
from routing.context import RoutingContext

TICKET_IN_SUBJECT = re.compile(r"\[\s*(T-\d{6,})\s*\]", re.IGNORECASE)


def _folded_addresses(values: tuple[str, ...] | list[str]) -> set[str]:
    folded = set()
    for value in values:
        try:
            folded.add(normalize_email(value))
        except ValidationError:  # an unreadable address is simply no participant
            continue
    return folded


async def _email_thread(ctx: RoutingContext) -> Conversation | None:
    hints = ctx.envelope.thread
    refs = [r for r in (hints.in_reply_to, *hints.references) if r]
    if refs:
        conversation_id = await ctx.session.scalar(
            select(Interaction.conversation_id)
            .where(Interaction.message_ref.in_(refs), Interaction.conversation_id.is_not(None))
            .order_by(Interaction.id.desc())
            .limit(1)
        )
        if conversation_id is not None:
            ctx.hit("thread:email-references")
            return await ctx.session.get(Conversation, conversation_id)
    match = TICKET_IN_SUBJECT.search(ctx.envelope.subject or "")
    if match:
        conversation_id = await ctx.session.scalar(
            select(Ticket.conversation_id).where(Ticket.number == match.group(1).upper())
        )
        if conversation_id is not None:
            ctx.hit(f"thread:ticket-number:{match.group(1).upper()}")
            return await ctx.session.get(Conversation, conversation_id)
    return None


def _is_participant(ctx: RoutingContext, conversation: Conversation) -> bool:
    customer = ctx.require_customer()
    if conversation.customer_id == customer.id:
        return True
    sender = _folded_addresses([ctx.envelope.sender.email or ""])
    return bool(sender & _folded_addresses(conversation.participants))


async def _chat_thread(ctx: RoutingContext, key: str | None) -> Conversation | None:
    if not key:
        return None
    conversation = await ctx.session.scalar(
        select(Conversation)
        .where(
            Conversation.channel == ctx.envelope.channel,
            Conversation.thread_key == key,
            Conversation.customer_id == ctx.require_customer().id,
        )
        .order_by(Conversation.id.desc())
        .limit(1)
    )
    if conversation is None:
        return None
    last = conversation.last_message_at or conversation.created_at
    gap = ctx.config.chat_idle_gap
    if ctx.envelope.channel != Channel.PHONE and ctx.envelope.received_at - last > gap:
        ctx.hit("thread:idle-gap-new-conversation")
        return None
    ctx.hit(f"thread:{ctx.envelope.channel.value}-key")
    return conversation


async def thread(ctx: RoutingContext) -> None:
    """Set ``ctx.conversation``: an existing thread, or a new conversation."""
    envelope = ctx.envelope
    found: Conversation | None = None
    related: Conversation | None = None
    if envelope.channel == Channel.EMAIL:
        candidate = await _email_thread(ctx)
        if candidate is not None and _is_participant(ctx, candidate):
            found = candidate
        elif candidate is not None:
            related = candidate
            ctx.hit(f"thread:stranger-kept-apart:{candidate.id}")
    elif envelope.channel == Channel.PHONE:
        found = await _chat_thread(ctx, envelope.thread.call_id)
    else:
        found = await _chat_thread(ctx, envelope.thread.chat_id)

    if found is not None:
        if found.status == ConversationStatus.CLOSED:
            found.status = ConversationStatus.OPEN
            found.closed_at = None
        found.last_message_at = envelope.received_at
        ctx.conversation = found
        return
    key = {
        Channel.EMAIL: envelope.thread.message_id,
        Channel.PHONE: envelope.thread.call_id,
    }.get(envelope.channel, envelope.thread.chat_id)
    conversation = Conversation(
        customer_id=ctx.require_customer().id,
        channel=envelope.channel,
        subject=(envelope.subject or "")[:500] or None,
        thread_key=key,
        participants=sorted(_folded_addresses(list(envelope.thread.recipients))),
        related_conversation_id=related.id if related is not None else None,
        last_message_at=envelope.received_at,
    )
    ctx.session.add(conversation)
    await ctx.session.flush()
    ctx.conversation = conversation
    ctx.conversation_created = True
    ctx.hit("thread:new-conversation")
