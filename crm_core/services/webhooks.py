"""Webhook subscriptions and their durable deliveries: queued rows, retries, auto-disabling."""

from __future__ import annotations

import secrets
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import event, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.errors import NotFoundError, ValidationError
from crm_core.models import WebhookDelivery, WebhookSubscription, utcnow
from crm_core.services import audit

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"
MAX_BACKOFF = timedelta(days=1)
WEBHOOK_EVENTS: dict[str, str] = {
    "customer.created": "customer.created",
    "customer.updated": "customer.updated",
    "customer.deleted": "customer.deleted",
    "customer.merged": "customer.merged",
    "customer.erased": "customer.erased",
    "interaction.logged": "message.created",
    "ticket.created": "ticket.created",
    "ticket.updated": "ticket.updated",
    "conversation.assigned": "conversation.assigned",
    "care_task.created": "care_task.created",
}
"""Internal event name → the public name subscribers use (a message is an interaction)."""
PUBLIC_EVENTS = (*sorted({*WEBHOOK_EVENTS.values(), "note.created"}), "webhook.test")


def public_name(name: str, data: dict[str, Any]) -> str | None:
    """The name subscribers know an internal event by; internal notes are
    ``note.created``, not messages; ``None`` for events that stay inside."""
    public = WEBHOOK_EVENTS.get(name)
    if public == "message.created" and "internal" in (data.get("direction"),
                                                      data.get("channel")):
        return "note.created"
    return public


def _forget_wanted(session: AsyncSession) -> None:
    """Drop the cached wanted events now and again once the change committed (a
    transaction of this process may have re-read the old state in between)."""
    WANTED.forget()
    event.listen(session.sync_session, "after_commit", lambda _s: WANTED.forget(), once=True)


def check_url(url: str) -> str:
    """An absolute http(s) URL; ValidationError otherwise."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname or len(url) > 2000:
        raise ValidationError("url", url, "give an absolute http:// or https:// URL")
    return url


def check_events(events: Sequence[str], known: Sequence[str]) -> list[str]:
    """Known event names (or ``*``), de-duplicated and sorted."""
    wanted = sorted(set(events))
    if not wanted:
        raise ValidationError("events", "", "name at least one event")
    unknown = [e for e in wanted if e != "*" and e not in known]
    if unknown:
        raise ValidationError("events", ", ".join(unknown), "unknown event")
    return wanted


async def create_subscription(
    session: AsyncSession, *, name: str, url: str, events: Sequence[str],
    known_events: Sequence[str], actor: str, secret: str | None = None,
) -> WebhookSubscription:
    """A new active subscription with a fresh secret unless one is given."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ValidationError("name", name, "give a name of 1 to 100 characters")
    if secret is not None and not 16 <= len(secret) <= 100:
        raise ValidationError("secret", "…", "must be 16 to 100 characters")
    row = WebhookSubscription(
        name=name, url=check_url(url), events=check_events(events, known_events),
        secret=secret or "whsec_" + secrets.token_urlsafe(24), active=True,
        consecutive_failures=0, created_by=actor)
    session.add(row)
    await session.flush()
    _forget_wanted(session)
    audit.record(session, actor=actor, action="create", entity_type="webhook",
                 entity_id=row.id, after={"name": row.name, "url": row.url,
                                          "events": row.events})
    return row


async def get_subscription(session: AsyncSession, subscription_id: int) -> WebhookSubscription:
    """A subscription by id; NotFoundError otherwise."""
    row = await session.get(WebhookSubscription, subscription_id)
    if row is None:
        raise NotFoundError("webhook", subscription_id)
    return row


async def set_active(session: AsyncSession, subscription_id: int, active: bool, *,
                     actor: str) -> WebhookSubscription:
    """Switch a subscription on (failures forgotten) or off."""
    row = await get_subscription(session, subscription_id)
    before = {"active": row.active}
    row.active = active
    if active:
        row.consecutive_failures = 0
        row.disabled_at = None
        row.disabled_reason = None
    else:
        row.disabled_at = utcnow()
        row.disabled_reason = f"switched off by {actor}"
    _forget_wanted(session)
    audit.record(session, actor=actor, action="enable" if active else "disable",
                 entity_type="webhook", entity_id=row.id, before=before,
                 after={"active": active})
    await session.flush()
    return row


