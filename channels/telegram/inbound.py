"""Telegram updates → envelopes: text, photos, documents, shared contacts, deep links.

One update is one envelope, keyed ``telegram:<bot id>:<update_id>`` (unique per bot, so a
redelivered update is a duplicate). Photos and documents are downloaded into the blob
store first, within a size limit; a shared contact of the sender's own number becomes
a phone handle, so the Telegram user is linked to the customer who has that number;
``/start <token>`` carries a one-time link token to the routing engine. Group messages
are ignored unless configured, and so are update types we do not handle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import structlog
from telegram import Bot, Message, Update

from crm_core.models import Channel, utcnow
from routing.blobs import BlobStore
from routing.envelope import AttachmentRef, InboundMessage, SenderHandles, ThreadHints

log = structlog.get_logger(__name__)

_DEEP_LINK_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


@dataclass(frozen=True)
class TelegramIntakeConfig:
    """What the bot reads and how much it downloads."""

    bot_id: int
    max_file_bytes: int = 20 * 1024 * 1024
    allow_groups: bool = False
    team: str | None = None


class Skipped(Exception):
    """An update that is acknowledged but becomes no message (group chat, unknown type)."""


def _phone(raw: str) -> str:
    digits = raw.strip().replace(" ", "")
    # Telegram sends international numbers without the plus sign.
    return digits if digits.startswith("+") else f"+{digits}"


def _link_token(text: str | None) -> str | None:
    if not text or not text.startswith("/start"):
        return None
    parts = text.split(maxsplit=1)
    if len(parts) != 2:
        return None
    token = parts[1].strip()
    if 0 < len(token) <= 64 and set(token) <= _DEEP_LINK_CHARS:
        return token
    return None


async def _download(
    bot: Bot, blobs: BlobStore, file_id: str, size: int | None, limit: int
) -> bytes | None:
    if size is not None and size > limit:
        return None
    file = await bot.get_file(file_id)
    if file.file_size is not None and file.file_size > limit:
        return None
    data = bytes(await file.download_as_bytearray())
    return data if len(data) <= limit else None


async def _attachments(
    bot: Bot, blobs: BlobStore, message: Message, limit: int
) -> tuple[list[AttachmentRef], list[dict[str, Any]]]:
    stored: list[AttachmentRef] = []
    refused: list[dict[str, Any]] = []
    wanted: list[tuple[str, int | None, str, str]] = []
    if message.photo:
        biggest = max(message.photo, key=lambda p: (p.file_size or 0, p.width * p.height))
        wanted.append((biggest.file_id, biggest.file_size, "photo.jpg", "image/jpeg"))
    if message.document:
        document = message.document
        wanted.append((document.file_id, document.file_size,
                       document.file_name or "document",
                       document.mime_type or "application/octet-stream"))
    for file_id, size, name, content_type in wanted:
        data = await _download(bot, blobs, file_id, size, limit)
        if data is None:
            refused.append({"filename": name, "size": size, "reason": f"larger than {limit} bytes"})
            continue
        stored.append(AttachmentRef(blob_key=await blobs.put(data), filename=name[:255],
                                    content_type=content_type, size=len(data)))
    return stored, refused


async def envelope_from_update(
    update: Update, raw: dict[str, Any], *, bot: Bot, blobs: BlobStore,
    config: TelegramIntakeConfig,
) -> InboundMessage:
    """The envelope of one update; raises ``Skipped`` for updates that carry no message."""
    key = f"telegram:{config.bot_id}:{update.update_id}"
    raw_ref = await blobs.put(json.dumps(raw, ensure_ascii=False, sort_keys=True).encode())
    metadata: dict[str, Any] = {"update_id": update.update_id, "team": config.team}
    if update.callback_query is not None:
        query = update.callback_query
        user = query.from_user
        chat_id = query.message.chat.id if query.message is not None else user.id
        metadata.update(callback_query_id=query.id, button=query.data)
        return InboundMessage(
            channel=Channel.TELEGRAM, idempotency_key=key,
            received_at=(query.message.date if query.message is not None else None)
            or utcnow(),
            sender=SenderHandles(telegram_id=str(user.id), display_name=user.full_name),
            thread=ThreadHints(chat_id=str(chat_id)),
            text=query.data or "", metadata=metadata, raw_ref=raw_ref,
        )
    message = update.message or update.edited_message
    if message is None:
        raise Skipped("no message in this update type")
    if message.chat.type != "private" and not config.allow_groups:
        raise Skipped(f"{message.chat.type} chat ignored")
    user = message.from_user
    if user is None or user.is_bot:
        raise Skipped("not written by a person")
    handles: dict[str, Any] = {"telegram_id": str(user.id), "display_name": user.full_name}
    contact = message.contact
    if contact is not None and contact.user_id == user.id and contact.phone_number:
        handles["phone"] = _phone(contact.phone_number)
        metadata["shared_contact"] = True
    text = message.text or message.caption or ""
    if contact is not None and not text:
        name = f"{contact.first_name or ''} {contact.last_name or ''}".strip()
        text = f"{name} {contact.phone_number}".strip()
    token = _link_token(message.text)
    if token is not None:
        metadata["link_token"] = token
    if update.edited_message is not None:
        metadata["edited"] = True
        metadata["edited_at"] = message.edit_date.isoformat() if message.edit_date else None
    metadata["message_id"] = message.message_id
    attachments, refused = await _attachments(bot, blobs, message, config.max_file_bytes)
    if refused:
        metadata["attachments_refused"] = refused
    return InboundMessage(
        channel=Channel.TELEGRAM,
        idempotency_key=key,
        received_at=message.edit_date if update.edited_message is not None and message.edit_date
        else message.date,
        sender=SenderHandles(**handles),
        thread=ThreadHints(chat_id=str(message.chat.id), message_id=str(message.message_id)),
        text=text[:20_000],
        attachments=tuple(attachments),
        metadata={k: v for k, v in metadata.items() if v is not None},
        raw_ref=raw_ref,
    )
