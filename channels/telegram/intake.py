"""Telegram intake: raw updates (from the webhook or ``getUpdates``) onto the bus.

The polling loop asks for updates after the saved offset and saves the next offset only
once every update of the batch is on the bus (or deliberately skipped, or quarantined);
Telegram forgets updates below the offset we send next, so nothing is acknowledged
early. The webhook answers 200 only after the same; anything else makes Telegram
deliver again, and the idempotency key makes that harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from telegram import Bot, Update
from telegram.error import InvalidToken, NetworkError, RetryAfter, TelegramError
from telegram.warnings import PTBUserWarning

from channels.telegram.inbound import Skipped, TelegramIntakeConfig, envelope_from_update
from channels.telegram.outbound import retry_after_seconds
from crm_core.db import Database
from crm_core.models import Channel
from routing.blobs import BlobStore
from routing.envelope import InboundMessage
from routing.intake import load_cursor, quarantine, save_cursor

log = structlog.get_logger(__name__)

Publish = Callable[[InboundMessage], Awaitable[bool]]
ALLOWED_UPDATES = ["message", "edited_message", "callback_query"]

QUEUED = "queued"
DUPLICATE = "duplicate"
SKIPPED = "skipped"
QUARANTINED = "quarantined"


@dataclass(frozen=True)
class UpdateResult:
    """What became of one update."""

    status: str
    detail: str = ""


class TelegramIntake:
    """Turns raw Telegram updates into envelopes on the bus."""

    def __init__(
        self, bot: Bot, config: TelegramIntakeConfig, database: Database, blobs: BlobStore,
        publish: Publish,
    ) -> None:
        self.bot = bot
        self.config = config
        self.database = database
        self.blobs = blobs
        self.publish = publish

    @property
    def source(self) -> str:
        """The cursor and quarantine name of this bot."""
        return f"bot:{self.config.bot_id}"

    async def handle(self, raw: dict[str, Any]) -> UpdateResult:
        """Publish one raw update. Raises only when the bus or the blob store is down."""
        await self.bot.initialize()
        update_id = raw.get("update_id") if isinstance(raw, dict) else None
        bound = log.bind(channel="telegram", update_id=update_id)
        try:
            if not isinstance(update_id, int):
                raise ValueError("an update needs an integer update_id")
            update = Update.de_json(raw, self.bot)
            envelope = await envelope_from_update(update, raw, bot=self.bot, blobs=self.blobs,
                                                  config=self.config)
        except Skipped as skip:
            bound.info("telegram.update_skipped", reason=str(skip))
            return UpdateResult(SKIPPED, str(skip))
        except (NetworkError, RetryAfter):
            raise  # a file download failed for now: retry the update later
        except Exception as exc:  # unreadable: keep it for an admin, move on
            data = json.dumps(raw, ensure_ascii=False, default=str).encode()
            raw_ref = await self.blobs.put(data)
            reason = f"{type(exc).__name__}: {exc}"
            await quarantine(self.database, channel=Channel.TELEGRAM, source=self.source,
                             source_ref=str(update_id), raw_ref=raw_ref, size=len(data),
                             reason=reason)
            bound.warning("telegram.update_quarantined", reason=reason)
            return UpdateResult(QUARANTINED, reason)
        fresh = await self.publish(envelope)
        if envelope.metadata.get("callback_query_id"):
            with contextlib.suppress(TelegramError):
                await self.bot.answer_callback_query(envelope.metadata["callback_query_id"])
        bound.info("telegram.received" if fresh else "telegram.duplicate",
                   message_id=envelope.idempotency_key, attachments=len(envelope.attachments))
        return UpdateResult(QUEUED if fresh else DUPLICATE)


class TelegramPoller:
    """Long-polls ``getUpdates`` and hands every update to the intake, offset after offset."""

    def __init__(self, intake: TelegramIntake, *, timeout: int = 25, idle_wait: float = 1.0):
        self.intake = intake
        self.timeout = timeout
        self.idle_wait = idle_wait

    async def poll_once(self) -> int:
        """One ``getUpdates`` round; returns how many updates it handled."""
        intake = self.intake
        state = await load_cursor(intake.database, Channel.TELEGRAM, intake.source)
        offset = state.get("offset")
        # Raw JSON rather than Bot.get_updates: one malformed update must be quarantined
        # alone, not make the whole batch (and every later poll) fail to parse.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PTBUserWarning)
            updates = await intake.bot.do_api_request(
                "getUpdates",
                api_kwargs={"offset": offset, "timeout": self.timeout,
                            "allowed_updates": ALLOWED_UPDATES},
                read_timeout=self.timeout + 10,
            )
        if not updates:
            return 0
        next_offset = offset
        try:
            for raw in updates:
                await intake.handle(raw)
                next_offset = int(raw["update_id"]) + 1
        finally:
            if next_offset != offset:
                await save_cursor(intake.database, Channel.TELEGRAM, intake.source,
                                  {"offset": next_offset})
        return len(updates)

    async def _poll_or_stop(self, stop: asyncio.Event) -> int:
        """A poll that a stop request cuts short (a redelivery after that is harmless)."""
        poll = asyncio.ensure_future(self.poll_once())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({poll, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not poll.done():
            poll.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poll
            return 0
        return poll.result()

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set; errors back off, flood waits are honoured."""
        ready = False
        backoff = 1.0
        log.info("telegram.polling", channel="telegram", bot_id=self.intake.config.bot_id)
        while not stop.is_set():
            wait = 0.0
            try:
                if not ready:  # getUpdates is refused while a webhook is set
                    await self.intake.bot.initialize()
                    await self.intake.bot.delete_webhook(drop_pending_updates=False)
                    ready = True
                handled = await self._poll_or_stop(stop)
                backoff = 1.0
                wait = 0.0 if handled else self.idle_wait
            except RetryAfter as exc:
                wait = retry_after_seconds(exc)
            except InvalidToken:
                log.error("telegram.invalid_token", channel="telegram")
                wait = 300.0
            except Exception as exc:
                log.warning("telegram.poll_failed", channel="telegram",
                            error=f"{type(exc).__name__}: {exc}", retry_in=backoff)
                wait, backoff = backoff, min(backoff * 2, 60.0)
            if wait:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
        log.info("telegram.stopped", channel="telegram")
