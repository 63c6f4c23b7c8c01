"""The fan-out of frames to visitors' open sockets, in process and across web nodes.

Each web process has one ``WebchatHub``; a visitor's sockets (one per tab) register with
the hub of the process they are connected to. A reply or a typing notice is pushed to the
local sockets and, when Redis is configured, published on the ``cc:webchat`` pub/sub
channel, where the hubs of the other web nodes pick it up. Messages carry the publishing
hub's node id, so a hub never delivers its own message twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import defaultdict
from typing import Any, Protocol

import structlog

from channels.webchat.protocol import VISITOR_ID, AgentMessageFrame, TypingFrame
from routing.events import Event, EventBus
from routing.pubsub import subscribe_forever

log = structlog.get_logger(__name__)

AGENT_TYPING = "agent.typing"
"""Event the agent side publishes on the routing ``EventBus``: data ``visitor_id``,
``agent_name``. The hub forwards it to the visitor's sockets as a ``typing`` frame."""
REDIS_CHANNEL = "cc:webchat"
MAX_QUEUED_FRAMES = 200
"""Frames waiting for a slow socket; past this the socket is closed (it reloads history)."""


def agent_typing(visitor_id: str, agent_name: str | None) -> Event:
    """The event announcing that an agent types to a visitor (for the console to publish)."""
    return Event(AGENT_TYPING, {"visitor_id": visitor_id, "agent_name": agent_name})


class Socket(Protocol):
    """What the hub needs of a WebSocket (``aiohttp.web.WebSocketResponse`` has it)."""

    async def send_str(self, data: str) -> None:
        """Send one text frame."""
        ...

    async def close(self, *, code: int = ..., message: bytes = ...) -> bool:
        """Close the socket."""
        ...


class Connection:
    """One open socket of one visitor; frames are queued and written in order by a task."""

    def __init__(self, visitor_id: str, socket: Socket, max_queued: int = MAX_QUEUED_FRAMES):
        self.visitor_id = visitor_id
        self.socket = socket
        self._queue: asyncio.Queue[str | None] = asyncio.Queue(max_queued)
        self._writer: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self._held: list[str] | None = None
        self.closed = False

    def start(self) -> None:
        """Start writing queued frames to the socket."""
        if self._writer is None:
            self._writer = asyncio.create_task(self._write(), name=f"webchat-writer:{id(self)}")

    def hold(self) -> None:
        """Keep hub frames back (while the welcome is prepared) until ``release``."""
        if self._held is None:
            self._held = []

    def release(self) -> None:
        """Queue the frames held back, in order, and stop holding."""
        held, self._held = self._held or [], None
        for text in held:
            self.push(text)

    def push(self, text: str, *, bypass_hold: bool = False) -> bool:
        """Queue one JSON frame; a socket too slow to keep up is closed."""
        if self.closed:
            return False
        if self._held is not None and not bypass_hold:
            if len(self._held) >= self._queue.maxsize:
                return self._overflow()
            self._held.append(text)
            return True
        try:
            self._queue.put_nowait(text)
        except asyncio.QueueFull:
            return self._overflow()
        return True

    def _overflow(self) -> bool:
        log.warning("webchat.socket_overflow", visitor_id=self.visitor_id)
        self.closed = True
        self._closing = asyncio.get_running_loop().create_task(self.close(1013, b"too slow"))
        return False

    async def _write(self) -> None:
        while True:
            text = await self._queue.get()
            if text is None:
                return
            try:
                await self.socket.send_str(text)
            except Exception as exc:  # the peer went away; the reader loop ends the session
                log.debug("webchat.send_failed", visitor_id=self.visitor_id, error=str(exc))
                self.closed = True
                return

    async def flush_and_stop(self, wait_seconds: float = 2.0) -> None:
        """Write what is queued (for up to ``wait_seconds``), then stop the writer."""
        self.closed = True
        if self._writer is None:
            return
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)
        writer = self._writer
        try:
            await asyncio.wait_for(asyncio.shield(writer), wait_seconds)
        except TimeoutError:
            writer.cancel()
        except asyncio.CancelledError:
            if not writer.cancelled():  # we were cancelled, not the writer (by close)
                writer.cancel()
                raise

    async def close(self, code: int, message: bytes) -> None:
        """Stop writing and close the socket with a WebSocket close code."""
        self.closed = True
        if self._writer is not None:
            self._writer.cancel()
        with contextlib.suppress(Exception):
            await self.socket.close(code=code, message=message)


