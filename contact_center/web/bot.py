"""The self-service bot in the console: knowledge-base articles, the flows editor and the
bot's metrics.

Supervisors and admins manage the articles (zh-CN and en) and read the metrics
(containment, drop-off per node, top unanswered questions); admins edit the flows as
TOML — checked exactly as ``config/flows.toml`` is at start-up, with the mistake shown
on the page — and the newest saved version is used by every channel from the next
message on.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog
from aiohttp import web
from multidict import MultiDictProxy
from sqlalchemy import func, select

from contact_center.web.areas import error_message, not_found, text_value
from contact_center.web.auth import DATABASE, PREFIX, context, current_agent, requires
from contact_center.web.forms import actor_of
from contact_center.web.render import page
from crm_core.errors import CrmError, NotFoundError
from crm_core.models import AgentRole, FlowDocument, KnowledgeArticle, utcnow
from crm_core.services import audit
from crm_core.services import knowledge as kb
from routing.bot import parse_flow_source
from routing.flows import FlowError

log = structlog.get_logger(__name__)

AREA = f"{PREFIX}/bot"
SUPERVISORS = (AgentRole.SUPERVISOR, AgentRole.ADMIN)
MAX_FLOWS = 200_000
PERIODS = {"7": 7, "30": 30, "90": 90}


def _settings(request: web.Request) -> Any:
    from contact_center.app import SETTINGS_KEY

    return request.app[SETTINGS_KEY]


def _notice(request: web.Request) -> str | None:
    gettext = context(request).gettext
    return {
        "saved": gettext("Article saved."),
        "deleted": gettext("Article deleted."),
        "flows_saved": gettext("Flows saved: every channel uses them from the next message."),
    }.get(request.query.get("notice", ""))


# -- knowledge base -------------------------------------------------------------------------


@requires(*SUPERVISORS)
async def knowledge_page(request: web.Request) -> web.StreamResponse:
    """The articles, by language."""
    language = text_value(request.query, "language", 10)
    language = language if language in kb.LANGUAGES else ""
    async with request.app[DATABASE].sessions() as session:
        rows = await kb.list_articles(session, language or None)
    return page(request, "bot_knowledge.html", rows=rows, language_filter=language,
                languages=kb.LANGUAGES, notice=_notice(request))


def _fields(form: MultiDictProxy[Any]) -> dict[str, Any]:
    return {"language": text_value(form, "language", 10),
            "title": text_value(form, "title", 400),
            "questions": text_value(form, "questions", 6000),
            "keywords": text_value(form, "keywords", 3000),
            "answer": text_value(form, "answer", kb.MAX_ANSWER + 100),
            "enabled": form.get("enabled") == "on"}


async def _form(request: web.Request, *, row: KnowledgeArticle | None,
                form: MultiDictProxy[Any] | None = None, error: str | None = None,
                status: int = 200) -> web.Response:
    values: dict[str, Any]
    if form is not None:
        values = {**{k: v for k, v in form.items() if isinstance(v, str)},
                  "enabled": form.get("enabled") == "on"}
    elif row is not None:
        values = {"language": row.language, "title": row.title, "questions": row.questions,
                  "keywords": row.keywords, "answer": row.answer, "enabled": row.enabled}
    else:
        values = {"language": context(request).language, "enabled": True}
    return page(request, "bot_knowledge_form.html", status=status, row=row, values=values,
                error=error, languages=kb.LANGUAGES)


async def _load(request: web.Request) -> KnowledgeArticle:
    try:
        article_id = int(request.match_info["article_id"])
    except ValueError:
        raise not_found(request) from None
    async with request.app[DATABASE].sessions() as session:
        try:
            return await kb.get_article(session, article_id)
        except NotFoundError:
            raise not_found(request) from None


@requires(*SUPERVISORS)
async def new_page(request: web.Request) -> web.StreamResponse:
    """The form for a new article."""
    return await _form(request, row=None)


@requires(*SUPERVISORS)
async def create(request: web.Request) -> web.StreamResponse:
    """Add an article."""
    agent = current_agent(request)
    form = await request.post()
    try:
        async with request.app[DATABASE].transaction() as session:
            row = await kb.create_article(session, **_fields(form), actor=actor_of(agent))
            article_id = row.id
    except CrmError as exc:
        return await _form(request, row=None, form=form, status=400,
                           error=error_message(context(request).gettext, exc))
    log.info("console.kb_created", agent_id=agent.id, article_id=article_id)
    raise web.HTTPSeeOther(f"{AREA}/knowledge?notice=saved")


@requires(*SUPERVISORS)
async def edit_page(request: web.Request) -> web.StreamResponse:
    """An article's form."""
    return await _form(request, row=await _load(request))


