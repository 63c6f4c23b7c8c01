"""The inbox: one list over every channel, by view (mine, unassigned, my teams, all),
filtered, searched and sorted by the SLA clock, refreshed live.

Each row is a conversation with its newest ticket. Every query goes through
``policy.conversation_filter``, so nobody sees a row they could not open. A ticket
snoozed by its agent (status pending with a snooze time in the future, see
``conversations.snooze``) leaves "mine" until the time passes or the customer writes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import structlog
from aiohttp import web
from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    case,
    exists,
    false,
    func,
    not_,
    or_,
    select,
    true,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from contact_center.app import SETTINGS_KEY
from contact_center.web.auth import (
    CHANGE_HOOKS,
    DATABASE,
    PREFIX,
    RequestContext,
    context,
    current_agent,
    forbidden,
)
from contact_center.web.display import Display
from contact_center.web.fresh_cache import FreshCache
from contact_center.web.policy import conversation_filter, is_admin, is_supervisor
from contact_center.web.render import page
from contact_center.web.search import conversation_text_condition, search_terms, snippet
from crm_core.models import (
    Agent,
    Channel,
    Conversation,
    Customer,
    Direction,
    Interaction,
    InteractionKind,
    Team,
    Ticket,
    TicketCategory,
    TicketPriority,
    TicketStatus,
    utcnow,
)

log = structlog.get_logger(__name__)

VIEWS = ("mine", "unassigned", "teams", "all")
SUPERVISOR_VIEWS = frozenset({"all"})
STATUS_CHOICES = ("active", "any", *(s.value for s in TicketStatus))
ACTIVE_STATUSES = (TicketStatus.NEW, TicketStatus.OPEN, TicketStatus.PENDING)
DONE_STATUSES = (TicketStatus.RESOLVED, TicketStatus.CLOSED)
PAGE_SIZE = 50
LIVE_EVENTS = "interaction.logged ticket.created ticket.updated conversation.assigned"
INBOX_CACHE = web.AppKey("console_inbox_cache", FreshCache)
SNOOZE_EVENT = "snoozed"
UNSNOOZE_EVENT = "unsnoozed"


def snooze_stamp(moment: datetime) -> str:
    """The sortable text form of a snooze time (UTC, seconds): compared as text in SQL."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _enum_or_none(kind: type[Any], value: str | None) -> Any:
    try:
        return kind(value) if value else None
    except ValueError:
        return None


@dataclass(frozen=True)
class InboxFilters:
    """What the agent asked the inbox for (from the query string; bad values are ignored)."""

    view: str = "mine"
    channel: Channel | None = None
    status: str = "active"
    priority: TicketPriority | None = None
    category: TicketCategory | None = None
    tag: str | None = None
    breach: bool = False
    q: str = ""
    page: int = 1

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> InboxFilters:
        """Read the filters of ``/console/inbox?view=…&status=…``."""
        view = query.get("view", "mine")
        status = query.get("status", "active")
        try:
            page_number = max(1, min(int(query.get("page", "1")), 10_000))
        except ValueError:
            page_number = 1
        return cls(
            view=view if view in VIEWS else "mine",
            channel=_enum_or_none(Channel, query.get("channel")),
            status=status if status in STATUS_CHOICES else "active",
            priority=_enum_or_none(TicketPriority, query.get("priority")),
            category=_enum_or_none(TicketCategory, query.get("category")),
            tag=(query.get("tag") or "").strip()[:100] or None,
            breach=query.get("breach") in ("1", "on", "true"),
            q=(query.get("q") or "").strip()[:200],
            page=page_number,
        )

    def query_string(self, **changes: Any) -> str:
        """The query string of these filters with ``changes`` (defaults left out)."""
        values = replace(self, **changes)
        pairs = {
            "view": values.view, "channel": values.channel.value if values.channel else "",
            "status": values.status if values.status != "active" else "",
            "priority": values.priority.value if values.priority else "",
            "category": values.category.value if values.category else "",
            "tag": values.tag or "", "breach": "1" if values.breach else "", "q": values.q,
            "page": str(values.page) if values.page > 1 else "",
        }
        return urlencode({k: v for k, v in pairs.items() if v})


# Made once: an alias adapts every column it is asked for, which cost more than the rest
# of building the inbox's statements when a new alias was made per request.
_OTHER_TICKET = aliased(Ticket)
_ASSIGNEE = aliased(Agent)


