"""The in-process fan-out and the outbound adapter, with fake sockets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from channels.webchat import AGENT_TYPING, Connection, WebchatAdapter, WebchatHub, agent_typing
from crm_core.models import Channel
from routing.adapters import PermanentSendError
from routing.envelope import OutboundMessage, SenderHandles, ThreadHints
from routing.events import Event, EventBus

VISITOR = "0f8fad5b-d9cb-469f-a165-70867728950e"
OTHER = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"


class FakeSocket:
    def __init__(self, delay: float = 0.0) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed_with: int | None = None
        self.delay = delay

    async def send_str(self, data: str) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        self.sent.append(json.loads(data))

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        self.closed_with = code
        return True


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def open_tab(hub: WebchatHub, visitor_id: str = VISITOR, **kwargs: Any) -> FakeSocket:
    socket = FakeSocket(**kwargs)
    connection = Connection(visitor_id, socket)
    connection.start()
    hub.attach(connection)
    return socket


def reply(outbox_id: int = 1, visitor_id: str = VISITOR, **metadata: Any) -> OutboundMessage:
    return OutboundMessage(outbox_id=outbox_id, channel=Channel.WEBCHAT,
                           to=SenderHandles(visitor_id=visitor_id), text="您好，马上为您处理",
                           metadata=metadata)


async def test_reply_reaches_every_tab_of_the_visitor_only() -> None:
    hub = WebchatHub()
    tab1, tab2, stranger = open_tab(hub), open_tab(hub), open_tab(hub, OTHER)
    adapter = WebchatAdapter(hub)
    assert adapter.channel == Channel.WEBCHAT
    assert await adapter.send(reply(7, agent_name="王芳")) == "webchat:7"
    await settle()
    for tab in (tab1, tab2):
        [frame] = tab.sent
        assert frame["type"] == "message" and frame["outbox_id"] == 7
        assert frame["text"] == "您好，马上为您处理" and frame["agent_name"] == "王芳"
        assert frame["sent_at"]
    assert stranger.sent == []


async def test_reply_without_open_socket_succeeds() -> None:
    assert await WebchatAdapter(WebchatHub()).send(reply(3)) == "webchat:3"


async def test_visitor_from_thread_hints() -> None:
    hub = WebchatHub()
    tab = open_tab(hub)
    message = OutboundMessage(outbox_id=2, channel=Channel.WEBCHAT, to=SenderHandles(),
                              thread=ThreadHints(chat_id=VISITOR), text="hi")
    await WebchatAdapter(hub).send(message)
    await settle()
    assert tab.sent[0]["outbox_id"] == 2


@pytest.mark.parametrize("to", [SenderHandles(), SenderHandles(visitor_id="../etc")])
async def test_no_visitor_is_a_permanent_failure(to: SenderHandles) -> None:
    message = OutboundMessage(outbox_id=1, channel=Channel.WEBCHAT, to=to, text="x")
    with pytest.raises(PermanentSendError):
        await WebchatAdapter(WebchatHub()).send(message)


async def test_empty_reply_is_a_permanent_failure() -> None:
    message = OutboundMessage(outbox_id=1, channel=Channel.WEBCHAT,
                              to=SenderHandles(visitor_id=VISITOR), text="  ")
    with pytest.raises(PermanentSendError):
        await WebchatAdapter(WebchatHub()).send(message)


async def test_typing_event_becomes_typing_frame() -> None:
    hub = WebchatHub()
    events = EventBus()
    hub.listen(events)
    tab = open_tab(hub)
    await events.publish([agent_typing(VISITOR, "王芳")])
    await events.publish([Event(AGENT_TYPING, {"visitor_id": "nonsense"})])
    await events.publish([Event("ticket.created", {"visitor_id": VISITOR})])
    await settle()
    assert tab.sent == [{"type": "typing", "agent_name": "王芳"}]


async def test_detached_socket_gets_nothing() -> None:
    hub = WebchatHub()
    socket = FakeSocket()
    connection = Connection(VISITOR, socket)
    connection.start()
    hub.attach(connection)
    hub.detach(connection)
    assert hub.connections(VISITOR) == 0 and hub.visitors == 0
    await WebchatAdapter(hub).send(reply())
    await settle()
    assert socket.sent == []


async def test_held_frames_follow_the_welcome() -> None:
    socket = FakeSocket()
    connection = Connection(VISITOR, socket)
    connection.start()
    connection.hold()
    connection.push('{"type": "message", "n": 1}')
    connection.push('{"type": "welcome"}', bypass_hold=True)
    connection.release()
    await connection.flush_and_stop()
    assert [f["type"] for f in socket.sent] == ["welcome", "message"]


async def test_slow_socket_is_closed_not_waited_for() -> None:
    socket = FakeSocket(delay=10)
    connection = Connection(VISITOR, socket, max_queued=3)
    connection.start()
    results = [connection.push('{"type": "pong"}') for _ in range(6)]
    await settle()
    assert False in results
    assert socket.closed_with == 1013
    assert not connection.push('{"type": "pong"}')


async def test_close_closes_every_socket() -> None:
    hub = WebchatHub()
    tabs = [open_tab(hub), open_tab(hub, OTHER)]
    await hub.close()
    assert [t.closed_with for t in tabs] == [1001, 1001]
    assert hub.visitors == 0
