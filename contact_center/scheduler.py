"""The care scheduler: plans campaign work, delivers what is due, reminds agents of tasks.

One tick:

1. **plan** — each enabled campaign's trigger becomes rows of ``campaign_sends`` (see
   ``crm_core.services.campaigns``), in one transaction per campaign. On PostgreSQL the
   campaign row is locked with ``FOR UPDATE SKIP LOCKED``: one scheduler plans a
   campaign at a time, and the unique send key would stop a duplicate anyway.
2. **deliver** — due sends are claimed in batches (PostgreSQL: ``FOR UPDATE SKIP
   LOCKED``, so several schedulers share the work without touching the same row;
   SQLite: the write transaction begins ``IMMEDIATE`` and schedulers take turns), each
   checked again (opt-out, consent, audience, quiet hours, frequency caps) and turned
   into an outbound interaction plus an outbox message (``enqueue_reply``), or a care
   task, in the same transaction as the send's new status. A crash rolls the whole batch
   back; the restarted scheduler finds it still pending: nothing is sent twice and
   nothing is lost.
3. **remind** — care tasks whose reminder is due publish ``care_task.due``.
4. **report** — from the configured weekday and hour, last week's report is queued for
   the supervisors (``contact_center.weekly_report``, once per ISO week); once an hour
   membership points past their expiry expire and contracts past their end are ended,
   and the reports' daily roll-ups are refreshed (``crm_core.services.analytics.rollups``:
   incremental, idempotent, one scheduler at a time).

Every time comes from ``now`` (a callable), so tests drive the clock. Sending itself is
the outbox dispatcher's job (``contact-center worker`` or ``serve``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from jinja2 import TemplateError
from sqlalchemy import bindparam, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from contact_center.campaign_links import CampaignLinks
from contact_center.weekly_report import send_weekly_report
from crm_core.db import Database
from crm_core.models import (
    Agent,
    Campaign,
    CampaignSend,
    Channel,
    Conversation,
    ConversationStatus,
    Customer,
    Interaction,
    OutboxMessage,
    Ticket,
    utcnow,
)
from crm_core.services import campaigns as svc
from crm_core.services.analytics.rollups import refresh_rollups
from crm_core.services.campaign_config import CampaignConfig, CampaignSpec, render
from crm_core.services.care_tasks import claim_reminders, create_task
from crm_core.services.membership import expire_points
from crm_core.services.sales import end_contracts
from routing.assignment import choose_assignee
from routing.envelope import SenderHandles
from routing.events import Event, EventBus, record_webhooks
from routing.outbox import enqueue_reply

log = structlog.get_logger(__name__)

CARE_TASK_CREATED = "care_task.created"
CARE_TASK_DUE = "care_task.due"
ACTOR = "scheduler"
MAX_BATCHES_PER_TICK = 50
CAP_LOCK_SPACE = 0x63617073  # "caps": advisory locks on customers while caps are counted

UNSUBSCRIBE_FOOTER = {
    "zh": "不想再收到此类邮件？退订：{url}",
    "en": "Don't want these e-mails? Unsubscribe: {url}",
}
STAR = "⭐"

_OUTBOX = OutboxMessage.__table__
_INTERACTIONS = Interaction.__table__
_SENDS = CampaignSend.__table__
_SET_PAYLOAD = (update(_OUTBOX).where(_OUTBOX.c.id == bindparam("o_id"))
                .values(payload=bindparam("o_payload", type_=_OUTBOX.c.payload.type)))
_SET_INTERACTION = (update(_INTERACTIONS).where(_INTERACTIONS.c.id == bindparam("i_id"))
                    .values(occurred_at=bindparam("i_at", type_=_INTERACTIONS.c.occurred_at.type),
                            meta=bindparam("i_meta", type_=_INTERACTIONS.c.meta.type)))
_SET_QUEUED = (update(_SENDS).where(_SENDS.c.id == bindparam("s_id"))
               .values(status=svc.QUEUED,
                       channel=bindparam("s_channel", type_=_SENDS.c.channel.type),
                       outbox_id=bindparam("s_outbox"), interaction_id=bindparam("s_interaction"),
                       processed_at=bindparam("s_at", type_=_SENDS.c.processed_at.type),
                       updated_at=bindparam("s_at", type_=_SENDS.c.updated_at.type)))


HOUSEKEEPING_EVERY = timedelta(hours=1)


@dataclass(frozen=True)
class WeeklyReport:
    """When and how the weekly report goes to supervisors (``[analytics]``)."""

    currency: str = "CNY"
    weekday: int = 0
    hour: int = 9
    console_url: str = "http://127.0.0.1:8080"


@dataclass
class TickReport:
    """What one tick did."""

    planned: int = 0
    queued: int = 0
    tasks: int = 0
    held_out: int = 0
    postponed: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    failed: int = 0
    reminders: int = 0
    reports: int = 0
    """Weekly report e-mails queued."""

    @property
    def handled(self) -> int:
        """Sends that left ``pending`` or moved (anything but planning and reminders)."""
        return (self.queued + self.tasks + self.held_out + self.postponed
                + sum(self.skipped.values()) + self.failed)

    def add(self, other: TickReport) -> None:
        """Add another report's counts to this one."""
        self.planned += other.planned
        self.queued += other.queued
        self.tasks += other.tasks
        self.held_out += other.held_out
        self.postponed += other.postponed
        self.skipped.update(other.skipped)
        self.failed += other.failed
        self.reminders += other.reminders
        self.reports += other.reports

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"planned": self.planned, "queued": self.queued, "tasks": self.tasks,
                "held_out": self.held_out, "postponed": self.postponed,
                "skipped": dict(self.skipped), "failed": self.failed,
                "reminders": self.reminders, "reports": self.reports}


