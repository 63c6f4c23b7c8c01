"""Care campaigns: who gets what when, and whether they may get it now (what it achieved:
``crm_core.services.campaign_results``).

Planning turns a campaign's trigger into rows of ``campaign_sends``, one per customer and
occurrence, inserted in bulk; the unique send key makes planning idempotent, so
overlapping scans, a restart or two schedulers never queue a message twice.

- Scheduled triggers (``once``, ``cron``) fan out to the whole audience at their time.
- Event triggers (ticket resolved, customer created, lifecycle and tier changes) scan
  what happened since ``campaigns.cursor_at`` (with an overlap for transactions that
  committed late) and plan one send per event.
- Day triggers (birthday, contract end, no interaction) plan the sends of the coming day
  at the campaign's time of day in each customer's time zone.

Eligibility is checked again when a send is due (:func:`check_send`): the campaign
still runs, the customer still exists and matches the audience, is not do-not-contact,
and can be reached on a channel (an identity that works, consent). Quiet hours move the
due time to the end of the quiet hours in the customer's zone; frequency caps skip.

Holdout and A/B variants are assigned by a hash of campaign id and customer id, so a
customer lands in the same group every time, on every scheduler.

Nothing here knows channels' protocols, HTTP or the outbox: the scheduler
(``contact_center.scheduler``) delivers. Every function works in the caller's
transaction and takes ``now`` from the caller (an injectable clock).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import (
    ColumnElement,
    and_,
    extract,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.models import (
    AuditLog,
    Campaign,
    CampaignSend,
    Channel,
    Contract,
    Customer,
    Direction,
    IdentityKind,
    Interaction,
    LifecycleTransition,
    Segment,
    Ticket,
    TicketStatus,
)
from crm_core.services.campaign_config import (
    DAY_TRIGGERS,
    EVENT_TRIGGERS,
    SCHEDULED_TRIGGERS,
    SENDABLE_CHANNELS,
    CampaignConfig,
    CampaignSpec,
    Defaults,
    Trigger,
    known_timezones,
)
from crm_core.services.customer_query import (
    CustomerQuery,
    build_filters,
    name_condition,
    name_query_text,
    resolve_free_text,
)

log = structlog.get_logger(__name__)

PENDING = "pending"
QUEUED = "queued"
TASK = "task"
HOLDOUT = "holdout"
SKIPPED = "skipped"
FAILED = "failed"
STATUSES = (PENDING, QUEUED, TASK, HOLDOUT, SKIPPED, FAILED)
DONE_STATUSES = (QUEUED, TASK, HOLDOUT)
"""Sends that reached their group: the basis of the effect evaluation."""

EVENT_OVERLAP = timedelta(minutes=5)
"""Event scans re-read this much before their cursor: a transaction that stamped an event
before the last scan but committed after it is still found (the send key dedupes)."""
DAY_SCAN_EVERY = timedelta(minutes=10)
"""Day triggers are scanned at most this often."""
DAY_HORIZON = timedelta(hours=26)
"""Day triggers plan the sends due within this time (so an opt-out after planning is
still honoured at send time)."""
SCHEDULED_LOOKAHEAD = timedelta(minutes=2)
"""A one-off or cron occurrence is fanned out this long before it is due."""
INSERT_CHUNK = 2000
BUCKETS = 10_000


# --- campaigns in the database -------------------------------------------------------------


async def sync_campaigns(session: AsyncSession, config: CampaignConfig, *, now: datetime,
                         ) -> dict[str, Campaign]:
    """Mirror the file's campaigns into ``campaigns`` (by key); retire those that left it.

    A new campaign's event cursor starts now: it reacts to what happens from here on, not
    to the whole history.
    """
    rows = {c.key: c for c in await session.scalars(select(Campaign))}
    for spec in config.campaigns:
        row = rows.get(spec.key)
        values = {
            "name": spec.name, "action": spec.action, "purpose": spec.purpose,
            "trigger_kind": spec.trigger.kind, "definition": dict(spec.definition),
            "enabled": spec.enabled, "status": "active", "start_at": spec.start,
            "end_at": spec.end, "holdout_percent": spec.holdout_percent,
        }
        if row is None:
            row = Campaign(key=spec.key, cursor_at=now, **values)
            session.add(row)
            rows[spec.key] = row
            log.info("campaign.added", campaign=spec.key)
            continue
        changed = {k: v for k, v in values.items() if getattr(row, k) != v}
        if changed:
            for name, value in changed.items():
                setattr(row, name, value)
            row.updated_at = now
        if row.cursor_at is None:
            row.cursor_at = now
    keys = {spec.key for spec in config.campaigns}
    for key, row in rows.items():
        if key not in keys and row.status != "retired":
            row.status = "retired"
            row.updated_at = now
            log.info("campaign.retired", campaign=key, campaign_id=row.id)
    await session.flush()
    return {key: row for key, row in rows.items() if key in keys}


# --- audience ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Audience:
    """A campaign's audience as SQL conditions on ``customers``."""

    conditions: tuple[ColumnElement[bool], ...]


