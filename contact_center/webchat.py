"""The web chat's HTTP side: the widget script and the visitors' WebSocket.

``GET /webchat/widget.js`` serves the widget with its settings baked in;
``GET /webchat/ws`` is the chat socket. The handshake is refused with HTTP 403 and a
JSON body unless the page's ``Origin`` is allowed. On the socket every frame is
validated; a bad one gets an ``error`` frame and the socket stays open (until a visitor
has sent too many of them). A visitor's message is acknowledged only after it is on the
bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from aiohttp import WSMsgType, hdrs, web

import channels.webchat as webchat_package
from channels.webchat.adapter import WebchatAdapter
from channels.webchat.envelope import Profile, build_envelope, check_profile, check_text
from channels.webchat.history import agents_online, load_history
from channels.webchat.hub import Connection, WebchatHub
from channels.webchat.origins import OriginPolicy
from channels.webchat.protocol import (
    BAD_FRAME,
    EMAIL_REQUIRED,
    HELLO_REQUIRED,
    RATE_LIMITED,
    TOO_MANY_ERRORS,
    UNAVAILABLE,
    AckFrame,
    ErrorFrame,
    FrameError,
    HelloFrame,
    MessageFrame,
    PingFrame,
    PongFrame,
    PresenceFrame,
    ProfileFrame,
    ProfileOkFrame,
    WelcomeFrame,
    parse_frame,
)
from channels.webchat.ratelimit import RateLimiter
from contact_center.settings import Settings, WebchatSettings
from crm_core.db import Database
from routing.engine import RoutingEngine
from routing.envelope import InboundMessage
from routing.events import EventBus

log = structlog.get_logger(__name__)

Publish = Callable[[InboundMessage], Awaitable[bool]]
WIDGET_FILE = Path(webchat_package.__file__).resolve().parent / "static" / "widget.js"
CONFIG_PLACEHOLDER = '"__CC_WEBCHAT_CONFIG__"'
WIDGET_PATH = "/webchat/widget.js"
SOCKET_PATH = "/webchat/ws"
HELLO_TIMEOUT = 15.0
"""Seconds a new socket has to send its ``hello``."""
MAX_BAD_FRAMES = 20
"""Refused frames after which a socket is closed (policy violation)."""
NOT_THE_VISITORS_FAULT = frozenset({UNAVAILABLE, EMAIL_REQUIRED})
"""Refusals that do not count towards ``MAX_BAD_FRAMES``."""
HEARTBEAT = 30.0


class WebchatService:
    """What every chat socket shares: settings, database, bus, hub, rate limiter, origins."""

    def __init__(
        self,
        settings: WebchatSettings,
        database: Database,
        publish: Publish,
        hub: WebchatHub,
        *,
        region: str = "CN",
    ) -> None:
        self.settings = settings
        self.database = database
        self.publish = publish
        self.hub = hub
        self.region = region
        self.origins = OriginPolicy(settings.allowed_origins)
        self.limiter = RateLimiter(settings.rate_burst, settings.rate_per_second)
        self._presence: tuple[float, bool] | None = None
        self._widget: str | None = None
        self.bot_on = False
        """The self-service bot answers web chats: someone is always "online"."""

    @property
    def max_frame_bytes(self) -> int:
        """Largest WebSocket frame accepted: a full message even if every character is
        JSON-escaped as a surrogate pair (12 bytes), plus room for the rest of the frame."""
        return max(64 * 1024, self.settings.max_message_chars * 12 + 16 * 1024)

    async def agents_online(self) -> bool:
        """Whether an agent (or the bot) is online, reused for ``presence_cache_seconds``."""
        if self.bot_on:
            return True
        now = time.monotonic()
        ttl = self.settings.presence_cache_seconds
        if self._presence is not None and now - self._presence[0] < ttl:
            return self._presence[1]
        online = await agents_online(self.database)
        self._presence = (now, online)
        return online

    def widget_js(self) -> str:
        """The widget script with this server's settings in it (rendered once)."""
        if self._widget is None:
            config = {
                "socketPath": SOCKET_PATH,
                "title": {"zh": self.settings.title_zh, "en": self.settings.title_en},
                "greeting": {"zh": self.settings.greeting_zh, "en": self.settings.greeting_en},
                "prechat": self.settings.prechat_form,
                "maxChars": self.settings.max_message_chars,
            }
            source = WIDGET_FILE.read_text(encoding="utf-8")
            # ensure_ascii: no U+2028/U+2029 or other surprises inside the script literal.
            self._widget = source.replace(CONFIG_PLACEHOLDER, json.dumps(config), 1)
        return self._widget