def scheduler_name() -> str:
    """A name unique to this process, for the logs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _language_of(customer: Customer, default: str) -> str:
    return customer.language or default


def _zh(language: str) -> bool:
    return language.lower().startswith("zh")


def survey_buttons(kind: str, send_id: int) -> list[list[dict[str, str]]]:
    """Telegram keyboard rows of a survey: 1–5 stars, or 0–10 in two rows."""
    if kind == "nps":
        return [[{"text": str(n), "data": f"nps:{n}:{send_id}"} for n in range(0, 6)],
                [{"text": str(n), "data": f"nps:{n}:{send_id}"} for n in range(6, 11)]]
    return [[{"text": f"{n}{STAR}", "data": f"csat:{n}:{send_id}"} for n in range(1, 6)]]


@dataclass
class _Outgoing:
    """A message decided and rendered, waiting for its conversation and outbox row."""

    send: CampaignSend
    spec: CampaignSpec
    customer: Customer
    reach: svc.Reach
    text: str
    subject: str | None
    ticket: Ticket | None
    buttons: list[list[dict[str, str]]] | None = None
    conversation: Conversation | None = None


class CampaignScheduler:
    """Plans and delivers care campaigns from a loaded :class:`CampaignConfig`."""

    def __init__(
        self,
        database: Database,
        config: CampaignConfig,
        *,
        links: CampaignLinks,
        region: str = "CN",
        timezone: str = "Asia/Shanghai",
        default_language: str = "zh-CN",
        events: EventBus | None = None,
        available_channels: frozenset[Channel] | None = None,
        now: Callable[[], datetime] = utcnow,
        batch_size: int = 200,
        name: str | None = None,
        weekly_report: WeeklyReport | None = None,
    ) -> None:
        self.database = database
        self.config = config
        self.links = links
        self.region = region
        self.timezone = timezone
        self.default_language = default_language
        self.events = events
        self.available = available_channels
        self.now = now
        self.batch_size = batch_size
        self.name = name or scheduler_name()
        self._ids: dict[str, int] = {}
        self._specs: dict[int, CampaignSpec] = {}
        self._synced = False
        self.weekly_report = weekly_report
        self._housekept_at: datetime | None = None

    @property
    def _postgres(self) -> bool:
        return not self.database.is_sqlite

    # --- the loop ---------------------------------------------------------------------

    async def tick(self) -> TickReport:
        """Sync (first time), plan, deliver what is due, send reminders."""
        if not self._synced:
            await self.sync()
        report = TickReport()
        report.planned = await self.plan()
        report.add(await self.deliver())
        report.reminders = await self.remind()
        report.reports = await self.send_reports()
        await self.housekeeping()
        if report.planned or report.handled or report.reminders or report.reports:
            log.info("scheduler.tick", scheduler=self.name, **report.to_dict())
        return report

    async def run(self, stop: asyncio.Event, *, interval: float = 15.0) -> None:
        """Tick until ``stop`` is set, waiting ``interval`` seconds after an idle tick."""
        log.info("scheduler.started", scheduler=self.name, campaigns=len(self.config.campaigns),
                 database="sqlite" if self.database.is_sqlite else "postgresql")
        while not stop.is_set():
            busy = False
            try:
                report = await self.tick()
                busy = report.handled >= self.batch_size * MAX_BATCHES_PER_TICK
            except Exception:
                log.exception("scheduler.tick_failed", scheduler=self.name)
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=interval)
        log.info("scheduler.stopped", scheduler=self.name)

    # --- sync -------------------------------------------------------------------------

    async def sync(self) -> None:
        """Mirror the campaigns file into the database; skip pending work of campaigns that
        left the file. Safe when two schedulers start together (a lost race retries)."""
        for attempt in (1, 2):
            try:
                async with self.database.transaction() as session:
                    now = self.now()
                    rows = await svc.sync_campaigns(session, self.config, now=now)
                    retired = select(Campaign.id).where(Campaign.status == "retired")
                    await session.execute(
                        update(CampaignSend)
                        .where(CampaignSend.status == svc.PENDING,
                               CampaignSend.campaign_id.in_(retired.scalar_subquery()))
                        .values(status=svc.SKIPPED, skip_reason="campaign_removed",
                                processed_at=now, updated_at=now)
                        .execution_options(synchronize_session=False))
                break
            except IntegrityError:
                if attempt == 2:
                    raise
        self._ids = {key: row.id for key, row in rows.items()}
        self._specs = {row.id: spec for key, row in rows.items()
                       if (spec := self.config.get(key)) is not None}
        self._synced = True

    def campaign_id(self, key: str) -> int:
        """The database id of a campaign (after :meth:`sync`)."""
        return self._ids[key]

    # --- planning ---------------------------------------------------------------------

    async def plan(self) -> int:
        """Plan every enabled campaign; returns how many sends were new."""
        planned = 0
        for campaign_id, spec in self._specs.items():
            if not spec.enabled:
                continue
            try:
                planned += await self._plan_one(campaign_id, spec)
            except Exception:
                log.exception("scheduler.plan_failed", campaign=spec.key,
                              campaign_id=campaign_id)
        return planned

    async def _plan_one(self, campaign_id: int, spec: CampaignSpec) -> int:
        async with self.database.transaction() as session:
            query = select(Campaign).where(Campaign.id == campaign_id).execution_options(
                populate_existing=True)
            if self._postgres:
                query = query.with_for_update(skip_locked=True)
            campaign = await session.scalar(query)
            if campaign is None:  # another scheduler is planning it right now
                return 0
            return await svc.plan_campaign(session, campaign, spec, now=self.now(),
                                           region=self.region, timezone=self.timezone)

    # --- delivery ---------------------------------------------------------------------

    async def deliver(self, *, max_batches: int = MAX_BATCHES_PER_TICK) -> TickReport:
        """Handle due sends, one batch per transaction, until none is due."""
        report = TickReport()
        for _ in range(max_batches):
            batch = await self._deliver_batch()
            report.add(batch)
            if batch.handled < self.batch_size:
                break
        return report

    async def _claim(self, session: AsyncSession, now: datetime) -> list[CampaignSend]:
        runnable = [cid for cid, spec in self._specs.items() if spec.enabled]
        if not runnable:
            return []
        query = (select(CampaignSend)
                 .where(CampaignSend.status == svc.PENDING, CampaignSend.due_at <= now,
                        CampaignSend.campaign_id.in_(runnable))
                 .order_by(CampaignSend.due_at, CampaignSend.id)
                 .limit(self.batch_size))
        if self._postgres:
            query = query.with_for_update(skip_locked=True)
        return list(await session.scalars(query))

    async def _deliver_batch(self) -> TickReport:
        report = TickReport()
        events: list[Event] = []
        async with self.database.transaction() as session:
            now = self.now()
            sends = await self._claim(session, now)
            if not sends:
                return report
            customers = {c.id: c for c in await session.scalars(
                select(Customer).where(Customer.id.in_({s.customer_id for s in sends}))
                .options(selectinload(Customer.identities)))}
            tickets = {t.id: t for t in await session.scalars(
                select(Ticket).where(Ticket.id.in_({s.ticket_id for s in sends if s.ticket_id})))}
            members: dict[int, set[int]] = {}
            for campaign_id in {s.campaign_id for s in sends}:
                audience = await svc.audience_of(session, self._specs[campaign_id],
                                                 region=self.region, timezone=self.timezone)
                members[campaign_id] = await svc.audience_members(
                    session, audience, [s.customer_id for s in sends
                                        if s.campaign_id == campaign_id])
            batch_specs = {cid: self._specs[cid] for cid in {s.campaign_id for s in sends}}
            if self._postgres and (self.config.defaults.frequency_cap is not None or any(
                    spec.frequency_cap is not None for spec in batch_specs.values())):
                await self._lock_customers(session, sorted(customers))
            ledger = svc.FrequencyLedger(self.config.defaults)
            await ledger.load(session, list(customers), now, batch_specs)
            outgoing: list[_Outgoing] = []
            for send in sends:
                spec = self._specs[send.campaign_id]
                customer = customers.get(send.customer_id)
                verdict = svc.check_send(
                    send, spec, customer, now=now, defaults=self.config.defaults,
                    in_audience=send.customer_id in members[send.campaign_id], ledger=ledger,
                    available=self.available)
                bound = log.bind(campaign_id=send.campaign_id, customer_id=send.customer_id,
                                 send_id=send.id)
                send.updated_at = now
                if verdict.action == "skip":
                    send.status, send.skip_reason = svc.SKIPPED, verdict.reason
                    send.detail, send.processed_at = verdict.detail, now
                    report.skipped[verdict.reason or "unknown"] += 1
                    bound.info("campaign.skipped", reason=verdict.reason)
                elif verdict.action == "postpone":
                    assert verdict.until is not None
                    send.due_at = verdict.until
                    send.postponed += 1
                    report.postponed += 1
                    bound.info("campaign.postponed", until=verdict.until.isoformat())
                elif verdict.action == "holdout":
                    send.status, send.processed_at = svc.HOLDOUT, now
                    send.channel = verdict.reach.channel if verdict.reach else None
                    report.held_out += 1
                elif verdict.action == "task":
                    assert customer is not None
                    event = await self._task(session, send, spec, customer,
                                             tickets.get(send.ticket_id or 0), now)
                    events.append(event)
                    report.tasks += 1
                else:
                    assert customer is not None and verdict.reach is not None
                    message = self._render(send, spec, customer, verdict.reach,
                                           tickets.get(send.ticket_id or 0), now)
                    if isinstance(message, str):
                        send.status, send.skip_reason = svc.FAILED, "template_error"
                        send.detail, send.processed_at = message[:500], now
                        report.failed += 1
                        bound.warning("campaign.render_failed", error=message)
                        continue
                    outgoing.append(message)
                    ledger.count(send.campaign_id, customer.id)
            if outgoing:
                await self._enqueue(session, outgoing, now)
                report.queued += len(outgoing)
            await record_webhooks(session, events)
        if events and self.events is not None:
            await self.events.publish(events)
        return report

    async def _lock_customers(self, session: AsyncSession, customer_ids: list[int]) -> None:
        """Serialize frequency-cap decisions per customer across schedulers (PostgreSQL):
        a transaction advisory lock per customer, taken in ascending order (no deadlock),
        held until the batch commits, so a second scheduler counts this one's messages."""
        await session.execute(
            text("SELECT pg_advisory_xact_lock(:space, id) FROM "
                 "(SELECT unnest(CAST(:ids AS integer[])) AS id ORDER BY 1) AS ordered"),
            {"space": CAP_LOCK_SPACE, "ids": customer_ids})

    def _render(self, send: CampaignSend, spec: CampaignSpec, customer: Customer,
                reach: svc.Reach, ticket: Ticket | None, now: datetime) -> _Outgoing | str:
        """The message for one send, or the rendering error as text."""
        defaults = self.config.defaults
        template = spec.template(send.variant, reach.channel, customer.language,
                                 defaults.language)
        if template is None:
            return f"no template for {reach.channel.value}"
        language = template.language
        unsubscribe = self.links.unsubscribe_url(send.id, customer.id, reach.channel.value)
        values: dict[str, Any] = {
            "customer": svc.customer_values(customer, language),
            "ticket": svc.ticket_values(ticket),
            "campaign": {"key": spec.key, "name": spec.name},
            "unsubscribe_url": unsubscribe,
            "opt_out_hint": svc.opt_out_hint(reach.channel, language),
            "channel": reach.channel.value,
            "track": lambda url: self.links.track_url(send.id, str(url)),
        }
        buttons = None
        if spec.survey is not None:
            window = spec.survey.window
            survey_url = self.links.feedback_url(send.id, customer.id, spec.survey.kind,
                                                 now + window + timedelta(days=1))
            low, high = spec.survey.scale
            values["survey_url"] = survey_url
            values["survey_links"] = [(n, f"{survey_url}?score={n}") for n in range(low, high + 1)]
            values["survey_scale"] = (low, high)
            if reach.channel == Channel.TELEGRAM:
                buttons = survey_buttons(spec.survey.kind, send.id)
        try:
            text = render(template.text, values)
            subject = render(template.subject, values) if template.subject is not None else None
        except (TemplateError, ValueError, TypeError) as exc:
            return f"{type(exc).__name__}: {exc}"
        if reach.channel == Channel.EMAIL:
            subject = subject or spec.name
            if unsubscribe not in text:
                footer = UNSUBSCRIBE_FOOTER["zh" if _zh(language) else "en"]
                text = f"{text}\n\n--\n{footer.format(url=unsubscribe)}"
        return _Outgoing(send, spec, customer, reach, text, subject, ticket, buttons)

    async def _enqueue(self, session: AsyncSession, outgoing: Sequence[_Outgoing],
                       now: datetime) -> None:
        """Conversations for the batch in one flush, then each message through the outbox."""
        reused = {t.conversation_id for o in outgoing if (t := o.ticket) is not None
                  and t.conversation_id}
        existing = {c.id: c for c in await session.scalars(
            select(Conversation).where(Conversation.id.in_(reused)))} if reused else {}
        for item in outgoing:
            ticket = item.ticket
            found = existing.get(ticket.conversation_id or 0) if ticket is not None else None
            if found is not None and found.channel == item.reach.channel and (
                    found.customer_id == item.customer.id):
                item.conversation = found
                continue
            item.conversation = Conversation(
                customer_id=item.customer.id, channel=item.reach.channel,
                subject=(item.subject or item.spec.name)[:500],
                thread_key=None if item.reach.channel == Channel.EMAIL else item.reach.handle,
                status=ConversationStatus.CLOSED, closed_at=now, last_message_at=now,
                created_at=now, updated_at=now)
            session.add(item.conversation)
        await session.flush()
        outbox_rows: list[dict[str, Any]] = []
        interaction_rows: list[dict[str, Any]] = []
        send_rows: list[dict[str, Any]] = []
        for item in outgoing:
            reach, send = item.reach, item.send
            to = SenderHandles(
                email=reach.handle if reach.channel == Channel.EMAIL else None,
                telegram_id=reach.handle if reach.channel == Channel.TELEGRAM else None,
                visitor_id=reach.handle if reach.channel == Channel.WEBCHAT else None,
                display_name=item.customer.display_name)
            assert item.conversation is not None
            message = await enqueue_reply(
                session, conversation=item.conversation, customer=item.customer,
                channel=reach.channel, to=to, text=item.text, subject=item.subject,
                automated=True)
            ids = {"campaign_id": send.campaign_id, "send_id": send.id}
            metadata = {**message.payload.get("metadata", {}), **ids}
            if item.buttons:
                metadata["buttons"] = item.buttons
            outbox_rows.append({"o_id": message.id,
                                "o_payload": {**message.payload, "metadata": metadata}})
            interaction_rows.append({"i_id": message.interaction_id, "i_at": now,
                                     "i_meta": {"automated": True, **ids}})
            send_rows.append({"s_id": send.id, "s_channel": message.channel,
                              "s_outbox": message.id, "s_interaction": message.interaction_id,
                              "s_at": now})
            log.info("campaign.queued", campaign_id=send.campaign_id,
                     customer_id=send.customer_id, send_id=send.id, channel=message.channel.value,
                     outbox_id=message.id, variant=send.variant)
        # One statement each for the whole batch, instead of an ORM flush per message.
        connection = await session.connection()
        await connection.execute(_SET_PAYLOAD, outbox_rows)
        await connection.execute(_SET_INTERACTION, interaction_rows)
        await connection.execute(_SET_QUEUED, send_rows)

    async def _task(self, session: AsyncSession, send: CampaignSend, spec: CampaignSpec,
                    customer: Customer, ticket: Ticket | None, now: datetime) -> Event:
        """A care task for the send, assigned to the owner or by round robin in the team."""
        task = spec.task
        assert task is not None
        language = _language_of(customer, self.config.defaults.language)
        values = {"customer": svc.customer_values(customer, language),
                  "ticket": svc.ticket_values(ticket),
                  "campaign": {"key": spec.key, "name": spec.name}}
        try:
            title = render(task.title, values) if task.title is not None else spec.name
            note = render(task.note, values) if task.note is not None else None
        except (TemplateError, ValueError, TypeError) as exc:
            title, note = spec.name, f"({type(exc).__name__}: {exc})"
        assignee_id, team_id, reason = await self._assignee(session, customer, spec)
        due = now + task.due_in
        reminder = None
        if task.remind_before is not None:
            reminder = max(now, due - task.remind_before)
        row = await create_task(
            session, customer_id=customer.id, title=title, note=note, kind=task.kind,
            due_at=due, reminder_at=reminder, campaign_id=send.campaign_id,
            ticket_id=send.ticket_id, assignee_id=assignee_id, team_id=team_id,
            assignment_reason=reason, now=now, actor=ACTOR)
        send.status, send.care_task_id, send.processed_at = svc.TASK, row.id, now
        return Event(CARE_TASK_CREATED, {
            "care_task_id": row.id, "customer_id": customer.id, "assignee_id": assignee_id,
            "team_id": team_id, "campaign_id": send.campaign_id, "due_at": due.isoformat()})

    async def _assignee(self, session: AsyncSession, customer: Customer, spec: CampaignSpec,
                        ) -> tuple[int | None, int | None, str]:
        """The owner (account manager) when the campaign says so and they are active; else
        a team member by round robin (``routing.assignment``); else the team's queue."""
        task = spec.task
        assert task is not None
        if task.assign == "owner" and customer.owner_agent_id is not None:
            active = await session.scalar(select(Agent.active).where(
                Agent.id == customer.owner_agent_id))
            if active:
                return customer.owner_agent_id, None, "owner"
        choice = await choose_assignee(
            session, customer_owner_id=None, team_name=task.team, language=customer.language,
            strategy="round_robin", sticky_owner=False)
        return choice.agent_id, choice.team_id, choice.reason

    # --- reminders --------------------------------------------------------------------

    async def remind(self) -> int:
        """Publish ``care_task.due`` for every task whose reminder came (once each)."""
        async with self.database.transaction() as session:
            tasks = await claim_reminders(session, now=self.now())
            events = [Event(CARE_TASK_DUE, {
                "care_task_id": t.id, "customer_id": t.customer_id, "assignee_id": t.assignee_id,
                "team_id": t.team_id, "due_at": t.due_at.isoformat(), "kind": t.kind,
            }) for t in tasks]
        for task in tasks:
            log.info("care_task.reminder", care_task_id=task.id, customer_id=task.customer_id,
                     assignee_id=task.assignee_id)
        if events and self.events is not None:
            await self.events.publish(events)
        return len(events)


    # --- weekly report and sales housekeeping -------------------------------------------

    async def send_reports(self) -> int:
        """Queue the weekly report to supervisors when it is due (once per week)."""
        if self.weekly_report is None:
            return 0
        weekly = self.weekly_report
        try:
            return await send_weekly_report(
                self.database, now=self.now(), zone=self.timezone, currency=weekly.currency,
                weekday=weekly.weekday, hour=weekly.hour, console_url=weekly.console_url)
        except Exception:
            log.exception("scheduler.weekly_report_failed", scheduler=self.name)
            return 0

    async def housekeeping(self) -> None:
        """Once an hour: expire due membership points, end contracts whose term is over,
        refresh the reports' roll-ups."""
        now = self.now()
        if self._housekept_at is not None and now - self._housekept_at < HOUSEKEEPING_EVERY:
            return
        self._housekept_at = now
        async with self.database.transaction() as session:
            await expire_points(session, now=now)
            await end_contracts(session, today=now.astimezone(ZoneInfo(self.timezone)).date())
        await self.refresh_rollups(now)

    async def refresh_rollups(self, now: datetime) -> None:
        """Refresh the reports' daily roll-ups (a failure is logged; reports stay exact,
        reading more days live until the next refresh)."""
        try:
            async with self.database.transaction() as session:
                await refresh_rollups(session, now=now, zone=self.timezone)
        except Exception:
            log.exception("scheduler.rollups_failed", scheduler=self.name)