def reachable_customer() -> list[ColumnElement[bool]]:
    """Customers a campaign may ever address: not deleted, erased or merged away."""
    return [Customer.deleted_at.is_(None), Customer.erased_at.is_(None),
            Customer.merged_into_id.is_(None)]


async def audience_of(session: AsyncSession, spec: CampaignSpec, *, region: str,
                      timezone: str) -> Audience:
    """The conditions of the campaign's ``audience`` filter or saved ``segment``.

    An unknown segment matches nobody (and says so in the log) rather than everybody.
    """
    criteria: Mapping[str, Any] = spec.audience
    if spec.segment:
        segment = await session.scalar(
            select(Segment).where(func.lower(Segment.name) == spec.segment.lower()))
        if segment is None:
            log.warning("campaign.unknown_segment", campaign=spec.key, segment=spec.segment)
            return Audience((Customer.id.is_(None),))
        criteria = segment.filter or {}
    query = CustomerQuery.model_validate({**criteria, "page_size": 1})
    name = name_query_text(query)
    query = resolve_free_text(query)
    conditions = [*build_filters(query, region=region, timezone=timezone),
                  *reachable_customer()]
    if name:
        conditions.append(name_condition(name))
    return Audience(tuple(conditions))


# --- groups: holdout and variants ----------------------------------------------------------


def bucket(campaign_id: int, customer_id: int, salt: str = "") -> int:
    """A stable number 0–9999 for a customer in a campaign (SHA-256 of both ids)."""
    digest = hashlib.sha256(f"{campaign_id}:{customer_id}{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def assign_group(spec: CampaignSpec, campaign_id: int, customer_id: int,
                 ) -> tuple[bool, str | None]:
    """``(holdout, variant)`` for a customer: deterministic, the same on every run."""
    holdout = bucket(campaign_id, customer_id) < round(spec.holdout_percent * BUCKETS / 100)
    if not spec.variants:
        return holdout, None
    total = sum(v.weight for v in spec.variants)
    point = bucket(campaign_id, customer_id, ":variant") / BUCKETS * total
    running = 0.0
    for variant in spec.variants:
        running += variant.weight
        if point < running:
            return holdout, variant.name
    return holdout, spec.variants[-1].name


# --- planning ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    """One send to plan: who, which occurrence, when."""

    customer_id: int
    occurrence: str
    due_at: datetime
    event_at: datetime | None = None
    ticket_id: int | None = None


def _insert(session: AsyncSession) -> Any:
    table = CampaignSend.__table__
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    return (module.insert(table)
            .on_conflict_do_nothing(index_elements=["campaign_id", "customer_id", "occurrence"])
            .returning(table.c.id))


