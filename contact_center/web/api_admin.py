"""Admin pages for the public API: tokens (issue, shown once; revoke; last use) and
webhook subscriptions (create, switch on/off, delivery log, test send)."""

from __future__ import annotations

from collections.abc import Callable

import structlog
from aiohttp import web
from sqlalchemy import select

from contact_center.web.areas import (
    business_zone,
    error_message,
    int_value,
    local_time,
    not_found,
    settings_of,
    text_value,
)
from contact_center.web.auth import DATABASE, PREFIX, context, current_agent, requires
from contact_center.web.forms import actor_of
from contact_center.web.render import page
from contact_center.webhooks import PUBLIC_EVENTS, check_target
from crm_core.errors import CrmError, NotFoundError
from crm_core.models import Agent, AgentRole
from crm_core.services import api_tokens
from crm_core.services import webhooks as hooks

log = structlog.get_logger(__name__)
AREA = f"{PREFIX}/admin/api"
ADMIN = AgentRole.ADMIN


def _notices(gettext: Callable[..., str]) -> dict[str, str]:
    return {
        "revoked": gettext("Token revoked."),
        "webhook_saved": gettext("Webhook saved."),
        "test_queued": gettext("Test event queued; see the delivery log."),
    }


async def _overview(request: web.Request, *, status: int = 200, error: str | None = None,
                    new_token: str | None = None, new_secret: str | None = None
                    ) -> web.Response:
    async with request.app[DATABASE].sessions() as session:
        tokens = await api_tokens.list_tokens(session)
        subscriptions = await hooks.list_subscriptions(session)
        agents = list(await session.scalars(select(Agent).where(Agent.active.is_(True))
                                            .order_by(Agent.display_name)))
    notice = _notices(context(request).gettext).get(request.query.get("notice", ""))
    return page(request, "admin_api.html", status=status, tokens=tokens, agents=agents,
                subscriptions=subscriptions, scopes=api_tokens.SCOPES, events=PUBLIC_EVENTS,
                error=error, notice=notice, new_token=new_token, new_secret=new_secret,
                agent_names={a.id: a.display_name for a in agents},
                when=lambda v: local_time(v, business_zone(request)))


@requires(ADMIN)
async def api_page(request: web.Request) -> web.StreamResponse:
    """Tokens and webhook subscriptions."""
    return await _overview(request)


@requires(ADMIN)
async def token_create(request: web.Request) -> web.StreamResponse:
    """Issue a token; its value is on this answer only."""
    admin = current_agent(request)
    form = await request.post()
    try:
        async with request.app[DATABASE].transaction() as session:
            issued = await api_tokens.create_token(
                session, name=text_value(form, "name", 100),
                scopes=[str(s) for s in form.getall("scope", [])], actor=actor_of(admin),
                agent_id=int_value(form, "agent_id"),
                rate_limit_per_minute=int_value(form, "rate_limit"))
            token_id = issued.row.id
    except CrmError as exc:
        return await _overview(request, status=400,
                               error=error_message(context(request).gettext, exc))
    log.info("console.api_token_created", agent_id=admin.id, token_id=token_id)
    return await _overview(request, new_token=issued.token)


@requires(ADMIN)
async def token_revoke(request: web.Request) -> web.StreamResponse:
    """Revoke a token for good."""
    admin = current_agent(request)
    token_id = int(request.match_info["token_id"])
    try:
        async with request.app[DATABASE].transaction() as session:
            await api_tokens.revoke_token(session, token_id, actor=actor_of(admin))
    except NotFoundError:
        raise not_found(request) from None
    log.info("console.api_token_revoked", agent_id=admin.id, token_id=token_id)
    raise web.HTTPSeeOther(f"{AREA}?notice=revoked")


@requires(ADMIN)
async def webhook_create(request: web.Request) -> web.StreamResponse:
    """Subscribe a URL; the signing secret is shown on this answer only."""
    admin = current_agent(request)
    form = await request.post()
    try:
        check_target(text_value(form, "url", 2000),
                     allow_private=settings_of(request).api.webhook_allow_private)
        async with request.app[DATABASE].transaction() as session:
            row = await hooks.create_subscription(
                session, name=text_value(form, "name", 100), url=text_value(form, "url", 2000),
                events=[str(e) for e in form.getall("event", [])], known_events=PUBLIC_EVENTS,
                actor=actor_of(admin))
            secret = row.secret
    except CrmError as exc:
        return await _overview(request, status=400,
                               error=error_message(context(request).gettext, exc))
    return await _overview(request, new_secret=secret)


@requires(ADMIN)
async def webhook_page(request: web.Request) -> web.StreamResponse:
    """One subscription with its delivery log."""
    webhook_id = int(request.match_info["webhook_id"])
    try:
        async with request.app[DATABASE].sessions() as session:
            row = await hooks.get_subscription(session, webhook_id)
            deliveries = await hooks.delivery_log(session, webhook_id)
    except NotFoundError:
        raise not_found(request) from None
    notice = _notices(context(request).gettext).get(request.query.get("notice", ""))
    return page(request, "admin_webhook.html", hook=row, deliveries=deliveries, notice=notice,
                when=lambda v: local_time(v, business_zone(request)))


@requires(ADMIN)
async def webhook_test(request: web.Request) -> web.StreamResponse:
    """Queue a ``webhook.test`` event for this subscription only."""
    webhook_id = int(request.match_info["webhook_id"])
    try:
        async with request.app[DATABASE].transaction() as session:
            await hooks.enqueue_event(session, "webhook.test",
                                      {"sent_by": current_agent(request).login},
                                      only=webhook_id)
    except NotFoundError:
        raise not_found(request) from None
    raise web.HTTPSeeOther(f"{AREA}/webhooks/{webhook_id}?notice=test_queued")


@requires(ADMIN)
async def webhook_toggle(request: web.Request) -> web.StreamResponse:
    """Switch a subscription on (failures forgotten) or off."""
    admin = current_agent(request)
    webhook_id = int(request.match_info["webhook_id"])
    form = await request.post()
    try:
        async with request.app[DATABASE].transaction() as session:
            await hooks.set_active(session, webhook_id, form.get("active") == "1",
                                   actor=actor_of(admin))
    except NotFoundError:
        raise not_found(request) from None
    raise web.HTTPSeeOther(f"{AREA}/webhooks/{webhook_id}?notice=webhook_saved")


def setup_api_admin(app: web.Application) -> None:
    """Register the API admin pages."""
    tid, wid = "{token_id:\\d+}", "{webhook_id:\\d+}"
    app.router.add_get(AREA, api_page)
    app.router.add_post(f"{AREA}/tokens", token_create)
    app.router.add_post(f"{AREA}/tokens/{tid}/revoke", token_revoke)
    app.router.add_post(f"{AREA}/webhooks", webhook_create)
    app.router.add_get(f"{AREA}/webhooks/{wid}", webhook_page)
    app.router.add_post(f"{AREA}/webhooks/{wid}/test", webhook_test)
    app.router.add_post(f"{AREA}/webhooks/{wid}/toggle", webhook_toggle)