# --- wiring from settings --------------------------------------------------------------------


def available_channels(settings: Any) -> frozenset[Channel]:
    """Channels this installation can send on (configured in the settings)."""
    channels = set()
    if settings.email.smtp is not None:
        channels.add(Channel.EMAIL)
    if settings.telegram is not None:
        channels.add(Channel.TELEGRAM)
    if settings.webchat.enabled:
        channels.add(Channel.WEBCHAT)
    return frozenset(channels)


def public_base_url(settings: Any) -> str:
    """Where customers reach the server: ``http.public_base_url``, else host and port."""
    return settings.http.public_base_url or f"http://{settings.http.host}:{settings.http.port}"


def campaign_links(settings: Any) -> CampaignLinks:
    """Link signing with the settings' secret."""
    return CampaignLinks(public_base_url(settings),
                         settings.secret_key.get_secret_value().encode())


def load_config(settings: Any) -> CampaignConfig:
    """The campaigns file of the settings, with the business time zone as default."""
    from crm_core.services.campaign_config import load_campaigns

    return load_campaigns(settings.campaigns.file, default_timezone=settings.locale.timezone)


def build_scheduler(settings: Any, database: Database, *, events: EventBus | None = None,
                    now: Callable[[], datetime] = utcnow) -> CampaignScheduler:
    """A scheduler configured from settings; also configures the routing step's
    ``[feedback]`` rules in this process."""
    from routing.steps.care import configure_care

    config = load_config(settings)
    configure_care(config.feedback)
    return CampaignScheduler(
        database, config, links=campaign_links(settings),
        region=settings.locale.default_region, timezone=settings.locale.timezone,
        default_language=settings.locale.default_language, events=events,
        available_channels=available_channels(settings), now=now,
        batch_size=settings.campaigns.batch_size, weekly_report=weekly_report(settings))


