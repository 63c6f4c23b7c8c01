"""The flat facts that team and automation rules are evaluated against."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from routing.context import RoutingContext
from routing.steps.ticket import message_text


def build_facts(ctx: RoutingContext) -> dict[str, Any]:
    """Message, customer and ticket fields, with local time in the business time zone."""
    customer = ctx.require_customer()
    ticket = ctx.ticket
    calendar = ctx.config.rules.calendar
    local = ctx.envelope.received_at.astimezone(ZoneInfo(calendar.timezone))
    return {
        "channel": ctx.envelope.channel.value,
        "text": message_text(ctx),
        "subject": ctx.envelope.subject or "",
        "category": ticket.category.value if ticket else None,
        "priority": ticket.priority.value if ticket else None,
        "tier": customer.tier_code,
        "customer_language": customer.language,
        "customer_tags": list(customer.tags) if "tag_rows" in customer.__dict__ else [],
        "is_new_customer": ctx.customer_created,
        "hour": local.hour,
        "weekday": local.isoweekday(),
        "in_business_hours": calendar.is_open(ctx.envelope.received_at),
        "ticket_status": ticket.status.value if ticket else None,
        "ticket_is_new": ctx.ticket_created,
    }
