"""rules: automation from ``config/rules.toml`` — set fields, tag, route, auto-reply, notify."""

from __future__ import annotations

from crm_core.models import TicketCategory, TicketPriority
from routing.context import RoutingContext
from routing.events import NOTIFICATION, TICKET_UPDATED
from routing.facts import build_facts
from routing.outbox import enqueue_reply
from routing.steps.assign import assign_to

_PRIORITY_ORDER = list(TicketPriority)


async def rules(ctx: RoutingContext) -> None:
    """Apply every action of every matching automation rule, recording each as a hit.

    Automated mail matches no rule: answering an auto-reply is how mail loops start.
    """
    if ctx.envelope.automated or ctx.envelope.metadata.get("log_only") or ctx.bot_handled:
        return
    actions = ctx.config.rules.automation(build_facts(ctx))
    ticket = ctx.ticket
    for action in actions:
        ctx.hit(f"rule:{action.rule}:{action.kind}:{action.value}")
        if action.kind == "set_priority" and ticket is not None:
            ticket.priority = TicketPriority(action.value)
        elif action.kind == "escalate" and ticket is not None:
            index = _PRIORITY_ORDER.index(ticket.priority)
            ticket.priority = _PRIORITY_ORDER[min(index + 1, len(_PRIORITY_ORDER) - 1)]
        elif action.kind == "set_category" and ticket is not None:
            ticket.category = TicketCategory(action.value)
        elif action.kind == "add_tag" and ticket is not None:
            if action.value not in ticket.tags:
                ticket.tags = [*ticket.tags, action.value]
        elif action.kind == "assign_team":
            await assign_to(ctx, action.value, f"rule:{action.rule}")
        elif action.kind == "auto_reply" and not ctx.bot_active:
            await _auto_reply(ctx, action.value)
        elif action.kind == "notify":
            ctx.emit(
                NOTIFICATION,
                target=action.value,
                rule=action.rule,
                ticket_id=ticket.id if ticket else None,
                customer_id=ctx.require_customer().id,
            )
    if actions and ticket is not None:
        ctx.emit(TICKET_UPDATED, ticket_id=ticket.id, change="rules")


async def _auto_reply(ctx: RoutingContext, template: str) -> None:
    customer = ctx.require_customer()
    language = customer.language or ctx.config.default_language
    text = ctx.config.rules.render_template(
        template,
        language,
        customer_name=customer.display_name,
        ticket_number=ctx.ticket.number if ctx.ticket else "",
    )
    await enqueue_reply(
        ctx.session,
        conversation=ctx.require_conversation(),
        customer=customer,
        channel=ctx.envelope.channel,
        to=ctx.envelope.sender,
        text=text,
        subject=_reply_subject(ctx),
        in_reply_to=ctx.envelope.thread.message_id,
        automated=True,
        ticket_number=ctx.ticket.number if ctx.ticket else None,
    )


def _reply_subject(ctx: RoutingContext) -> str | None:
    subject = ctx.envelope.subject
    if ctx.ticket is not None and ctx.ticket.number and subject is not None:
        tag = f"[{ctx.ticket.number}]"
        subject = subject if tag in subject else f"{subject} {tag}"
        return subject if subject.lower().startswith("re:") else f"Re: {subject}"
    return subject