async def insert_sends(session: AsyncSession, campaign: Campaign, spec: CampaignSpec,
                       planned: Iterable[Planned], *, now: datetime) -> int:
    """Bulk-insert planned sends (Core, chunks of 2,000); existing send keys are left
    alone. Returns how many rows were new."""
    statement = _insert(session)
    created = 0
    chunk: list[dict[str, Any]] = []

    async def flush() -> int:
        if not chunk:
            return 0
        result = await session.execute(statement, chunk)
        count = len(result.all())
        chunk.clear()
        return count

    for item in planned:
        holdout, variant = assign_group(spec, campaign.id, item.customer_id)
        chunk.append({
            "campaign_id": campaign.id, "customer_id": item.customer_id,
            "occurrence": item.occurrence[:100], "status": PENDING, "due_at": item.due_at,
            "event_at": item.event_at, "variant": variant, "holdout": holdout,
            "ticket_id": item.ticket_id, "postponed": 0, "click_count": 0,
            "created_at": now, "updated_at": now,
        })
        if len(chunk) >= INSERT_CHUNK:
            created += await flush()
    created += await flush()
    return created


async def plan_campaign(session: AsyncSession, campaign: Campaign, spec: CampaignSpec, *,
                        now: datetime, region: str, timezone: str) -> int:
    """Plan what the campaign's trigger asks for up to ``now`` (plus a short lookahead);
    returns how many new sends were planned. Moves the campaign's cursors."""
    if not spec.enabled:
        return 0
    audience = await audience_of(session, spec, region=region, timezone=timezone)
    kind = spec.trigger.kind
    if kind in SCHEDULED_TRIGGERS:
        planned = await _plan_scheduled(session, campaign, spec, audience, now)
    elif kind in EVENT_TRIGGERS:
        planned = await _plan_events(session, campaign, spec, audience, now)
    elif kind in DAY_TRIGGERS:
        if campaign.last_scan_at is not None and now - campaign.last_scan_at < DAY_SCAN_EVERY:
            return 0
        planned = await _plan_days(session, campaign, spec, audience, now, timezone)
        campaign.last_scan_at = now
    else:  # pragma: no cover - the loader refuses other kinds
        raise ValueError(f"unknown trigger {kind!r}")
    if planned:
        log.info("campaign.planned", campaign=spec.key, campaign_id=campaign.id,
                 trigger=kind, sends=planned)
    return planned


async def _plan_scheduled(session: AsyncSession, campaign: Campaign, spec: CampaignSpec,
                          audience: Audience, now: datetime) -> int:
    trigger = spec.trigger
    horizon = now + SCHEDULED_LOOKAHEAD
    after = campaign.planned_until or (now - trigger.grace)
    if trigger.kind == "once":
        assert trigger.at is not None
        times = [trigger.at] if after < trigger.at <= horizon else []
    else:
        times = trigger.cron_times(after, horizon)
    missed = [t for t in times if t < now - trigger.grace]
    if missed:
        log.warning("campaign.occurrences_missed", campaign=spec.key, campaign_id=campaign.id,
                    count=len(missed), first=missed[0].isoformat(), last=missed[-1].isoformat())
    planned = 0
    for moment in times:
        if moment < now - trigger.grace or not spec.active_at(moment):
            continue
        occurrence = "once" if trigger.kind == "once" else f"cron:{moment:%Y-%m-%dT%H:%MZ}"
        ids = await session.scalars(
            select(Customer.id).where(*audience.conditions).order_by(Customer.id))
        planned += await insert_sends(
            session, campaign, spec,
            (Planned(customer_id, occurrence, moment, moment) for customer_id in ids), now=now)
    campaign.planned_until = max(horizon, campaign.planned_until or horizon)
    return planned


def _event_window(campaign: Campaign, spec: CampaignSpec, now: datetime,
                  ) -> tuple[datetime, datetime]:
    start = (campaign.cursor_at or now) - EVENT_OVERLAP
    return max(start, now - spec.trigger.grace), now


