"""The admin area (admins only, checked on every handler): agents and teams, channel
settings, business hours and SLA, canned responses, system parameters, the audit log.

Channel settings, rules and system parameters are shown read-only, secrets masked
(``Settings.masked()``): they live in the TOML files and the environment, and a change
there takes effect on restart. Passwords are never shown, except a generated one-time
password once, on the page that created it; hashes never.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pydantic
import structlog
from aiohttp import web
from multidict import MultiDictProxy
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from contact_center.web.areas import (
    Pager,
    business_zone,
    error_message,
    int_list,
    int_value,
    local_time,
    not_found,
    page_number,
    pretty,
    settings_of,
    text_value,
)
from contact_center.web.auth import DATABASE, PREFIX, PUBLIC_BASE, context, current_agent, requires
from contact_center.web.display import Display
from contact_center.web.forms import actor_of
from contact_center.web.render import page
from crm_core.errors import CrmError, NotFoundError, ValidationError
from crm_core.models import Agent, AgentRole, CannedResponse, Team, TicketPriority
from crm_core.services import agent_admin
from crm_core.services import canned_responses as canned
from crm_core.services.agents import create_team, get_agent
from crm_core.services.audit_query import AuditQuery, audit_vocabulary, search_audit

log = structlog.get_logger(__name__)

AREA = f"{PREFIX}/admin"
ADMIN = AgentRole.ADMIN
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def notices(gettext: Any) -> dict[str, str]:
    """The short confirmations shown after a change (``?notice=``)."""
    return {
        "saved": gettext("Changes saved."),
        "team_created": gettext("Team created."),
        "canned_saved": gettext("Canned response saved."),
        "canned_deleted": gettext("Canned response deleted."),
    }


def _notice(request: web.Request) -> str | None:
    return notices(context(request).gettext).get(request.query.get("notice", ""))


@requires(ADMIN)
async def index(request: web.Request) -> web.StreamResponse:
    """The admin start page: what is configured, with links."""
    async with request.app[DATABASE].sessions() as session:
        agents = await session.scalar(select(func.count()).select_from(Agent)
                                      .where(Agent.active.is_(True)))
        teams = await session.scalar(select(func.count()).select_from(Team))
        responses = await session.scalar(select(func.count()).select_from(CannedResponse))
    return page(request, "admin_index.html", counts={"agents": agents or 0, "teams": teams or 0,
                                                      "canned": responses or 0})


# -- agents -----------------------------------------------------------------------------


@requires(ADMIN)
async def agents_page(request: web.Request) -> web.StreamResponse:
    """Every agent with role, teams, capacity and state (no password data)."""
    async with request.app[DATABASE].sessions() as session:
        agents = list(await session.scalars(
            select(Agent).options(selectinload(Agent.teams))
            .order_by(Agent.active.desc(), Agent.display_name)))
    zone = business_zone(request)
    return page(request, "admin_agents.html", agents=agents, notice=_notice(request),
                when=lambda v: local_time(v, zone))


def _agent_values(agent: Agent | None, form: MultiDictProxy[Any] | None) -> dict[str, Any]:
    if form is not None:
        values: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
        values["team_ids"] = int_list(form, "team_ids")
        return values
    if agent is None:
        return {"role": "agent", "capacity": "10", "team_ids": [], "languages": "zh-CN",
                "active": "1", "credential": "password"}
    return {
        "login": agent.login, "display_name": agent.display_name, "email": agent.email or "",
        "phone": agent.phone or "", "role": agent.role.value,
        "skills": ", ".join(agent.skills or []), "languages": ", ".join(agent.languages or []),
        "capacity": str(agent.capacity), "active": "1" if agent.active else "",
        "team_ids": [t.id for t in agent.teams],
    }


async def _agent_form(request: web.Request, *, agent: Agent | None,
                      form: MultiDictProxy[Any] | None = None, error: str | None = None,
                      status: int = 200, credential: dict[str, str] | None = None,
                      ) -> web.Response:
    async with request.app[DATABASE].sessions() as session:
        teams = await agent_admin.list_teams(session)
    return page(request, "admin_agent_form.html", status=status, subject=agent,
                values=_agent_values(agent, form), teams=teams, error=error,
                roles=[r.value for r in AgentRole], credential=credential,
                notice=_notice(request))


def _words(form: MultiDictProxy[Any], name: str) -> list[str]:
    raw = text_value(form, name, 2000).replace("，", ",")
    return [w.strip() for w in raw.split(",") if w.strip()]


def _role(form: MultiDictProxy[Any]) -> AgentRole:
    value = text_value(form, "role", 20)
    try:
        return AgentRole(value)
    except ValueError:
        raise ValidationError("role", value, "admin, supervisor or agent") from None


def _capacity(form: MultiDictProxy[Any]) -> int:
    value = int_value(form, "capacity")
    if value is None:
        raise ValidationError("capacity", text_value(form, "capacity", 20), "a whole number")
    return value


def _reset_link(request: web.Request, token: str) -> str:
    base = request.app.get(PUBLIC_BASE) or f"{request.scheme}://{request.host}"
    return f"{base.rstrip('/')}{PREFIX}/reset/{token}"


@requires(ADMIN)
async def agent_new_page(request: web.Request) -> web.StreamResponse:
    """The form for a new agent."""
    return await _agent_form(request, agent=None)


@requires(ADMIN)
async def agent_create(request: web.Request) -> web.StreamResponse:
    """Create an agent; show their one-time password (or set-up link) once, on this page."""
    admin = current_agent(request)
    form = await request.post()
    settings = settings_of(request)
    mode = "link" if text_value(form, "credential", 10) == "link" else "password"
    try:
        async with request.app[DATABASE].transaction() as session:
            password = agent_admin.generate_password() if mode == "password" else \
                secrets.token_urlsafe(24)  # never shown: the agent sets theirs with the link
            agent = await agent_admin.create_agent_account(
                session, actor=actor_of(admin), region=settings.locale.default_region,
                login=text_value(form, "login", 100),
                display_name=text_value(form, "display_name", 200), password=password,
                email=text_value(form, "email", 320) or None,
                phone=text_value(form, "phone", 100) or None, role=_role(form),
                team_ids=int_list(form, "team_ids"), skills=_words(form, "skills"),
                languages=_words(form, "languages"), capacity=_capacity(form),
                password_change_required=mode == "password")
            token = (await agent_admin.issue_setup_token(session, agent.id, actor=actor_of(admin))
                     if mode == "link" else None)
            agent = await get_agent(session, agent.id)
    except CrmError as exc:
        return await _agent_form(request, agent=None, form=form, status=400,
                                 error=error_message(context(request).gettext, exc))
    log.info("console.agent_created", agent_id=admin.id, created_agent_id=agent.id,
             credential=mode)
    credential = ({"link": _reset_link(request, token)} if token else {"password": password})
    return await _agent_form(request, agent=agent, credential=credential)


async def _load_agent(request: web.Request) -> Agent:
    agent_id = int(request.match_info["agent_id"])
    async with request.app[DATABASE].sessions() as session:
        try:
            return await get_agent(session, agent_id)
        except NotFoundError:
            raise not_found(request) from None


@requires(ADMIN)
async def agent_page(request: web.Request) -> web.StreamResponse:
    """An agent's form."""
    return await _agent_form(request, agent=await _load_agent(request))


