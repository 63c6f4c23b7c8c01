"""care-replies and care-complaints: customers answering care campaigns.

``care-replies`` runs after ``identify``. It takes, in this order:

1. a survey button press (``csat:5`` or ``csat:5:<send id>`` from a Telegram keyboard):
   the score is recorded;
2. an opt-out word as the whole message (``STOP``, ``退订``, ``TD`` …): automated
   messages stop on that channel (``marketing_opt_in[channel] = false``, audited);
3. on a chat channel with a survey open there: a message that is only a score (``5``,
   ``５``, ``5分``) is recorded; a text soon after an answer is its comment, classified
   by the ``[feedback]`` keyword rules.

Answers and opt-outs are logged as interactions like every message, but open no ticket
and get no auto-reply (the envelope continues as ``log_only``). A comment classified as
a complaint continues normally, and ``care-complaints`` (after ``ticket``) makes its
ticket a high-priority complaint — as it does for the complaint envelopes that the
feedback page publishes (``metadata.feedback_class = "complaint"``).

The ``[feedback]`` settings come from :func:`configure_care` (``serve`` and the
scheduler call it with the loaded campaigns file); a worker process that did not call it
reads the file named by ``CC_CAMPAIGNS__FILE``, else the shipped ``config/campaigns.toml``.
"""

from __future__ import annotations

import os
from functools import cache

import structlog
from sqlalchemy import select, update

from crm_core.models import Channel, FeedbackResponse, TicketCategory, TicketPriority
from crm_core.services.campaign_config import (
    CampaignConfigError,
    FeedbackSpec,
    default_campaigns,
    load_campaigns,
)
from crm_core.services.feedback import (
    open_survey,
    opt_out,
    parse_button,
    parse_score_text,
    record_answer,
    record_comment,
    record_flow_rating,
    survey_kind,
    survey_of_send,
)
from routing.context import RoutingContext
from routing.events import TICKET_UPDATED
from routing.rules import PRIORITY_ORDER

log = structlog.get_logger(__name__)

CHAT_CHANNELS = (Channel.TELEGRAM, Channel.WEBCHAT)
COMPLAINT_HIT = "feedback:class:complaint"
_FEEDBACK_ID = "feedback:id:"
_configured: FeedbackSpec | None = None


def configure_care(spec: FeedbackSpec | None) -> None:
    """Use these ``[feedback]`` settings in this process (None: back to the default)."""
    global _configured
    _configured = spec


@cache
def _from_environment(path: str | None) -> FeedbackSpec:
    try:
        return load_campaigns(path).feedback if path else default_campaigns().feedback
    except CampaignConfigError as exc:  # settings validation stops such a process first
        log.error("care.campaigns_file_unusable", error=str(exc))
        return FeedbackSpec(opt_out_words=frozenset({"stop", "退订", "td"}))


def feedback_spec() -> FeedbackSpec:
    """The ``[feedback]`` settings in force."""
    if _configured is not None:
        return _configured
    return _from_environment(os.environ.get("CC_CAMPAIGNS__FILE"))


def _log_only(ctx: RoutingContext, reason: str) -> None:
    """Log the message but open no ticket and send no auto-reply."""
    metadata = {**ctx.envelope.metadata, "log_only": True, "care": reason}
    ctx.envelope = ctx.envelope.model_copy(update={"metadata": metadata})