async def _plan_events(session: AsyncSession, campaign: Campaign, spec: CampaignSpec,
                       audience: Audience, now: datetime) -> int:
    trigger = spec.trigger
    low, high = _event_window(campaign, spec, now)
    planned: list[Planned] = []
    if trigger.kind == "ticket_resolved":
        query = (
            select(Ticket.id, Ticket.customer_id, Ticket.resolved_at)
            .join(Customer, Customer.id == Ticket.customer_id)
            .where(Ticket.resolved_at > low, Ticket.resolved_at <= high,
                   Ticket.status.in_([TicketStatus.RESOLVED, TicketStatus.CLOSED]),
                   *audience.conditions)
        )
        if trigger.categories:
            query = query.where(Ticket.category.in_(list(trigger.categories)))
        for ticket_id, customer_id, resolved_at in await session.execute(query):
            planned.append(Planned(customer_id, f"ticket:{ticket_id}",
                                   resolved_at + trigger.delay, resolved_at, ticket_id))
    elif trigger.kind == "customer_created":
        rows = await session.execute(
            select(Customer.id, Customer.created_at)
            .where(Customer.created_at > low, Customer.created_at <= high, *audience.conditions))
        for customer_id, created_at in rows:
            planned.append(Planned(customer_id, "created", created_at + trigger.delay,
                                   created_at))
    elif trigger.kind == "lifecycle_change":
        query = (
            select(LifecycleTransition.id, LifecycleTransition.customer_id,
                   LifecycleTransition.at)
            .join(Customer, Customer.id == LifecycleTransition.customer_id)
            .where(LifecycleTransition.at > low, LifecycleTransition.at <= high,
                   LifecycleTransition.from_stage.is_not(None), *audience.conditions)
        )
        if trigger.to_values:
            query = query.where(LifecycleTransition.to_stage.in_(list(trigger.to_values)))
        if trigger.from_values:
            query = query.where(LifecycleTransition.from_stage.in_(list(trigger.from_values)))
        for transition_id, customer_id, at in await session.execute(query):
            planned.append(Planned(customer_id, f"lifecycle:{transition_id}",
                                   at + trigger.delay, at))
    elif trigger.kind == "tier_change":
        planned = await _tier_changes(session, spec, audience, low, high)
    created = await insert_sends(session, campaign, spec,
                                 (p for p in planned if spec.active_at(p.event_at or p.due_at)),
                                 now=now)
    campaign.cursor_at = max(high, campaign.cursor_at or high)
    return created


async def _tier_changes(session: AsyncSession, spec: CampaignSpec, audience: Audience,
                        low: datetime, high: datetime) -> list[Planned]:
    """Tier changes from the audit trail (customer updates and classification runs)."""
    trigger = spec.trigger
    rows = await session.execute(
        select(AuditLog.id, AuditLog.entity_id, AuditLog.at, AuditLog.before, AuditLog.after)
        .where(AuditLog.entity_type == "customer",
               AuditLog.action.in_(["update", "classify", "member_level"]),
               AuditLog.at > low, AuditLog.at <= high))
    changes: list[tuple[int, int, datetime]] = []
    for audit_id, entity_id, at, before, after in rows:
        if not isinstance(after, dict) or "tier_code" not in after:
            continue
        old = str((before or {}).get("tier_code") or "").lower()
        new = str(after.get("tier_code") or "").lower()
        if old == new:
            continue
        if trigger.to_values and new not in trigger.to_values:
            continue
        if trigger.from_values and old not in trigger.from_values:
            continue
        if str(entity_id).isdigit():
            changes.append((audit_id, int(entity_id), at))
    if not changes:
        return []
    members = set(await session.scalars(
        select(Customer.id).where(Customer.id.in_({c for _, c, _ in changes}),
                                  *audience.conditions)))
    return [Planned(customer_id, f"tier:{audit_id}", at + trigger.delay, at)
            for audit_id, customer_id, at in changes if customer_id in members]


def customer_zone(customer_timezone: str | None, default: str) -> ZoneInfo:
    """The customer's time zone, or the default when none (or an unknown one) is on file."""
    if customer_timezone and customer_timezone in known_timezones():
        return ZoneInfo(customer_timezone)
    return ZoneInfo(default)


def birthday_on(birthday: date, day: date) -> bool:
    """Whether ``day`` is the birthday; 29 February is celebrated on 28 February in
    common years."""
    if (birthday.month, birthday.day) == (day.month, day.day):
        return True
    leap = day.year % 4 == 0 and (day.year % 100 != 0 or day.year % 400 == 0)
    return (birthday.month, birthday.day) == (2, 29) and not leap and (
        day.month, day.day) == (2, 28)


