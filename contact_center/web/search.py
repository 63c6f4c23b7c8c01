"""Full-text search over message texts, in Chinese and English, and the search page.

The indexes come from migration 0008: on SQLite an FTS5 table ``interactions_fts`` with
the trigram tokenizer (any substring of three or more characters, Chinese without word
breaks included), on PostgreSQL pg_trgm GIN indexes on ``interactions.text`` and
``subject``, which ``ILIKE '%…%'`` uses. A query is split on white space; every term must
occur in the same interaction (text or subject). Terms of one or two characters are too
short for a trigram index and fall back to ``LIKE`` on SQLite (on PostgreSQL ``ILIKE``
serves both: pg_trgm answers short patterns with a scan of the index or the table).
"""

from __future__ import annotations

import re
from typing import Any

import structlog
from aiohttp import web
from sqlalchemy import ColumnElement, and_, column, false, literal_column, or_, select, table
from sqlalchemy.ext.asyncio import AsyncSession

from contact_center.web.auth import DATABASE, PREFIX, context, current_agent
from contact_center.web.policy import conversation_filter
from contact_center.web.render import page
from crm_core.models import (
    Agent,
    Conversation,
    Customer,
    Interaction,
    InteractionKind,
)

log = structlog.get_logger(__name__)

MAX_TERMS = 8
MAX_QUERY_CHARS = 200
TRIGRAM = 3
SEARCHED_KINDS = (InteractionKind.MESSAGE, InteractionKind.CALL, InteractionKind.NOTE)
"""System events (assignments, snoozes, merges) are not searched."""
RESULTS_LIMIT = 50
FTS_TABLE = table("interactions_fts", column("rowid"))
"""The FTS5 index of migration 0008 (SQLite only)."""


def search_terms(query: str | None) -> list[str]:
    """The terms of a query: split on white space, at most ``MAX_TERMS``, no empties."""
    cleaned = (query or "").strip()[:MAX_QUERY_CHARS]
    return [term for term in re.split(r"\s+", cleaned) if term][:MAX_TERMS]


def like_pattern(term: str) -> str:
    """``%term%`` with LIKE's wildcards escaped (escape character ``\\``)."""
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def fts_phrase(term: str) -> str:
    """One FTS5 string (a phrase): double quotes doubled, so nothing is query syntax."""
    return '"' + term.replace('"', '""') + '"'


def _sqlite_condition(terms: list[str]) -> ColumnElement[bool]:
    long_terms = [t for t in terms if len(t) >= TRIGRAM]
    short_terms = [t for t in terms if len(t) < TRIGRAM]
    conditions: list[ColumnElement[bool]] = []
    if long_terms:
        match = " AND ".join(fts_phrase(t) for t in long_terms)
        matching_ids = select(FTS_TABLE.c.rowid).where(
            literal_column("interactions_fts").op("MATCH")(match))
        conditions.append(Interaction.id.in_(matching_ids))
    for term in short_terms:
        pattern = like_pattern(term)
        conditions.append(or_(Interaction.text.like(pattern, escape="\\"),
                              Interaction.subject.like(pattern, escape="\\")))
    return and_(*conditions)


def _postgres_condition(terms: list[str]) -> ColumnElement[bool]:
    conditions = []
    for term in terms:
        pattern = like_pattern(term)
        conditions.append(or_(Interaction.text.ilike(pattern, escape="\\"),
                              Interaction.subject.ilike(pattern, escape="\\")))
    return and_(*conditions)


def interaction_text_condition(query: str | None, *, sqlite: bool) -> ColumnElement[bool]:
    """The condition on ``Interaction`` rows whose text or subject has every term."""
    terms = search_terms(query)
    if not terms:
        return false()
    condition = _sqlite_condition(terms) if sqlite else _postgres_condition(terms)
    return and_(Interaction.kind.in_(SEARCHED_KINDS), condition)


def conversation_text_condition(query: str | None, *, sqlite: bool) -> ColumnElement[bool]:
    """Conversations with a matching interaction, or whose customer's name matches."""
    terms = search_terms(query)
    if not terms:
        return false()
    in_messages = Conversation.id.in_(
        select(Interaction.conversation_id).where(
            Interaction.conversation_id.is_not(None),
            interaction_text_condition(query, sqlite=sqlite)))
    name_like = and_(*(Customer.display_name.ilike(like_pattern(t), escape="\\")
                       for t in terms))
    by_name = Conversation.customer_id.in_(select(Customer.id).where(name_like))
    return or_(in_messages, by_name)


async def search_messages(session: AsyncSession, agent: Agent, team_ids: set[int],
                          query: str, *, sqlite: bool, limit: int = RESULTS_LIMIT,
                          ) -> list[dict[str, Any]]:
    """Matching interactions in conversations ``agent`` may see, newest first."""
    rows = await session.execute(
        select(Interaction, Conversation, Customer)
        .join(Conversation, Conversation.id == Interaction.conversation_id)
        .join(Customer, Customer.id == Conversation.customer_id)
        .where(interaction_text_condition(query, sqlite=sqlite),
               conversation_filter(agent, team_ids))
        .order_by(Interaction.occurred_at.desc(), Interaction.id.desc())
        .limit(limit)
    )
    terms = search_terms(query)
    return [{"interaction": interaction, "conversation": conversation, "customer": customer,
             "snippet": snippet(interaction.text or interaction.subject or "", terms)}
            for interaction, conversation, customer in rows]


def snippet(body: str, terms: list[str], width: int = 80) -> str:
    """A short excerpt of ``body`` around the first term found (plain text)."""
    flat = " ".join(body.split())
    lowered = flat.lower()
    positions = [lowered.find(t.lower()) for t in terms if lowered.find(t.lower()) >= 0]
    start = max(0, min(positions) - width // 3) if positions else 0
    excerpt = flat[start:start + width]
    return ("…" if start else "") + excerpt + ("…" if start + width < len(flat) else "")


async def search_page(request: web.Request) -> web.StreamResponse:
    """``/console/search?q=``: the messages that contain every term, in visible conversations."""
    ctx = context(request)
    agent = current_agent(request)
    query = request.query.get("q", "").strip()[:MAX_QUERY_CHARS]
    database = request.app[DATABASE]
    results: list[dict[str, Any]] = []
    if query:
        async with database.sessions() as session:
            results = await search_messages(session, agent, ctx.team_ids, query,
                                            sqlite=database.is_sqlite)
        log.info("console.search", agent_id=agent.id, terms=len(search_terms(query)),
                 results=len(results))
    return page(request, "search.html", query=query, results=results)


def setup_search(app: web.Application) -> None:
    """Register the search page."""
    app.router.add_get(f"{PREFIX}/search", search_page)