WEBCHAT_KEY = web.AppKey("webchat", WebchatService)
WEBCHAT_HUB_KEY = web.AppKey("webchat_hub", WebchatHub)


def _refuse(status: int, error: str, **details: Any) -> web.Response:
    return web.json_response({"error": error, **details}, status=status)


async def widget_script(request: web.Request) -> web.Response:
    """The widget, for any page to load with one ``<script>`` tag."""
    body = request.app[WEBCHAT_KEY].widget_js()
    return web.Response(
        text=body,
        content_type="application/javascript",
        charset="utf-8",
        headers={
            "Cache-Control": "public, max-age=300",
            "X-Content-Type-Options": "nosniff",
            "Cross-Origin-Resource-Policy": "cross-origin",
        },
    )


TRY_PATH = "/webchat/try"
TRY_PAGE = {
    "zh": ("zh-CN", "示例网店", "这是一个示例页面：右下角的按钮打开网页聊天，和在您自己的网站上一样"
           "（只需一个 script 标签）。消息会出现在坐席工作台里。", "English", "en"),
    "en": ("en", "Sample shop", "A sample page: the button at the bottom right opens the web "
           "chat, as it would on your own site (one script tag). Messages appear in the agent "
           "console.", "中文", "zh"),
}


async def try_page(request: web.Request) -> web.Response:
    """``/webchat/try``: a sample shop page with the widget on it, to try the chat (and the
    bot) right after ``make run``. Served under the same strict CSP as our other pages;
    the server's own origin must be in ``webchat.allowed_origins`` (it is by default for
    port 8080)."""
    language = "en" if request.query.get("lang") == "en" else "zh"
    html_lang, title, text, other, other_code = TRY_PAGE[language]
    body = (
        f'<!doctype html>\n<html lang="{html_lang}"><head><meta charset="utf-8">'
        f'<title>{title}</title><link rel="stylesheet" href="/landing.css"></head>'
        f"<body><h1>{title}</h1><p>{text}</p>"
        f'<p><a href="{TRY_PATH}?lang={other_code}">{other}</a> · '
        f'<a href="/console/">坐席工作台 · Agent console</a></p>'
        f'<script src="{WIDGET_PATH}" async></script></body></html>\n'
    )
    return web.Response(text=body, content_type="text/html")


async def chat_socket(request: web.Request) -> web.StreamResponse:
    """The visitors' WebSocket; refused with 403 JSON for an origin not allowed."""
    service = request.app[WEBCHAT_KEY]
    origin = request.headers.get(hdrs.ORIGIN)
    if not service.origins.allows(origin):
        log.warning("webchat.origin_refused", origin=(origin or "")[:200], remote=request.remote)
        return _refuse(403, "origin not allowed", origin=(origin or None) and origin[:200])
    socket = web.WebSocketResponse(max_msg_size=service.max_frame_bytes, heartbeat=HEARTBEAT)
    if not socket.can_prepare(request).ok:
        log.info("webchat.not_a_websocket", remote=request.remote)
        return _refuse(400, "expected a WebSocket upgrade request")
    await socket.prepare(request)
    session = ChatSession(service, socket, origin)
    try:
        await session.run()
    finally:
        await session.end()
    return socket


