"""Outbound webhooks: a loop posts the delivery rows that domain events left in the
transaction of their change (:func:`routing.events.record_webhooks`), signed
(HMAC-SHA256 over ``<timestamp>.<body>``), retrying with exponential backoff.

Receivers check ``X-CC-Signature: t=<unix seconds>,v1=<hex>`` with :func:`verify` (or the
three lines in the README), reject old timestamps, and drop repeats by ``X-CC-Event-Id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog

from crm_core.db import Database
from crm_core.errors import ValidationError
from crm_core.models import utcnow
from crm_core.services import webhooks as svc

log = structlog.get_logger(__name__)

SIGNATURE_HEADER = "X-CC-Signature"
EVENT_HEADER = "X-CC-Event"
EVENT_ID_HEADER = "X-CC-Event-Id"
TOLERANCE_SECONDS = 300
MAX_ANSWER_BYTES = 64 * 1024
WEBHOOK_EVENTS = svc.WEBHOOK_EVENTS
PUBLIC_EVENTS = svc.PUBLIC_EVENTS


def check_target(url: str, *, allow_private: bool) -> None:
    """Refuse loopback, private and link-local literal addresses (and ``localhost``) unless
    the deployment allows them (``[api] webhook_allow_private``). Names that resolve to
    such addresses are not caught here; a deployer exposed to that runs an egress proxy."""
    if allow_private:
        return
    host = (urlsplit(url).hostname or "").strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        raise ValidationError("url", url, "private addresses are not allowed")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return
    if (address.is_private or address.is_loopback or address.is_link_local
            or address.is_reserved or address.is_unspecified or address.is_multicast):
        raise ValidationError("url", url, "private addresses are not allowed")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header value for a body sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify(secret: str, header: str, body: bytes, *, now: float | None = None,
           tolerance: int = TOLERANCE_SECONDS) -> bool:
    """Whether a received body carries a valid, fresh signature (for receivers and tests)."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).split(",", 1)[1].removeprefix("v1=")
    return hmac.compare_digest(expected, parts.get("v1", ""))


class WebhookSender:
    """Posts due deliveries, several at a time, and records each attempt."""

    def __init__(self, database: Database, *, policy: svc.RetryPolicy | None = None,
                 timeout: float = 10.0, concurrency: int = 8,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.database = database
        self.policy = policy or svc.RetryPolicy()
        self.timeout = timeout
        self.concurrency = concurrency
        self.clock = clock
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        """Close the HTTP client."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"User-Agent": "contact-center-webhooks/1"})
        return self._session

    async def send_once(self) -> int:
        """Attempt every due delivery once; returns how many were attempted."""
        now = self.clock()
        async with self.database.transaction() as session:
            due = await svc.claim_due(session, now=now, limit=self.concurrency * 4,
                                      lease=timedelta(seconds=self.timeout * 3))
        if not due:
            return 0
        gate = asyncio.Semaphore(self.concurrency)

        async def attempt(delivery: svc.DueDelivery) -> tuple[bool, int | None, str | None]:
            async with gate:
                return await self._post(delivery)

        outcomes = await asyncio.gather(*(attempt(d) for d in due))
        # One transaction records the whole batch (one write lock, one fsync on SQLite).
        async with self.database.transaction() as session:
            for delivery, (ok, status, error) in zip(due, outcomes, strict=True):
                await svc.record_attempt(session, delivery.id, ok=ok, status_code=status,
                                         error=error, now=self.clock(), policy=self.policy)
        for delivery, (ok, status, _error) in zip(due, outcomes, strict=True):
            log.info("webhook.attempt", delivery_id=delivery.id,
                     subscription_id=delivery.subscription_id, ok=ok, status=status,
                     attempt=delivery.attempts + 1)
        return len(due)

    async def _post(self, delivery: svc.DueDelivery) -> tuple[bool, int | None, str | None]:
        body = json.dumps(delivery.payload, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(delivery.secret, int(time.time()), body),
            EVENT_HEADER: str(delivery.payload.get("event", "")),
            EVENT_ID_HEADER: str(delivery.payload.get("id", "")),
        }
        try:
            async with self._client().post(delivery.url, data=body, headers=headers,
                                           allow_redirects=False) as response:
                await response.content.read(MAX_ANSWER_BYTES)  # the answer is not used
                if 200 <= response.status < 300:
                    return True, response.status, None
                return False, response.status, f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            return False, None, f"{type(exc).__name__}: {exc}"[:500]


async def webhook_loop(sender: WebhookSender, stop: asyncio.Event, *,
                       idle_wait: float = 1.0) -> None:
    """Deliver webhooks until stopped (in ``serve`` when embedded, and in ``worker``)."""
    try:
        while not stop.is_set():
            try:
                sent = await sender.send_once()
            except Exception:
                log.exception("webhook.loop_failed")
                sent = 0
            if not sent:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=idle_wait)
    finally:
        await sender.close()


def build_sender(settings: Any, database: Database) -> WebhookSender:
    """A sender configured from ``[api]``."""
    api = settings.api
    return WebhookSender(database, policy=svc.RetryPolicy(
        max_attempts=api.webhook_max_attempts, backoff_seconds=api.webhook_backoff_seconds,
        disable_after=api.webhook_disable_after), timeout=api.webhook_timeout_seconds)
