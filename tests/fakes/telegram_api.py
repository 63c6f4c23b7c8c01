"""A local fake of the Telegram Bot API that speaks its real wire format.

python-telegram-bot reaches it through ``base_url``/``base_file_url``; requests arrive
form-encoded (or multipart with files) at ``/bot<TOKEN>/<method>`` and are recorded, so
tests assert exactly what our bot sent. Updates are queued with ``add_update`` and served
by ``getUpdates`` with Telegram's offset semantics; errors (400, 403, 429 with
``retry_after``, 5xx) can be injected per method.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.mailservers import free_port

BOT_ID = 777000111
TOKEN = f"{BOT_ID}:AAE-fake-token-for-tests_0123456789"


@dataclass
class Call:
    """One request our bot made."""

    method: str
    params: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)


@dataclass
class Failure:
    status: int
    description: str
    retry_after: int | None = None


class FakeTelegramApi:
    """The fake server; ``base_url`` and ``file_url`` go into the bot's settings."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.calls: list[Call] = []
        self.updates: list[dict[str, Any]] = []
        self.files: dict[str, bytes] = {}
        self.webhook: dict[str, Any] | None = None
        self._failures: dict[str, list[Failure]] = {}
        self._message_ids = itertools.count(5000)
        self._update_ids = itertools.count(100)
        self._new_update = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1."""
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._file)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        """What goes into ``telegram.api_base_url``."""
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def file_url(self) -> str:
        """What goes into ``telegram.api_file_url``."""
        return f"http://127.0.0.1:{self.port}/file/bot"

    # -- test controls --------------------------------------------------------------------

    def add_update(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Queue an update (``kind`` is ``message``, ``edited_message``, …); returns it."""
        update = {"update_id": next(self._update_ids), kind: payload}
        self.updates.append(update)
        self._new_update.set()
        return update

    def add_raw_update(self, update: dict[str, Any]) -> None:
        """Queue an update exactly as given (for malformed ones)."""
        self.updates.append(update)
        self._new_update.set()

    def add_file(self, file_id: str, data: bytes) -> None:
        """Make a file downloadable through getFile."""
        self.files[file_id] = data

    def fail_next(self, method: str, status: int, description: str,
                  retry_after: int | None = None) -> None:
        """The next call of ``method`` answers with this error."""
        self._failures.setdefault(method, []).append(Failure(status, description, retry_after))

    def calls_of(self, method: str) -> list[Call]:
        """Recorded calls of one method, in order."""
        return [c for c in self.calls if c.method == method]

    # -- the API --------------------------------------------------------------------------

    @staticmethod
    def _ok(result: Any) -> web.Response:
        return web.json_response({"ok": True, "result": result})

    def _message(self, chat_id: Any, **extra: Any) -> dict[str, Any]:
        return {
            "message_id": next(self._message_ids), "date": 1764900000,
            "chat": {"id": int(chat_id), "type": "private"},
            "from": {"id": BOT_ID, "is_bot": True, "first_name": "CC Bot"}, **extra,
        }

    async def _api(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)
        method = request.match_info["method"]
        params: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        if request.method == "POST":
            form = await request.post()
            for key, value in form.items():
                if hasattr(value, "file"):
                    files[key] = value.file.read()
                else:
                    params[key] = value
        params.update(request.query)
        self.calls.append(Call(method, params, files))
        queued = self._failures.get(method)
        if queued:
            failure = queued.pop(0)
            body: dict[str, Any] = {"ok": False, "error_code": failure.status,
                                    "description": failure.description}
            if failure.retry_after is not None:
                body["parameters"] = {"retry_after": failure.retry_after}
            return web.json_response(body, status=failure.status)
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            return web.json_response({"ok": False, "error_code": 404,
                                      "description": "Not Found: method not found"}, status=404)
        return await handler(params, files)

    async def _m_getMe(self, _p: dict[str, Any], _f: dict[str, bytes]) -> web.Response:
        return self._ok({"id": BOT_ID, "is_bot": True, "first_name": "CC Bot",
                         "username": "cc_test_bot", "can_join_groups": False,
                         "can_read_all_group_messages": False, "supports_inline_queries": False})

    async def _m_getUpdates(self, p: dict[str, Any], _f: dict[str, bytes]) -> web.Response:
        offset = int(p["offset"]) if p.get("offset") not in (None, "") else None
        if offset is not None:  # Telegram forgets what the offset confirms
            self.updates = [u for u in self.updates if u.get("update_id", 0) >= offset]
        if not self.updates:
            self._new_update.clear()
            timeout = min(float(p.get("timeout") or 0), 2.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_update.wait(), timeout)
        return self._ok(list(self.updates[:100]))

    async def _m_sendMessage(self, p: dict[str, Any], _f: dict[str, bytes]) -> web.Response:
        return self._ok(self._message(p["chat_id"], text=p.get("text", "")))

    async def _m_sendPhoto(self, p: dict[str, Any], _f: dict[str, bytes]) -> web.Response:
        return self._ok(self._message(p["chat_id"], photo=[
            {"file_id": "sent-photo", "file_unique_id": "u-sent", "width": 10, "height": 10}]))

    async def _m_sendDocument(self, p: dict[str, Any], _f: dict[str, bytes]) -> web.Response:
        return self._ok(self._message(p["chat_id"], document={
            "file_id": "sent-doc", "file_unique_id": "u-doc"}))

    async def _m_getFile(self, p: dict[str, Any], _f: dict[str, bytes]) -> web.Response:
        file_id = p["file_id"]
        if file_id not in self.files:
            return web.json_response({"ok": False, "error_code": 400,
                                      "description": "Bad Request: invalid file_id"}, status=400)
        return self._ok({"file_id": file_id, "file_unique_id": f"u-{file_id}",
                         "file_size": len(self.files[file_id]), "file_path": f"files/{file_id}"})

    async def _file(self, request: web.Request) -> web.Response:
        file_id = request.match_info["path"].rsplit("/", 1)[-1]
        if request.match_info["token"] != self.token or file_id not in self.files:
            return web.Response(status=404)
        return web.Response(body=self.files[file_id])

    async def _m_setWebhook(self, p: dict[str, Any], _f: dict[str, bytes]) -> web.Response:
        self.webhook = dict(p)
        return self._ok(True)

    async def _m_deleteWebhook(self, _p: dict[str, Any], _f: dict[str, bytes]) -> web.Response:
        self.webhook = None
        return self._ok(True)

    async def _m_answerCallbackQuery(self, _p: dict[str, Any],
                                     _f: dict[str, bytes]) -> web.Response:
        return self._ok(True)


def user(user_id: int = 42, first: str = "伟", last: str = "张") -> dict[str, Any]:
    """A Telegram user object."""
    return {"id": user_id, "is_bot": False, "first_name": first, "last_name": last,
            "language_code": "zh-hans"}


def private_message(text: str | None = None, *, user_id: int = 42, message_id: int = 1,
                    **extra: Any) -> dict[str, Any]:
    """A message in a private chat with ``user_id``."""
    payload: dict[str, Any] = {
        "message_id": message_id, "date": 1764900000 + message_id,
        "chat": {"id": user_id, "type": "private", "first_name": "伟"},
        "from": user(user_id), **extra,
    }
    if text is not None:
        payload["text"] = text
    return payload


def loads(value: Any) -> Any:
    """A JSON-encoded form value (reply_markup, allowed_updates) as Python data."""
    return json.loads(value) if isinstance(value, str) else value
