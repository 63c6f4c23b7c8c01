"""Effect evaluation of care campaigns: what was sent, delivered, skipped, and what the
customers did afterwards, for the messaged group against the holdout."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Interval, and_, bindparam, case, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.models import (
    CampaignSend,
    CareTask,
    Direction,
    FeedbackResponse,
    Interaction,
    OutboxMessage,
)
from crm_core.services.campaigns import FAILED, HOLDOUT, PENDING, QUEUED, SKIPPED, TASK


def _plus(session: AsyncSession, column: Any, delta: timedelta) -> Any:
    """``column + delta`` in SQL on both databases."""
    if session.get_bind().dialect.name == "postgresql":
        return column + bindparam(None, delta, type_=Interval())
    seconds = f"+{delta.total_seconds():.0f} seconds"
    return func.strftime("%Y-%m-%d %H:%M:%f", column, seconds)


@dataclass
class GroupResults:
    """The outcome of one group (the messaged customers, or the holdout)."""

    size: int = 0
    replied: int = 0
    csat_responses: int = 0
    csat_average: float | None = None

    @property
    def reply_rate(self) -> float | None:
        """Replied / size."""
        return self.replied / self.size if self.size else None


@dataclass
class CampaignResults:
    """Effect evaluation of a campaign (see :func:`campaign_results`)."""

    campaign_id: int
    planned: int = 0
    pending: int = 0
    sent: int = 0
    """Messages handed to the outbox."""
    delivered: int = 0
    """Outbox messages the channel accepted."""
    failed: int = 0
    tasks: int = 0
    tasks_done: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    opted_out: int = 0
    clicked: int = 0
    treatment: GroupResults = field(default_factory=GroupResults)
    holdout: GroupResults = field(default_factory=GroupResults)
    variants: dict[str, dict[str, int]] = field(default_factory=dict)
    survey_responses: int = 0
    survey_average: float | None = None

    @property
    def skipped_total(self) -> int:
        """Every skip, whatever the reason."""
        return sum(self.skipped.values())

    @property
    def reply_lift(self) -> float | None:
        """Reply rate of the messaged group minus the holdout's (None without a holdout)."""
        treated, held = self.treatment.reply_rate, self.holdout.reply_rate
        if treated is None or held is None:
            return None
        return treated - held

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        def group(g: GroupResults) -> dict[str, Any]:
            return {"size": g.size, "replied": g.replied, "reply_rate": g.reply_rate,
                    "csat_responses": g.csat_responses, "csat_average": g.csat_average}

        return {
            "campaign_id": self.campaign_id, "planned": self.planned, "pending": self.pending,
            "sent": self.sent, "delivered": self.delivered, "failed": self.failed,
            "tasks": self.tasks, "tasks_done": self.tasks_done, "skipped": self.skipped,
            "opted_out": self.opted_out, "clicked": self.clicked,
            "treatment": group(self.treatment), "holdout": group(self.holdout),
            "reply_lift": self.reply_lift, "variants": self.variants,
            "survey_responses": self.survey_responses, "survey_average": self.survey_average,
        }


