"""From a visitor's frame to the channel-neutral envelope the routing engine takes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from channels.webchat.protocol import (
    EMAIL_REQUIRED,
    EMPTY,
    INVALID_EMAIL,
    INVALID_PHONE,
    TOO_LONG,
    FrameError,
    ProfileData,
)
from channels.webchat.sanitize import clean_line, clean_text
from crm_core.errors import ValidationError
from crm_core.models import Channel, utcnow
from crm_core.normalize import normalize_email, normalize_phone
from routing.envelope import InboundMessage, SenderHandles, ThreadHints

MAX_NAME_CHARS = 100


@dataclass(frozen=True)
class Profile:
    """The visitor's pre-chat form, cleaned and normalized (e-mail lower-cased, phone E.164)."""

    name: str | None = None
    email: str | None = None
    phone: str | None = None

    def merged(self, newer: Profile) -> Profile:
        """This profile with the values the newer one sets."""
        return Profile(
            name=newer.name or self.name,
            email=newer.email or self.email,
            phone=newer.phone or self.phone,
        )


def check_profile(data: ProfileData, region: str) -> Profile:
    """Validate the form: a bad e-mail or phone raises ``FrameError``; blanks are unset."""
    name = clean_line(data.name or "", MAX_NAME_CHARS) or None
    email = phone = None
    raw_email = clean_line(data.email or "", 320)
    if raw_email:
        try:
            email = normalize_email(raw_email)
        except ValidationError:
            raise FrameError(INVALID_EMAIL, "the e-mail address is not valid") from None
    raw_phone = clean_line(data.phone or "", 50)
    if raw_phone:
        try:
            phone = normalize_phone(raw_phone, region)
        except ValidationError:
            raise FrameError(INVALID_PHONE, "the phone number is not valid") from None
    return Profile(name=name, email=email, phone=phone)


def check_text(text: str, max_chars: int, client_message_id: str | None = None) -> str:
    """The cleaned text of a message, or ``FrameError`` when too long or empty."""
    if len(text) > max_chars:
        raise FrameError(
            TOO_LONG, f"the message is longer than {max_chars} characters", client_message_id
        )
    cleaned = clean_text(text)
    if not cleaned:
        raise FrameError(EMPTY, "the message is empty", client_message_id)
    return cleaned


def idempotency_key(visitor_id: str, client_message_id: str) -> str:
    """The bus and interaction key of one visitor message."""
    return f"webchat:{visitor_id}:{client_message_id}"


def client_message_id_of(key: str | None, visitor_id: str) -> str | None:
    """The widget's message id back from an idempotency key (for the history)."""
    prefix = f"webchat:{visitor_id}:"
    if key and key.startswith(prefix):
        return key[len(prefix):]
    return None


def build_envelope(
    *,
    visitor_id: str,
    client_message_id: str,
    text: str,
    profile: Profile | None = None,
    reply_by_email: bool = False,
    received_at: datetime | None = None,
    language: str | None = None,
) -> InboundMessage:
    """The envelope of one visitor message (text already cleaned by ``check_text``).

    ``reply_by_email``: nobody was online and the visitor left an address, so the answer
    goes by e-mail; the address is then required.
    """
    profile = profile or Profile()
    if reply_by_email and not profile.email:
        raise FrameError(EMAIL_REQUIRED, "an e-mail address is needed while nobody is online",
                         client_message_id)
    return InboundMessage(
        channel=Channel.WEBCHAT,
        idempotency_key=idempotency_key(visitor_id, client_message_id),
        received_at=received_at or utcnow(),
        sender=SenderHandles(
            visitor_id=visitor_id,
            display_name=profile.name,
            email=profile.email,
            phone=profile.phone,
        ),
        thread=ThreadHints(chat_id=visitor_id),
        text=text,
        metadata={
            **({"reply_by_email": True} if reply_by_email else {}),
            **({"language": language} if language else {}),
        },
    )