class ChatSession:
    """One socket: waits for ``hello``, sends the welcome, then handles frames in order."""

    def __init__(self, service: WebchatService, socket: web.WebSocketResponse,
                 origin: str | None) -> None:
        self.service = service
        self.socket = socket
        self.origin = origin
        self.connection = Connection("", socket)
        self.visitor_id: str | None = None
        self.profile = Profile()
        self.language: str | None = None
        self.told_online: bool | None = None
        self.bad_frames = 0
        self.log = log
        self._closing: asyncio.Task[None] | None = None

    def send(self, frame: Any) -> None:
        """Queue an outgoing frame on this socket (ahead of held hub frames)."""
        self.connection.push(frame.to_json(), bypass_hold=True)

    async def run(self) -> None:
        """Serve the socket until the peer closes it (or breaks the rules too often)."""
        self.connection.start()
        try:
            async with asyncio.timeout(HELLO_TIMEOUT):
                while self.visitor_id is None:
                    message = await self.socket.receive()
                    if not await self._on_socket_message(message):
                        return
        except TimeoutError:
            log.info("webchat.hello_timeout", origin=self.origin)
            await self.connection.flush_and_stop()
            await self.socket.close(code=1008, message=b"hello expected")
            return
        while True:
            message = await self.socket.receive()
            if not await self._on_socket_message(message):
                return

    async def end(self) -> None:
        """Forget the socket and write what is still queued."""
        self.service.hub.detach(self.connection)
        await self.connection.flush_and_stop()
        if self.visitor_id is not None:
            self.log.debug("webchat.disconnected", close_code=self.socket.close_code)

    async def _on_socket_message(self, message: Any) -> bool:
        """Handle one WebSocket message; ``False`` when the socket is done."""
        if message.type == WSMsgType.TEXT:
            await self._on_text(message.data)
            return not self.socket.closed
        if message.type == WSMsgType.BINARY:
            self._refused(FrameError(BAD_FRAME, "binary frames are not accepted; send JSON text"))
            return not self.socket.closed
        if message.type == WSMsgType.ERROR:
            # Oversized frames end here: aiohttp has closed the socket with 1009.
            self.log.warning("webchat.socket_error", visitor_id=self.visitor_id,
                             error=str(self.socket.exception()),
                             close_code=self.socket.close_code)
        return False

    async def _on_text(self, raw: str) -> None:
        try:
            frame = parse_frame(raw)
            if isinstance(frame, HelloFrame):
                await self._on_hello(frame)
            elif self.visitor_id is None:
                raise FrameError(HELLO_REQUIRED, "send a hello frame first")
            elif isinstance(frame, MessageFrame):
                await self._on_message(frame)
            elif isinstance(frame, ProfileFrame):
                self._on_profile(frame)
            elif isinstance(frame, PingFrame):
                self.send(PongFrame())
        except FrameError as error:
            self._refused(error)

    def _refused(self, error: FrameError) -> None:
        if error.code not in NOT_THE_VISITORS_FAULT:
            self.bad_frames += 1
        self.log.info("webchat.frame_refused", visitor_id=self.visitor_id, code=error.code,
                      client_message_id=error.client_message_id, reason=error.message)
        self.send(ErrorFrame.of(error))
        if self.bad_frames >= MAX_BAD_FRAMES:
            self.log.warning("webchat.too_many_bad_frames", visitor_id=self.visitor_id,
                             origin=self.origin)
            self.send(ErrorFrame(code=TOO_MANY_ERRORS, message="too many refused frames"))
            if self._closing is None:
                self._closing = asyncio.get_running_loop().create_task(self._close_after_flush())

    async def _close_after_flush(self) -> None:
        await self.connection.flush_and_stop()
        await self.socket.close(code=1008, message=b"too many refused frames")

    async def _on_hello(self, frame: HelloFrame) -> None:
        if self.visitor_id is not None:
            raise FrameError(BAD_FRAME, "hello was already sent on this socket")
        self.visitor_id = frame.visitor_id
        self.language = {"zh": "zh-CN", "en": "en"}.get(frame.lang or "")
        self.connection.visitor_id = frame.visitor_id
        self.log = log.bind(visitor_id=frame.visitor_id)
        if frame.profile is not None:
            try:
                self.profile = check_profile(frame.profile, self.service.region)
            except FrameError as error:
                self._refused(error)
        # Attached (holding) before the history is read: a reply dispatched meanwhile is
        # written right after the welcome (the widget shows an outbox id only once).
        self.connection.hold()
        self.service.hub.attach(self.connection)
        try:
            online = await self.service.agents_online()
            history = await load_history(self.service.database, frame.visitor_id)
        except Exception:
            self.log.exception("webchat.welcome_failed")
            online, history = False, []
            self.send(ErrorFrame(code=UNAVAILABLE, message="history is unavailable right now"))
        self.told_online = online
        self.send(WelcomeFrame(visitor_id=frame.visitor_id, agents_online=online,
                               history=history))
        self.connection.release()
        self.log.info("webchat.connected", origin=self.origin, agents_online=online,
                      history=len(history), tabs=self.service.hub.connections(frame.visitor_id))

    def _on_profile(self, frame: ProfileFrame) -> None:
        profile = check_profile(frame, self.service.region)
        self.profile = self.profile.merged(profile)
        self.send(ProfileOkFrame())
        self.log.info("webchat.profile", has_name=bool(self.profile.name),
                      has_email=bool(self.profile.email), has_phone=bool(self.profile.phone))

    async def _on_message(self, frame: MessageFrame) -> None:
        visitor_id = self.visitor_id or ""
        cmid = frame.client_message_id
        bound = self.log.bind(client_message_id=cmid)
        service = self.service
        if not service.limiter.allow(visitor_id):
            bound.warning("webchat.rate_limited", dropped=True,
                          retry_after=round(service.limiter.retry_after(visitor_id), 2))
            raise FrameError(RATE_LIMITED, "too many messages; wait a moment", cmid)
        text = check_text(frame.text, service.settings.max_message_chars, cmid)
        online = await self._presence()
        envelope = build_envelope(
            visitor_id=visitor_id,
            client_message_id=cmid,
            text=text,
            profile=self.profile,
            reply_by_email=not online,
            language=self.language,
        )
        try:
            fresh = await service.publish(envelope)
        except Exception as exc:
            bound.error("webchat.publish_failed", error=f"{type(exc).__name__}: {exc}")
            raise FrameError(UNAVAILABLE, "the message could not be stored; it will be resent",
                             cmid) from None
        self.send(AckFrame(client_message_id=cmid, duplicate=not fresh))
        bound.info("webchat.message_received", chars=len(text), duplicate=not fresh,
                   reply_by_email=not online)

    async def _presence(self) -> bool:
        """Whether an agent is online now; tells the widget when that changed."""
        try:
            online = await self.service.agents_online()
        except Exception:
            self.log.exception("webchat.presence_failed")
            online = bool(self.told_online)
        if online != self.told_online:
            self.told_online = online
            self.send(PresenceFrame(agents_online=online))
        return online