async def delete_subscription(session: AsyncSession, subscription_id: int, *,
                              actor: str) -> None:
    """Remove a subscription and its delivery log."""
    row = await get_subscription(session, subscription_id)
    audit.record(session, actor=actor, action="delete", entity_type="webhook",
                 entity_id=row.id, before={"name": row.name, "url": row.url})
    await session.delete(row)
    await session.flush()
    _forget_wanted(session)


async def list_subscriptions(session: AsyncSession) -> list[WebhookSubscription]:
    """Every subscription, oldest first."""
    return list(await session.scalars(select(WebhookSubscription).order_by(
        WebhookSubscription.id)))


def _wants(subscription: WebhookSubscription, event: str) -> bool:
    return "*" in subscription.events or event in subscription.events


async def enqueue_event(session: AsyncSession, event: str, data: dict[str, Any], *,
                        at: datetime | None = None,
                        only: int | None = None) -> list[WebhookDelivery]:
    """One pending delivery per active subscription that wants ``event`` (or for ``only``,
    whatever it wants: the console's test send)."""
    if only is not None:
        subscriptions = [await get_subscription(session, only)]
    else:
        subscriptions = [s for s in await session.scalars(
            select(WebhookSubscription).where(WebhookSubscription.active.is_(True)))
            if _wants(s, event)]
    if not subscriptions:
        return []
    at = at or utcnow()
    event_id = uuid.uuid4().hex
    body = {"id": event_id, "event": event, "created_at": at.isoformat(),
            "data": audit.jsonable(data)}
    rows = [WebhookDelivery(subscription_id=s.id, event_id=event_id, event=event,
                            payload=body, status=PENDING, attempts=0, next_attempt_at=at)
            for s in subscriptions]
    session.add_all(rows)
    await session.flush()
    return rows


class WantedEvents:
    """Which public events any active subscription wants, per database, cached for
    ``seconds`` so a transaction whose events nobody wants costs no query.

    Changes made through this module in this process take effect at once; a subscription
    added by another process starts receiving within ``seconds``. A cached "wanted" is
    only a hint: the subscriptions are then read in the writing transaction itself.
    """

    def __init__(self, seconds: float = 2.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.monotonic = monotonic
        # Keyed by connection pool: one per database, shared by its sessions' engines.
        self._cache: weakref.WeakKeyDictionary[Any, tuple[float, frozenset[str]]] = (
            weakref.WeakKeyDictionary())

    async def get(self, session: AsyncSession) -> frozenset[str]:
        """The wanted public event names (``*`` for all) as of at most ``seconds`` ago."""
        key = session.sync_session.get_bind().pool
        cached = self._cache.get(key)
        now = self.monotonic()
        if cached is not None and now < cached[0]:
            return cached[1]
        rows = await session.scalars(select(WebhookSubscription.events)
                                     .where(WebhookSubscription.active.is_(True)))
        wanted = frozenset(e for events in rows for e in events)
        self._cache[key] = (now + self.seconds, wanted)
        return wanted

    def forget(self) -> None:
        """Drop every cached answer (a subscription changed in this process)."""
        self._cache.clear()


WANTED = WantedEvents()
"""The process's cache of wanted events."""


async def record_events(
    session: AsyncSession, events: Iterable[tuple[str, dict[str, Any], datetime]],
) -> int:
    """Queue the deliveries of internal events ``(name, data, at)`` in the caller's
    transaction, so they commit (or roll back) with the change that caused them.

    Events without a public name, and those no active subscription wants, write
    nothing. Returns how many delivery rows were added.
    """
    public = [(p, data, at) for name, data, at in events
              if (p := public_name(name, data)) is not None]
    if not public:
        return 0
    wanted = await WANTED.get(session)
    if not wanted or ("*" not in wanted and not any(p in wanted for p, _, _ in public)):
        return 0
    subscriptions = list(await session.scalars(
        select(WebhookSubscription).where(WebhookSubscription.active.is_(True))))
    rows: list[WebhookDelivery] = []
    for name, data, at in public:
        targets = [s for s in subscriptions if _wants(s, name)]
        if not targets:
            continue
        event_id = uuid.uuid4().hex
        body = {"id": event_id, "event": name, "created_at": at.isoformat(),
                "data": audit.jsonable(data)}
        rows.extend(WebhookDelivery(subscription_id=s.id, event_id=event_id, event=name,
                                    payload=body, status=PENDING, attempts=0,
                                    next_attempt_at=at) for s in targets)
    if rows:
        session.add_all(rows)
        await session.flush()
    return len(rows)


@dataclass(frozen=True)
class DueDelivery:
    """What the sender needs for one attempt."""

    id: int
    subscription_id: int
    url: str
    secret: str
    payload: dict[str, Any]
    attempts: int


async def claim_due(session: AsyncSession, *, now: datetime, limit: int,
                    lease: timedelta) -> list[DueDelivery]:
    """Lease up to ``limit`` due deliveries of active subscriptions (safe across processes:
    a row is taken by the conditional update that wins)."""
    rows = (await session.execute(
        select(WebhookDelivery, WebhookSubscription)
        .join(WebhookSubscription, WebhookSubscription.id == WebhookDelivery.subscription_id)
        .where(WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at <= now,
               or_(WebhookDelivery.locked_until.is_(None), WebhookDelivery.locked_until < now),
               WebhookSubscription.active.is_(True))
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id).limit(limit))).all()
    claimed: list[DueDelivery] = []
    for delivery, subscription in rows:
        result = await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery.id, WebhookDelivery.status == PENDING,
                   or_(WebhookDelivery.locked_until.is_(None),
                       WebhookDelivery.locked_until < now))
            .values(locked_until=now + lease)
            .execution_options(synchronize_session=False))
        if result.rowcount == 1:  # type: ignore[attr-defined]
            claimed.append(DueDelivery(delivery.id, subscription.id, subscription.url,
                                       subscription.secret, dict(delivery.payload),
                                       delivery.attempts))
    return claimed