@requires(ADMIN)
async def agent_update(request: web.Request) -> web.StreamResponse:
    """Save role, teams, skills, languages, capacity, phone and the active switch."""
    admin = current_agent(request)
    agent = await _load_agent(request)
    form = await request.post()
    settings = settings_of(request)
    try:
        async with request.app[DATABASE].transaction() as session:
            await agent_admin.update_agent(
                session, agent.id, actor=actor_of(admin), region=settings.locale.default_region,
                display_name=text_value(form, "display_name", 200),
                email=text_value(form, "email", 320) or None,
                phone=text_value(form, "phone", 100) or None, role=_role(form),
                team_ids=int_list(form, "team_ids"), skills=_words(form, "skills"),
                languages=_words(form, "languages"), capacity=_capacity(form),
                active=text_value(form, "active", 5) == "1")
    except CrmError as exc:
        return await _agent_form(request, agent=agent, form=form, status=400,
                                 error=error_message(context(request).gettext, exc))
    log.info("console.agent_updated", agent_id=admin.id, changed_agent_id=agent.id)
    raise web.HTTPSeeOther(f"{AREA}/agents/{agent.id}?notice=saved")


@requires(ADMIN)
async def agent_password(request: web.Request) -> web.StreamResponse:
    """A new one-time password or set-up link for an agent, shown once."""
    admin = current_agent(request)
    agent = await _load_agent(request)
    form = await request.post()
    mode = "link" if text_value(form, "credential", 10) == "link" else "password"
    try:
        async with request.app[DATABASE].transaction() as session:
            if mode == "link":
                token = await agent_admin.issue_setup_token(session, agent.id,
                                                            actor=actor_of(admin))
                credential = {"link": _reset_link(request, token)}
            else:
                credential = {"password": await agent_admin.reset_to_generated_password(
                    session, agent.id, actor=actor_of(admin))}
    except CrmError as exc:
        return await _agent_form(request, agent=agent, status=400,
                                 error=error_message(context(request).gettext, exc))
    log.info("console.agent_password_reset", agent_id=admin.id, changed_agent_id=agent.id,
             credential=mode)
    return await _agent_form(request, agent=await _load_agent(request), credential=credential)