def _local_days(now: datetime, zone: tzinfo) -> list[date]:
    today = now.astimezone(zone).date()
    return [today - timedelta(days=1), today, today + timedelta(days=1)]


def _due(day: date, clock: time, zone: tzinfo) -> datetime:
    return datetime.combine(day, clock, tzinfo=zone).astimezone(UTC)


async def _plan_days(session: AsyncSession, campaign: Campaign, spec: CampaignSpec,
                     audience: Audience, now: datetime, default_zone: str) -> int:
    trigger = spec.trigger
    earliest, latest = now - trigger.grace, now + DAY_HORIZON
    planned: list[Planned] = []
    if trigger.kind == "birthday":
        days = [now.date() + timedelta(days=k) for k in (-2, -1, 0, 1, 2)]
        month_days = {(d.month, d.day) for d in days}
        if (2, 28) in month_days:
            month_days.add((2, 29))
        matches = or_(*(and_(extract("month", Customer.birthday) == m,
                             extract("day", Customer.birthday) == d) for m, d in month_days))
        rows = await session.execute(
            select(Customer.id, Customer.birthday, Customer.timezone)
            .where(Customer.birthday.is_not(None), matches, *audience.conditions))
        for customer_id, birthday, zone_name in rows:
            zone = customer_zone(zone_name, default_zone)
            for day in _local_days(now, zone):
                due = _due(day, trigger.send_time, zone)
                if birthday_on(birthday, day) and earliest <= due <= latest:
                    planned.append(Planned(customer_id, f"birthday:{day.year}", due, due))
    elif trigger.kind == "contract_end":
        planned = await _contract_ends(session, trigger, audience, now, default_zone)
    else:  # no_interaction
        last_inbound = (
            select(Interaction.customer_id, func.max(Interaction.occurred_at).label("last"))
            .where(Interaction.direction == Direction.INBOUND)
            .group_by(Interaction.customer_id)
            .subquery()
        )
        last = func.coalesce(last_inbound.c.last, Customer.created_at).label("last")
        high = now - timedelta(days=trigger.days)
        query = (select(Customer.id, last, Customer.timezone)
                 .outerjoin(last_inbound, last_inbound.c.customer_id == Customer.id)
                 .where(*audience.conditions, last <= high))
        if campaign.last_scan_at is not None:  # the first scan takes everyone already quiet
            query = query.where(
                last > campaign.last_scan_at - timedelta(days=trigger.days) - EVENT_OVERLAP)
        for customer_id, last_at, zone_name in await session.execute(query):
            zone = customer_zone(zone_name, default_zone)
            due = max(now, _due(now.astimezone(zone).date(), trigger.send_time, zone))
            last_at = last_at if last_at.tzinfo else last_at.replace(tzinfo=UTC)
            planned.append(Planned(customer_id, f"inactive:{last_at.date().isoformat()}", due,
                                   last_at))
    return await insert_sends(session, campaign, spec,
                              (p for p in planned if spec.active_at(p.due_at)), now=now)


