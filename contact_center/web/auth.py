"""Console authentication: login, sessions, CSRF, roles, lock-out, password reset.

Every ``/console`` request passes the middleware: it finds the session behind the
``cc_session`` cookie (HttpOnly, SameSite=Lax, Secure behind HTTPS), refuses a
state-changing request without the session's CSRF token (form field ``_csrf`` or header
``X-CSRF-Token``), sends anonymous visitors to the login page, and adds the security
headers (a strict Content-Security-Policy: our own scripts and styles only). Handlers
declare the roles they admit with ``@requires``; object-level rules (whose conversation
this is) live in ``contact_center.web.policy``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import wraps
from urllib.parse import quote, urlsplit

import structlog
from aiohttp import web
from sqlalchemy import select

from contact_center.web.i18n import from_accept_language, normalize_language, translator
from contact_center.web.session_cache import CheckedLogin, SessionCache
from crm_core.db import Database
from crm_core.models import Agent, AgentRole, OutboxMessage, agent_teams
from crm_core.services import sessions as auth_service

log = structlog.get_logger(__name__)

PREFIX = "/console"
SESSION_COOKIE = "cc_session"
LOGIN_COOKIE = "cc_login"
LANGUAGE_COOKIE = "cc_lang"
PUBLIC_PATHS = ("/console/login", "/console/reset", "/console/static/", "/console/language")
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; "
       "form-action 'self'; object-src 'none'")
DATABASE = web.AppKey("console_database", Database)
SECRET = web.AppKey("console_secret", bytes)
PUBLIC_BASE = web.AppKey("console_public_base", str)
SESSION_CACHE = web.AppKey("console_session_cache", SessionCache)
CHANGE_HOOKS = web.AppKey("console_change_hooks", list)
"""Called after every state-changing console request of this process (the caches that
must not outlive a change: sessions, inbox pages)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class RequestContext:
    """Who is asking, in which language, with which CSRF token."""

    agent: Agent | None
    language: str
    csrf_token: str = ""
    session_token: str = ""
    team_ids: set[int] = field(default_factory=set)
    team_member_ids: set[int] = field(default_factory=set)
    """For supervisors: every agent of their teams."""

    def gettext(self, text: str, **values: object) -> str:
        """Translate for this request."""
        return translator(self.language)(text, **values)


CONTEXT_KEY = web.RequestKey("cc_context", RequestContext)


def context(request: web.Request) -> RequestContext:
    """The request's context (set by the middleware)."""
    return request[CONTEXT_KEY]


def current_agent(request: web.Request) -> Agent:
    """The logged-in agent (the middleware guarantees one on protected routes)."""
    agent = context(request).agent
    if agent is None:
        raise web.HTTPUnauthorized()
    return agent


def _is_public(path: str) -> bool:
    return path.startswith(PUBLIC_PATHS)


def _wants_json(request: web.Request) -> bool:
    return request.path.startswith(f"{PREFIX}/api/") or "application/json" in request.headers.get(
        "Accept", "")


def _secure(request: web.Request) -> bool:
    base = request.app.get(PUBLIC_BASE, "")
    return request.secure or base.startswith("https://")


def set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str, *,
               max_age: int | None = None, http_only: bool = True) -> None:
    """A console cookie with the safe attributes."""
    response.set_cookie(name, value, max_age=max_age, path=PREFIX, httponly=http_only,
                        samesite="Lax", secure=_secure(request))


async def _team_ids(database: Database, agent: Agent) -> tuple[set[int], set[int]]:
    """The agent's teams, and (for supervisors) the members of those teams."""
    async with database.sessions() as session:
        teams = set(await session.scalars(
            select(agent_teams.c.team_id).where(agent_teams.c.agent_id == agent.id)))
        members: set[int] = set()
        if agent.role == AgentRole.SUPERVISOR and teams:
            members = set(await session.scalars(
                select(agent_teams.c.agent_id).where(agent_teams.c.team_id.in_(teams))))
        return teams, members


def _security_headers(response: web.StreamResponse) -> None:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")