# -- teams ------------------------------------------------------------------------------


async def _teams_view(request: web.Request, *, error: str | None = None,
                      status: int = 200) -> web.Response:
    async with request.app[DATABASE].sessions() as session:
        teams = await agent_admin.list_teams(session)
        sizes = await agent_admin.team_sizes(session)
    return page(request, "admin_teams.html", status=status, teams=teams, sizes=sizes,
                error=error, notice=_notice(request))


@requires(ADMIN)
async def teams_page(request: web.Request) -> web.StreamResponse:
    """Teams with their number of active agents."""
    return await _teams_view(request)


@requires(ADMIN)
async def team_create(request: web.Request) -> web.StreamResponse:
    """Add a team."""
    admin = current_agent(request)
    form = await request.post()
    try:
        async with request.app[DATABASE].transaction() as session:
            team = await create_team(session, text_value(form, "name", 100), actor=actor_of(admin),
                                     description=text_value(form, "description", 1000) or None)
            team_id = team.id
    except CrmError as exc:
        return await _teams_view(request, status=400,
                                 error=error_message(context(request).gettext, exc))
    log.info("console.team_created", agent_id=admin.id, team_id=team_id)
    raise web.HTTPSeeOther(f"{AREA}/teams?notice=team_created")


@requires(ADMIN)
async def team_update(request: web.Request) -> web.StreamResponse:
    """Rename a team or change its description."""
    admin = current_agent(request)
    team_id = int(request.match_info["team_id"])
    form = await request.post()
    try:
        async with request.app[DATABASE].transaction() as session:
            await agent_admin.update_team(session, team_id, name=text_value(form, "name", 100),
                                          description=text_value(form, "description", 1000),
                                          actor=actor_of(admin))
    except NotFoundError:
        raise not_found(request) from None
    except CrmError as exc:
        return await _teams_view(request, status=400,
                                 error=error_message(context(request).gettext, exc))
    log.info("console.team_updated", agent_id=admin.id, team_id=team_id)
    raise web.HTTPSeeOther(f"{AREA}/teams?notice=saved")


