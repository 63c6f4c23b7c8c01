"""The web chat frames: what the widget may send, and what the server sends back."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from channels.webchat.protocol import (
    BAD_FRAME,
    INVALID_VISITOR,
    AckFrame,
    AgentMessageFrame,
    ErrorFrame,
    FrameError,
    HelloFrame,
    HistoryItem,
    MessageFrame,
    PingFrame,
    ProfileFrame,
    WelcomeFrame,
    parse_frame,
)

VISITOR = "0f8fad5b-d9cb-469f-a165-70867728950e"
CMID = "6ec0bd7f-11c0-43da-975e-2a8ad9ebae0b"


def frame(**data: object) -> str:
    return json.dumps(data, ensure_ascii=False)


def test_hello() -> None:
    parsed = parse_frame(frame(type="hello", visitor_id=VISITOR, lang="zh"))
    assert isinstance(parsed, HelloFrame)
    assert parsed.visitor_id == VISITOR and parsed.lang == "zh" and parsed.profile is None


def test_hello_with_profile() -> None:
    parsed = parse_frame(frame(type="hello", visitor_id=VISITOR,
                               profile={"name": "张伟", "email": "zw@example.cn", "phone": None}))
    assert isinstance(parsed, HelloFrame) and parsed.profile is not None
    assert parsed.profile.name == "张伟"


def test_message() -> None:
    parsed = parse_frame(frame(type="message", client_message_id=CMID, text="你好，我想退货"))
    assert isinstance(parsed, MessageFrame)
    assert parsed.text == "你好，我想退货" and parsed.client_message_id == CMID


def test_profile_and_ping() -> None:
    assert isinstance(parse_frame(frame(type="profile", email="a@b.cn")), ProfileFrame)
    assert isinstance(parse_frame(frame(type="ping")), PingFrame)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "not json",
        "{",
        "[1, 2]",
        '"hello"',
        "null",
        frame(),
        frame(type="shout"),
        frame(type="message", text="hi"),  # no client id
        frame(type="message", client_message_id=CMID),  # no text
        frame(type="message", client_message_id=CMID, text=42),
        frame(type="message", client_message_id="short", text="hi"),
        frame(type="message", client_message_id="has spaces in it", text="hi"),
        frame(type="message", client_message_id=CMID, text="hi", extra=True),
        frame(type="hello"),
        frame(type="hello", visitor_id=VISITOR, lang="fr"),
        frame(type="profile", email=["a@b.cn"]),
    ],
)
def test_malformed_frames_are_refused_as_bad_frame(raw: str) -> None:
    with pytest.raises(FrameError) as caught:
        parse_frame(raw)
    assert caught.value.code == BAD_FRAME


@pytest.mark.parametrize(
    "visitor_id",
    ["", "abc", "0F8FAD5B-D9CB-469F-A165-70867728950E", "../../etc/passwd",
     VISITOR + "x", "0f8fad5b-d9cb-469f-a165-70867728950"],
)
def test_bad_visitor_id_has_its_own_code(visitor_id: str) -> None:
    with pytest.raises(FrameError) as caught:
        parse_frame(frame(type="hello", visitor_id=visitor_id))
    assert caught.value.code == INVALID_VISITOR


def test_error_names_the_field_but_does_not_echo_the_input() -> None:
    secret = "<script>alert(1)</script>"
    with pytest.raises(FrameError) as caught:
        parse_frame(frame(type="message", client_message_id=CMID, text=[secret]))
    assert "text" in caught.value.message
    assert secret not in caught.value.message


def test_error_keeps_the_client_message_id_when_readable() -> None:
    with pytest.raises(FrameError) as caught:
        parse_frame(frame(type="message", client_message_id=CMID, text=None))
    assert caught.value.client_message_id == CMID


def test_deeply_nested_json_is_a_bad_frame() -> None:
    with pytest.raises(FrameError):
        parse_frame("[" * 100_000 + "]" * 100_000)


def test_frames_out_are_compact_json() -> None:
    at = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    welcome = WelcomeFrame(visitor_id=VISITOR, agents_online=True, history=[
        HistoryItem(direction="in", text="你好", at=at, client_message_id=CMID),
        HistoryItem(direction="out", text="您好", at=at, agent_name="王芳", outbox_id=7),
    ])
    data = json.loads(welcome.to_json())
    assert data["type"] == "welcome" and data["agents_online"] is True
    assert data["history"][0] == {"direction": "in", "text": "你好", "at": "2026-03-01T09:30:00Z",
                                  "client_message_id": CMID, "via": "webchat"}
    assert data["history"][1]["agent_name"] == "王芳" and data["history"][1]["outbox_id"] == 7
    assert json.loads(AckFrame(client_message_id=CMID).to_json()) == {
        "type": "ack", "client_message_id": CMID, "duplicate": False}
    reply = json.loads(AgentMessageFrame(outbox_id=3, text="好的", sent_at=at).to_json())
    assert reply == {"type": "message", "outbox_id": 3, "text": "好的",
                     "sent_at": "2026-03-01T09:30:00Z"}
    error = ErrorFrame.of(FrameError("rate_limited", "slow down", CMID))
    assert json.loads(error.to_json()) == {"type": "error", "code": "rate_limited",
                                           "message": "slow down", "client_message_id": CMID}
