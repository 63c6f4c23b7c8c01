"""The web chat wire protocol: JSON frames from the widget and to it, validated with pydantic.

Frames in (widget → server): ``hello`` (first, names the visitor), ``profile`` (the
pre-chat form), ``message`` (a visitor's text, with a client-generated id) and ``ping``.
Frames out (server → widget): ``welcome`` (presence and history), ``ack``, ``message``
(an agent's reply), ``typing``, ``presence``, ``profile_ok``, ``pong`` and ``error``.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

VISITOR_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
"""A visitor id is a lower-case UUID, as ``crypto.randomUUID()`` makes it."""
CLIENT_MESSAGE_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
"""The widget's id of one message (a UUID); resending it is idempotent."""
MAX_TEXT_FIELD = 100_000
"""Hard cap of a text field in a frame; the configured message limit is checked after."""

# Error codes of the ``error`` frame; the widget shows a localized text for each.
BAD_FRAME = "bad_frame"
HELLO_REQUIRED = "hello_required"
INVALID_VISITOR = "invalid_visitor"
TOO_LONG = "too_long"
EMPTY = "empty"
RATE_LIMITED = "rate_limited"
INVALID_EMAIL = "invalid_email"
INVALID_PHONE = "invalid_phone"
EMAIL_REQUIRED = "email_required"
UNAVAILABLE = "unavailable"
TOO_MANY_ERRORS = "too_many_errors"


class FrameError(Exception):
    """A frame that cannot be accepted; ``code`` goes into the error frame."""

    def __init__(self, code: str, message: str, client_message_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.client_message_id = client_message_id


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProfileData(_In):
    """What the pre-chat form asks: all optional; email and phone become identities."""

    name: Annotated[str, Field(max_length=500)] | None = None
    email: Annotated[str, Field(max_length=500)] | None = None
    phone: Annotated[str, Field(max_length=100)] | None = None


class HelloFrame(_In):
    """First frame of a socket: who the visitor is (and the form they filled before)."""

    type: Literal["hello"]
    visitor_id: Annotated[str, Field(pattern=VISITOR_ID.pattern)]
    lang: Literal["zh", "en"] | None = None
    profile: ProfileData | None = None


class ProfileFrame(ProfileData):
    """The pre-chat form (or the e-mail address asked for while nobody is online)."""

    type: Literal["profile"]


class MessageFrame(_In):
    """A visitor's text; ``client_message_id`` makes a resend after reconnecting harmless."""

    type: Literal["message"]
    client_message_id: Annotated[str, Field(pattern=CLIENT_MESSAGE_ID.pattern)]
    text: Annotated[str, Field(max_length=MAX_TEXT_FIELD)]


class PingFrame(_In):
    """Keep-alive from the widget; answered with ``pong``."""

    type: Literal["ping"]


InFrame = Annotated[
    HelloFrame | ProfileFrame | MessageFrame | PingFrame, Field(discriminator="type")
]
_IN_FRAME: TypeAdapter[HelloFrame | ProfileFrame | MessageFrame | PingFrame] = TypeAdapter(
    InFrame
)


def parse_frame(raw: str) -> HelloFrame | ProfileFrame | MessageFrame | PingFrame:
    """Parse and validate one frame from the widget, or raise ``FrameError(bad_frame)``.

    The error message names what was wrong (field and reason) without echoing the input.
    """
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise FrameError(BAD_FRAME, "frame is not valid JSON") from None
    if not isinstance(data, dict):
        raise FrameError(BAD_FRAME, "frame must be a JSON object")
    cmid = data.get("client_message_id")
    cmid = cmid if isinstance(cmid, str) and CLIENT_MESSAGE_ID.match(cmid) else None
    if data.get("type") == "hello" and isinstance(data.get("visitor_id"), str) and not (
        VISITOR_ID.match(data["visitor_id"])
    ):
        raise FrameError(INVALID_VISITOR, "visitor_id must be a lower-case UUID")
    try:
        return _IN_FRAME.validate_python(data)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'frame'}: {error['msg']}"
            for error in exc.errors(include_input=False)[:3]
        )
        raise FrameError(BAD_FRAME, f"invalid frame ({problems})", cmid) from None


# --- frames out --------------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)

    def to_json(self) -> str:
        """The frame as JSON text for the socket."""
        return self.model_dump_json(exclude_none=True)


class HistoryItem(_Out):
    """One earlier message of the visitor's chats, for the widget to show again."""

    direction: Literal["in", "out"]
    text: str
    at: datetime
    agent_name: str | None = None
    client_message_id: str | None = None
    """Set for the visitor's own messages, so the widget can match unacknowledged ones."""
    outbox_id: int | None = None
    """Set for replies, so a reply pushed live and found in the history shows once."""
    via: Literal["webchat", "email"] = "webchat"


class WelcomeFrame(_Out):
    """Answer to ``hello``: whether an agent is online, and the history."""

    type: Literal["welcome"] = "welcome"
    visitor_id: str
    agents_online: bool
    history: list[HistoryItem] = Field(default_factory=list)


class AckFrame(_Out):
    """The message is durably on the bus (``duplicate``: it already was)."""

    type: Literal["ack"] = "ack"
    client_message_id: str
    duplicate: bool = False


class AgentMessageFrame(_Out):
    """An agent's (or an automatic) reply."""

    type: Literal["message"] = "message"
    outbox_id: int
    text: str
    agent_name: str | None = None
    sent_at: datetime
    buttons: list[list[dict[str, str]]] | None = None
    """The bot's menu as quick replies: rows of ``{"text": label, "data": value}``."""


class TypingFrame(_Out):
    """An agent is typing to this visitor."""

    type: Literal["typing"] = "typing"
    agent_name: str | None = None


class PresenceFrame(_Out):
    """Whether an agent is online changed since the welcome."""

    type: Literal["presence"] = "presence"
    agents_online: bool


class ProfileOkFrame(_Out):
    """The pre-chat form was accepted."""

    type: Literal["profile_ok"] = "profile_ok"


class PongFrame(_Out):
    """Answer to ``ping``."""

    type: Literal["pong"] = "pong"


class ErrorFrame(_Out):
    """A refused frame; the socket stays open unless the code says otherwise."""

    type: Literal["error"] = "error"
    code: str
    message: str
    client_message_id: str | None = None

    @classmethod
    def of(cls, error: FrameError) -> ErrorFrame:
        """The error frame of a ``FrameError``."""
        return cls(code=error.code, message=error.message,
                   client_message_id=error.client_message_id)


def frame_json(frame: _Out | dict[str, Any]) -> str:
    """JSON text of an outgoing frame (a model, or a dict already shaped as one)."""
    if isinstance(frame, _Out):
        return frame.to_json()
    return json.dumps(frame, ensure_ascii=False, default=str)