@web.middleware
async def console_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Sessions, CSRF, login redirect and security headers for ``/console``."""
    if not request.path.startswith(PREFIX):
        return await handler(request)
    database = request.app[DATABASE]
    token = request.cookies.get(SESSION_COOKIE, "")
    language = normalize_language(request.cookies.get(LANGUAGE_COOKIE)) if request.cookies.get(
        LANGUAGE_COOKIE) else from_accept_language(request.headers.get("Accept-Language"))
    ctx = RequestContext(agent=None, language=language)
    if token:
        ctx = await _login_context(request, database, token) or ctx
    request[CONTEXT_KEY] = ctx
    try:
        if ctx.agent is None and not _is_public(request.path):
            if _wants_json(request):
                raise web.HTTPUnauthorized(text='{"error": "login required"}',
                                           content_type="application/json")
            raise web.HTTPFound(f"{PREFIX}/login?next={quote(request.path_qs)}")
        if request.method in UNSAFE_METHODS and ctx.agent is not None:
            await _check_csrf(request, ctx)
        if ctx.agent is not None and ctx.agent.password_change_required and not (
                request.path.startswith(_WHILE_PASSWORD_CHANGE_REQUIRED)):
            raise _to_password_change(request)
        response = await handler(request)
    except web.HTTPException as exc:
        response = _error_page(request, exc)
        if response is None:
            _security_headers(exc)
            raise
    finally:
        if request.method in UNSAFE_METHODS:
            # whatever it changed (a logout, a status, an agent, a team) shows at once
            for hook in request.app[CHANGE_HOOKS]:
                hook()
    _security_headers(response)
    return response


ACCOUNT_PASSWORD = f"{PREFIX}/account/password"
_WHILE_PASSWORD_CHANGE_REQUIRED = (ACCOUNT_PASSWORD, f"{PREFIX}/logout", f"{PREFIX}/language",
                                   f"{PREFIX}/static/")


def _to_password_change(request: web.Request) -> web.HTTPException:
    """An agent signed in with a password an administrator gave them: the console asks
    for their own first (pages redirect there; API calls and sockets are refused)."""
    if _wants_json(request) or request.path.startswith(f"{PREFIX}/ws") or (
            request.method in UNSAFE_METHODS):
        return web.HTTPForbidden(text=json.dumps({"error": "choose your own password first"}),
                                 content_type="application/json")
    return web.HTTPSeeOther(f"{ACCOUNT_PASSWORD}?next={quote(request.path_qs)}")


_ERROR_TITLES = {403: "Not allowed", 404: "Not found"}


def _error_page(request: web.Request, exc: web.HTTPException) -> web.StreamResponse | None:
    """A refusal (4xx) with a plain-text reason, as a console page in the agent's
    language with the top bar and a way back — what a browser gets instead of a bare
    line of text. JSON callers, agent.js (``X-Requested-With``), downloads and the
    login redirect keep the original answer (``None``)."""
    from contact_center.web.render import page

    if not 400 <= exc.status < 500 or exc.status == 401 or exc.content_type != "text/plain":
        return None
    if _wants_json(request) or request.headers.get("X-Requested-With") == "fetch":
        return None
    if request.path.startswith((f"{PREFIX}/static/", f"{PREFIX}/ws")):
        return None
    gettext = context(request).gettext
    message = exc.text or ""
    if exc.status == 404 and message.startswith("404:"):  # the router's own answer
        message = gettext("Not found.")
    title = gettext(_ERROR_TITLES.get(exc.status, "That did not work"))
    response = page(request, "error.html", status=exc.status, title=title, message=message)
    for name in ("Retry-After", "Allow"):
        if name in exc.headers:
            response.headers[name] = exc.headers[name]
    return response


async def _login_context(request: web.Request, database: Database,
                         token: str) -> RequestContext | None:
    """The signed-in agent behind the session cookie (from the session cache when it
    was checked a moment ago), or None for no live session."""

    async def check() -> CheckedLogin | None:
        async with database.transaction() as session:
            found = await auth_service.load_session(session, token)
        if found is None:
            return None
        row, agent = found
        teams, members = await _team_ids(database, agent)
        return CheckedLogin.of(agent, row.csrf_token, teams, members)

    known = await request.app[SESSION_CACHE].login(token, check)
    if known is None:
        return None
    agent = known.agent()
    return RequestContext(agent=agent, language=normalize_language(agent.ui_language),
                          csrf_token=known.csrf_token, session_token=token,
                          team_ids=set(known.team_ids),
                          team_member_ids=set(known.team_member_ids))


async def _check_csrf(request: web.Request, ctx: RequestContext) -> None:
    given = request.headers.get("X-CSRF-Token", "")
    if not given and request.content_type in ("application/x-www-form-urlencoded",
                                              "multipart/form-data"):
        given = str((await request.post()).get("_csrf", ""))
    if not given or not hmac.compare_digest(given, ctx.csrf_token):
        log.warning("console.csrf_refused", agent_id=ctx.agent.id if ctx.agent else None,
                    path=request.path)
        raise web.HTTPForbidden(text='{"error": "missing or wrong CSRF token"}',
                                content_type="application/json")


def requires(*roles: AgentRole) -> Callable[[Handler], Handler]:
    """Admit only agents with one of ``roles`` (403 otherwise)."""
    allowed = set(roles)

    def decorate(handler: Handler) -> Handler:
        @wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            agent = current_agent(request)
            if agent.role not in allowed:
                log.warning("console.forbidden", agent_id=agent.id, role=agent.role.value,
                            path=request.path)
                raise forbidden(request)
            return await handler(request)

        guarded.roles = allowed  # type: ignore[attr-defined]
        return guarded

    return decorate


def forbidden(request: web.Request) -> web.HTTPForbidden:
    """A 403 in the request's language (JSON for API calls)."""
    message = context(request).gettext("You are not allowed to see this.")
    if _wants_json(request):
        return web.HTTPForbidden(text=json.dumps({"error": message}, ensure_ascii=False),
                                 content_type="application/json")
    return web.HTTPForbidden(text=message)


