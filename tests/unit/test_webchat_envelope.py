"""From a visitor's frame to the routing envelope."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from channels.webchat.envelope import (
    Profile,
    build_envelope,
    check_profile,
    check_text,
    client_message_id_of,
    idempotency_key,
)
from channels.webchat.protocol import (
    EMAIL_REQUIRED,
    EMPTY,
    INVALID_EMAIL,
    INVALID_PHONE,
    TOO_LONG,
    FrameError,
    ProfileData,
)
from crm_core.models import Channel
from routing.envelope import InboundMessage

VISITOR = "0f8fad5b-d9cb-469f-a165-70867728950e"
CMID = "6ec0bd7f-11c0-43da-975e-2a8ad9ebae0b"
AT = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def test_envelope_of_a_message() -> None:
    envelope = build_envelope(visitor_id=VISITOR, client_message_id=CMID, text="你好",
                              received_at=AT)
    assert envelope.channel == Channel.WEBCHAT
    assert envelope.idempotency_key == f"webchat:{VISITOR}:{CMID}"
    assert envelope.received_at == AT
    assert envelope.sender.visitor_id == VISITOR
    assert envelope.sender.email is None and envelope.sender.display_name is None
    assert envelope.thread.chat_id == VISITOR
    assert envelope.text == "你好"
    assert envelope.metadata == {}
    assert InboundMessage.from_json(envelope.to_json()) == envelope


def test_profile_travels_on_the_sender_handles() -> None:
    profile = check_profile(
        ProfileData(name="  张伟 ", email="Zhang.Wei@Example.CN", phone="138 0013 8000"), "CN")
    envelope = build_envelope(visitor_id=VISITOR, client_message_id=CMID, text="hi",
                              profile=profile)
    assert envelope.sender.display_name == "张伟"
    assert envelope.sender.email == "zhang.wei@example.cn"
    assert envelope.sender.phone == "+8613800138000"


def test_offline_message_asks_for_email_reply() -> None:
    envelope = build_envelope(visitor_id=VISITOR, client_message_id=CMID, text="hi",
                              profile=Profile(email="a@example.cn"), reply_by_email=True)
    assert envelope.metadata == {"reply_by_email": True}
    assert envelope.sender.email == "a@example.cn"


def test_offline_message_without_email_is_refused() -> None:
    with pytest.raises(FrameError) as caught:
        build_envelope(visitor_id=VISITOR, client_message_id=CMID, text="hi",
                       profile=Profile(name="x"), reply_by_email=True)
    assert caught.value.code == EMAIL_REQUIRED and caught.value.client_message_id == CMID


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (ProfileData(email="not-an-address"), INVALID_EMAIL),
        (ProfileData(email="a@b"), INVALID_EMAIL),
        (ProfileData(phone="12"), INVALID_PHONE),
        (ProfileData(phone="hello"), INVALID_PHONE),
    ],
)
def test_invalid_form_values(data: ProfileData, code: str) -> None:
    with pytest.raises(FrameError) as caught:
        check_profile(data, "CN")
    assert caught.value.code == code


def test_blank_form_values_are_unset() -> None:
    assert check_profile(ProfileData(name=" \x00 ", email="  ", phone=""), "CN") == Profile()


def test_profiles_merge() -> None:
    first = Profile(name="张伟", email="a@example.cn")
    assert first.merged(Profile(phone="+8613800138000")) == Profile(
        name="张伟", email="a@example.cn", phone="+8613800138000")
    assert first.merged(Profile(email="b@example.cn")).email == "b@example.cn"


def test_check_text() -> None:
    assert check_text("  你好\x00 ", 10) == "你好"
    with pytest.raises(FrameError) as caught:
        check_text("x" * 11, 10, CMID)
    assert caught.value.code == TOO_LONG and caught.value.client_message_id == CMID
    with pytest.raises(FrameError) as caught:
        check_text(" \u202e\x00 ", 10, CMID)
    assert caught.value.code == EMPTY


def test_client_message_id_round_trip() -> None:
    key = idempotency_key(VISITOR, CMID)
    assert client_message_id_of(key, VISITOR) == CMID
    assert client_message_id_of(key, "another") is None
    assert client_message_id_of(None, VISITOR) is None
