"""Care campaigns, their planned sends, care tasks for agents, and customer feedback."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.models.base import Base, utcnow
from crm_core.models.enums import Channel


class Campaign(Base):
    """One campaign of ``config/campaigns.toml``, mirrored so sends, tasks and results can
    name it (the file stays the source of truth; the scheduler syncs it by ``key``).

    ``cursor_at`` is how far event triggers (ticket resolved, lifecycle change …) have
    been scanned; ``planned_until`` how far scheduled occurrences (one-off, cron) and
    date triggers (birthday, contract end …) have been planned. Both survive restarts.
    """

    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(20))
    """``message``, ``survey`` or ``task``."""
    purpose: Mapped[str] = mapped_column(String(20), default="service")
    """``marketing`` (needs the customer's opt-in on the channel) or ``service``."""
    trigger_kind: Mapped[str] = mapped_column(String(30))
    definition: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """The campaign's table as loaded from the file (for display)."""
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(20), default="active")
    """``active`` while the file has it; ``retired`` once it was removed from the file."""
    start_at: Mapped[datetime | None]
    end_at: Mapped[datetime | None]
    holdout_percent: Mapped[float] = mapped_column(Float, default=0.0)
    cursor_at: Mapped[datetime | None]
    planned_until: Mapped[datetime | None]
    last_scan_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class CampaignSend(Base):
    """One due piece of campaign work for one customer: a message, a survey or a task.

    The send key ``(campaign_id, customer_id, occurrence)`` is unique, so planning the
    same occurrence twice (two schedulers, a restart, an overlapping scan) queues nothing
    twice. ``status``: ``pending`` (due at ``due_at``), ``queued`` (in the outbox),
    ``task`` (a care task was created), ``holdout`` (the control group: deliberately not
    sent), ``skipped`` (``skip_reason`` says why) or ``failed``.
    """

    __tablename__ = "campaign_sends"
    __table_args__ = (
        UniqueConstraint("campaign_id", "customer_id", "occurrence"),
        Index("ix_campaign_sends_status_due", "status", "due_at"),
        Index("ix_campaign_sends_customer_processed", "customer_id", "processed_at"),
        Index("ix_campaign_sends_campaign_status", "campaign_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    occurrence: Mapped[str] = mapped_column(String(100))
    """Which firing of the trigger: ``once``, ``cron:2026-05-04T02:00Z``, ``birthday:2026``,
    ``ticket:42``, ``contract_end:2026-06-30`` …"""
    status: Mapped[str] = mapped_column(String(20), default="pending")
    due_at: Mapped[datetime]
    event_at: Mapped[datetime | None]
    """When the triggering event happened (resolution, birthday, transition …)."""
    variant: Mapped[str | None] = mapped_column(String(50))
    holdout: Mapped[bool] = mapped_column(Boolean, default=False)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id", ondelete="SET NULL"))
    channel: Mapped[Channel | None]
    postponed: Mapped[int] = mapped_column(Integer, default=0)
    """How often quiet hours moved it."""
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id", ondelete="SET NULL"))
    interaction_id: Mapped[int | None] = mapped_column(
        ForeignKey("interactions.id", ondelete="SET NULL"))
    care_task_id: Mapped[int | None] = mapped_column(
        ForeignKey("care_tasks.id", ondelete="SET NULL"))
    skip_reason: Mapped[str | None] = mapped_column(String(50))
    detail: Mapped[str | None] = mapped_column(String(500))
    processed_at: Mapped[datetime | None]
    """When it was queued, turned into a task, held out or skipped: the reference time of
    the effect evaluation (replies, clicks, CSAT after it)."""
    clicked_at: Mapped[datetime | None]
    click_count: Mapped[int] = mapped_column(Integer, default=0)
    opted_out_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class CareTask(Base):
    """Something an agent should do for a customer (call a VIP after a complaint …).

    Reminders: at ``reminder_at`` the scheduler publishes ``care_task.due`` once and sets
    ``reminded_at``. ``status``: ``open``, ``done`` or ``cancelled``; the ``outcome``
    (``reached``, ``no_answer``, ``resolved``, ``declined`` or the team's own words) is
    recorded when it is done.
    """

    __tablename__ = "care_tasks"
    __table_args__ = (Index("ix_care_tasks_status_reminder", "status", "reminder_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    campaign_id: Mapped[int | None] = mapped_column(
        ForeignKey("campaigns.id", ondelete="SET NULL"), index=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id", ondelete="SET NULL"))
    assignee_id: Mapped[int | None] = mapped_column(
        ForeignKey("agents.id", ondelete="SET NULL"), index=True)
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id", ondelete="SET NULL"))
    assignment_reason: Mapped[str | None] = mapped_column(String(50))
    kind: Mapped[str] = mapped_column(String(50), default="call")
    title: Mapped[str] = mapped_column(String(300))
    note: Mapped[str | None] = mapped_column(Text)
    due_at: Mapped[datetime]
    reminder_at: Mapped[datetime | None]
    reminded_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(20), default="open")
    outcome: Mapped[str | None] = mapped_column(String(50))
    outcome_note: Mapped[str | None] = mapped_column(Text)
    completed_at: Mapped[datetime | None]
    completed_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class FeedbackResponse(Base):
    """A customer's answer: a CSAT score (1–5), an NPS score (0–10) or a comment.

    One answer per survey send and kind (a second answer replaces the first); answers
    without a survey (an IVR rating, free feedback) have no ``send_id``. ``source_ref``
    is the idempotency key of where it came from (the inbound envelope, the web form).
    A comment is classified (``complaint``, ``suggestion``, ``praise``, ``question``)
    by the keyword rules of ``[feedback]``; a complaint opens a ticket
    (``complaint_ticket_id``).
    """

    __tablename__ = "feedback"
    __table_args__ = (
        UniqueConstraint("send_id", "kind"),
        Index("ix_feedback_created_at", "created_at"),
        Index("ix_feedback_updated_at", "updated_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    send_id: Mapped[int | None] = mapped_column(
        ForeignKey("campaign_sends.id", ondelete="SET NULL"))
    campaign_id: Mapped[int | None] = mapped_column(
        ForeignKey("campaigns.id", ondelete="SET NULL"), index=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(20))
    """``csat``, ``nps`` or ``comment``."""
    score: Mapped[int | None] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text)
    classification: Mapped[str | None] = mapped_column(String(20))
    classification_hits: Mapped[list[str]] = mapped_column(default=list)
    channel: Mapped[Channel]
    source_ref: Mapped[str | None] = mapped_column(String(200), unique=True)
    complaint_ticket_id: Mapped[int | None] = mapped_column(
        ForeignKey("tickets.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