def backoff(attempts: int, base: float) -> timedelta:
    """The wait before the next attempt after ``attempts`` failed ones: base·2^(n−1)."""
    return min(timedelta(seconds=base * 2 ** max(attempts - 1, 0)), MAX_BACKOFF)


@dataclass(frozen=True)
class RetryPolicy:
    """How deliveries are retried and when a subscription gives up."""

    max_attempts: int = 8
    backoff_seconds: float = 10.0
    disable_after: int = 20


async def record_attempt(session: AsyncSession, delivery_id: int, *, ok: bool,
                         status_code: int | None, error: str | None, now: datetime,
                         policy: RetryPolicy) -> WebhookDelivery:
    """Log one attempt: delivered, or retried later with backoff, or failed for good; a
    subscription with ``disable_after`` consecutive failures is switched off."""
    delivery = await session.get(WebhookDelivery, delivery_id, populate_existing=True)
    if delivery is None:
        raise NotFoundError("webhook_delivery", delivery_id)
    delivery.attempts += 1
    delivery.last_status_code = status_code
    delivery.last_error = (error or "")[:2000] or None
    delivery.locked_until = None
    table = WebhookSubscription
    # The failure counter moves in one UPDATE: deliveries of one hook finish concurrently.
    if ok:
        delivery.status = DELIVERED
        delivery.delivered_at = now
        await session.execute(update(table).where(table.id == delivery.subscription_id)
                              .values(consecutive_failures=0)
                              .execution_options(synchronize_session=False))
        await session.flush()
        return delivery
    if delivery.attempts >= policy.max_attempts:
        delivery.status = FAILED
    else:
        delivery.next_attempt_at = now + backoff(delivery.attempts, policy.backoff_seconds)
    failures = (await session.execute(
        update(table).where(table.id == delivery.subscription_id)
        .values(consecutive_failures=table.consecutive_failures + 1)
        .returning(table.consecutive_failures)
        .execution_options(synchronize_session=False))).scalar_one()
    if failures >= policy.disable_after:
        reason = f"{failures} consecutive failed deliveries"
        switched = await session.execute(
            update(table).where(table.id == delivery.subscription_id, table.active.is_(True))
            .values(active=False, disabled_at=now, disabled_reason=reason)
            .execution_options(synchronize_session=False))
        if switched.rowcount == 1:  # type: ignore[attr-defined]
            audit.record(session, actor="system", action="disable", entity_type="webhook",
                         entity_id=delivery.subscription_id, before={"active": True},
                         after={"active": False, "reason": reason})
    await session.flush()
    return delivery


async def delivery_log(session: AsyncSession, subscription_id: int, *,
                       limit: int = 50) -> list[WebhookDelivery]:
    """The latest deliveries of a subscription, newest first."""
    return list(await session.scalars(
        select(WebhookDelivery).where(WebhookDelivery.subscription_id == subscription_id)
        .order_by(WebhookDelivery.id.desc()).limit(limit)))
