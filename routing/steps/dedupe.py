"""dedupe: a message whose idempotency key was already logged has no further effect."""

from __future__ import annotations

from sqlalchemy import select

from crm_core.models import Interaction
from routing.context import RoutingContext, StopProcessing


async def dedupe(ctx: RoutingContext) -> None:
    """Stop when an interaction with this idempotency key exists."""
    known = await ctx.session.scalar(
        select(Interaction.id).where(Interaction.external_id == ctx.envelope.idempotency_key)
    )
    if known is not None:
        raise StopProcessing(f"duplicate of interaction #{known}")
