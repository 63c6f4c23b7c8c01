"""Customer 360: the card beside a conversation — who the customer is, how to reach them,
what they have with us — with a few fields editable in place and one-click merges of
suggested duplicates. Every change goes through the audited ``crm_core`` services.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import pydantic
import structlog
from aiohttp import web
from sqlalchemy import exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from contact_center.app import ENGINE_KEY, SETTINGS_KEY
from contact_center.settings import Settings
from contact_center.web.auth import DATABASE, PREFIX, context, current_agent, forbidden
from contact_center.web.display import Display
from contact_center.web.forms import FormProblem, actor_of, done, parse_int, problem, safe_next
from contact_center.web.policy import conversation_filter, customer_filter, is_supervisor
from contact_center.web.render import page
from crm_core.errors import CrmError, NotFoundError, ValidationError
from crm_core.identity import dismiss_suggestion
from crm_core.models import (
    Agent,
    Conversation,
    Customer,
    CustomerCategory,
    CustomerTier,
    DuplicateSuggestion,
    FeedbackResponse,
    Interaction,
    InteractionKind,
    Segment,
    Ticket,
    TicketStatus,
)
from crm_core.services import audit
from crm_core.services.customer_query import (
    CustomerQuery,
    build_filters,
    name_condition,
    name_query_text,
    resolve_free_text,
)
from crm_core.services.customers import get_customer, update_customer
from crm_core.services.merge import merge_customers
from routing.events import CUSTOMER_UPDATED, Event, changing

log = structlog.get_logger(__name__)

"""Event: a customer's record changed in the console (data: customer_id[, merged_id])."""
CARD_LIVE_EVENTS = "customer.updated ticket.created ticket.updated interaction.logged"
EDITABLE = ("display_name", "language", "tier_code", "notes")
MAX_SEGMENTS = 50
OPEN_STATUSES = (TicketStatus.NEW, TicketStatus.OPEN, TicketStatus.PENDING)


async def customer_visible(session: AsyncSession, agent: Agent, team_ids: set[int],
                           customer: Customer) -> bool:
    """Whether ``agent`` may see this loaded customer (``policy.customer_filter``)."""
    if is_supervisor(agent) or customer.owner_agent_id == agent.id:
        return True
    return bool(await session.scalar(select(exists().where(
        Customer.id == customer.id, customer_filter(agent, team_ids)))))


async def segments_of(session: AsyncSession, customer_id: int, region: str) -> list[Segment]:
    """The saved segments whose filter holds for the customer (name matches included)."""
    found = []
    for segment in await session.scalars(select(Segment).order_by(Segment.name)
                                         .limit(MAX_SEGMENTS)):
        try:
            query = resolve_free_text(CustomerQuery.model_validate(segment.filter or {}))
            conditions = build_filters(query, region=region)
            name = name_query_text(query)
            if name:
                conditions.append(name_condition(name))
        except (pydantic.ValidationError, ValidationError):
            continue
        member = await session.scalar(
            select(Customer.id).where(Customer.id == customer_id, *conditions))
        if member is not None:
            found.append(segment)
    return found


def _class_name(row: CustomerTier | CustomerCategory | None, language: str) -> str | None:
    if row is None:
        return None
    return (row.name_zh or row.name) if language == "zh-CN" else row.name


async def satisfaction_history(session: AsyncSession, customer_id: int,
                               ) -> list[FeedbackResponse]:
    """The customer's survey answers (CSAT / NPS), newest first."""
    return list(await session.scalars(
        select(FeedbackResponse).where(FeedbackResponse.customer_id == customer_id,
                                       FeedbackResponse.kind.in_(["csat", "nps"]))
        .order_by(FeedbackResponse.created_at.desc()).limit(10)))


