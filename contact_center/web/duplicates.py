"""``/console/customers/duplicates``: the review queue of possible duplicate customers.

Routing proposes a new lead that may be a customer already on file, and
``contact-center customers find-duplicates`` scans the whole base; both leave open
suggestions. Each customer's card shows its own; this page lists them all, strongest
first, for supervisors to work through: compare and merge (the customers area's merge
page, which shows both records side by side) or dismiss ("not the same person": the
pair is not proposed again).
"""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web
from sqlalchemy import Select, func, select
from sqlalchemy.orm import aliased, selectinload

from contact_center.web.areas import Pager, business_zone, page_number
from contact_center.web.auth import DATABASE, PREFIX, context, current_agent, requires
from contact_center.web.customers import SUPERVISORS
from contact_center.web.display import Display
from contact_center.web.forms import (
    FormProblem,
    actor_of,
    done,
    problem,
    safe_next,
    with_notice,
)
from contact_center.web.render import page
from crm_core.errors import CrmError
from crm_core.identity import dismiss_suggestion
from crm_core.models import Customer, DuplicateSuggestion
from crm_core.services import audit

log = structlog.get_logger(__name__)

PATH = f"{PREFIX}/customers/duplicates"
PAGE_SIZE = 50
SOURCES = ("routing", "scan")

_FIRST = aliased(Customer, name="first_customer")
_SECOND = aliased(Customer, name="second_customer")


def _open_pairs(source: str | None) -> Select[Any]:
    """Open suggestions whose two customers are both still active, strongest first."""
    query = (
        select(DuplicateSuggestion, _FIRST, _SECOND)
        .join(_FIRST, _FIRST.id == DuplicateSuggestion.customer_id)
        .join(_SECOND, _SECOND.id == DuplicateSuggestion.candidate_id)
        .where(DuplicateSuggestion.status == "open",
               _FIRST.deleted_at.is_(None), _FIRST.merged_into_id.is_(None),
               _SECOND.deleted_at.is_(None), _SECOND.merged_into_id.is_(None))
    )
    if source:
        query = query.where(DuplicateSuggestion.source == source)
    return query


@requires(*SUPERVISORS)
async def review_page(request: web.Request) -> web.StreamResponse:
    """The open suggestions, strongest first, 50 a page (``?source=routing|scan``)."""
    source = request.query.get("source", "")
    source = source if source in SOURCES else ""
    number = page_number(request)
    query = _open_pairs(source or None)
    async with request.app[DATABASE].sessions() as session:
        total = int(await session.scalar(
            select(func.count()).select_from(query.subquery())) or 0)
        rows = list(await session.execute(
            query.order_by(DuplicateSuggestion.score.desc(), DuplicateSuggestion.id)
            .options(selectinload(_FIRST.identities), selectinload(_SECOND.identities))
            .offset((number - 1) * PAGE_SIZE).limit(PAGE_SIZE)))
    ctx = context(request)
    gettext = ctx.gettext
    return page(request, "customers_duplicates.html", rows=rows, total=total, source=source,
                sources=SOURCES, show=Display(ctx.language, business_zone(request).key),
                pager=Pager.of(request, page=number, page_size=PAGE_SIZE, total=total),
                notice={"dismissed": gettext("Marked as not the same person."),
                        "merged": gettext("Records merged.")}.get(
                    request.query.get("notice", "")))


@requires(*SUPERVISORS)
async def dismiss(request: web.Request) -> web.StreamResponse:
    """Not the same person: the suggestion is dismissed (audited), back to the list."""
    agent = current_agent(request)
    suggestion_id = int(request.match_info["suggestion_id"])
    form = await request.post()
    actor = actor_of(agent)
    try:
        async with request.app[DATABASE].transaction() as session:
            suggestion = await dismiss_suggestion(session, suggestion_id, actor=actor)
            audit.record(session, actor=actor, action="dismiss_duplicate",
                         entity_type="customer", entity_id=suggestion.customer_id,
                         after={"suggestion_id": suggestion_id,
                                "other_id": suggestion.candidate_id})
    except CrmError:
        return problem(request, FormProblem(
            context(request).gettext("This suggestion is no longer open."), 404))
    log.info("console.duplicate_dismissed", agent_id=agent.id, suggestion_id=suggestion_id)
    return done(request, with_notice(safe_next(form.get("next"), PATH), "dismissed"))


def setup_duplicates(app: web.Application) -> None:
    """Register the review page and its dismiss action."""
    app.router.add_get(PATH, review_page)
    app.router.add_post(f"{PATH}/{{suggestion_id:\\d+}}/dismiss", dismiss)
