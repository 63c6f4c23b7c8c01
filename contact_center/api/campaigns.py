"""``/campaigns`` (list, trigger), ``/feedback`` (list) and ``/reports/summary`` (counts).

Reports stay a thin endpoint over existing services; the analytics module owns the rest.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from contact_center.api.common import database, decode_cursor, next_cursor, settings
from contact_center.api.errors import ApiError
from contact_center.api.framework import ApiCall, ApiRouter
from contact_center.api.models import (
    CampaignList,
    CampaignOut,
    FeedbackFilter,
    FeedbackOut,
    FeedbackPage,
    SummaryOut,
    TriggerIn,
    TriggerOut,
)
from crm_core.models import (
    Campaign,
    Conversation,
    Customer,
    FeedbackResponse,
    Interaction,
    Ticket,
    TicketStatus,
    utcnow,
)
from crm_core.services import audit
from crm_core.services.campaigns import Planned, insert_sends
from crm_core.services.feedback import feedback_statistics

router = ApiRouter()


@router.route("GET", "/campaigns", scope="campaigns:read", summary="List campaigns",
              tag="campaigns", response=CampaignList)
async def list_campaigns(call: ApiCall) -> CampaignList:
    """Campaigns as the scheduler synchronised them from config/campaigns.toml."""
    async with database(call).sessions() as session:
        rows = await session.scalars(select(Campaign).order_by(Campaign.id))
        return CampaignList(items=[CampaignOut.model_validate(c, from_attributes=True)
                                   for c in rows])


@router.route("POST", "/campaigns/{campaign_id}/trigger", scope="campaigns:write",
              summary="Send a campaign now to given customers", tag="campaigns",
              body=TriggerIn, response=TriggerOut, status=202, errors=(409,))
async def trigger_campaign(call: ApiCall) -> TriggerOut:
    """Plans one send per customer, due now; the scheduler delivers them, checking consent,
    quiet hours and frequency caps at send time. The same ``occurrence`` never sends twice
    to one customer."""
    from contact_center.scheduler import load_config

    body: TriggerIn = call.body
    if any(not 1 <= i < 2**31 for i in body.customer_ids):
        raise ApiError(400, "validation_error", "customer ids are positive", "customer_ids")
    now = utcnow()
    occurrence = "api:" + (body.occurrence or now.strftime("%Y%m%dT%H%M%S.%f"))
    async with database(call).transaction() as session:
        campaign = await session.get(Campaign, call.params["campaign_id"])
        if campaign is None:
            raise ApiError(404, "not_found", "no such campaign")
        spec = load_config(settings(call)).get(campaign.key)
        if spec is None or not campaign.enabled or not spec.enabled:
            raise ApiError(409, "invalid_state", "the campaign is not enabled")
        known = set(await session.scalars(select(Customer.id).where(
            Customer.id.in_(body.customer_ids), Customer.deleted_at.is_(None))))
        missing = sorted(set(body.customer_ids) - known)
        if missing:
            raise ApiError(400, "validation_error", f"unknown customers: {missing[:10]}",
                           "customer_ids")
        planned = await insert_sends(
            session, campaign, spec, [Planned(i, occurrence, now) for i in sorted(known)],
            now=now)
        audit.record(session, actor=call.actor, action="trigger", entity_type="campaign",
                     entity_id=campaign.id, after={"occurrence": occurrence,
                                                   "customers": len(known),
                                                   "planned": planned})
    return TriggerOut(campaign_id=call.params["campaign_id"], planned=planned)


@router.route("GET", "/feedback", scope="campaigns:read", summary="List feedback",
              tag="feedback", query=FeedbackFilter, response=FeedbackPage)
async def list_feedback(call: ApiCall) -> FeedbackPage:
    """Survey scores and comments, newest first."""
    f: FeedbackFilter = call.query
    stmt = select(FeedbackResponse)
    for column, value in ((FeedbackResponse.customer_id, f.customer_id),
                          (FeedbackResponse.campaign_id, f.campaign_id),
                          (FeedbackResponse.kind, f.kind)):
        if value is not None:
            stmt = stmt.where(column == value)
    after = decode_cursor(f.cursor)
    if after is not None:
        stmt = stmt.where(FeedbackResponse.id < after)
    async with database(call).sessions() as session:
        rows = list(await session.scalars(stmt.order_by(FeedbackResponse.id.desc())
                                          .limit(f.limit + 1)))
    return FeedbackPage(items=[FeedbackOut.model_validate(r, from_attributes=True)
                               for r in rows[: f.limit]],
                        next_cursor=next_cursor(rows, f.limit))


@router.route("GET", "/reports/summary", scope="reports:read", summary="Basic counts",
              tag="reports", response=SummaryOut)
async def summary(call: ApiCall) -> SummaryOut:
    """Customers, open tickets, tickets by status, conversations by channel, messages of
    the last 24 hours, CSAT and NPS."""
    async with database(call).sessions() as session:
        customers = await session.scalar(select(func.count()).select_from(Customer).where(
            Customer.deleted_at.is_(None), Customer.merged_into_id.is_(None)))
        by_status = {str(getattr(s, "value", s)): int(n) for s, n in await session.execute(
            select(Ticket.status, func.count()).group_by(Ticket.status))}
        by_channel = {str(getattr(c, "value", c)): int(n) for c, n in await session.execute(
            select(Conversation.channel, func.count()).group_by(Conversation.channel))}
        recent = await session.scalar(select(func.count()).select_from(Interaction).where(
            Interaction.occurred_at >= utcnow() - timedelta(hours=24)))
        stats = await feedback_statistics(session)
    open_count = sum(by_status.get(s.value, 0) for s in
                     (TicketStatus.NEW, TicketStatus.OPEN, TicketStatus.PENDING))
    return SummaryOut(customers=int(customers or 0), open_tickets=open_count,
                      tickets_by_status=by_status, conversations_by_channel=by_channel,
                      messages_last_24h=int(recent or 0), csat_average=stats.csat_average,
                      nps=stats.nps)