# -- channels, rules, settings ----------------------------------------------------------


def _secret_state(value: Any, env_name: Any) -> str:
    """How a secret is configured, without its value: 'env:NAME', 'set' or ''."""
    if env_name:
        return f"env:{env_name}"
    return "set" if value else ""


@requires(ADMIN)
async def channels_page(request: web.Request) -> web.StreamResponse:
    """The channel settings as loaded (secrets masked), read-only."""
    settings = settings_of(request)
    masked = settings.masked()
    email = masked["email"]
    mailboxes = [{**box, "password_state": _secret_state(box.get("password"),
                                                         box.get("password_env"))}
                 for box in email.get("mailboxes", [])]
    smtp = email.get("smtp")
    if smtp:
        smtp = {**smtp, "password_state": _secret_state(smtp.get("password"),
                                                        smtp.get("password_env"))}
    telegram = masked.get("telegram")
    if telegram:
        telegram = {**telegram,
                    "token_state": _secret_state(telegram.get("token"), telegram.get("token_env")),
                    "webhook_secret_state": _secret_state(telegram.get("webhook_secret"),
                                                          telegram.get("webhook_secret_env"))}
    voice = masked.get("voice")
    if voice:
        voice = {**voice,
                 "auth_token_state": _secret_state(voice.get("auth_token"),
                                                   voice.get("auth_token_env")),
                 "cti_token_state": _secret_state(voice.get("cti_token"),
                                                  voice.get("cti_token_env"))}
    return page(request, "admin_channels.html", mailboxes=mailboxes, smtp=smtp,
                email=email, telegram=telegram, voice=voice, webchat=masked["webchat"],
                ports={"imap": [b.effective_port for b in settings.email.mailboxes],
                       "smtp": settings.email.smtp.effective_port if settings.email.smtp
                       else None})