async def card_values(session: AsyncSession, agent: Agent, team_ids: set[int],
                      customer_id: int, settings: Settings, *,
                      conversation_id: int | None = None, language: str = "zh-CN",
                      ) -> dict[str, Any]:
    """Everything the card shows (the caller has checked the agent may see the customer)."""
    customer = await get_customer(session, customer_id, include_deleted=True)
    owner = await session.get(Agent, customer.owner_agent_id) if customer.owner_agent_id else None
    tiers = list(await session.scalars(select(CustomerTier).order_by(CustomerTier.rank.desc())))
    tier = next((t for t in tiers if t.code == customer.tier_code), None)
    category = (await session.get(CustomerCategory, customer.category_code)
                if customer.category_code else None)
    open_tickets = [tuple(row) for row in await session.execute(
        select(Ticket, Conversation.id)
        .join(Conversation, Conversation.id == Ticket.conversation_id)
        .where(Ticket.customer_id == customer.id, Ticket.status.in_(OPEN_STATUSES),
               conversation_filter(agent, team_ids))
        .order_by(Ticket.id.desc()).limit(20))]
    last_by_channel = [tuple(row) for row in await session.execute(
        select(Interaction.channel, func.max(Interaction.occurred_at))
        .where(Interaction.customer_id == customer.id,
               Interaction.kind.in_([InteractionKind.MESSAGE, InteractionKind.CALL]))
        .group_by(Interaction.channel).order_by(func.max(Interaction.occurred_at).desc()))]
    duplicates = []
    suggestions = await session.scalars(
        select(DuplicateSuggestion)
        .where(or_(DuplicateSuggestion.customer_id == customer.id,
                   DuplicateSuggestion.candidate_id == customer.id),
               DuplicateSuggestion.status == "open")
        .order_by(DuplicateSuggestion.score.desc()).limit(10))
    for suggestion in suggestions:
        other_id = (suggestion.candidate_id if suggestion.customer_id == customer.id
                    else suggestion.customer_id)
        other = await session.get(Customer, other_id)
        if other is None or other.deleted_at is not None:
            continue
        visible = await customer_visible(session, agent, team_ids, other)
        duplicates.append({"suggestion": suggestion, "other": other if visible else None,
                           "score": round(suggestion.score * 100 if suggestion.score <= 1
                                          else suggestion.score),
                           "reasons": sorted(key for key, value in
                                             (suggestion.reasons or {}).items() if value > 0)})
    return {
        "customer": customer, "owner": owner, "tier_name": _class_name(tier, language),
        "category_name": _class_name(category, language), "tiers": tiers,
        "segments": await segments_of(session, customer.id, settings.locale.default_region),
        "open_tickets": open_tickets, "last_by_channel": last_by_channel,
        "duplicates": duplicates, "conversation_id": conversation_id,
        "satisfaction": await satisfaction_history(session, customer.id),
        "live_events": CARD_LIVE_EVENTS,
        "card_src": f"{PREFIX}/customers/{customer.id}/card"
                    + (f"?conversation={conversation_id}" if conversation_id else ""),
    }


async def _visible_customer(request: web.Request, session: AsyncSession,
                            customer_id: int | None) -> Customer:
    ctx = context(request)
    agent = current_agent(request)
    customer = await session.get(Customer, customer_id) if customer_id else None
    if customer is None:
        raise web.HTTPNotFound(text=ctx.gettext("This customer does not exist."))
    if not await customer_visible(session, agent, ctx.team_ids, customer):
        log.warning("console.customer_refused", agent_id=agent.id, customer_id=customer.id)
        raise forbidden(request)
    return customer


async def card_fragment(request: web.Request) -> web.StreamResponse:
    """``/console/customers/{id}/card``: the card, for the conversation screen's side."""
    ctx = context(request)
    agent = current_agent(request)
    settings = request.app[SETTINGS_KEY]
    async with request.app[DATABASE].sessions() as session:
        customer = await _visible_customer(request, session,
                                           parse_int(request.match_info.get("id")))
        values = await card_values(session, agent, ctx.team_ids, customer.id, settings,
                                   conversation_id=parse_int(request.query.get("conversation")),
                                   language=ctx.language)
    return page(request, "_customer_card.html", card=values,
                show=Display(ctx.language, settings.locale.timezone))


def _back(request: web.Request, form: Mapping[str, Any], customer_id: int) -> str:
    return safe_next(form.get("next"), f"{PREFIX}/customers/{customer_id}/card")


def _changing(
    request: web.Request,
) -> AbstractAsyncContextManager[tuple[AsyncSession, list[Event]]]:
    return changing(request.app[DATABASE], request.app[ENGINE_KEY].events)


def _updated(customer_id: int, **data: Any) -> Event:
    return Event(CUSTOMER_UPDATED, {"customer_id": customer_id, **data})