def latest_ticket_id() -> Any:
    """The id of a conversation's newest ticket (correlated)."""
    return (select(func.max(_OTHER_TICKET.id))
            .where(_OTHER_TICKET.conversation_id == Conversation.id)
            .correlate(Conversation).scalar_subquery())


def snoozed_until_column() -> Any:
    """The snooze time of the conversation's latest snooze record ('' once unsnoozed)."""
    return (
        select(Interaction.meta["snoozed_until"].as_string())
        .where(Interaction.conversation_id == Conversation.id,
               Interaction.kind == InteractionKind.SYSTEM,
               Interaction.meta["event"].as_string().in_([SNOOZE_EVENT, UNSNOOZE_EVENT]))
        .order_by(Interaction.id.desc())
        .limit(1)
        .correlate(Conversation)
        .scalar_subquery()
    )


def snoozed_condition(now: datetime) -> ColumnElement[bool]:
    """A pending ticket whose snooze time is still ahead."""
    return and_(Ticket.status == TicketStatus.PENDING,
                func.coalesce(snoozed_until_column(), "") > snooze_stamp(now))


def breach_condition(now: datetime) -> ColumnElement[bool]:
    """First response or resolution due time passed and not met (open tickets only)."""
    return and_(
        Ticket.status.not_in(DONE_STATUSES),
        or_(
            and_(Ticket.first_responded_at.is_(None), Ticket.first_response_due_at < now),
            and_(Ticket.resolved_at.is_(None), Ticket.resolution_due_at < now),
        ),
    )


def view_condition(view: str, agent: Agent, team_ids: set[int], now: datetime,
                   ) -> ColumnElement[bool]:
    """The rows of one view (on top of the policy filter)."""
    teams = Conversation.team_id.in_(team_ids) if team_ids else false()
    if view == "mine":
        return and_(Conversation.assignee_id == agent.id, not_(snoozed_condition(now)))
    if view == "unassigned":
        scope = true() if is_admin(agent) else or_(teams, Conversation.team_id.is_(None))
        return and_(Conversation.assignee_id.is_(None), scope)
    if view == "teams":
        return teams
    return true()


def tag_condition(tag: str, *, sqlite: bool) -> ColumnElement[bool]:
    """The ticket carries ``tag`` (JSON list: json_each on SQLite, ``@>`` on PostgreSQL)."""
    if sqlite:
        values = func.json_each(Ticket.tags).table_valued("value")
        return exists().select_from(values).where(values.c.value == tag)
    return type_coerce(Ticket.tags, JSONB).contains([tag])


def filter_conditions(filters: InboxFilters, now: datetime, *, sqlite: bool,
                      ) -> list[ColumnElement[bool]]:
    """Every condition of the filters except the view."""
    conditions: list[ColumnElement[bool]] = []
    if filters.channel is not None:
        conditions.append(Conversation.channel == filters.channel)
    if filters.status == "active":
        conditions.append(Ticket.status.in_(ACTIVE_STATUSES))
    elif filters.status != "any":
        conditions.append(Ticket.status == TicketStatus(filters.status))
    if filters.priority is not None:
        conditions.append(Ticket.priority == filters.priority)
    if filters.category is not None:
        conditions.append(Ticket.category == filters.category)
    if filters.tag:
        conditions.append(tag_condition(filters.tag, sqlite=sqlite))
    if filters.breach:
        conditions.append(breach_condition(now))
    if search_terms(filters.q):
        conditions.append(conversation_text_condition(filters.q, sqlite=sqlite))
    return conditions


def sla_due() -> ColumnElement[Any]:
    """The next SLA deadline: first response until it is met, then resolution."""
    return case(
        (Ticket.first_responded_at.is_(None),
         func.coalesce(Ticket.first_response_due_at, Ticket.resolution_due_at)),
        else_=Ticket.resolution_due_at,
    )


def _base(agent: Agent, team_ids: set[int], filters: InboxFilters, now: datetime, *,
          sqlite: bool, columns: list[Any]) -> Select[Any]:
    return (
        select(*columns)
        .select_from(Conversation)
        # The first condition is implied by the second; it lets the database start from
        # the tickets the status filter picks (an index) instead of every conversation
        # ever held (measured: 205,000 conversations, 5,000 active).
        .join(Ticket, and_(Ticket.conversation_id == Conversation.id,
                           Ticket.id == latest_ticket_id()))
        .join(Customer, Customer.id == Conversation.customer_id)
        .where(conversation_filter(agent, team_ids),
               *filter_conditions(filters, now, sqlite=sqlite))
    )


