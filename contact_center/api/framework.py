"""Routes declared once with pydantic models: request parsing, scopes, JSON out, OpenAPI.

A handler is ``async def handler(call: ApiCall) -> BaseModel | dict | None``. The
declaration (method, path, scope, query/body/response models) both drives the request
handling and generates the OpenAPI 3.1 document, so the two cannot drift apart.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pydantic
from aiohttp import web
from pydantic import BaseModel

from contact_center.api.errors import ApiError, check_json_values, from_pydantic
from crm_core.models import ApiToken

API_PREFIX = "/api/v1"
INT32_MAX = 2**31 - 1
JSON_TYPES = ("application/json",)
_PARAM = re.compile(r"\{(\w+)\}")


@dataclass
class ApiCall:
    """One API request, parsed and authorised."""

    request: web.Request
    token: ApiToken
    params: dict[str, int]
    query: Any = None
    body: Any = None

    @property
    def actor(self) -> str:
        """Who the audit trail names: ``api:<token id>:<token name>``."""
        return f"api:{self.token.id}:{self.token.name}"[:100]


Handler = Callable[[ApiCall], Awaitable[Any]]


@dataclass
class Operation:
    """One declared route."""

    method: str
    path: str
    handler: Handler
    scope: str
    summary: str
    tag: str
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    errors: tuple[int, ...] = ()
    description: str = ""

    @property
    def operation_id(self) -> str:
        """Stable id for OpenAPI (the handler's name)."""
        return self.handler.__name__

    @property
    def path_params(self) -> list[str]:
        """Names of the path's ``{placeholders}`` (all positive integers)."""
        return _PARAM.findall(self.path)


@dataclass
class ApiRouter:
    """Collects operations; ``mount`` adds them to an aiohttp app."""

    operations: list[Operation] = field(default_factory=list)

    def route(self, method: str, path: str, *, scope: str, summary: str, tag: str,
              query: type[BaseModel] | None = None, body: type[BaseModel] | None = None,
              response: type[BaseModel] | None = None, status: int = 200,
              errors: tuple[int, ...] = ()) -> Callable[[Handler], Handler]:
        """Declare an operation (a decorator)."""
        def register(handler: Handler) -> Handler:
            self.operations.append(Operation(
                method, path, handler, scope, summary, tag, query, body, response, status,
                errors, (handler.__doc__ or "").strip()))
            return handler
        return register

    def mount(self, app: web.Application) -> None:
        """Register every operation under ``/api/v1``."""
        for op in self.operations:
            aio_path = API_PREFIX + _PARAM.sub(lambda m: "{" + m.group(1) + r":\d+}", op.path)
            app.router.add_route(op.method, aio_path, _endpoint(op))


TOKEN_KEY = web.RequestKey("api_token", ApiToken)


def _endpoint(op: Operation) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def endpoint(request: web.Request) -> web.StreamResponse:
        token = request[TOKEN_KEY]
        if op.scope not in token.scopes:
            raise ApiError(403, "forbidden", f"this token lacks the scope {op.scope}")
        params: dict[str, int] = {}
        for name in op.path_params:
            value = int(request.match_info[name])
            if not 1 <= value <= INT32_MAX:
                raise ApiError(404, "not_found", f"no record with {name} {value}")
            params[name] = value
        call = ApiCall(request, token, params)
        if op.query is not None:
            call.query = _parse_query(request, op.query)
        if op.body is not None:
            call.body = await _parse_body(request, op.body)
        result = await op.handler(call)
        if op.status == 204 or result is None:
            return web.Response(status=204)
        if isinstance(result, BaseModel):
            text = result.model_dump_json()
        else:
            text = json.dumps(result, ensure_ascii=False, default=str)
        return web.Response(status=op.status, text=text, content_type="application/json")
    endpoint.__name__ = op.operation_id
    return endpoint


def _parse_query(request: web.Request, model: type[BaseModel]) -> BaseModel:
    data: dict[str, Any] = {}
    for key in request.query:
        values = request.query.getall(key)
        for value in values:
            check_json_values(value, key)
        info = model.model_fields.get(key)
        is_list = info is not None and "list" in str(info.annotation)
        data[key] = values if is_list else values[-1]
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise from_pydantic(exc) from None


async def _parse_body(request: web.Request, model: type[BaseModel]) -> BaseModel:
    if request.content_type not in JSON_TYPES:
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    raw = await request.read()
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
    check_json_values(data)
    if not isinstance(data, dict):
        raise ApiError(400, "validation_error", "the body must be a JSON object")
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise from_pydantic(exc) from None