async def _contract_ends(session: AsyncSession, trigger: Trigger, audience: Audience,
                         now: datetime, default_zone: str) -> list[Planned]:
    """Contracts ending ``days`` days from now: the customer attribute named by the trigger
    (a date typed into the customer record) and, for the default attribute
    ``contract_end``, the active contracts and subscriptions of the sales module. Both
    give the occurrence ``contract_end:<date>``, so one end date is one message."""
    earliest, latest = now - trigger.grace, now + DAY_HORIZON
    first_day = now.date() - timedelta(days=2) + timedelta(days=trigger.days)
    last_day = now.date() + timedelta(days=2) + timedelta(days=trigger.days)
    value = Customer.custom_attributes[trigger.attribute].as_string()
    rows = list(await session.execute(
        select(Customer.id, value, Customer.timezone)
        .where(value >= first_day.isoformat(), value <= last_day.isoformat() + "~",
               *audience.conditions)))
    if trigger.attribute == "contract_end":
        rows += list(await session.execute(
            select(Contract.customer_id, Contract.end_on, Customer.timezone)
            .join(Customer, Customer.id == Contract.customer_id)
            .where(Contract.status == "active", Contract.end_on >= first_day,
                   Contract.end_on <= last_day, *audience.conditions)))
    planned: dict[tuple[int, str], Planned] = {}
    for customer_id, raw, zone_name in rows:
        try:
            end = raw if isinstance(raw, date) else date.fromisoformat(str(raw)[:10])
        except ValueError:
            continue
        zone = customer_zone(zone_name, default_zone)
        due = _due(end - timedelta(days=trigger.days), trigger.send_time, zone)
        occurrence = f"{trigger.attribute}:{end.isoformat()}"
        if earliest <= due <= latest:
            planned[customer_id, occurrence] = Planned(customer_id, occurrence, due, due)
    return list(planned.values())


# --- eligibility at send time ----------------------------------------------------------------


@dataclass(frozen=True)
class Reach:
    """A channel a customer can be sent to now, and the handle to use there."""

    channel: Channel
    handle: str


_IDENTITY_OF = {Channel.EMAIL: IdentityKind.EMAIL, Channel.TELEGRAM: IdentityKind.TELEGRAM,
                Channel.WEBCHAT: IdentityKind.WEBCHAT}


def consent_allows(customer: Customer, channel: Channel, purpose: str) -> str | None:
    """``None`` when consent allows an automated message there, else the reason.

    An explicit ``false`` (the customer opted out there) stops everything; marketing also
    needs an explicit ``true``.
    """
    consent = (customer.marketing_opt_in or {}).get(channel.value)
    if consent is False:
        return "opted_out"
    if purpose == "marketing" and consent is not True:
        return "no_consent"
    return None


def reach_on(customer: Customer, channel: Channel, purpose: str) -> tuple[Reach | None, str]:
    """Whether and how a customer (identities loaded) can get a message on ``channel``."""
    refusal = consent_allows(customer, channel, purpose)
    if refusal:
        return None, refusal
    kind = _IDENTITY_OF.get(channel)
    if kind is None:
        return None, "not_sendable"
    identities = [i for i in customer.identities if i.kind == kind]
    if not identities:
        return None, "no_identity"
    working = [i for i in identities if i.bounced_at is None]
    if not working:
        return None, "bounced"
    working.sort(key=lambda i: (not i.verified, -i.id))
    return Reach(channel, working[0].value), ""


def channel_order(customer: Customer, order: Sequence[str]) -> list[Channel]:
    """The campaign's channel order with ``preferred`` filled in, without repeats."""
    channels: list[Channel] = []
    for word in order:
        if word == "preferred":
            preferred = customer.preferred_channel
            if preferred in SENDABLE_CHANNELS and preferred not in channels:
                channels.append(preferred)
        elif Channel(word) not in channels:
            channels.append(Channel(word))
    return channels


def choose_channel(customer: Customer, spec: CampaignSpec, *,
                   available: frozenset[Channel] | None = None,
                   ) -> tuple[Reach | None, dict[str, str]]:
    """The first channel of the campaign's order the customer can be reached on, and why
    each one before it was passed over (``{"email": "bounced", …}``)."""
    reasons: dict[str, str] = {}
    for channel in channel_order(customer, spec.channels):
        if available is not None and channel not in available:
            reasons[channel.value] = "not_configured"
            continue
        reach, why = reach_on(customer, channel, spec.purpose)
        if reach is not None:
            return reach, reasons
        reasons[channel.value] = why
    return None, reasons


def quiet_until(spec: CampaignSpec, customer: Customer, now: datetime, defaults: Defaults,
                ) -> datetime | None:
    """When a message may go out if ``now`` is in the customer's quiet hours, else None."""
    if spec.quiet_hours is None:
        return None
    zone = customer_zone(customer.timezone, defaults.timezone)
    return spec.quiet_hours.release(now, zone)