def weekly_report(settings: Any) -> WeeklyReport | None:
    """The weekly report's schedule from ``[analytics]`` (``None``: switched off)."""
    analytics = settings.analytics
    if not analytics.weekly_report:
        return None
    return WeeklyReport(currency=analytics.currency, weekday=analytics.weekly_report_weekday,
                        hour=analytics.weekly_report_hour, console_url=public_base_url(settings))


async def run_embedded_scheduler(settings: Any, database: Database, engine: Any,
                                 stop: asyncio.Event) -> None:
    """The scheduler inside ``serve`` (embedded mode), publishing on the engine's events."""
    scheduler = build_scheduler(settings, database, events=engine.events)
    await scheduler.run(stop, interval=settings.campaigns.tick_seconds)


async def run_scheduler(settings: Any, *, once: bool = False) -> TickReport | None:
    """``contact-center scheduler``: tick until SIGTERM/SIGINT (or once)."""
    import signal

    from contact_center.runtime import open_database
    from contact_center.wiring import build_events, redis_client

    database = open_database(settings)
    redis = redis_client(settings)
    try:
        events = build_events(redis)
        scheduler = build_scheduler(settings, database, events=events)
        if once:
            return await scheduler.tick()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await scheduler.run(stop, interval=settings.campaigns.tick_seconds)
        return None
    finally:
        await database.dispose()
        if redis is not None:
            await redis.aclose()
