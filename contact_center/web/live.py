"""Live updates for the console: domain events pushed to each agent's WebSocket.

``/console/ws`` is opened by console.js on every page (the session cookie authenticates
it: the console middleware runs for the upgrade GET like for any page; a foreign
``Origin`` is refused). The hub listens to every event of the routing engine's
``EventBus`` and forwards an event only to the agents allowed to see what it is about,
by the rules of ``contact_center.web.policy``:

- an event naming a conversation (directly, through its ticket or its interaction) goes
  to the agents who may see that conversation;
- an event naming only a customer goes to the agents who may see that customer;
- ``call.screen_pop`` goes only to its ``agent_id``; ``note.mentioned`` only to the
  mentioned agents (who may see the conversation);
- an event naming nothing (or naming what no longer exists) goes to supervisors and
  admins only.

Scale-out: other processes' events arrive on Redis pub/sub ``cc:events`` (published by
``routing.events.RedisEventForwarder``). Every web node subscribes and forwards them too;
the events this node published itself come back on that channel as well, and are
recognised by the fingerprint of their exact JSON (the forwarder's payload carries no
node id) and not sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import structlog
from aiohttp import WSCloseCode, WSMsgType, web
from sqlalchemy import select

from contact_center.app import ENGINE_KEY, SETTINGS_KEY
from contact_center.web.auth import DATABASE, PREFIX, PUBLIC_BASE, context, current_agent
from contact_center.web.policy import can_see_conversation, can_see_customer, is_supervisor
from crm_core.db import Database
from crm_core.models import Agent, Conversation, Customer, Interaction, Ticket, agent_teams
from crm_core.services import sessions as session_service
from routing.events import Event, EventBus
from routing.pubsub import subscribe_forever

log = structlog.get_logger(__name__)

SCREEN_POP = "call.screen_pop"
NOTE_MENTIONED = "note.mentioned"
REDIS_CHANNEL = "cc:events"
MAX_QUEUED = 500
"""Frames waiting for one slow socket; past this it is closed (the page reconnects)."""
MAX_PENDING_EVENTS = 10_000
ECHO_MEMORY_SECONDS = 300.0
ECHO_MEMORY_SIZE = 20_000
SESSION_CHECK_SECONDS = 60.0
NOT_FOR_CONSOLES = frozenset({"agent.typing"})
"""Events meant for other listeners (the web chat widget), never sent to consoles."""


def fingerprint(text: str) -> str:
    """The identity of one published event's JSON (for recognising our own echo)."""
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(eq=False)
class LiveClient:
    """One open console socket of one agent; frames are queued and written by a task."""

    agent: Agent
    team_ids: set[int]
    socket: web.WebSocketResponse
    session_token: str
    queue: asyncio.Queue[str | None] = field(
        default_factory=lambda: asyncio.Queue(MAX_QUEUED))
    writer: asyncio.Task[None] | None = None
    closing: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start writing queued frames."""
        self.writer = asyncio.create_task(self._write(), name=f"console-ws-{self.agent.id}")

    def push(self, text: str) -> bool:
        """Queue a frame; a socket too far behind is closed."""
        try:
            self.queue.put_nowait(text)
            return True
        except asyncio.QueueFull:
            log.warning("console.live_overflow", agent_id=self.agent.id)
            if self.closing is None:
                self.closing = asyncio.create_task(
                    self.close(WSCloseCode.TRY_AGAIN_LATER, b"too slow"))
            return False

    async def _write(self) -> None:
        while (text := await self.queue.get()) is not None:
            try:
                await self.socket.send_str(text)
            except (ConnectionError, RuntimeError):
                return

    async def close(self, code: int, message: bytes) -> None:
        """Close the socket and stop the writer."""
        with contextlib.suppress(Exception):
            await self.socket.close(code=code, message=message)
        if self.writer is not None and not self.writer.done():
            self.writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.writer


@dataclass
class EventScope:
    """What an event is about, loaded once for every socket."""

    conversation: Conversation | None = None
    customer: Customer | None = None
    customer_conversations: list[Conversation] = field(default_factory=list)
    names_something: bool = False


def allowed(client: LiveClient, event: Event, scope: EventScope) -> bool:
    """Whether ``client``'s agent may receive ``event`` (the policy's rules)."""
    agent = client.agent
    data = event.data
    if event.name == SCREEN_POP:
        return data.get("agent_id") == agent.id
    if event.name == NOTE_MENTIONED and agent.id not in (data.get("agent_ids") or []):
        return False
    if scope.conversation is not None:
        return can_see_conversation(agent, client.team_ids, scope.conversation)
    if scope.customer is not None:
        visible = any(can_see_conversation(agent, client.team_ids, c)
                      for c in scope.customer_conversations)
        return can_see_customer(agent, scope.customer, has_visible_conversation=visible)
    return is_supervisor(agent)


def _id(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


async def load_scope(database: Database, event: Event) -> EventScope:
    """The conversation and/or customer an event names (by its ids)."""
    data = event.data
    conversation_id = _id(data.get("conversation_id"))
    customer_id = _id(data.get("customer_id"))
    ticket_id = _id(data.get("ticket_id"))
    interaction_id = _id(data.get("interaction_id"))
    scope = EventScope(names_something=any(
        x is not None for x in (conversation_id, customer_id, ticket_id, interaction_id)))
    if not scope.names_something:
        return scope
    async with database.sessions() as session:
        if conversation_id is None and ticket_id is not None:
            ticket = await session.get(Ticket, ticket_id)
            if ticket is not None:
                conversation_id = ticket.conversation_id
                customer_id = customer_id or ticket.customer_id
        if conversation_id is None and interaction_id is not None:
            conversation_id = await session.scalar(
                select(Interaction.conversation_id).where(Interaction.id == interaction_id))
        if conversation_id is not None:
            scope.conversation = await session.get(Conversation, conversation_id)
            if scope.conversation is not None:
                return scope
        if customer_id is not None:
            scope.customer = await session.get(Customer, customer_id)
            if scope.customer is not None:
                scope.customer_conversations = list(await session.scalars(
                    select(Conversation).where(Conversation.customer_id == customer_id)))
    return scope


class LiveHub:
    """The console sockets of this web process and the events they get."""

    def __init__(self, database: Database, redis_url: str | None = None,
                 channel: str = REDIS_CHANNEL) -> None:
        self.database = database
        self.redis_url = redis_url
        self.channel = channel
        self.clients: set[LiveClient] = set()
        self._pending: asyncio.Queue[Event] = asyncio.Queue(MAX_PENDING_EVENTS)
        self._echoes: OrderedDict[str, float] = OrderedDict()
        self._tasks: list[asyncio.Task[None]] = []
        self._redis: Any = None
        self.subscribed = asyncio.Event()
        self._first_attempt = asyncio.Event()
        self.observers: list[Callable[[Event], None]] = []
        """Called with every event, this process's and (scale-out) the others'."""

    # -- events in ----------------------------------------------------------------------

    def listen(self, events: EventBus) -> None:
        """Receive every event of this process's bus."""
        events.subscribe("*", self.on_event)

    async def on_event(self, event: Event) -> None:
        """EventBus listener: remember the event's fingerprint (its Redis echo is skipped),
        queue it for the sockets; never blocks the publisher on the database."""
        if self.redis_url:
            self._remember(fingerprint(event.to_json()))
        self._observe(event)
        if not self.clients or event.name in NOT_FOR_CONSOLES:
            return
        try:
            self._pending.put_nowait(event)
        except asyncio.QueueFull:
            log.warning("console.live_events_dropped", event_name=event.name)

    def _observe(self, event: Event) -> None:
        for observer in self.observers:
            try:
                observer(event)
            except Exception:
                log.exception("console.live_observer_failed", event_name=event.name)

    def _remember(self, key: str) -> None:
        now = time.monotonic()
        self._echoes[key] = now
        while self._echoes and (len(self._echoes) > ECHO_MEMORY_SIZE or next(
                iter(self._echoes.values())) < now - ECHO_MEMORY_SECONDS):
            self._echoes.popitem(last=False)

    def from_redis(self, raw: Any) -> None:
        """A message of ``cc:events``: queued unless this process published it."""
        text = raw.decode() if isinstance(raw, bytes | bytearray) else str(raw)
        if self._echoes.pop(fingerprint(text), None) is not None:
            return
        try:
            message = json.loads(text)
            event = Event(str(message["name"]), dict(message.get("data") or {}),
                          datetime.fromisoformat(message["at"]))
        except (ValueError, KeyError, TypeError):
            log.warning("console.live_bad_redis_message")
            return
        self._observe(event)
        if self.clients and event.name not in NOT_FOR_CONSOLES:
            with contextlib.suppress(asyncio.QueueFull):
                self._pending.put_nowait(event)

    async def dispatch(self, event: Event) -> int:
        """Send ``event`` to every socket allowed to see it; returns how many got it."""
        clients = list(self.clients)
        if not clients:
            return 0
        scope = await load_scope(self.database, event)
        text = event.to_json()
        sent = 0
        for client in clients:
            if allowed(client, event, scope) and client.push(text):
                sent += 1
        log.debug("console.live_event", event_name=event.name, sockets=sent)
        return sent

    async def _dispatch_forever(self) -> None:
        while True:
            event = await self._pending.get()
            try:
                await self.dispatch(event)
            except Exception:
                log.exception("console.live_dispatch_failed", event_name=event.name)

    async def _subscribe_forever(self) -> None:
        from redis.asyncio import Redis

        self._redis = Redis.from_url(self.redis_url)
        await subscribe_forever(self._redis, self.channel, self.from_redis, self.subscribed,
                                first_attempt=self._first_attempt,
                                name="console.live")

    async def _check_sessions(self) -> None:
        """Every minute: close the sockets of sessions that ended (logout, expiry, disabled
        agent), and take up changes of role and teams, so an agent taken out of a team
        stops getting its events without having to reconnect."""
        while True:
            await asyncio.sleep(SESSION_CHECK_SECONDS)
            await self.check_sessions()

    async def check_sessions(self) -> None:
        """One round of ``_check_sessions``."""
        for client in list(self.clients):
            async with self.database.transaction() as session:
                found = await session_service.load_session(session, client.session_token)
                teams = set(await session.scalars(
                    select(agent_teams.c.team_id).where(agent_teams.c.agent_id == found[1].id)
                )) if found is not None else set()
            if found is None:
                log.info("console.live_session_ended", agent_id=client.agent.id)
                await client.close(WSCloseCode.POLICY_VIOLATION, b"session ended")
                self.clients.discard(client)
                continue
            client.agent, client.team_ids = found[1], teams

    # -- sockets ------------------------------------------------------------------------

    def attach(self, client: LiveClient) -> None:
        """Start forwarding to a new socket."""
        self.clients.add(client)
        client.start()

    async def detach(self, client: LiveClient) -> None:
        """Stop forwarding to a closed socket."""
        self.clients.discard(client)
        await client.close(WSCloseCode.OK, b"")

    async def start(self, wait_seconds: float = 5.0) -> None:
        """Start dispatching (and the Redis subscription in scale-out mode)."""
        if self._tasks:
            return
        self._tasks.append(asyncio.create_task(self._dispatch_forever(), name="console-live"))
        self._tasks.append(asyncio.create_task(self._check_sessions(),
                                               name="console-live-sessions"))
        if self.redis_url:
            self._tasks.append(asyncio.create_task(self._subscribe_forever(),
                                                   name="console-live-redis"))
            # Until the first try has subscribed (or failed: Redis down, the node serves
            # without other nodes' events and keeps trying).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._first_attempt.wait(), wait_seconds)

    async def close(self) -> None:
        """Server shutdown: close every socket (1001 going away), stop the tasks."""
        for client in list(self.clients):
            await client.close(WSCloseCode.GOING_AWAY, b"server shutdown")
        self.clients.clear()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()
            self._redis = None