async def care_replies(ctx: RoutingContext) -> None:
    """Survey answers, comments and opt-outs (see the module docstring)."""
    envelope = ctx.envelope
    if envelope.automated or envelope.metadata.get("feedback_id") or envelope.metadata.get(
            "log_only"):
        return
    customer = ctx.require_customer()
    session = ctx.session
    now = envelope.received_at
    spec = feedback_spec()
    survey = envelope.metadata.get("survey_answer")
    if isinstance(survey, dict):  # a bot flow's survey action on the phone
        kind = "nps" if survey.get("scale") == "nps" else "csat"
        recorded = await record_flow_rating(
            session, customer_id=customer.id, answer=str(survey.get("answer") or ""),
            channel=envelope.channel, source_ref=str(survey.get("ref") or envelope.idempotency_key),
            now=now, kind=kind)
        ctx.hit(f"feedback:{kind}:{recorded.score if recorded else 'not-a-score'}")
        _log_only(ctx, "survey-answer")
        return
    answer = parse_button(str(envelope.metadata.get("button") or "")) if envelope.metadata.get(
        "button") else None
    if answer is not None:
        found = (await survey_of_send(session, answer.send_id, customer.id) if answer.send_id
                 else await open_survey(session, customer.id, now=now,
                                        channel=envelope.channel,
                                        default_window=spec.survey_window))
        await record_answer(session, customer_id=customer.id, kind=answer.kind,
                            score=answer.score, channel=envelope.channel, now=now,
                            send=found[0] if found else None,
                            source_ref=envelope.idempotency_key[:200])
        ctx.hit(f"feedback:{answer.kind}:{answer.score}")
        _log_only(ctx, "survey-answer")
        return
    if envelope.channel != Channel.PHONE and spec.is_opt_out(envelope.text):
        await opt_out(session, customer, envelope.channel, now=now, actor="customer:reply")
        ctx.hit(f"opt-out:{envelope.channel.value}")
        _log_only(ctx, "opt-out")
        return
    if envelope.channel not in CHAT_CHANNELS or not envelope.text:
        return
    found = await open_survey(session, customer.id, now=now, channel=envelope.channel,
                              default_window=spec.survey_window)
    if found is None:
        return
    send, campaign = found
    kind = survey_kind(campaign)
    score = parse_score_text(envelope.text, kind)
    if score is not None:
        await record_answer(session, customer_id=customer.id, kind=kind, score=score,
                            channel=envelope.channel, now=now, send=send,
                            source_ref=envelope.idempotency_key[:200])
        ctx.hit(f"feedback:{kind}:{score}")
        _log_only(ctx, "survey-answer")
        return
    given = await session.scalar(select(FeedbackResponse).where(
        FeedbackResponse.send_id == send.id, FeedbackResponse.kind == kind))
    if given is None or given.comment or now - given.updated_at > spec.comment_window:
        return
    row = await record_comment(session, spec, customer_id=customer.id, text=envelope.text,
                               channel=envelope.channel, now=now, answer=given)
    ctx.hit(f"feedback:comment:{row.classification or 'unclassified'}")
    ctx.hit(f"{_FEEDBACK_ID}{row.id}")
    if row.classification == "complaint":
        ctx.hit(COMPLAINT_HIT)
    elif row.classification == "praise":
        _log_only(ctx, "feedback-praise")


async def care_complaints(ctx: RoutingContext) -> None:
    """A complaint from feedback opens (or raises) a high-priority complaint ticket."""
    envelope = ctx.envelope
    ticket = ctx.ticket
    from_page = envelope.metadata.get("feedback_class") == "complaint"
    if ticket is None or not (from_page or COMPLAINT_HIT in ctx.hits):
        return
    ticket.category = TicketCategory.COMPLAINT
    if PRIORITY_ORDER.index(ticket.priority) < PRIORITY_ORDER.index(TicketPriority.HIGH):
        ticket.priority = TicketPriority.HIGH
        if ctx.ticket_created:
            rules = ctx.config.rules
            first_due, resolution_due = rules.sla.due_times(
                ticket.priority, envelope.received_at, rules.calendar)
            ticket.first_response_due_at = first_due
            ticket.resolution_due_at = resolution_due
    for tag in ("feedback", "complaint"):
        if tag not in ticket.tags:
            ticket.tags = [*ticket.tags, tag]
    feedback_ids = [int(h[len(_FEEDBACK_ID):]) for h in ctx.hits if h.startswith(_FEEDBACK_ID)]
    if isinstance(envelope.metadata.get("feedback_id"), int):
        feedback_ids.append(envelope.metadata["feedback_id"])
    if feedback_ids:
        await ctx.session.execute(
            update(FeedbackResponse).where(FeedbackResponse.id.in_(feedback_ids))
            .values(complaint_ticket_id=ticket.id)
            .execution_options(synchronize_session=False))
    ctx.hit(f"feedback:complaint-ticket:{ticket.priority.value}")
    ctx.emit(TICKET_UPDATED, ticket_id=ticket.id, change="feedback-complaint")
