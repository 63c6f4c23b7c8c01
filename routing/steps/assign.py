"""assign: give a new or reopened conversation to an agent, or to a team's queue."""

from __future__ import annotations

from sqlalchemy import select

from crm_core.models import Team
from routing.assignment import choose_assignee
from routing.context import RoutingContext
from routing.events import CONVERSATION_ASSIGNED
from routing.facts import build_facts


async def assign_to(ctx: RoutingContext, team_name: str | None, reason_prefix: str) -> None:
    """Choose an assignee within ``team_name`` (or anyone) and record it everywhere."""
    customer = ctx.require_customer()
    conversation = ctx.require_conversation()
    rules = ctx.config.rules
    assignment = await choose_assignee(
        ctx.session,
        customer_owner_id=customer.owner_agent_id,
        team_name=team_name,
        language=customer.language,
        required_skills=rules.required_skills(ctx.ticket.category if ctx.ticket else None),
        strategy=rules.strategy,
        sticky_owner=rules.sticky_owner,
    )
    conversation.assignee_id = assignment.agent_id
    conversation.team_id = assignment.team_id
    if ctx.ticket is not None:
        ctx.ticket.assignee_id = assignment.agent_id
        ctx.ticket.team_id = assignment.team_id
    ctx.hit(f"{reason_prefix}:{assignment.reason}")
    ctx.emit(
        CONVERSATION_ASSIGNED,
        conversation_id=conversation.id,
        agent_id=assignment.agent_id,
        team_id=assignment.team_id,
        reason=assignment.reason,
    )


async def assign(ctx: RoutingContext) -> None:
    """Assign when the conversation is new, reopened, or still has nobody on it."""
    if ctx.envelope.automated or ctx.envelope.metadata.get("log_only") or ctx.bot_handled:
        return
    conversation = ctx.require_conversation()
    if ctx.bot_team and conversation.assignee_id is None:
        exists = await ctx.session.scalar(select(Team.id).where(Team.name == ctx.bot_team))
        await assign_to(ctx, ctx.bot_team if exists is not None else None, "bot-handoff")
        return
    if not (ctx.conversation_created or ctx.ticket_reopened or conversation.assignee_id is None):
        return
    if conversation.assignee_id is None and conversation.team_id is not None and not (
        ctx.conversation_created or ctx.ticket_reopened
    ):
        return  # already waiting in a team queue
    team_name, hits = ctx.config.rules.team_for(build_facts(ctx))
    for hit in hits:
        ctx.hit(hit)
    if team_name is not None:
        exists = await ctx.session.scalar(select(Team.id).where(Team.name == team_name))
        if exists is None:
            ctx.hit(f"assign:unknown-team:{team_name}")
            team_name = None
    await assign_to(ctx, team_name, "assign")
