"""log: record the message as an interaction, always (inbound here; outbound via the outbox)."""

from __future__ import annotations

from crm_core.models import Channel, Direction, Interaction, InteractionKind
from routing.context import RoutingContext
from routing.events import INTERACTION_LOGGED


async def log(ctx: RoutingContext) -> None:
    """Write the interaction, keyed by the envelope's idempotency key."""
    envelope = ctx.envelope
    conversation = ctx.require_conversation()
    interaction = Interaction(
        conversation_id=conversation.id,
        customer_id=ctx.require_customer().id,
        channel=envelope.channel,
        direction=Direction.INBOUND,
        kind=InteractionKind.CALL if envelope.channel == Channel.PHONE else InteractionKind.MESSAGE,
        subject=envelope.subject,
        text=envelope.text,
        html=envelope.html,
        attachments=[a.model_dump() for a in envelope.attachments],
        external_id=envelope.idempotency_key,
        message_ref=envelope.thread.message_id,
        meta={"channel": envelope.metadata, "raw_ref": envelope.raw_ref,
              **({"automated": envelope.automated} if envelope.automated else {})},
        occurred_at=envelope.received_at,
    )
    ctx.session.add(interaction)
    await ctx.session.flush()
    ctx.interaction = interaction
    ctx.emit(
        INTERACTION_LOGGED,
        interaction_id=interaction.id,
        conversation_id=conversation.id,
        customer_id=interaction.customer_id,
        channel=envelope.channel.value,
    )
