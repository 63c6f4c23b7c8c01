"""The public REST API under ``/api/v1``: bearer tokens with scopes, per-token rate limits,
one JSON error format, and its OpenAPI 3.1 document at ``/api/openapi.json`` with a docs
page at ``/api/docs``."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from contact_center.api.common import API_DATABASE, API_ENGINE, API_SETTINGS
from contact_center.api.errors import ApiError, error_response
from contact_center.api.framework import API_PREFIX, TOKEN_KEY, ApiRouter, Operation
from contact_center.api.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from contact_center.settings import Settings
from crm_core.db import Database
from crm_core.models import ApiToken, utcnow
from crm_core.services.api_tokens import TOKENS, find_token, needs_touch, touch_token
from routing.engine import RoutingEngine

log = structlog.get_logger(__name__)
LIMITER_KEY = web.AppKey("api_rate_limiter", RateLimiter)
OPENAPI_KEY = web.AppKey("api_openapi", dict)
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def operations() -> list[Operation]:
    """Every declared operation, in the order of the docs."""
    from contact_center.api import campaigns, conversations, customers, tickets, webhooks

    routers: list[ApiRouter] = [customers.router, conversations.router, tickets.router,
                                campaigns.router, webhooks.router]
    return [op for router in routers for op in router.operations]


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>",
                       headers={"WWW-Authenticate": 'Bearer realm="api"'})
    return value.strip()


async def _token(request: web.Request) -> ApiToken | None:
    """The request's token, from the process's short cache of live tokens or read without
    a write lock; its last use is written at most once a minute, in a short transaction
    of its own."""
    database = request.app[API_DATABASE]
    now = utcnow()
    secret = _bearer(request)
    token = TOKENS.get(secret, now)
    if token is None:
        async with database.sessions() as session:
            token = await find_token(session, secret, now=now)
        if token is not None:
            TOKENS.put(secret, token)
    if token is not None and needs_touch(token, now):
        async with database.transaction() as session:
            await touch_token(session, token.id, now=now, remote=request.remote)
        token.last_used_at = now
    return token


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """For ``/api/v1``: size limit, token, rate limit; every failure in the error format."""
    if not request.path.startswith(API_PREFIX + "/") and request.path != API_PREFIX:
        return await handler(request)
    settings = request.app[API_SETTINGS]
    try:
        try:
            if (request.content_length or 0) > settings.api.max_body_kb * 1024:
                raise ApiError(413, "too_large",
                               f"the body is larger than {settings.api.max_body_kb} KB")
            token = await _token(request)
            if token is None:
                raise ApiError(401, "unauthorized", "the token is unknown, revoked or expired",
                               headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
            request[TOKEN_KEY] = token
            limit = token.rate_limit_per_minute or settings.api.rate_limit_per_minute
            verdict = await request.app[LIMITER_KEY].hit(f"token:{token.id}", limit)
            if not verdict.allowed:
                raise ApiError(429, "rate_limited",
                               f"at most {limit} requests a minute for this token",
                               headers={"Retry-After": str(verdict.retry_after)})
            response = await handler(request)
            response.headers["X-RateLimit-Limit"] = str(limit)
            response.headers["X-RateLimit-Remaining"] = str(verdict.remaining)
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(413, "too_large", "the body is too large") from None
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
            raise ApiError(exc.status, code, exc.reason) from None
    except ApiError as error:
        response = error.response()
    except Exception:
        log.exception("api.failed", path=request.path, method=request.method)
        response = error_response(500, "internal_error", "something went wrong on our side")
    response.headers.setdefault("Content-Security-Policy", API_CSP)
    response.headers.setdefault("Cache-Control", "no-store")
    return response


async def openapi_json(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document."""
    return web.Response(text=json.dumps(request.app[OPENAPI_KEY], ensure_ascii=False),
                        content_type="application/json")


def setup_api(app: web.Application, settings: Settings, database: Database,
              engine: RoutingEngine, redis: Any | None = None) -> None:
    """Mount the API, its OpenAPI document and docs page on ``app``."""
    from contact_center.api.docs import docs_css, docs_page
    from contact_center.api.openapi import build_openapi

    app[API_DATABASE] = database
    app[API_SETTINGS] = settings
    app[API_ENGINE] = engine
    app[LIMITER_KEY] = RedisRateLimiter(redis) if redis is not None else MemoryRateLimiter()
    ops = operations()
    app[OPENAPI_KEY] = build_openapi(ops)
    app.middlewares.append(api_middleware)
    ApiRouter(ops).mount(app)
    app.router.add_get("/api/openapi.json", openapi_json)
    app.router.add_get("/api/docs", docs_page)
    app.router.add_get("/api/docs.css", docs_css)