async def edit_card(request: web.Request) -> web.StreamResponse:
    """Change the display name, language, tier or notes (audited by the service)."""
    ctx = context(request)
    agent = current_agent(request)
    settings = request.app[SETTINGS_KEY]
    form = await request.post()
    customer_id = parse_int(request.match_info.get("id")) or 0
    changes = {name: str(form[name]).strip() for name in EDITABLE if name in form}
    try:
        async with _changing(request) as (session, events):
            customer = await _visible_customer(request, session, customer_id)
            if changes.get("display_name") == "":
                raise FormProblem(ctx.gettext("The name cannot be empty."))
            current = {"display_name": customer.display_name, "language": customer.language
                       or "", "tier_code": customer.tier_code or "", "notes": customer.notes
                       or ""}
            changed = {k: v for k, v in changes.items() if v != current[k]}
            if changed:
                await update_customer(session, customer.id, changed, actor=actor_of(agent),
                                      region=settings.locale.default_region)
                events.append(_updated(customer_id))
    except FormProblem as refusal:
        return problem(request, refusal)
    except ValidationError as exc:
        return problem(request, FormProblem(ctx.gettext("This value cannot be used: {reason}",
                                                        reason=exc.reason)))
    log.info("console.customer_edited", agent_id=agent.id, customer_id=customer_id,
             fields=sorted(changed))
    return done(request, _back(request, form, customer_id), changed=sorted(changed))


async def _suggestion(session: AsyncSession, customer_id: int,
                      suggestion_id: int | None) -> tuple[DuplicateSuggestion, int]:
    suggestion = await session.get(DuplicateSuggestion, suggestion_id) if suggestion_id else None
    if suggestion is None or suggestion.status != "open" or customer_id not in (
            suggestion.customer_id, suggestion.candidate_id):
        raise NotFoundError("duplicate suggestion", suggestion_id)
    other = (suggestion.candidate_id if suggestion.customer_id == customer_id
             else suggestion.customer_id)
    return suggestion, other


async def merge_duplicate(request: web.Request) -> web.StreamResponse:
    """Fold a suggested duplicate into this customer (``crm_core.services.merge``)."""
    ctx = context(request)
    agent = current_agent(request)
    form = await request.post()
    customer_id = parse_int(request.match_info.get("id")) or 0
    try:
        async with _changing(request) as (session, events):
            customer = await _visible_customer(request, session, customer_id)
            suggestion, other_id = await _suggestion(session, customer.id,
                                                     parse_int(form.get("suggestion")))
            other = await _visible_customer(request, session, other_id)
            await merge_customers(session, customer.id, other.id, actor=actor_of(agent),
                                  reason=f"console: duplicate suggestion #{suggestion.id}")
            events.append(_updated(customer_id, merged_id=other_id))
    except NotFoundError:
        return problem(request, FormProblem(ctx.gettext("This suggestion is no longer open."),
                                            404))
    except CrmError as exc:
        return problem(request, FormProblem(ctx.gettext("The merge was refused: {reason}",
                                                        reason=str(exc)), 409))
    log.info("console.customers_merged", agent_id=agent.id, customer_id=customer_id,
             merged_id=other_id, suggestion_id=suggestion.id)
    return done(request, _back(request, form, customer_id), merged_id=other_id)


async def dismiss_duplicate(request: web.Request) -> web.StreamResponse:
    """Not the same person: the suggestion is dismissed (audited)."""
    ctx = context(request)
    agent = current_agent(request)
    form = await request.post()
    customer_id = parse_int(request.match_info.get("id")) or 0
    try:
        async with _changing(request) as (session, events):
            customer = await _visible_customer(request, session, customer_id)
            suggestion, other_id = await _suggestion(session, customer.id,
                                                     parse_int(form.get("suggestion")))
            await dismiss_suggestion(session, suggestion.id, actor=actor_of(agent))
            audit.record(session, actor=actor_of(agent), action="dismiss_duplicate",
                         entity_type="customer", entity_id=customer.id,
                         after={"suggestion_id": suggestion.id, "other_id": other_id})
            events.append(_updated(customer_id))
    except (NotFoundError, CrmError):
        return problem(request, FormProblem(ctx.gettext("This suggestion is no longer open."),
                                            404))
    log.info("console.duplicate_dismissed", agent_id=agent.id, customer_id=customer_id,
             suggestion_id=suggestion.id)
    return done(request, _back(request, form, customer_id))


def setup_customer360(app: web.Application) -> None:
    """Register the card and its actions."""
    base = f"{PREFIX}/customers/{{id:\\d+}}"
    app.router.add_get(f"{base}/card", card_fragment)
    app.router.add_post(f"{base}/card", edit_card)
    app.router.add_post(f"{base}/card/merge", merge_duplicate)
    app.router.add_post(f"{base}/card/dismiss", dismiss_duplicate)