@dataclass
class InboxRow:
    """One line of the inbox."""

    conversation: Conversation
    ticket: Ticket
    customer: Customer
    assignee_name: str | None
    team_name: str | None
    snoozed_until: datetime | None
    due: datetime | None
    breached: bool
    snippet: str = ""


@dataclass
class InboxPage:
    """The rows of one page, the counts per view, whether there is a next page."""

    rows: list[InboxRow]
    counts: dict[str, int]
    has_more: bool
    json_body: bytes | None = None
    """The page as ``/console/inbox.json`` answers it, made once per cached page."""


def _parse_stamp(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def _is_breached(ticket: Ticket, now: datetime) -> bool:
    if ticket.status in DONE_STATUSES:
        return False
    first = (ticket.first_responded_at is None and ticket.first_response_due_at is not None
             and ticket.first_response_due_at < now)
    resolution = (ticket.resolved_at is None and ticket.resolution_due_at is not None
                  and ticket.resolution_due_at < now)
    return first or resolution


async def view_counts(session: AsyncSession, agent: Agent, team_ids: set[int],
                      filters: InboxFilters, now: datetime, *, sqlite: bool) -> dict[str, int]:
    """How many rows each view holds under the same filters (one query)."""
    views = [v for v in VIEWS if v not in SUPERVISOR_VIEWS or is_supervisor(agent)]
    columns = [func.coalesce(func.sum(case((view_condition(v, agent, team_ids, now), 1),
                                           else_=0)), 0) for v in views]
    row = (await session.execute(_base(agent, team_ids, filters, now, sqlite=sqlite,
                                       columns=columns))).one()
    return {view: int(value or 0) for view, value in zip(views, row, strict=True)}


async def load_inbox(session: AsyncSession, agent: Agent, team_ids: set[int],
                     filters: InboxFilters, *, sqlite: bool, now: datetime | None = None,
                     page_size: int = PAGE_SIZE) -> InboxPage:
    """One page of the inbox for ``agent``, with the counts of every view."""
    moment = now or utcnow()
    assignee = _ASSIGNEE
    due = sla_due().label("due")
    done_last = case((Ticket.status.in_(DONE_STATUSES), 1), else_=0)
    statement = (
        _base(agent, team_ids, filters, moment, sqlite=sqlite,
              columns=[Conversation, Ticket, Customer, assignee.display_name, Team.name,
                       snoozed_until_column().label("snoozed_until"), due])
        .outerjoin(assignee, assignee.id == Conversation.assignee_id)
        .outerjoin(Team, Team.id == Conversation.team_id)
        .where(view_condition(filters.view, agent, team_ids, moment))
        .order_by(done_last, due.asc().nulls_last(),
                  Conversation.last_message_at.desc().nulls_last(), Conversation.id.desc())
        .offset((filters.page - 1) * page_size)
        .limit(page_size + 1)
    )
    result = (await session.execute(statement)).all()
    rows = [
        InboxRow(conversation=c, ticket=t, customer=cu, assignee_name=a, team_name=tn,
                 snoozed_until=_parse_stamp(s) if t.status == TicketStatus.PENDING else None,
                 due=d, breached=_is_breached(t, moment))
        for c, t, cu, a, tn, s, d in result[:page_size]
    ]
    await _add_snippets(session, rows, search_terms(filters.q))
    counts = await view_counts(session, agent, team_ids, filters, moment, sqlite=sqlite)
    return InboxPage(rows=rows, counts=counts, has_more=len(result) > page_size)


async def _add_snippets(session: AsyncSession, rows: list[InboxRow], terms: list[str]) -> None:
    """The customer's newest message (or call) in each row's conversation, as a short
    excerpt: what the agent has to answer (not our own replies or auto-acknowledgements)."""
    ids = [row.conversation.id for row in rows]
    if not ids:
        return
    newest = (
        select(func.max(Interaction.id))
        .where(Interaction.conversation_id.in_(ids),
               Interaction.direction == Direction.INBOUND,
               Interaction.kind.in_([InteractionKind.MESSAGE, InteractionKind.CALL]))
        .group_by(Interaction.conversation_id)
    )
    found = await session.execute(
        select(Interaction.conversation_id, Interaction.text, Interaction.subject)
        .where(Interaction.id.in_(newest)))
    texts = {cid: (text or subject or "") for cid, text, subject in found}
    for row in rows:
        row.snippet = snippet(texts.get(row.conversation.id, ""), terms, width=90)


async def cached_inbox(request: web.Request, ctx: RequestContext, agent: Agent,
                       filters: InboxFilters) -> InboxPage:
    """The inbox page for this agent and filters: computed, or remembered from a moment
    ago when nothing has changed since (see ``fresh_cache``)."""
    database = request.app[DATABASE]

    async def compute() -> InboxPage:
        async with database.sessions() as session:
            return await load_inbox(session, agent, ctx.team_ids, filters,
                                    sqlite=database.is_sqlite)

    key = (agent.id, agent.role, frozenset(ctx.team_ids), filters)
    return await request.app[INBOX_CACHE].get(key, compute)


async def _render(request: web.Request, template: str) -> web.StreamResponse:
    ctx = context(request)
    agent = current_agent(request)
    filters = InboxFilters.from_query(request.query)
    if filters.view in SUPERVISOR_VIEWS and not is_supervisor(agent):
        log.warning("console.inbox_view_refused", agent_id=agent.id, view=filters.view)
        raise forbidden(request)
    inbox = await cached_inbox(request, ctx, agent, filters)
    settings = request.app[SETTINGS_KEY]
    log.debug("console.inbox", agent_id=agent.id, view=filters.view, rows=len(inbox.rows))
    return page(request, template, inbox=inbox, filters=filters,
                show=Display(ctx.language, settings.locale.timezone),
                views=list(inbox.counts), live_events=LIVE_EVENTS)


async def inbox_page(request: web.Request) -> web.StreamResponse:
    """``/console/inbox``: the filters, the views with their counts and the rows."""
    return await _render(request, "inbox.html")


async def inbox_rows(request: web.Request) -> web.StreamResponse:
    """``/console/inbox/rows``: the live part of the inbox (views and rows) as a fragment."""
    return await _render(request, "_inbox_rows.html")


def _stamp(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def inbox_row_json(row: InboxRow) -> dict[str, Any]:
    """One inbox line as the console's JSON data."""
    ticket, conversation, customer = row.ticket, row.conversation, row.customer
    return {
        "conversation_id": conversation.id,
        "channel": conversation.channel.value,
        "subject": conversation.subject,
        "last_message_at": _stamp(conversation.last_message_at),
        "ticket": {"number": ticket.number, "status": ticket.status.value,
                   "priority": ticket.priority.value, "category": ticket.category.value},
        "customer": {"id": customer.id, "name": customer.display_name},
        "assignee": row.assignee_name,
        "team": row.team_name,
        "due": _stamp(row.due),
        "breached": row.breached,
        "snoozed_until": _stamp(row.snoozed_until),
        "snippet": row.snippet,
    }


async def inbox_json(request: web.Request) -> web.Response:
    """``/console/inbox.json``: the same rows and view counts as the inbox page, as JSON
    for the console's scripts (session-authenticated, same filters as the page)."""
    ctx = context(request)
    agent = current_agent(request)
    filters = InboxFilters.from_query(request.query)
    if filters.view in SUPERVISOR_VIEWS and not is_supervisor(agent):
        log.warning("console.inbox_view_refused", agent_id=agent.id, view=filters.view)
        return web.json_response({"error": "forbidden view"}, status=403)
    inbox = await cached_inbox(request, ctx, agent, filters)
    if inbox.json_body is None:
        inbox.json_body = json.dumps({
            "view": filters.view, "page": filters.page, "counts": inbox.counts,
            "has_more": inbox.has_more, "rows": [inbox_row_json(row) for row in inbox.rows],
        }, ensure_ascii=False).encode()
    return web.Response(body=inbox.json_body, content_type="application/json")


def setup_inbox(app: web.Application) -> None:
    """Register the inbox routes and its page cache (emptied by every domain event the
    live hub sees and by every change made through this process)."""
    cache: FreshCache[InboxPage] = FreshCache(
        app[SETTINGS_KEY].http.console_cache_seconds)
    app[INBOX_CACHE] = cache
    app[CHANGE_HOOKS].append(cache.invalidate)

    async def observe_events(app: web.Application) -> None:
        from contact_center.web.live import LIVE_HUB

        app[LIVE_HUB].observers.append(cache.invalidate)

    app.on_startup.append(observe_events)
    app.router.add_get(f"{PREFIX}/inbox", inbox_page)
    app.router.add_get(f"{PREFIX}/inbox/rows", inbox_rows)
    app.router.add_get(f"{PREFIX}/inbox.json", inbox_json)
