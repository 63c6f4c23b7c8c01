"""Telegram out: replies, images, files and inline keyboards through the Bot API.

The outbox owns retries. Flood control (``429 Too Many Requests`` with ``retry_after``)
is honoured here: a short wait is slept and the call repeated, a long one is handed back
to the outbox as a retry. A user who blocked the bot or a chat that does not exist fails
the message for good, visibly.
"""

from __future__ import annotations

import asyncio
import warnings
from datetime import timedelta
from typing import Any

import structlog
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, InputFile
from telegram.error import BadRequest, Forbidden, InvalidToken, RetryAfter
from telegram.warnings import PTBDeprecationWarning

from crm_core.models import Channel
from routing.adapters import PermanentSendError
from routing.blobs import BlobStore
from routing.envelope import OutboundMessage

log = structlog.get_logger(__name__)

MAX_INLINE_WAIT = 30.0
"""Flood waits up to this many seconds are slept in place; longer ones go back to the outbox."""
TEXT_LIMIT = 4096


def keyboard(buttons: Any) -> InlineKeyboardMarkup | None:
    """An inline keyboard from ``[[{"text": …, "data": …} | {"text": …, "url": …}], …]``."""
    if not buttons:
        return None
    rows = []
    for row in buttons:
        rows.append([
            InlineKeyboardButton(b["text"], url=b["url"]) if b.get("url")
            else InlineKeyboardButton(b["text"], callback_data=str(b.get("data", b["text"]))[:64])
            for b in row
        ])
    return InlineKeyboardMarkup(rows)


def retry_after_seconds(error: RetryAfter) -> float:
    """The flood wait of a 429, whichever type this PTB version gives it."""
    with warnings.catch_warnings():  # PTB 22 warns that the type will become timedelta
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value: int | float | timedelta = error.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class TelegramAdapter:
    """Sends outbound messages to Telegram chats."""

    channel = Channel.TELEGRAM

    def __init__(self, bot: Bot, blobs: BlobStore) -> None:
        self.bot = bot
        self.blobs = blobs

    async def _call(self, method: Any, **kwargs: Any) -> Any:
        for _ in range(3):
            try:
                return await method(**kwargs)
            except RetryAfter as exc:
                wait = retry_after_seconds(exc)
                if wait > MAX_INLINE_WAIT:
                    raise
                log.warning("telegram.flood_wait", seconds=wait, channel="telegram")
                await asyncio.sleep(wait)
            except Forbidden as exc:
                raise PermanentSendError(f"forbidden: {exc.message}") from exc
            except InvalidToken as exc:
                raise PermanentSendError("the bot token was rejected") from exc
            except BadRequest as exc:
                raise PermanentSendError(f"bad request: {exc.message}") from exc
        return await method(**kwargs)

    async def send(self, message: OutboundMessage) -> str | None:
        """Send text (split at Telegram's limit), then each attachment; returns the last id."""
        chat_id = message.thread.chat_id or message.to.telegram_id
        if not chat_id:
            raise PermanentSendError("the recipient has no Telegram chat")
        await self.bot.initialize()  # once per process (getMe); a no-op afterwards
        markup = keyboard(message.metadata.get("buttons"))
        sent_id: str | None = None
        text = message.text or ""
        chunks = [text[i : i + TEXT_LIMIT] for i in range(0, len(text), TEXT_LIMIT)]
        for index, chunk in enumerate(chunks):
            last = index == len(chunks) - 1 and not message.attachments
            result = await self._call(
                self.bot.send_message, chat_id=chat_id, text=chunk,
                reply_markup=markup if last else None,
            )
            sent_id = str(result.message_id)
        for position, ref in enumerate(message.attachments):
            data = await self.blobs.get(ref.blob_key)
            last = position == len(message.attachments) - 1
            upload = InputFile(data, filename=ref.filename)
            if ref.content_type.startswith("image/"):
                result = await self._call(self.bot.send_photo, chat_id=chat_id, photo=upload,
                                          reply_markup=markup if last else None)
            else:
                result = await self._call(self.bot.send_document, chat_id=chat_id,
                                          document=upload, reply_markup=markup if last else None)
            sent_id = str(result.message_id)
        log.info("telegram.sent", outbox_id=message.outbox_id, chat_id=chat_id,
                 channel="telegram", provider_id=sent_id)
        return sent_id
