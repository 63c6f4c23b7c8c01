"""Customer feedback: survey answers (CSAT 1–5, NPS 0–10), comments, opt-outs, statistics.

Answers arrive on every channel and all end here:

- e-mail: a signed link to the feedback page (``contact_center.unsubscribe``);
- Telegram: an inline-keyboard press, ``csat:5`` or ``csat:5:<send id>``
  (:func:`parse_button`);
- web chat and Telegram text: a message that is just the score (``5``, ``５``, ``5分``,
  ``五``) while a survey sent on that channel is open (:func:`parse_score_text`);
- the phone: digits keyed in an IVR survey (:func:`record_ivr_rating`).

A survey send takes one answer per kind; a later answer replaces the earlier one. A
comment is classified with the ``[feedback]`` keyword rules; the caller turns a
complaint into a ticket. Everything works in the caller's transaction with the caller's
``now``.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.errors import ValidationError
from crm_core.models import (
    Campaign,
    CampaignSend,
    Channel,
    Customer,
    FeedbackResponse,
    Ticket,
    TicketStatus,
)
from crm_core.services import audit
from crm_core.services.campaign_config import SURVEY_KINDS, FeedbackSpec
from crm_core.services.campaigns import QUEUED, mark_opted_out

log = structlog.get_logger(__name__)

BUTTON = re.compile(r"^(csat|nps):(\d{1,2})(?::(\d{1,12}))?$")
_SCORE_TEXT = re.compile(r"^(\d{1,2})\s*(?:分|星|points?|stars?)?$")
_CHINESE_DIGITS = {"零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6,
                   "七": 7, "八": 8, "九": 9, "十": 10}
DEFAULT_WINDOW = timedelta(days=3)


@dataclass(frozen=True)
class SurveyAnswer:
    """A score read from a button or a text, and the survey send it names (if any)."""

    kind: str
    score: int
    send_id: int | None = None


def check_score(kind: str, score: int) -> int:
    """The score, if it is on the kind's scale; ValidationError otherwise."""
    if kind not in SURVEY_KINDS:
        raise ValidationError("kind", kind, f"use one of {', '.join(SURVEY_KINDS)}")
    low, high = SURVEY_KINDS[kind]
    if not low <= score <= high:
        raise ValidationError("score", score, f"{kind} scores go from {low} to {high}")
    return score


def parse_button(data: str | None) -> SurveyAnswer | None:
    """``csat:5`` / ``nps:9:123`` from an inline-keyboard press; None for other buttons
    or a score off the scale."""
    match = BUTTON.match((data or "").strip())
    if match is None:
        return None
    kind, score = match.group(1), int(match.group(2))
    low, high = SURVEY_KINDS[kind]
    if not low <= score <= high:
        return None
    return SurveyAnswer(kind, score, int(match.group(3)) if match.group(3) else None)


def parse_score_text(text: str | None, kind: str) -> int | None:
    """A chat message that is only a score on the kind's scale (``5``, ``５``, ``5分``,
    ``五``, ``10``), else None: anything longer is a message, not an answer."""
    cleaned = unicodedata.normalize("NFKC", text or "").strip().strip("。.!！ ").lower()
    if not cleaned:
        return None
    match = _SCORE_TEXT.match(cleaned)
    if match is not None:
        score = int(match.group(1))
    elif cleaned.rstrip("分星") in _CHINESE_DIGITS:
        score = _CHINESE_DIGITS[cleaned.rstrip("分星")]
    else:
        return None
    low, high = SURVEY_KINDS[kind]
    return score if low <= score <= high else None


def survey_kind(campaign: Campaign) -> str:
    """The survey kind of a survey campaign (``csat`` unless the file says ``nps``)."""
    survey = (campaign.definition or {}).get("survey") or {}
    kind = survey.get("kind", "csat") if isinstance(survey, dict) else "csat"
    return kind if kind in SURVEY_KINDS else "csat"


def survey_window(campaign: Campaign, default: timedelta = DEFAULT_WINDOW) -> timedelta:
    """How long a survey campaign's answers are taken."""
    survey = (campaign.definition or {}).get("survey") or {}
    days = survey.get("window_days") if isinstance(survey, dict) else None
    return timedelta(days=float(days)) if isinstance(days, int | float) else default


async def open_survey(
    session: AsyncSession, customer_id: int, *, now: datetime,
    channel: Channel | None = None, default_window: timedelta = DEFAULT_WINDOW,
) -> tuple[CampaignSend, Campaign] | None:
    """The customer's newest survey still open for answers (on ``channel`` if given)."""
    query = (
        select(CampaignSend, Campaign)
        .join(Campaign, Campaign.id == CampaignSend.campaign_id)
        .where(CampaignSend.customer_id == customer_id, CampaignSend.status == QUEUED,
               Campaign.action == "survey",
               CampaignSend.processed_at >= now - timedelta(days=365),
               CampaignSend.processed_at <= now)
        .order_by(CampaignSend.processed_at.desc(), CampaignSend.id.desc())
        .limit(5)
    )
    if channel is not None:
        query = query.where(CampaignSend.channel == channel)
    for send, campaign in await session.execute(query):
        assert send.processed_at is not None
        if now - send.processed_at <= survey_window(campaign, default_window):
            return send, campaign
    return None