async def recent_message_counts(
    session: AsyncSession, customer_ids: Sequence[int], since: datetime, *,
    campaign_id: int | None = None,
) -> Counter[int]:
    """Campaign messages queued per customer since ``since`` (one campaign, or all)."""
    counts: Counter[int] = Counter()
    if not customer_ids:
        return counts
    query = (select(CampaignSend.customer_id, func.count())
             .where(CampaignSend.customer_id.in_(list(set(customer_ids))),
                    CampaignSend.status == QUEUED, CampaignSend.processed_at >= since)
             .group_by(CampaignSend.customer_id))
    if campaign_id is not None:
        query = query.where(CampaignSend.campaign_id == campaign_id)
    for customer_id, count in await session.execute(query):
        counts[customer_id] = int(count)
    return counts


class FrequencyLedger:
    """Frequency caps for one batch of sends: counts read once, then kept up to date."""

    def __init__(self, defaults: Defaults) -> None:
        self.defaults = defaults
        self._global: Counter[int] | None = None
        self._by_campaign: dict[int, Counter[int]] = {}

    async def load(self, session: AsyncSession, customer_ids: Sequence[int], now: datetime,
                   campaigns: Mapping[int, CampaignSpec]) -> None:
        """Read the counts the batch's caps need."""
        cap = self.defaults.frequency_cap
        if cap is not None:
            self._global = await recent_message_counts(session, customer_ids, now - cap.window)
        for campaign_id, spec in campaigns.items():
            if spec.frequency_cap is not None:
                self._by_campaign[campaign_id] = await recent_message_counts(
                    session, customer_ids, now - spec.frequency_cap.window,
                    campaign_id=campaign_id)

    def allows(self, campaign_id: int, spec: CampaignSpec, customer_id: int) -> str | None:
        """``None`` when one more message fits both caps, else which cap is full."""
        cap = self.defaults.frequency_cap
        if cap is not None and self._global is not None and (
                self._global[customer_id] >= cap.max):
            return "frequency_cap"
        if spec.frequency_cap is not None and (
                self._by_campaign.get(campaign_id, Counter())[customer_id]
                >= spec.frequency_cap.max):
            return "campaign_frequency_cap"
        return None

    def count(self, campaign_id: int, customer_id: int) -> None:
        """One more message queued."""
        if self._global is not None:
            self._global[customer_id] += 1
        if campaign_id in self._by_campaign:
            self._by_campaign[campaign_id][customer_id] += 1


@dataclass
class Verdict:
    """What to do with a due send: ``send`` (on ``reach``), ``postpone`` (to ``until``),
    ``holdout``, ``skip`` or ``task``; ``reason``/``detail`` explain a skip."""

    action: str
    reach: Reach | None = None
    until: datetime | None = None
    reason: str | None = None
    detail: str | None = None


def check_send(send: CampaignSend, spec: CampaignSpec, customer: Customer | None, *,
               now: datetime, defaults: Defaults, in_audience: bool,
               ledger: FrequencyLedger | None = None,
               available: frozenset[Channel] | None = None) -> Verdict:
    """Decide at send time, in this order: campaign window, customer, audience,
    do-not-contact, a channel (identity, bounce, consent), holdout, quiet hours, caps."""
    if spec.end is not None and now > spec.end:
        return Verdict("skip", reason="campaign_ended")
    if customer is None or customer.deleted_at is not None or customer.erased_at is not None \
            or customer.merged_into_id is not None:
        return Verdict("skip", reason="customer_gone")
    if not in_audience:
        return Verdict("skip", reason="left_audience")
    if customer.do_not_contact:
        return Verdict("skip", reason="do_not_contact")
    if spec.action == "task":
        return Verdict("holdout") if send.holdout else Verdict("task")
    reach, reasons = choose_channel(customer, spec, available=available)
    if reach is None:
        detail = ", ".join(f"{k}: {v}" for k, v in reasons.items()) or "no channel"
        values = set(reasons.values())
        reason = "opted_out" if values == {"opted_out"} else "no_channel"
        return Verdict("skip", reason=reason, detail=detail[:500])
    if send.holdout:
        return Verdict("holdout", reach=reach)
    release = quiet_until(spec, customer, now, defaults)
    if release is not None:
        return Verdict("postpone", reach=reach, until=release)
    if ledger is not None:
        full = ledger.allows(send.campaign_id, spec, customer.id)
        if full:
            return Verdict("skip", reason=full)
    return Verdict("send", reach=reach)


