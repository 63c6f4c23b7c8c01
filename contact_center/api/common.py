"""What every API resource uses: the app's database, settings and events; cursors."""

from __future__ import annotations

import base64
from contextlib import AbstractAsyncContextManager
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from contact_center.api.errors import ApiError
from contact_center.api.framework import ApiCall
from contact_center.settings import Settings
from crm_core.db import Database
from routing import events
from routing.engine import RoutingEngine
from routing.events import Event

API_DATABASE = web.AppKey("api_database", Database)
API_SETTINGS = web.AppKey("api_settings", Settings)
API_ENGINE = web.AppKey("api_engine", RoutingEngine)


def database(call: ApiCall) -> Database:
    """The application's database."""
    return call.request.app[API_DATABASE]


def settings(call: ApiCall) -> Settings:
    """The application's settings."""
    return call.request.app[API_SETTINGS]


def changing(call: ApiCall) -> AbstractAsyncContextManager[tuple[AsyncSession, list[Event]]]:
    """A write transaction and the list of events it causes: their webhook deliveries
    commit with the change, live consoles hear of them after (see ``routing.events``)."""
    return events.changing(database(call), call.request.app[API_ENGINE].events)


def encode_cursor(last_id: int) -> str:
    """An opaque cursor after the record ``last_id``."""
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    """The record id a cursor points after; 400 for a cursor we did not make."""
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = raw.partition(":")
        number = int(value)
        if kind != "id" or not 0 < number < 2**31:
            raise ValueError(raw)
    except ValueError:
        raise ApiError(400, "invalid_cursor", "the cursor is not one this API returned",
                       "cursor") from None
    return number


def next_cursor(rows: list[Any], limit: int) -> str | None:
    """The cursor of the next page when this one is full (rows fetched with limit + 1)."""
    if len(rows) <= limit:
        return None
    return encode_cursor(rows[limit - 1].id)
