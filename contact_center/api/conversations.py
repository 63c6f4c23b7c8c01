"""``/conversations``: list with filters, messages, and replies through the outbox (the
same path as the console's reply: the channel adapter sends it, nothing is lost)."""

from __future__ import annotations

import structlog
from sqlalchemy import select

from contact_center.api.common import changing, database, decode_cursor, next_cursor
from contact_center.api.errors import ApiError, from_domain
from contact_center.api.framework import ApiCall, ApiRouter
from contact_center.api.models import (
    ConversationFilter,
    ConversationOut,
    ConversationPage,
    MessageOut,
    MessagePage,
    PageQuery,
    ReplyIn,
    ReplyOut,
)
from contact_center.web.conversations import HANDLE_FIELD, latest_ticket, reply_targets
from crm_core.errors import CrmError
from crm_core.models import Channel, Conversation, Direction, Interaction, TicketStatus, utcnow
from crm_core.services import audit
from crm_core.services.customers import get_customer
from routing.envelope import SenderHandles
from routing.events import INTERACTION_LOGGED, TICKET_UPDATED, Event
from routing.outbox import enqueue_reply

log = structlog.get_logger(__name__)
router = ApiRouter()
TAG = "conversations"


def conversation_out(c: Conversation) -> ConversationOut:
    """The API view of a conversation."""
    return ConversationOut.model_validate(c, from_attributes=True)


@router.route("GET", "/conversations", scope="conversations:read", tag=TAG,
              summary="List conversations", query=ConversationFilter,
              response=ConversationPage)
async def list_conversations(call: ApiCall) -> ConversationPage:
    """Newest first."""
    f: ConversationFilter = call.query
    stmt = select(Conversation)
    if f.customer_id is not None:
        stmt = stmt.where(Conversation.customer_id == f.customer_id)
    if f.channel is not None:
        stmt = stmt.where(Conversation.channel == f.channel)
    if f.status is not None:
        stmt = stmt.where(Conversation.status == f.status)
    if f.assignee_id is not None:
        stmt = stmt.where(Conversation.assignee_id == f.assignee_id)
    after = decode_cursor(f.cursor)
    if after is not None:
        stmt = stmt.where(Conversation.id < after)
    async with database(call).sessions() as session:
        rows = list(await session.scalars(stmt.order_by(Conversation.id.desc())
                                          .limit(f.limit + 1)))
    return ConversationPage(items=[conversation_out(c) for c in rows[: f.limit]],
                            next_cursor=next_cursor(rows, f.limit))


@router.route("GET", "/conversations/{conversation_id}", scope="conversations:read", tag=TAG,
              summary="Read a conversation", response=ConversationOut)
async def get_conversation(call: ApiCall) -> ConversationOut:
    """One conversation."""
    async with database(call).sessions() as session:
        found = await session.get(Conversation, call.params["conversation_id"])
    if found is None:
        raise ApiError(404, "not_found", "no such conversation")
    return conversation_out(found)


@router.route("GET", "/conversations/{conversation_id}/messages", scope="conversations:read",
              tag=TAG, summary="List the messages of a conversation", query=PageQuery,
              response=MessagePage)
async def list_messages(call: ApiCall) -> MessagePage:
    """Oldest first: messages both ways, calls and internal notes."""
    f: PageQuery = call.query
    conversation_id = call.params["conversation_id"]
    stmt = select(Interaction).where(Interaction.conversation_id == conversation_id)
    after = decode_cursor(f.cursor)
    if after is not None:
        stmt = stmt.where(Interaction.id > after)
    async with database(call).sessions() as session:
        if await session.get(Conversation, conversation_id) is None:
            raise ApiError(404, "not_found", "no such conversation")
        rows = list(await session.scalars(stmt.order_by(Interaction.id).limit(f.limit + 1)))
    items = [MessageOut(id=i.id, conversation_id=i.conversation_id, customer_id=i.customer_id,
                        channel=i.channel, direction=i.direction, kind=i.kind,
                        subject=i.subject, text=i.text, agent_id=i.agent_id,
                        attachments=[a for a in (i.attachments or []) if isinstance(a, dict)],
                        occurred_at=i.occurred_at) for i in rows[: f.limit]]
    return MessagePage(items=items, next_cursor=next_cursor(rows, f.limit))


@router.route("POST", "/conversations/{conversation_id}/messages", scope="conversations:write",
              tag=TAG, summary="Reply to a conversation", body=ReplyIn, response=ReplyOut,
              status=202, errors=(409,))
async def send_reply(call: ApiCall) -> ReplyOut:
    """Queued in the outbox and sent on the conversation's channel to the customer's handle
    there (202: accepted; delivery follows). Sent as the token's agent, if it has one."""
    body: ReplyIn = call.body
    agent_id = call.token.agent_id
    try:
        async with changing(call) as (session, events):
            conversation = await session.get(Conversation, call.params["conversation_id"])
            if conversation is None:
                raise ApiError(404, "not_found", "no such conversation")
            customer = await get_customer(session, conversation.customer_id)
            targets = [t for t in await reply_targets(session, customer, conversation)
                       if t.channel == conversation.channel]
            if not targets:
                raise ApiError(409, "no_reply_channel",
                               "the customer cannot be written to on this conversation's "
                               "channel")
            target = targets[0]
            ticket = await latest_ticket(session, conversation.id)
            subject = None
            if target.channel == Channel.EMAIL:
                subject = body.subject or (conversation.subject or "")[:300] or None
            message = await enqueue_reply(
                session, conversation=conversation, customer=customer, channel=target.channel,
                to=SenderHandles(**{HANDLE_FIELD[target.channel]: target.value},
                                 display_name=customer.display_name),
                text=body.text, subject=subject, agent_id=agent_id)
            now = utcnow()
            conversation.last_message_at = now
            if ticket is not None:
                if ticket.first_responded_at is None:
                    ticket.first_responded_at = now
                if ticket.status == TicketStatus.NEW:
                    ticket.status = TicketStatus.OPEN
                ticket.updated_at = now
            audit.record(session, actor=call.actor, action="reply", entity_type="conversation",
                         entity_id=conversation.id,
                         after={"interaction_id": message.interaction_id,
                                "outbox_id": message.id})
            result = ReplyOut(interaction_id=message.interaction_id, outbox_id=message.id,
                              conversation_id=conversation.id)
            events.append(Event(INTERACTION_LOGGED, {
                "interaction_id": result.interaction_id,
                "conversation_id": result.conversation_id, "customer_id": customer.id,
                "channel": target.channel.value, "direction": Direction.OUTBOUND.value,
                "agent_id": agent_id}))
            if ticket is not None:
                events.append(Event(TICKET_UPDATED, {
                    "ticket_id": ticket.id, "change": "agent-replied",
                    "conversation_id": result.conversation_id, "customer_id": customer.id}))
    except CrmError as exc:
        raise from_domain(exc) from None
    log.info("api.reply", conversation_id=result.conversation_id, outbox_id=result.outbox_id,
             token_id=call.token.id)
    return result