LIVE_HUB = web.AppKey("console_live_hub", LiveHub)


def _origin_allowed(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if not origin:
        return True  # not a browser page (tests, tools); the cookie still authenticates
    netloc = urlsplit(origin).netloc.lower()
    allowed_hosts = {request.host.lower()}
    base = request.app.get(PUBLIC_BASE, "")
    if base:
        allowed_hosts.add(urlsplit(base).netloc.lower())
    return netloc in allowed_hosts


async def live_socket(request: web.Request) -> web.StreamResponse:
    """``/console/ws``: the agent's event stream (server → browser; the browser only
    listens)."""
    ctx = context(request)
    agent = current_agent(request)
    if not _origin_allowed(request):
        log.warning("console.live_foreign_origin", agent_id=agent.id)
        raise web.HTTPForbidden(text="foreign origin")
    hub = request.app[LIVE_HUB]
    socket = web.WebSocketResponse(heartbeat=30.0, max_msg_size=4096)
    try:
        await socket.prepare(request)
    except ConnectionResetError:  # the page was left while the socket was opening
        log.debug("console.live_gone_before_open", agent_id=agent.id)
        return web.Response(status=499)
    client = LiveClient(agent=agent, team_ids=set(ctx.team_ids), socket=socket,
                        session_token=ctx.session_token)
    hub.attach(client)
    log.info("console.live_connected", agent_id=agent.id, sockets=len(hub.clients))
    try:
        async for message in socket:
            if message.type == WSMsgType.TEXT and message.data == "ping":
                client.push('{"name": "pong", "data": {}}')
    finally:
        await hub.detach(client)
        log.info("console.live_disconnected", agent_id=agent.id)
    return socket


def setup_live(app: web.Application) -> None:
    """Create the hub, subscribe it to the engine's events, close it on shutdown."""
    settings = app[SETTINGS_KEY]
    hub = LiveHub(app[DATABASE], settings.redis_url)
    app[LIVE_HUB] = hub
    hub.listen(app[ENGINE_KEY].events)

    async def start(_app: web.Application) -> None:
        await hub.start()

    async def stop(_app: web.Application) -> None:
        await hub.close()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
    app.router.add_get(f"{PREFIX}/ws", live_socket)
