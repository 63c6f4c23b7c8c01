"""bounces: keep the deliverability of e-mail identities up to date.

A bounce marks each undeliverable address as bouncing (campaigns skip it, agents see it);
a mail a person writes from an address proves it works again and clears the mark.
"""

from __future__ import annotations

from sqlalchemy import update

from crm_core.errors import ValidationError
from crm_core.models import CustomerIdentity, IdentityKind
from crm_core.normalize import normalize_email
from routing.context import RoutingContext

BOUNCE = "bounce"


def _normalized(addresses: tuple[str, ...]) -> list[str]:
    found = []
    for address in addresses:
        try:
            found.append(normalize_email(address))
        except ValidationError:
            continue
    return found


async def bounces(ctx: RoutingContext) -> None:
    """Mark bounced addresses; clear the mark when a person writes from one."""
    envelope = ctx.envelope
    if envelope.automated == BOUNCE:
        addresses = _normalized(envelope.bounced_addresses)
        if not addresses:
            ctx.hit("bounce:no-recipient-found")
            return
        reason = (envelope.subject or "bounce")[:500]
        result = await ctx.session.execute(
            update(CustomerIdentity)
            .where(
                CustomerIdentity.kind == IdentityKind.EMAIL,
                CustomerIdentity.value.in_(addresses),
            )
            .values(bounced_at=envelope.received_at, bounce_reason=reason)
            .execution_options(synchronize_session=False)
        )
        ctx.hit(f"bounce:marked:{result.rowcount}")
        return
    if envelope.automated or not envelope.sender.email:
        return
    addresses = _normalized((envelope.sender.email,))
    if addresses:
        await ctx.session.execute(
            update(CustomerIdentity)
            .where(
                CustomerIdentity.kind == IdentityKind.EMAIL,
                CustomerIdentity.value == addresses[0],
                CustomerIdentity.bounced_at.is_not(None),
            )
            .values(bounced_at=None, bounce_reason=None)
            .execution_options(synchronize_session=False)
        )