# -- the challenge after repeated failures ---------------------------------------------


def make_challenge(secret: bytes) -> tuple[str, str]:
    """A small sum to solve and its signed token (valid 10 minutes)."""
    a, b = secrets.randbelow(9) + 1, secrets.randbelow(9) + 1
    expires = int(time.time()) + 600
    payload = f"{a}:{b}:{expires}"
    mac = hmac.new(secret, payload.encode(), hashlib.sha256).hexdigest()[:24]
    return f"{a} + {b}", f"{payload}:{mac}"


def check_challenge(secret: bytes, token: str, answer: str) -> bool:
    """Whether ``answer`` solves the challenge behind ``token``."""
    try:
        a, b, expires, mac = token.split(":")
        payload = f"{a}:{b}:{expires}"
        expected = hmac.new(secret, payload.encode(), hashlib.sha256).hexdigest()[:24]
        return (hmac.compare_digest(mac, expected) and int(expires) > time.time()
                and int(answer.strip()) == int(a) + int(b))
    except ValueError:
        return False


# -- handlers ----------------------------------------------------------------------------


def _safe_next(value: str | None) -> str:
    target = value or f"{PREFIX}/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith(f"{PREFIX}/"):
        return f"{PREFIX}/"
    return target


async def login_page(request: web.Request) -> web.StreamResponse:
    """The login form (with the remembered username)."""
    from contact_center.web.render import page

    if context(request).agent is not None:
        raise web.HTTPFound(_safe_next(request.query.get("next")))
    return page(request, "login.html", login=request.cookies.get(LOGIN_COOKIE, ""),
                next=request.query.get("next", ""), error=None, challenge=None)


