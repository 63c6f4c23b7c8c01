"""What the widget reads from the database on connect: agent presence and the history."""

from __future__ import annotations

from sqlalchemy import select

from channels.webchat.envelope import client_message_id_of
from channels.webchat.protocol import HistoryItem
from crm_core.db import Database
from crm_core.models import (
    Agent,
    Availability,
    Channel,
    Conversation,
    Customer,
    CustomerIdentity,
    Direction,
    IdentityKind,
    Interaction,
    InteractionKind,
    OutboxMessage,
)

HISTORY_LIMIT = 50


async def agents_online(database: Database) -> bool:
    """Whether at least one active agent is online now."""
    async with database.sessions() as session:
        found = await session.scalar(
            select(Agent.id)
            .where(Agent.availability == Availability.ONLINE, Agent.active.is_(True))
            .limit(1)
        )
    return found is not None


async def load_history(
    database: Database, visitor_id: str, limit: int = HISTORY_LIMIT
) -> list[HistoryItem]:
    """The last ``limit`` messages of the visitor's web chats, oldest first.

    The customer is found by the visitor's web chat identity (following merges), and only
    conversations threaded on this visitor id count: a visitor who typed someone else's
    e-mail address into the form never sees that customer's other chats.
    """
    async with database.sessions() as session:
        customer_id = await session.scalar(
            select(CustomerIdentity.customer_id).where(
                CustomerIdentity.kind == IdentityKind.WEBCHAT,
                CustomerIdentity.value == visitor_id,
            )
        )
        if customer_id is None:
            return []
        customer_ids = {customer_id}
        current: int | None = customer_id
        while current is not None:
            current = await session.scalar(
                select(Customer.merged_into_id).where(Customer.id == current)
            )
            if current is None or current in customer_ids:
                break
            customer_ids.add(current)
        rows = (
            await session.execute(
                select(
                    Interaction.direction,
                    Interaction.channel,
                    Interaction.text,
                    Interaction.occurred_at,
                    Interaction.external_id,
                    Agent.display_name,
                    OutboxMessage.id,
                )
                .join(Conversation, Conversation.id == Interaction.conversation_id)
                .outerjoin(Agent, Agent.id == Interaction.agent_id)
                .outerjoin(OutboxMessage, OutboxMessage.interaction_id == Interaction.id)
                .where(
                    Conversation.channel == Channel.WEBCHAT,
                    Conversation.thread_key == visitor_id,
                    Conversation.customer_id.in_(customer_ids),
                    Interaction.kind == InteractionKind.MESSAGE,
                    Interaction.direction.in_([Direction.INBOUND, Direction.OUTBOUND]),
                    Interaction.text.is_not(None),
                )
                .order_by(Interaction.occurred_at.desc(), Interaction.id.desc())
                .limit(limit)
            )
        ).all()
    items = [
        HistoryItem(
            direction="in" if direction == Direction.INBOUND else "out",
            text=text,
            at=occurred_at,
            agent_name=agent_name if direction == Direction.OUTBOUND else None,
            client_message_id=(
                client_message_id_of(external_id, visitor_id)
                if direction == Direction.INBOUND else None
            ),
            outbox_id=outbox_id if direction == Direction.OUTBOUND else None,
            via="email" if channel == Channel.EMAIL else "webchat",
        )
        for direction, channel, text, occurred_at, external_id, agent_name, outbox_id in rows
    ]
    items.reverse()
    return items