async def audience_members(session: AsyncSession, audience: Audience,
                           customer_ids: Iterable[int]) -> set[int]:
    """Which of these customers match the audience now."""
    ids = list(set(customer_ids))
    if not ids:
        return set()
    return set(await session.scalars(
        select(Customer.id).where(Customer.id.in_(ids), *audience.conditions)))


# --- template values ---------------------------------------------------------------------------


def greeting(customer: Customer, language: str) -> str:
    """How to address the customer: ``于先生`` / ``Mr Yu`` with a ``salutation`` custom
    attribute and a family name, else their name on file."""
    salutation = str((customer.custom_attributes or {}).get("salutation") or "").strip()
    family = (customer.family_name or "").strip()
    if salutation and family:
        return f"{family}{salutation}" if language.lower().startswith("zh") else (
            f"{salutation} {family}")
    return customer.display_name


def customer_values(customer: Customer, language: str) -> dict[str, Any]:
    """What templates may read of a customer (``customer.*``)."""
    return {
        "id": customer.id, "name": customer.display_name, "display_name": customer.display_name,
        "greeting": greeting(customer, language), "given_name": customer.given_name or "",
        "family_name": customer.family_name or "", "language": customer.language or language,
        "tier": customer.tier_code or "", "lifecycle": customer.lifecycle_stage.value,
        "birthday": customer.birthday, "attributes": dict(customer.custom_attributes or {}),
    }


def ticket_values(ticket: Ticket | None) -> dict[str, Any] | None:
    """What templates may read of the triggering ticket (``ticket.*``)."""
    if ticket is None:
        return None
    return {"id": ticket.id, "number": ticket.number or "", "subject": ticket.subject,
            "category": ticket.category.value, "resolved_at": ticket.resolved_at}


OPT_OUT_HINTS = {
    "zh": "回复 TD 退订",
    "en": "Reply STOP to opt out.",
}


def opt_out_hint(channel: Channel, language: str) -> str:
    """The short opt-out line of chat messages (e-mail carries an unsubscribe link)."""
    if channel == Channel.EMAIL:
        return ""
    return OPT_OUT_HINTS["zh" if language.lower().startswith("zh") else "en"]


# --- opt-outs and clicks -----------------------------------------------------------------------


async def mark_opted_out(session: AsyncSession, customer_id: int, *, now: datetime,
                         send_id: int | None = None,
                         within: timedelta = timedelta(days=30)) -> int | None:
    """Attribute an opt-out to a send: the one named, else the customer's latest message
    within ``within``. Returns the send's id, if any."""
    if send_id is None:
        send_id = await session.scalar(
            select(CampaignSend.id)
            .where(CampaignSend.customer_id == customer_id, CampaignSend.status == QUEUED,
                   CampaignSend.processed_at >= now - within)
            .order_by(CampaignSend.processed_at.desc(), CampaignSend.id.desc()).limit(1))
    if send_id is None:
        return None
    await session.execute(
        update(CampaignSend)
        .where(CampaignSend.id == send_id, CampaignSend.customer_id == customer_id,
               CampaignSend.opted_out_at.is_(None))
        .values(opted_out_at=now, updated_at=now)
        .execution_options(synchronize_session=False))
    return send_id


async def record_click(session: AsyncSession, send_id: int, *, now: datetime) -> bool:
    """Count a click on a tracked link of a send (the first one is kept as ``clicked_at``)."""
    result = await session.execute(
        update(CampaignSend)
        .where(CampaignSend.id == send_id)
        .values(click_count=CampaignSend.click_count + 1,
                clicked_at=func.coalesce(CampaignSend.clicked_at, now), updated_at=now)
        .execution_options(synchronize_session=False))
    return bool(result.rowcount)