async def login_submit(request: web.Request) -> web.StreamResponse:
    """Check the credentials (and the challenge when needed); start a session."""
    from contact_center.web.render import page

    form = await request.post()
    login = str(form.get("login", "")).strip().lower()[:100]
    password = str(form.get("password", ""))
    secret = request.app[SECRET]
    ctx = context(request)
    database = request.app[DATABASE]
    async with database.transaction() as session:
        challenge_needed = await auth_service.needs_challenge(session, login)
        if challenge_needed and not check_challenge(
                secret, str(form.get("challenge_token", "")), str(form.get("challenge", ""))):
            question, token = make_challenge(secret)
            return page(request, "login.html", status=401, login=login,
                        next=form.get("next", ""), error=ctx.gettext(
                            "Please solve the check below to go on."),
                        challenge={"question": question, "token": token})
        result = await auth_service.attempt_login(session, login, password)
        if result.agent is not None:
            token, _row = await auth_service.create_session(
                session, result.agent, user_agent=request.headers.get("User-Agent"),
                remote_addr=request.remote)
    if result.agent is None:
        log.info("console.login_failed", login_known=result.needs_challenge or None,
                 locked=result.locked_until is not None)
        challenge = None
        if result.needs_challenge:
            question, challenge_token = make_challenge(secret)
            challenge = {"question": question, "token": challenge_token}
        error = ctx.gettext("Wrong username or password.")
        if result.locked_until is not None:
            error = ctx.gettext("Too many failed attempts. Try again in 15 minutes.")
        return page(request, "login.html", status=401, login=login, next=form.get("next", ""),
                    error=error, challenge=challenge)
    log.info("console.login", agent_id=result.agent.id)
    response = web.HTTPFound(_safe_next(str(form.get("next", "")) or None))
    set_cookie(request, response, SESSION_COOKIE, token,
               max_age=int(auth_service.SESSION_LIFETIME.total_seconds()))
    if form.get("remember"):
        set_cookie(request, response, LOGIN_COOKIE, login, max_age=180 * 86400)
    else:
        response.del_cookie(LOGIN_COOKIE, path=PREFIX)
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    """End the session."""
    ctx = context(request)
    async with request.app[DATABASE].transaction() as session:
        await auth_service.end_session(session, ctx.session_token)
    response = web.HTTPFound(f"{PREFIX}/login")
    response.del_cookie(SESSION_COOKIE, path=PREFIX)
    raise response


async def set_language(request: web.Request) -> web.StreamResponse:
    """Switch the console's language (saved on the agent when logged in)."""
    form = await request.post()
    language = normalize_language(str(form.get("language", "")))
    ctx = context(request)
    if ctx.agent is not None:
        await _check_csrf(request, ctx)
        async with request.app[DATABASE].transaction() as session:
            agent = await session.get(Agent, ctx.agent.id)
            if agent is not None:
                agent.ui_language = language
    target = str(form.get("next", "")) or request.headers.get("Referer", "")
    path = urlsplit(target).path if target else ""
    response = web.HTTPFound(path if path.startswith(f"{PREFIX}/") else f"{PREFIX}/")
    set_cookie(request, response, LANGUAGE_COOKIE, language, max_age=365 * 86400)
    raise response


async def reset_request_page(request: web.Request) -> web.StreamResponse:
    """Ask for a password reset link."""
    from contact_center.web.render import page

    return page(request, "reset_request.html", sent=False)


async def reset_request_submit(request: web.Request) -> web.StreamResponse:
    """Mail a reset link (the answer is the same whether the account exists or not)."""
    from contact_center.web.render import page

    form = await request.post()
    value = str(form.get("login", ""))[:320]
    async with request.app[DATABASE].transaction() as session:
        issued = await auth_service.issue_reset_token(session, value)
        if issued is not None:
            agent, token = issued
            base = request.app.get(PUBLIC_BASE) or f"{request.scheme}://{request.host}"
            link = f"{base.rstrip('/')}{PREFIX}/reset/{token}"
            gettext = translator(agent.ui_language)
            session.add(OutboxMessage(
                channel="email", customer_id=None,
                payload={
                    "to": {"email": agent.email, "display_name": agent.display_name},
                    "subject": gettext("Reset your contact center password"),
                    "text": gettext("Open this link within an hour to choose a new password: "
                                    "{link}\nIf you did not ask for it, ignore this e-mail.",
                                    link=link),
                    "metadata": {"language": agent.ui_language, "automated": True},
                },
            ))
            log.info("console.reset_requested", agent_id=agent.id)
    return page(request, "reset_request.html", sent=True)