class WebchatHub:
    """Open sockets by visitor; pushes replies and typing notices to every tab of a visitor."""

    def __init__(
        self, redis: Any | None = None, *, channel: str = REDIS_CHANNEL, node_id: str | None = None
    ) -> None:
        self.redis = redis
        self.channel = channel
        self.node_id = node_id or uuid.uuid4().hex
        self._sockets: dict[str, set[Connection]] = defaultdict(set)
        self._subscriber: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._first_attempt = asyncio.Event()

    # --- sockets ---------------------------------------------------------------------

    def attach(self, connection: Connection) -> None:
        """Register an open socket of a visitor."""
        self._sockets[connection.visitor_id].add(connection)

    def detach(self, connection: Connection) -> None:
        """Forget a closed socket."""
        sockets = self._sockets.get(connection.visitor_id)
        if sockets is not None:
            sockets.discard(connection)
            if not sockets:
                del self._sockets[connection.visitor_id]

    def connections(self, visitor_id: str) -> int:
        """How many sockets of the visitor are open on this node."""
        return len(self._sockets.get(visitor_id, ()))

    @property
    def visitors(self) -> int:
        """How many visitors have an open socket on this node."""
        return len(self._sockets)

    def push_local(self, visitor_id: str, frame: str) -> int:
        """Queue a JSON frame on every local socket of the visitor; returns how many."""
        return sum(c.push(frame) for c in list(self._sockets.get(visitor_id, ())))

    # --- fan-out ---------------------------------------------------------------------

    async def fan_out(self, visitor_id: str, frame: str) -> int:
        """Push to the local sockets and publish for the other nodes; returns local pushes.

        A Redis failure is logged and not raised: the frame is also in the history the
        widget loads on its next connect.
        """
        pushed = self.push_local(visitor_id, frame)
        if self.redis is not None:
            message = json.dumps(
                {"node": self.node_id, "visitor_id": visitor_id, "frame": frame},
                ensure_ascii=False,
            )
            try:
                await self.redis.publish(self.channel, message)
            except Exception as exc:
                log.warning("webchat.redis_publish_failed", visitor_id=visitor_id,
                            error=f"{type(exc).__name__}: {exc}")
        return pushed

    async def deliver(self, reply: dict[str, Any]) -> int:
        """Fan out an agent's reply: ``visitor_id``, ``text``, ``agent_name``, ``outbox_id``,
        ``sent_at``; returns how many local sockets got it."""
        frame = AgentMessageFrame(
            outbox_id=reply["outbox_id"],
            text=reply["text"],
            agent_name=reply.get("agent_name") or None,
            sent_at=reply["sent_at"],
            buttons=reply.get("buttons") or None,
        )
        return await self.fan_out(reply["visitor_id"], frame.to_json())

    async def on_event(self, event: Event) -> None:
        """EventBus listener: ``agent.typing`` becomes a ``typing`` frame."""
        if event.name != AGENT_TYPING:
            return
        visitor_id = event.data.get("visitor_id")
        if not isinstance(visitor_id, str) or not VISITOR_ID.match(visitor_id):
            log.warning("webchat.typing_without_visitor", data_keys=sorted(event.data))
            return
        agent_name = event.data.get("agent_name")
        frame = TypingFrame(agent_name=str(agent_name) if agent_name else None).to_json()
        await self.fan_out(visitor_id, frame)

    def listen(self, events: EventBus) -> None:
        """Subscribe to the agent events this hub forwards (typing)."""
        events.subscribe(AGENT_TYPING, self.on_event)

    # --- Redis subscription ------------------------------------------------------------

    async def start(self, wait_seconds: float = 5.0) -> None:
        """Subscribe to the other nodes' frames (with Redis); returns once subscribed."""
        if self.redis is None or self._subscriber is not None:
            return
        self._subscriber = asyncio.create_task(self._subscribe_forever(), name="webchat-redis")
        with contextlib.suppress(TimeoutError):  # subscribed, or the first try failed
            await asyncio.wait_for(self._first_attempt.wait(), wait_seconds)
        if not self._subscribed.is_set():
            log.warning("webchat.redis_subscribe_slow", channel=self.channel)

    async def _subscribe_forever(self) -> None:
        await subscribe_forever(self.redis, self.channel, self._deliver_remote,
                                self._subscribed, name="webchat", node=self.node_id,
                                first_attempt=self._first_attempt)

    def _deliver_remote(self, data: Any) -> None:
        try:
            message = json.loads(data)
            node, visitor_id, frame = message["node"], message["visitor_id"], message["frame"]
        except (TypeError, ValueError, KeyError):
            log.warning("webchat.redis_bad_message")
            return
        if node == self.node_id:
            return  # published by this hub, which delivered it already
        if isinstance(visitor_id, str) and isinstance(frame, str):
            self.push_local(visitor_id, frame)

    async def close(self) -> None:
        """Stop the subscription and close every socket (server shutdown)."""
        if self._subscriber is not None:
            self._subscriber.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._subscriber
            self._subscriber = None
        for sockets in list(self._sockets.values()):
            for connection in list(sockets):
                await connection.close(1001, b"server shutdown")
        self._sockets.clear()