async def survey_of_send(session: AsyncSession, send_id: int, customer_id: int,
                         ) -> tuple[CampaignSend, Campaign] | None:
    """A survey send by id, only if it was sent to this customer."""
    row = (await session.execute(
        select(CampaignSend, Campaign)
        .join(Campaign, Campaign.id == CampaignSend.campaign_id)
        .where(CampaignSend.id == send_id, CampaignSend.customer_id == customer_id,
               Campaign.action == "survey"))).first()
    return (row[0], row[1]) if row else None


async def record_answer(
    session: AsyncSession, *, customer_id: int, kind: str, score: int, channel: Channel,
    now: datetime, send: CampaignSend | None = None, source_ref: str | None = None,
    ticket_id: int | None = None,
) -> FeedbackResponse:
    """Keep a score: one per survey send and kind (a new answer replaces the old one)."""
    check_score(kind, score)
    if source_ref is not None:
        existing = await session.scalar(
            select(FeedbackResponse).where(FeedbackResponse.source_ref == source_ref))
        if existing is not None:
            return existing
    row: FeedbackResponse | None = None
    if send is not None:
        row = await session.scalar(select(FeedbackResponse).where(
            FeedbackResponse.send_id == send.id, FeedbackResponse.kind == kind))
    if row is None:
        row = FeedbackResponse(
            customer_id=customer_id, kind=kind, channel=channel, created_at=now,
            send_id=send.id if send else None, campaign_id=send.campaign_id if send else None,
            ticket_id=ticket_id if ticket_id is not None else (send.ticket_id if send else None),
            classification_hits=[])
        session.add(row)
    row.score = score
    row.channel = channel
    row.source_ref = source_ref or row.source_ref
    row.updated_at = now
    await session.flush()
    log.info("feedback.answer", customer_id=customer_id, kind=kind, score=score,
             channel=channel.value, send_id=row.send_id, campaign_id=row.campaign_id)
    return row


async def record_comment(
    session: AsyncSession, spec: FeedbackSpec, *, customer_id: int, text: str,
    channel: Channel, now: datetime, answer: FeedbackResponse | None = None,
    send: CampaignSend | None = None, source_ref: str | None = None,
) -> FeedbackResponse:
    """Keep a free-text comment, classified; on the answer it follows when there is one."""
    comment = text.strip()[:4000]
    if not comment:
        raise ValidationError("comment", text, "empty comment")
    classification, hits = spec.classify(comment)
    if answer is not None:
        row = answer
    else:
        row = FeedbackResponse(
            customer_id=customer_id, kind="comment", channel=channel, created_at=now,
            send_id=send.id if send else None, campaign_id=send.campaign_id if send else None,
            ticket_id=send.ticket_id if send else None, source_ref=source_ref,
            classification_hits=[])
        session.add(row)
    row.comment = comment
    row.classification = classification
    row.classification_hits = hits
    row.updated_at = now
    await session.flush()
    log.info("feedback.comment", customer_id=customer_id, classification=classification,
             channel=channel.value, feedback_id=row.id)
    return row


async def record_flow_rating(
    session: AsyncSession, *, customer_id: int, answer: str, channel: Channel,
    source_ref: str, now: datetime, kind: str = "csat",
) -> FeedbackResponse | None:
    """A rating a bot flow collected (its ``survey`` action): digits keyed on the phone,
    a number typed or a button pressed in a chat.

    The answer must be one score on the scale (``5``, ``５``, ``5分``; ``10`` for NPS);
    anything else is ignored (None). It answers the customer's open survey if there is
    one, else it is kept on its own with the customer's latest resolved ticket.
    Idempotent per ``source_ref`` (one call, one bot session).
    """
    score = parse_score_text(answer, kind)
    if score is None:
        return None
    found = await open_survey(session, customer_id, now=now)
    send = found[0] if found else None
    ticket_id = None
    if send is None:
        ticket_id = await session.scalar(
            select(Ticket.id).where(Ticket.customer_id == customer_id,
                                    Ticket.status.in_([TicketStatus.RESOLVED,
                                                       TicketStatus.CLOSED]))
            .order_by(Ticket.resolved_at.desc().nulls_last(), Ticket.id.desc()).limit(1))
    return await record_answer(session, customer_id=customer_id, kind=kind, score=score,
                               channel=channel, now=now, send=send,
                               source_ref=f"{source_ref}:{kind}"[:200], ticket_id=ticket_id)