async def campaign_results(session: AsyncSession, campaign_id: int, *,
                           reply_window: timedelta = timedelta(days=7)) -> CampaignResults:
    """What a campaign did and achieved.

    - planned / pending / sent (queued to the outbox) / skipped by reason / tasks;
    - delivered and failed: the outbox's verdict on the sent messages (failed also counts
      sends that could not be rendered);
    - opted out (unsubscribe link or a STOP reply attributed to the send), clicked
      (a tracked link opened);
    - replied: customers with an inbound interaction within ``reply_window`` after the
      send (for the holdout: after the moment it would have been sent);
    - CSAT after: CSAT answers those customers gave in the same window;
    - treatment vs holdout: the same measures for both groups, so the difference is the
      campaign's effect.
    """
    results = CampaignResults(campaign_id)
    sends = CampaignSend.__table__.c
    rows = await session.execute(
        select(sends.status, sends.skip_reason, func.count())
        .where(sends.campaign_id == campaign_id)
        .group_by(sends.status, sends.skip_reason))
    for status, reason, count in rows:
        results.planned += count
        if status == PENDING:
            results.pending += count
        elif status == QUEUED:
            results.sent += count
        elif status == TASK:
            results.tasks += count
        elif status == FAILED:
            results.failed += count
        elif status == SKIPPED:
            results.skipped[reason or "unknown"] = results.skipped.get(reason or "unknown",
                                                                       0) + count
    outbox = await session.execute(
        select(OutboxMessage.status, func.count())
        .join(CampaignSend, CampaignSend.outbox_id == OutboxMessage.id)
        .where(CampaignSend.campaign_id == campaign_id)
        .group_by(OutboxMessage.status))
    for status, count in outbox:
        if status == "sent":
            results.delivered += count
        elif status == "failed":
            results.failed += count
    results.opted_out, results.clicked = (await session.execute(
        select(func.count(sends.opted_out_at), func.count(sends.clicked_at))
        .where(sends.campaign_id == campaign_id))).one()
    results.tasks_done = int(await session.scalar(
        select(func.count()).select_from(CareTask)
        .where(CareTask.campaign_id == campaign_id, CareTask.status == "done")) or 0)

    window_end = _plus(session, CampaignSend.processed_at, reply_window)
    replied = exists().where(
        Interaction.customer_id == CampaignSend.customer_id,
        Interaction.direction == Direction.INBOUND,
        Interaction.occurred_at > CampaignSend.processed_at,
        Interaction.occurred_at <= window_end,
    )
    in_group = and_(CampaignSend.campaign_id == campaign_id,
                    CampaignSend.status.in_([QUEUED, TASK, HOLDOUT]),
                    CampaignSend.processed_at.is_not(None))
    is_holdout = CampaignSend.status == HOLDOUT
    for held, size, answered in await session.execute(
            select(is_holdout, func.count(), func.sum(case((replied, 1), else_=0)))
            .where(in_group).group_by(is_holdout)):
        group = results.holdout if held else results.treatment
        group.size, group.replied = int(size), int(answered or 0)
    csat = await session.execute(
        select(is_holdout, func.count(FeedbackResponse.id), func.avg(FeedbackResponse.score))
        .join(FeedbackResponse, and_(
            FeedbackResponse.customer_id == CampaignSend.customer_id,
            FeedbackResponse.kind == "csat",
            FeedbackResponse.created_at > CampaignSend.processed_at,
            FeedbackResponse.created_at <= window_end))
        .where(in_group).group_by(is_holdout))
    for held, count, average in csat:
        group = results.holdout if held else results.treatment
        group.csat_responses = int(count)
        group.csat_average = round(float(average), 2) if average is not None else None
    variants: dict[str, dict[str, int]] = defaultdict(dict)
    for variant, status, count in await session.execute(
            select(sends.variant, sends.status, func.count())
            .where(sends.campaign_id == campaign_id, sends.variant.is_not(None))
            .group_by(sends.variant, sends.status)):
        variants[variant][status] = int(count)
    for variant, answered in await session.execute(
            select(CampaignSend.variant, func.sum(case((replied, 1), else_=0)))
            .where(in_group, CampaignSend.variant.is_not(None), CampaignSend.status == QUEUED)
            .group_by(CampaignSend.variant)):
        variants[variant]["replied"] = int(answered or 0)
    results.variants = dict(variants)
    survey = (await session.execute(
        select(func.count(FeedbackResponse.id), func.avg(FeedbackResponse.score))
        .where(FeedbackResponse.campaign_id == campaign_id,
               FeedbackResponse.score.is_not(None)))).one()
    results.survey_responses = int(survey[0])
    results.survey_average = round(float(survey[1]), 2) if survey[1] is not None else None
    return results