def setup_webchat(
    app: web.Application,
    settings: Settings,
    database: Database,
    publish: Publish,
    *,
    redis: Any | None = None,
    events: EventBus | None = None,
) -> WebchatHub:
    """Add the widget and socket routes; the hub is stored under ``WEBCHAT_HUB_KEY``.

    ``publish`` puts an envelope on the bus (``RoutingEngine.publish``). With ``redis``
    the hub also exchanges replies with the other web nodes; with ``events`` it forwards
    ``agent.typing`` events to the visitors.
    """
    hub = WebchatHub(redis)
    if events is not None:
        hub.listen(events)
    service = WebchatService(settings.webchat, database, publish, hub,
                             region=settings.locale.default_region)
    app[WEBCHAT_KEY] = service
    app[WEBCHAT_HUB_KEY] = hub
    app.router.add_get(WIDGET_PATH, widget_script)
    app.router.add_get(SOCKET_PATH, chat_socket)
    app.router.add_get(TRY_PATH, try_page)

    async def start(_app: web.Application) -> None:
        await hub.start()

    async def stop(_app: web.Application) -> None:
        await hub.close()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
    return hub


def install_webchat(
    app: web.Application, settings: Settings, database: Database, engine: RoutingEngine
) -> WebchatHub:
    """The web chat wired from settings (what ``create_app`` calls).

    Visitors' messages go through ``engine.publish``; the hub forwards the typing events
    of ``engine.events``; with ``REDIS_URL`` it has its own Redis client for the fan-out
    to the other web nodes, closed with the app.
    """
    from contact_center.wiring import redis_client

    redis = redis_client(settings)
    hub = setup_webchat(app, settings, database, engine.publish, redis=redis,
                        events=engine.events)
    bot = engine.config.bot
    app[WEBCHAT_KEY].bot_on = bool(bot is not None and bot.flow_for("webchat"))
    if redis is not None:
        async def close_redis(_app: web.Application) -> None:
            with contextlib.suppress(Exception):
                await redis.aclose()

        app.on_cleanup.append(close_redis)
    return hub


def webchat_hub(app: web.Application) -> WebchatHub:
    """The hub of an app set up with ``setup_webchat``."""
    return app[WEBCHAT_HUB_KEY]


def webchat_adapter(app: web.Application) -> WebchatAdapter:
    """The outbound adapter for the outbox dispatcher, over this app's hub."""
    return WebchatAdapter(app[WEBCHAT_HUB_KEY])
