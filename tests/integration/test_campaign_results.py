"""Effect evaluation on a hand-computed fixture, treatment against holdout."""

from __future__ import annotations

from datetime import timedelta

from crm_core.db import Database
from crm_core.models import (
    Campaign,
    CampaignSend,
    CareTask,
    Channel,
    Customer,
    Direction,
    FeedbackResponse,
    Interaction,
    OutboxMessage,
)
from crm_core.services.campaign_results import campaign_results
from crm_core.services.feedback import feedback_statistics, nps_of
from tests.campaign_support import utc

T0 = utc(2026, 5, 4, 2, 0)


async def test_results_of_a_hand_computed_campaign(db: Database) -> None:
    """Twelve customers:

    ====  =========  ======  =========================================================
    #     send        outbox  afterwards
    ====  =========  ======  =========================================================
    1     queued      sent    clicked; replied after 2 days; CSAT 4 after 1 day
    2     queued      sent    opted out; wrote 1 hour *before* the send (not a reply)
    3     queued      sent    clicked; replied after 10 days (outside the 7-day window)
    4     queued      sent    CSAT 2 after 3 days
    5     queued      failed
    6     queued      pending
    7     holdout     –       replied after 1 day
    8     holdout     –       CSAT 5 after 2 days
    9     skipped     –       do_not_contact
    10    skipped     –       no_channel
    11    pending     –
    12    failed      –       template error
    ====  =========  ======  =========================================================

    Expected: planned 12, pending 1, sent 6, delivered 4, failed 1 + 1, skipped 2
    (1 + 1), opted out 1, clicked 2; messaged group 6 with 1 reply (1/6) and CSAT
    (4 + 2) / 2 = 3.0; holdout 2 with 1 reply (1/2) and CSAT 5.0; lift 1/6 − 1/2.
    """
    async with db.transaction() as session:
        customers = [Customer(display_name=f"客户{i}", name_key=f"客户{i}") for i in range(1, 13)]
        campaign = Campaign(key="fixture", name="fixture", action="message",
                            trigger_kind="once")
        session.add_all([*customers, campaign])
        await session.flush()
        ids = {i: c.id for i, c in enumerate(customers, start=1)}
        statuses = {**dict.fromkeys(range(1, 7), "queued"), 7: "holdout", 8: "holdout",
                    9: "skipped", 10: "skipped", 11: "pending", 12: "failed"}
        reasons = {9: "do_not_contact", 10: "no_channel", 12: "template_error"}
        outbox_status = {1: "sent", 2: "sent", 3: "sent", 4: "sent", 5: "failed",
                         6: "pending"}
        for number, status in statuses.items():
            message = None
            if number in outbox_status:
                message = OutboxMessage(channel=Channel.EMAIL, customer_id=ids[number],
                                        status=outbox_status[number], payload={})
                session.add(message)
                await session.flush()
            session.add(CampaignSend(
                campaign_id=campaign.id, customer_id=ids[number], occurrence="once",
                status=status, due_at=T0, holdout=status == "holdout",
                skip_reason=reasons.get(number) if status in ("skipped", "failed") else None,
                processed_at=None if status == "pending" else T0,
                outbox_id=message.id if message else None,
                clicked_at=T0 + timedelta(hours=1) if number in (1, 3) else None,
                click_count=1 if number in (1, 3) else 0,
                opted_out_at=T0 + timedelta(hours=2) if number == 2 else None))
        for number, offset in ((1, timedelta(days=2)), (2, -timedelta(hours=1)),
                               (3, timedelta(days=10)), (7, timedelta(days=1))):
            session.add(Interaction(customer_id=ids[number], channel=Channel.EMAIL,
                                    direction=Direction.INBOUND, text="回复",
                                    occurred_at=T0 + offset))
        session.add(Interaction(customer_id=ids[4], channel=Channel.EMAIL,  # ours: no reply
                                direction=Direction.OUTBOUND, text="我们",
                                occurred_at=T0 + timedelta(days=1)))
        for number, score, offset in ((1, 4, 1), (4, 2, 3), (8, 5, 2)):
            session.add(FeedbackResponse(customer_id=ids[number], kind="csat", score=score,
                                         channel=Channel.EMAIL,
                                         created_at=T0 + timedelta(days=offset)))
        session.add(CareTask(customer_id=ids[1], campaign_id=campaign.id, title="回访",
                             due_at=T0, status="done"))
    async with db.sessions() as session:
        results = await campaign_results(session, campaign.id, reply_window=timedelta(days=7))
    assert (results.planned, results.pending, results.sent) == (12, 1, 6)
    assert (results.delivered, results.failed) == (4, 2)
    assert results.skipped == {"do_not_contact": 1, "no_channel": 1}
    assert (results.opted_out, results.clicked, results.tasks_done) == (1, 2, 1)
    assert (results.treatment.size, results.treatment.replied) == (6, 1)
    assert (results.holdout.size, results.holdout.replied) == (2, 1)
    assert results.treatment.reply_rate == 1 / 6 and results.holdout.reply_rate == 0.5
    assert results.reply_lift == 1 / 6 - 1 / 2
    assert (results.treatment.csat_responses, results.treatment.csat_average) == (2, 3.0)
    assert (results.holdout.csat_responses, results.holdout.csat_average) == (1, 5.0)
    assert results.to_dict()["holdout"]["reply_rate"] == 0.5


async def test_feedback_statistics_average_nps_and_classes(db: Database) -> None:
    async with db.transaction() as session:
        customer = Customer(display_name="张伟", name_key="张伟")
        session.add(customer)
        await session.flush()
        rows = [("csat", 5, None), ("csat", 4, None), ("csat", 2, "complaint"),
                ("nps", 10, None), ("nps", 9, None), ("nps", 7, None), ("nps", 3, None),
                ("comment", None, "suggestion"), ("comment", None, "praise")]
        for kind, score, classification in rows:
            session.add(FeedbackResponse(customer_id=customer.id, kind=kind, score=score,
                                         classification=classification,
                                         channel=Channel.WEBCHAT, created_at=T0))
    async with db.sessions() as session:
        stats = await feedback_statistics(session, since=T0 - timedelta(days=1))
        empty = await feedback_statistics(session, since=T0 + timedelta(days=1))
    assert stats.csat_responses == 3 and stats.csat_average == round(11 / 3, 2)
    assert stats.csat_distribution == {2: 1, 4: 1, 5: 1}
    assert (stats.promoters, stats.passives, stats.detractors) == (2, 1, 1)
    assert stats.nps == 25.0  # (2 − 1) / 4
    assert stats.classes == {"complaint": 1, "suggestion": 1, "praise": 1}
    assert empty.csat_average is None and empty.nps is None
    assert nps_of([]) is None and nps_of([10, 0]) == 0.0