@requires(*SUPERVISORS)
async def update(request: web.Request) -> web.StreamResponse:
    """Save an article."""
    agent = current_agent(request)
    row = await _load(request)
    form = await request.post()
    try:
        async with request.app[DATABASE].transaction() as session:
            await kb.update_article(session, row.id, **_fields(form), actor=actor_of(agent))
    except CrmError as exc:
        return await _form(request, row=row, form=form, status=400,
                           error=error_message(context(request).gettext, exc))
    log.info("console.kb_updated", agent_id=agent.id, article_id=row.id)
    raise web.HTTPSeeOther(f"{AREA}/knowledge?notice=saved")


@requires(*SUPERVISORS)
async def delete(request: web.Request) -> web.StreamResponse:
    """Delete an article."""
    agent = current_agent(request)
    row = await _load(request)
    async with request.app[DATABASE].transaction() as session:
        await kb.delete_article(session, row.id, actor=actor_of(agent))
    log.info("console.kb_deleted", agent_id=agent.id, article_id=row.id)
    raise web.HTTPSeeOther(f"{AREA}/knowledge?notice=deleted")


# -- flows ----------------------------------------------------------------------------------


async def _current_flows(request: web.Request) -> tuple[str, FlowDocument | None]:
    async with request.app[DATABASE].sessions() as session:
        row = await session.scalar(select(FlowDocument).order_by(FlowDocument.id.desc())
                                   .limit(1))
    if row is not None:
        return row.source, row
    return _settings(request).bot.flows_file.read_text(encoding="utf-8"), None


def _flows_page(request: web.Request, source: str, row: FlowDocument | None, *,
                error: str | None = None, status: int = 200) -> web.Response:
    settings = _settings(request)
    return page(request, "bot_flows.html", status=status, source=source, row=row, error=error,
                notice=_notice(request), flows_file=str(settings.bot.flows_file),
                channels=settings.bot.channels)


@requires(AgentRole.ADMIN)
async def flows_page(request: web.Request) -> web.StreamResponse:
    """The flows as TOML in an editor (the saved version, else the shipped file)."""
    source, row = await _current_flows(request)
    return _flows_page(request, source, row)


@requires(AgentRole.ADMIN)
async def flows_save(request: web.Request) -> web.StreamResponse:
    """Check and save the flows; a mistake is shown with where it is (nothing saved)."""
    agent = current_agent(request)
    form = await request.post()
    source = str(form.get("source", ""))[:MAX_FLOWS]
    gettext = context(request).gettext
    settings = _settings(request)
    try:
        flows = parse_flow_source(source, name="flows")
        wanted = {*settings.bot.channels.values()}
        if settings.voice is not None:
            wanted.add(settings.voice.flow)
        missing = sorted(name for name in wanted if name not in flows.flows)
        if missing:
            raise FlowError("flows", "", gettext("flow {name} is used by a channel and must "
                                                 "stay", name=", ".join(missing)))
    except FlowError as exc:
        _, row = await _current_flows(request)
        return _flows_page(request, source, row, status=400, error=str(exc))
    async with request.app[DATABASE].transaction() as session:
        row = FlowDocument(source=source, edited_by=agent.id)
        session.add(row)
        await session.flush()
        audit.record(session, actor=actor_of(agent), action="update", entity_type="bot_flows",
                     entity_id=row.id, after={"flows": sorted(flows.flows)})
    log.info("console.flows_saved", agent_id=agent.id, flows=sorted(flows.flows))
    raise web.HTTPSeeOther(f"{AREA}/flows?notice=flows_saved")


# -- metrics --------------------------------------------------------------------------------


@requires(*SUPERVISORS)
async def metrics_page(request: web.Request) -> web.StreamResponse:
    """Containment, drop-off per node and the questions the bot could not answer."""
    days = PERIODS.get(request.query.get("days", "30"), 30)
    since = utcnow() - timedelta(days=days)
    async with request.app[DATABASE].sessions() as session:
        metrics = await kb.bot_metrics(session, since=since)
        articles = int(await session.scalar(select(func.count(KnowledgeArticle.id))) or 0)
    rate = metrics.containment_rate
    return page(request, "bot_metrics.html", metrics=metrics, days=days, periods=PERIODS,
                articles=articles, rate="–" if rate is None else f"{rate * 100:.1f}%")


def setup_bot_pages(app: web.Application) -> None:
    """Register the bot's console pages."""
    app.router.add_get(f"{AREA}/knowledge", knowledge_page)
    app.router.add_get(f"{AREA}/knowledge/new", new_page)
    app.router.add_post(f"{AREA}/knowledge/new", create)
    app.router.add_get(f"{AREA}/knowledge/{{article_id}}", edit_page)
    app.router.add_post(f"{AREA}/knowledge/{{article_id}}", update)
    app.router.add_post(f"{AREA}/knowledge/{{article_id}}/delete", delete)
    app.router.add_get(f"{AREA}/flows", flows_page)
    app.router.add_post(f"{AREA}/flows", flows_save)
    app.router.add_get(f"{AREA}/metrics", metrics_page)
