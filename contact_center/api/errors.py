"""The API's one error format: ``{"error": {"code", "message", "field"}}`` with a 4xx status."""

from __future__ import annotations

import json
from typing import Any

import pydantic
from aiohttp import web

from crm_core.errors import ConflictError, CrmError, NotFoundError, StateError, ValidationError


class ApiError(Exception):
    """A refusal with its status, a stable code, a message for people and the field at fault."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}

    def response(self) -> web.Response:
        """The JSON response of this error."""
        return error_response(self.status, self.code, self.message, self.field, self.headers)


def error_response(status: int, code: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    """A JSON error body in the API's format."""
    body = {"error": {"code": code, "message": message, "field": field}}
    return web.Response(status=status, text=json.dumps(body, ensure_ascii=False),
                        content_type="application/json", headers=headers)


def from_pydantic(exc: pydantic.ValidationError, prefix: str = "") -> ApiError:
    """The first problem of a pydantic validation, named by its field path."""
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or None
    if prefix and field:
        field = f"{prefix}.{field}"
    return ApiError(400, "validation_error", str(first["msg"]), field or prefix or None)


def from_domain(exc: CrmError) -> ApiError:
    """A domain error as an API error."""
    if isinstance(exc, ValidationError):
        return ApiError(400, "validation_error", exc.reason, exc.field)
    if isinstance(exc, NotFoundError):
        return ApiError(404, "not_found", str(exc))
    if isinstance(exc, ConflictError):
        return ApiError(409, "conflict", str(exc), exc.kind)
    if isinstance(exc, StateError):
        return ApiError(409, "invalid_state", str(exc))
    return ApiError(400, exc.code, str(exc))


INT32_MAX = 2**31 - 1


def check_json_values(value: Any, path: str = "") -> None:
    """Refuse what the databases cannot store: NUL characters, lone surrogates, integers
    beyond 32 bits and non-finite numbers (each would fail deep inside a driver)."""
    if isinstance(value, str):
        _check_text(value, path)
    elif isinstance(value, bool):
        return
    elif isinstance(value, int):
        if abs(value) > INT32_MAX:
            raise ApiError(400, "validation_error", "number out of range", path or None)
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ApiError(400, "validation_error", "numbers must be finite", path or None)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(str(key), path)
            check_json_values(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_json_values(item, f"{path}.{index}" if path else str(index))


def _check_text(text: str, path: str) -> None:
    if "\x00" in text:
        raise ApiError(400, "validation_error", "text must not contain NUL characters",
                       path or None)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "validation_error", "text is not valid Unicode",
                       path or None) from None