def _minutes(delta: timedelta) -> int:
    return int(delta.total_seconds() // 60)


@requires(ADMIN)
async def rules_page(request: web.Request) -> web.StreamResponse:
    """Business hours, holidays, make-up workdays and SLA targets of the loaded rules."""
    from routing.rules import load_rules

    settings = settings_of(request)
    from contact_center.app import ENGINE_KEY

    engine = request.app.get(ENGINE_KEY)
    rules = engine.config.rules if engine is not None else load_rules(settings.routing.rules_file)
    calendar = rules.calendar
    weekly = []
    for day, name in enumerate(WEEKDAYS):
        hours = calendar.weekly.get(day, [])
        weekly.append({"day": name, "hours": [
            f"{start:%H:%M}–{'24:00' if end.hour == 0 and end.minute == 0 else f'{end:%H:%M}'}"
            for start, end in hours]})
    sla = rules.sla
    priorities = [{
        "priority": p.value, "first_response": _minutes(sla.first_response[p]),
        "resolution": _minutes(sla.resolution[p]),
        "business_hours": sla.counts_business_hours(p)} for p in TicketPriority]
    return page(request, "admin_rules.html", source=rules.source,
                configured=str(settings.routing.rules_file), timezone=calendar.timezone,
                weekly=weekly, holidays=sorted(calendar.holidays),
                workdays=sorted(calendar.workdays),
                workday_hours=[f"{s:%H:%M}–{e:%H:%M}" for s, e in calendar.workday_hours],
                priorities=priorities, reopen_days=rules.reopen_within.days,
                strategy=rules.strategy, sticky_owner=rules.sticky_owner,
                default_team=rules.default_team,
                team_rules=[{"label": t.label, "team": t.team} for t in rules.teams],
                automation=[r.name for r in rules.automation_rules])


def flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested settings as ``(dotted.key, value)`` rows; lists of tables numbered."""
    rows: list[tuple[str, str]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows.extend(flatten(value, f"{name}."))
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            for index, item in enumerate(value):
                rows.extend(flatten(item, f"{name}[{index}]."))
        elif isinstance(value, list):
            rows.append((name, ", ".join(str(v) for v in value)))
        else:
            rows.append((name, "" if value is None else str(value)))
    return rows


@requires(ADMIN)
async def settings_page(request: web.Request) -> web.StreamResponse:
    """Every effective setting, secrets masked, read-only."""
    import os

    return page(request, "admin_settings.html", rows=flatten(settings_of(request).masked()),
                config_file=os.environ.get("CC_CONFIG") or "")


# -- canned responses -------------------------------------------------------------------


@requires(ADMIN)
async def canned_page(request: web.Request) -> web.StreamResponse:
    """Canned responses, optionally of one language or containing a text."""
    language = text_value(request.query, "language", 10)
    language = language if language in canned.LANGUAGES else ""
    search_text = text_value(request.query, "q", 100)
    async with request.app[DATABASE].sessions() as session:
        rows = await canned.list_canned_responses(session, language=language or None,
                                                  text=search_text or None)
    return page(request, "admin_canned.html", rows=rows, language_filter=language,
                search_text=search_text, languages=canned.LANGUAGES, notice=_notice(request),
                variables_in=canned.variables_in)


async def _canned_form(request: web.Request, *, row: CannedResponse | None,
                       form: MultiDictProxy[Any] | None = None, error: str | None = None,
                       status: int = 200) -> web.Response:
    values: dict[str, Any]
    if form is not None:
        values = {k: v for k, v in form.items() if isinstance(v, str)}
    elif row is not None:
        values = {"shortcut": row.shortcut, "language": row.language, "title": row.title,
                  "body": row.body}
    else:
        values = {"language": context(request).language}
    return page(request, "admin_canned_form.html", status=status, row=row, values=values,
                error=error, languages=canned.LANGUAGES, variables=canned.VARIABLES,
                notice=_notice(request))


def _canned_fields(form: MultiDictProxy[Any]) -> dict[str, str]:
    return {"shortcut": text_value(form, "shortcut", 100),
            "language": text_value(form, "language", 10),
            "title": text_value(form, "title", 300),
            "body": text_value(form, "body", canned.MAX_BODY + 100)}


@requires(ADMIN)
async def canned_new_page(request: web.Request) -> web.StreamResponse:
    """The form for a new canned response."""
    return await _canned_form(request, row=None)


@requires(ADMIN)
async def canned_create(request: web.Request) -> web.StreamResponse:
    """Add a canned response."""
    admin = current_agent(request)
    form = await request.post()
    try:
        async with request.app[DATABASE].transaction() as session:
            row = await canned.create_canned_response(session, **_canned_fields(form),
                                                      actor=actor_of(admin))
            row_id = row.id
    except CrmError as exc:
        return await _canned_form(request, row=None, form=form, status=400,
                                  error=error_message(context(request).gettext, exc))
    log.info("console.canned_created", agent_id=admin.id, canned_id=row_id)
    raise web.HTTPSeeOther(f"{AREA}/canned?notice=canned_saved")


async def _load_canned(request: web.Request) -> CannedResponse:
    async with request.app[DATABASE].sessions() as session:
        try:
            return await canned.get_canned_response(session,
                                                    int(request.match_info["response_id"]))
        except NotFoundError:
            raise not_found(request) from None


@requires(ADMIN)
async def canned_edit_page(request: web.Request) -> web.StreamResponse:
    """A canned response's form."""
    return await _canned_form(request, row=await _load_canned(request))


@requires(ADMIN)
async def canned_update(request: web.Request) -> web.StreamResponse:
    """Save a canned response."""
    admin = current_agent(request)
    row = await _load_canned(request)
    form = await request.post()
    try:
        async with request.app[DATABASE].transaction() as session:
            await canned.update_canned_response(session, row.id, **_canned_fields(form),
                                                actor=actor_of(admin))
    except CrmError as exc:
        return await _canned_form(request, row=row, form=form, status=400,
                                  error=error_message(context(request).gettext, exc))
    log.info("console.canned_updated", agent_id=admin.id, canned_id=row.id)
    raise web.HTTPSeeOther(f"{AREA}/canned?notice=canned_saved")


@requires(ADMIN)
async def canned_delete(request: web.Request) -> web.StreamResponse:
    """Delete a canned response."""
    admin = current_agent(request)
    response_id = int(request.match_info["response_id"])
    try:
        async with request.app[DATABASE].transaction() as session:
            await canned.delete_canned_response(session, response_id, actor=actor_of(admin))
    except NotFoundError:
        raise not_found(request) from None
    log.info("console.canned_deleted", agent_id=admin.id, canned_id=response_id)
    raise web.HTTPSeeOther(f"{AREA}/canned?notice=canned_deleted")


# -- audit log --------------------------------------------------------------------------


def audit_query(values: MultiDictProxy[Any], *, page: int) -> AuditQuery:
    """The viewer's filters from the query string."""
    data: dict[str, Any] = {"page": page}
    for key in ("actor", "action", "entity_type", "entity_id", "date_from", "date_to"):
        value = text_value(values, key, 100)
        if value:
            data[key] = value
    try:
        return AuditQuery.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"]) or "query"
        raise ValidationError(name, first.get("input"), first["msg"]) from None


@requires(ADMIN)
async def audit_page(request: web.Request) -> web.StreamResponse:
    """The audit log, newest first, with filters and pages."""
    admin = current_agent(request)
    zone = business_zone(request)
    result = None
    error = None
    async with request.app[DATABASE].sessions() as session:
        vocabulary = await audit_vocabulary(session)
        try:
            result = await search_audit(session, audit_query(request.query,
                                                             page=page_number(request)),
                                        timezone=zone.key)
        except CrmError as exc:
            error = error_message(context(request).gettext, exc)
    log.info("console.audit_viewed", agent_id=admin.id, total=result.total if result else None)
    pager = Pager.of(request, page=page_number(request), page_size=50,
                     total=result.total if result else 0)
    return page(request, "admin_audit.html", result=result, error=error, params=request.query,
                pager=pager, when=lambda v: local_time(v, zone), pretty=pretty,
                show=Display(context(request).language, zone.key), **vocabulary)


# -- routes -----------------------------------------------------------------------------


def setup_admin(app: web.Application) -> None:
    """Register the admin area (every handler admits admins only)."""
    aid, tid, rid = "{agent_id:\\d+}", "{team_id:\\d+}", "{response_id:\\d+}"
    router = app.router
    router.add_get(AREA, index)
    router.add_get(f"{AREA}/agents", agents_page)
    router.add_get(f"{AREA}/agents/new", agent_new_page)
    router.add_post(f"{AREA}/agents/new", agent_create)
    router.add_get(f"{AREA}/agents/{aid}", agent_page)
    router.add_post(f"{AREA}/agents/{aid}", agent_update)
    router.add_post(f"{AREA}/agents/{aid}/password", agent_password)
    router.add_get(f"{AREA}/teams", teams_page)
    router.add_post(f"{AREA}/teams", team_create)
    router.add_post(f"{AREA}/teams/{tid}", team_update)
    router.add_get(f"{AREA}/channels", channels_page)
    router.add_get(f"{AREA}/rules", rules_page)
    router.add_get(f"{AREA}/settings", settings_page)
    router.add_get(f"{AREA}/canned", canned_page)
    router.add_get(f"{AREA}/canned/new", canned_new_page)
    router.add_post(f"{AREA}/canned/new", canned_create)
    router.add_get(f"{AREA}/canned/{rid}", canned_edit_page)
    router.add_post(f"{AREA}/canned/{rid}", canned_update)
    router.add_post(f"{AREA}/canned/{rid}/delete", canned_delete)
    router.add_get(f"{AREA}/audit", audit_page)
