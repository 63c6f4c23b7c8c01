"""Helpers the customers and admin areas share: settings access, form values, paging,
readable domain errors, streamed CSV downloads, links to other areas' pages."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from aiohttp import web
from multidict import MultiDictProxy

from contact_center.settings import Settings
from contact_center.web.auth import CSP, PREFIX, context
from crm_core.errors import ConflictError, CrmError, NotFoundError, StateError, ValidationError


def settings_of(request: web.Request) -> Settings:
    """The application's settings."""
    from contact_center.app import SETTINGS_KEY

    return request.app[SETTINGS_KEY]


def business_zone(request: web.Request) -> ZoneInfo:
    """The business time zone (dates in filters and times on pages)."""
    return ZoneInfo(settings_of(request).locale.timezone)


def local_time(value: datetime | None, zone: ZoneInfo) -> str:
    """``2026-05-04 14:03`` in the business time zone ('' for none)."""
    return value.astimezone(zone).strftime("%Y-%m-%d %H:%M") if value else ""


def pretty(value: Any, indent: int | None = 1) -> str:
    """JSON for people: Chinese as characters, '' for none (the page escapes it)."""
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False, indent=indent, sort_keys=True, default=str)


# -- form and query values --------------------------------------------------------------


def text_value(values: Mapping[str, Any] | MultiDictProxy[Any], name: str,
               limit: int = 2000) -> str:
    """A stripped text field ('' when missing or not text), cut at ``limit`` characters."""
    value = values.get(name, "")
    return value.strip()[:limit] if isinstance(value, str) else ""


def int_value(values: Mapping[str, Any] | MultiDictProxy[Any], name: str) -> int | None:
    """A whole number field, or ``None`` when empty or not a number."""
    raw = text_value(values, name, 20)
    try:
        return int(raw) if raw else None
    except ValueError:
        return None


def int_list(values: MultiDictProxy[Any], name: str) -> list[int]:
    """Every whole number given under ``name`` (checkbox groups)."""
    result = []
    for raw in values.getall(name, []):
        if isinstance(raw, str) and raw.strip().isdigit():
            result.append(int(raw))
    return result


def page_number(request: web.Request) -> int:
    """The ``page`` query parameter, at least 1."""
    number = int_value(request.query, "page") or 1
    return max(1, min(number, 100_000))


@dataclass(frozen=True)
class Pager:
    """Page links that keep the other query parameters."""

    page: int
    page_size: int
    total: int
    path: str
    params: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, request: web.Request, *, page: int, page_size: int, total: int) -> Pager:
        """The pager of this request's list."""
        params = tuple((k, v) for k, v in request.query.items()
                       if k not in ("page", "notice") and v != "")
        return cls(page, page_size, total, request.path, params)

    @property
    def pages(self) -> int:
        """How many pages there are (at least one)."""
        return max(1, -(-self.total // self.page_size))

    @property
    def first_item(self) -> int:
        """The number of the first item shown (0 when none)."""
        return 0 if not self.total else (self.page - 1) * self.page_size + 1

    @property
    def last_item(self) -> int:
        """The number of the last item shown."""
        return min(self.total, self.page * self.page_size)

    def url(self, page: int) -> str:
        """The link to another page."""
        return f"{self.path}?{urlencode([*self.params, ('page', str(page))])}"


# -- errors -----------------------------------------------------------------------------


def error_message(gettext: Callable[..., str], exc: CrmError) -> str:
    """A domain error as a sentence for the console, in the request's language."""
    if isinstance(exc, ValidationError):
        return gettext("Please check {field} ({value}): {reason}", field=exc.field,
                       value=str(exc.value)[:100], reason=exc.reason)
    if isinstance(exc, ConflictError):
        return gettext("{value} already belongs to #{customer_id} ({name}).",
                       value=exc.value, customer_id=exc.customer_id, name=exc.customer_name)
    if isinstance(exc, NotFoundError):
        return gettext("Not found: {what}", what=str(exc))
    if isinstance(exc, StateError):
        return gettext("Not possible now: {reason}", reason=str(exc))
    return gettext("Not possible: {reason}", reason=str(exc))


def not_found(request: web.Request) -> web.HTTPNotFound:
    """A 404 in the request's language."""
    return web.HTTPNotFound(text=context(request).gettext("Not found."))


# -- links to other areas ---------------------------------------------------------------


def has_route(app: web.Application, canonical: str) -> bool:
    """Whether a route with this canonical path (e.g. ``/console/customers/{id}/card``)
    exists, whatever its parameters are called."""
    wanted = _shape(canonical)
    return any(_shape(resource.canonical) == wanted for resource in app.router.resources())


def _shape(canonical: str) -> str:
    return "/".join("{}" if part.startswith("{") and part.endswith("}") else part
                    for part in canonical.split("/"))


def customer_url(app: web.Application, customer_id: int) -> str:
    """Where a customer's name links to: their page in the customers area."""
    del app
    return f"{PREFIX}/customers/{customer_id}/edit"


def conversation_url(app: web.Application, conversation_id: int | None) -> str | None:
    """The conversation page, when it exists."""
    if conversation_id is None or not has_route(app, f"{PREFIX}/conversations/{{id}}"):
        return None
    return f"{PREFIX}/conversations/{conversation_id}"


# -- streamed downloads -----------------------------------------------------------------


class QueueSink(io.RawIOBase):
    """A binary sink whose writes are handed to a queue (read by the response writer)."""

    def __init__(self, queue: asyncio.Queue[bytes | None]) -> None:
        super().__init__()
        self.queue = queue

    def writable(self) -> bool:
        """Always."""
        return True

    def write(self, data: Any) -> int:
        """Queue a copy of ``data``."""
        chunk = bytes(data)
        if chunk:
            self.queue.put_nowait(chunk)
        return len(chunk)


def _download_headers(filename: str) -> dict[str, str]:
    """Headers of a CSV download (set before streaming starts: the middleware's come too
    late for a prepared response)."""
    return {
        "Content-Type": "text/csv",
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Cache-Control": "no-store",
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin",
    }


async def stream_csv(request: web.Request, filename: str,
                     produce: Callable[[QueueSink], Awaitable[Any]]) -> web.StreamResponse:
    """Stream what ``produce`` writes to its sink as a CSV download, chunk by chunk; an
    error before the first byte is raised as it is."""
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    sink = QueueSink(queue)

    async def run() -> Any:
        try:
            return await produce(sink)
        finally:
            queue.put_nowait(None)

    task = asyncio.ensure_future(run())
    first = await queue.get()
    if first is None:  # failed (or wrote nothing) before the first byte
        await task
        return web.Response(body=b"", headers=_download_headers(filename))
    response = web.StreamResponse(headers=_download_headers(filename))
    await response.prepare(request)
    try:
        chunk: bytes | None = first
        while chunk is not None:
            await response.write(chunk)
            chunk = await queue.get()
        await task
    except BaseException:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise
    await response.write_eof()
    return response