async def reset_page(request: web.Request) -> web.StreamResponse:
    """Choose a new password with a reset token."""
    from contact_center.web.render import page

    return page(request, "reset.html", token=request.match_info["token"], error=None)


async def reset_submit(request: web.Request) -> web.StreamResponse:
    """Set the new password; every session of the agent ends."""
    from contact_center.web.render import page

    form = await request.post()
    token = request.match_info["token"]
    password = str(form.get("password", ""))
    gettext = context(request).gettext
    if password != str(form.get("password_again", "")):
        return page(request, "reset.html", status=400, token=token,
                    error=gettext("The two passwords differ."))
    try:
        async with request.app[DATABASE].transaction() as session:
            agent = await auth_service.reset_password(session, token, password)
    except ValueError:
        return page(request, "reset.html", status=400, token=token,
                    error=gettext("Use at least {count} characters.",
                                  count=auth_service.MIN_PASSWORD_LENGTH))
    if agent is None:
        return page(request, "reset.html", status=400, token=token,
                    error=gettext("This link is invalid or has expired."))
    raise web.HTTPFound(f"{PREFIX}/login")


async def account_password_page(request: web.Request) -> web.StreamResponse:
    """Change one's own password (required first after a one-time password)."""
    from contact_center.web.render import page

    current_agent(request)
    return page(request, "account_password.html", error=None,
                next=_safe_next(request.query.get("next")))


async def account_password_submit(request: web.Request) -> web.StreamResponse:
    """Check the current password, set the new one; the agent's other sessions end."""
    from contact_center.web.render import page
    from crm_core.errors import ValidationError
    from crm_core.services.agents import change_own_password

    agent = current_agent(request)
    ctx = context(request)
    form = await request.post()
    back = _safe_next(str(form.get("next", "")) or None)
    new = str(form.get("password", ""))

    def refused(message: str) -> web.Response:
        return page(request, "account_password.html", status=400, error=message, next=back)

    if new != str(form.get("password_again", "")):
        return refused(ctx.gettext("The two passwords differ."))
    if len(new) < auth_service.MIN_PASSWORD_LENGTH:
        return refused(ctx.gettext("Use at least {count} characters.",
                                   count=auth_service.MIN_PASSWORD_LENGTH))
    try:
        async with request.app[DATABASE].transaction() as session:
            await change_own_password(session, agent.id, str(form.get("current_password", "")),
                                      new)
            await auth_service.end_other_sessions(session, agent.id, ctx.session_token)
    except ValidationError as exc:
        return refused(ctx.gettext("That is not your current password.")
                       if exc.field == "current_password"
                       else ctx.gettext("Choose a password other than the current one."))
    log.info("console.password_changed", agent_id=agent.id)
    raise web.HTTPSeeOther(back)


def setup_auth(app: web.Application, database: Database, secret: bytes,
               public_base: str | None, *, session_cache_seconds: float = 5.0) -> None:
    """Install the middleware and the login routes."""
    app[DATABASE] = database
    app[SECRET] = secret
    app[PUBLIC_BASE] = public_base or ""
    app[SESSION_CACHE] = SessionCache(session_cache_seconds)
    app[CHANGE_HOOKS] = [app[SESSION_CACHE].invalidate]
    app.middlewares.append(console_middleware)
    app.router.add_get(f"{PREFIX}/login", login_page)
    app.router.add_post(f"{PREFIX}/login", login_submit)
    app.router.add_post(f"{PREFIX}/logout", logout)
    app.router.add_post(f"{PREFIX}/language", set_language)
    app.router.add_get(ACCOUNT_PASSWORD, account_password_page)
    app.router.add_post(ACCOUNT_PASSWORD, account_password_submit)
    app.router.add_get(f"{PREFIX}/reset", reset_request_page)
    app.router.add_post(f"{PREFIX}/reset", reset_request_submit)
    app.router.add_get(f"{PREFIX}/reset/{{token}}", reset_page)
    app.router.add_post(f"{PREFIX}/reset/{{token}}", reset_submit)