async def record_ivr_rating(
    session: AsyncSession, *, customer_id: int, digits: str, call_id: str, now: datetime,
    kind: str = "csat",
) -> FeedbackResponse | None:
    """A rating keyed on the phone after a call (see :func:`record_flow_rating`)."""
    return await record_flow_rating(session, customer_id=customer_id, answer=digits,
                                    channel=Channel.PHONE, source_ref=f"call:{call_id}",
                                    now=now, kind=kind)


async def opt_out(
    session: AsyncSession, customer: Customer, channel: Channel, *, now: datetime,
    actor: str, send_id: int | None = None, everything: bool = False,
) -> bool:
    """The customer asked for no more automated messages on ``channel`` (or at all, with
    ``everything``: do-not-contact). Audited; the opt-out is attributed to the send (the
    one named, else the latest). Returns whether anything changed."""
    before = {"marketing_opt_in": dict(customer.marketing_opt_in or {}),
              "do_not_contact": customer.do_not_contact}
    consent = dict(customer.marketing_opt_in or {})
    consent[channel.value] = False
    customer.marketing_opt_in = consent
    if everything:
        customer.do_not_contact = True
    after = {"marketing_opt_in": consent, "do_not_contact": customer.do_not_contact}
    old, new = audit.diff(before, after)
    if new:
        customer.updated_at = now
        audit.record(session, actor=actor, action="opt_out", entity_type="customer",
                     entity_id=customer.id, before=old, after=new)
    await mark_opted_out(session, customer.id, now=now, send_id=send_id)
    await session.flush()
    log.info("feedback.opt_out", customer_id=customer.id, channel=channel.value,
             everything=everything, changed=bool(new))
    return bool(new)


@dataclass
class FeedbackStats:
    """Satisfaction over a period: averages, NPS, and what the comments were about."""

    csat_responses: int = 0
    csat_average: float | None = None
    csat_distribution: dict[int, int] = field(default_factory=dict)
    nps_responses: int = 0
    nps: float | None = None
    """Promoters (9–10) minus detractors (0–6), in percent of the answers: −100 to 100."""
    promoters: int = 0
    passives: int = 0
    detractors: int = 0
    classes: dict[str, int] = field(default_factory=dict)
    complaints_with_ticket: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "csat_responses": self.csat_responses, "csat_average": self.csat_average,
            "csat_distribution": self.csat_distribution, "nps_responses": self.nps_responses,
            "nps": self.nps, "promoters": self.promoters, "passives": self.passives,
            "detractors": self.detractors, "classes": self.classes,
            "complaints_with_ticket": self.complaints_with_ticket,
        }


def nps_of(scores: list[int]) -> float | None:
    """The Net Promoter Score of 0–10 answers (None without answers)."""
    if not scores:
        return None
    promoters = sum(1 for s in scores if s >= 9)
    detractors = sum(1 for s in scores if s <= 6)
    return round(100 * (promoters - detractors) / len(scores), 1)


async def feedback_statistics(
    session: AsyncSession, *, since: datetime | None = None, until: datetime | None = None,
    campaign_id: int | None = None,
) -> FeedbackStats:
    """Average CSAT, NPS and comment classes, over a period and/or one campaign."""
    conditions = []
    if since is not None:
        conditions.append(FeedbackResponse.created_at >= since)
    if until is not None:
        conditions.append(FeedbackResponse.created_at < until)
    if campaign_id is not None:
        conditions.append(FeedbackResponse.campaign_id == campaign_id)
    stats = FeedbackStats()
    rows = await session.execute(
        select(FeedbackResponse.kind, FeedbackResponse.score, func.count())
        .where(*conditions, FeedbackResponse.score.is_not(None))
        .group_by(FeedbackResponse.kind, FeedbackResponse.score))
    csat: Counter[int] = Counter()
    nps: list[int] = []
    for kind, score, count in rows:
        if kind == "csat":
            csat[int(score)] += int(count)
        elif kind == "nps":
            nps.extend([int(score)] * int(count))
    stats.csat_responses = sum(csat.values())
    if stats.csat_responses:
        total = sum(score * count for score, count in csat.items())
        stats.csat_average = round(total / stats.csat_responses, 2)
    stats.csat_distribution = dict(sorted(csat.items()))
    stats.nps_responses = len(nps)
    stats.nps = nps_of(nps)
    stats.promoters = sum(1 for s in nps if s >= 9)
    stats.detractors = sum(1 for s in nps if s <= 6)
    stats.passives = stats.nps_responses - stats.promoters - stats.detractors
    for classification, count, with_ticket in await session.execute(
            select(FeedbackResponse.classification, func.count(),
                   func.count(FeedbackResponse.complaint_ticket_id))
            .where(*conditions, FeedbackResponse.classification.is_not(None))
            .group_by(FeedbackResponse.classification)):
        stats.classes[str(classification)] = int(count)
        if classification == "complaint":
            stats.complaints_with_ticket = int(with_ticket)
    return stats
