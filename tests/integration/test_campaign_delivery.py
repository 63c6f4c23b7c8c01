"""Delivery rules at send time, several schedulers at once, and restarts."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from contact_center import scheduler as scheduler_module
from crm_core.db import Database
from crm_core.models import (
    CampaignSend,
    Channel,
    Customer,
    CustomerIdentity,
    IdentityKind,
    Interaction,
    OutboxMessage,
)
from crm_core.services.campaigns import assign_group, bucket
from tests.campaign_support import (
    Clock,
    add_customer,
    campaign,
    config_from,
    count,
    email_customer,
    outbox,
    scheduler,
    sends,
    utc,
)

QUIET = '[defaults]\ntimezone = "Asia/Shanghai"\nquiet_hours = { start = "21:30", end = "08:30" }\n'


async def test_quiet_hours_postpone_to_the_morning_in_the_customers_zone(db: Database) -> None:
    shanghai = await add_customer(db, "张伟", **email_customer("zw@example.cn"))
    london = await add_customer(db, "Tom Jones", timezone="Europe/London", language="en",
                                **email_customer("tom@example.co.uk"))
    config = config_from(campaign("notice", '{ kind = "once", at = 2026-05-04T23:00:00+08:00 }',
                                  extra='channels = ["email"]'), defaults=QUIET)
    clock = Clock(utc(2026, 5, 4, 15, 0))  # 23:00 in Shanghai, 16:00 in London
    report = await scheduler(db, config, clock).tick()
    assert report.queued == 1 and report.postponed == 1
    rows = {r.customer_id: r for r in await sends(db)}
    assert rows[london].status == "queued"
    assert rows[shanghai].status == "pending" and rows[shanghai].postponed == 1
    assert rows[shanghai].due_at == utc(2026, 5, 5, 0, 30)  # 08:30 the next morning
    clock.set(utc(2026, 5, 5, 0, 29))
    assert (await scheduler(db, config, clock).tick()).queued == 0
    clock.set(utc(2026, 5, 5, 0, 30))
    assert (await scheduler(db, config, clock).tick()).queued == 1
    assert len(await outbox(db)) == 2


async def test_quiet_hours_after_midnight_release_the_same_morning(db: Database) -> None:
    await add_customer(db, **email_customer("zw@example.cn"))
    config = config_from(campaign("notice", '{ kind = "once", at = 2026-05-05T02:00:00+08:00 }',
                                  extra='channels = ["email"]'), defaults=QUIET)
    clock = Clock(utc(2026, 5, 4, 18, 0))  # 02:00 in Shanghai
    await scheduler(db, config, clock).tick()
    [row] = await sends(db)
    assert row.status == "pending" and row.due_at == utc(2026, 5, 5, 0, 30)


async def test_frequency_caps_across_campaigns_and_per_campaign(db: Database) -> None:
    customer = await add_customer(db, **email_customer("zw@example.cn"))
    capped = '[defaults]\ntimezone = "Asia/Shanghai"\nfrequency_cap = { max = 2, days = 7 }\n'
    config = config_from(
        campaign("a", '{ kind = "once", at = 2026-05-04T10:00:00+08:00 }',
                 extra='channels = ["email"]')
        + campaign("b", '{ kind = "once", at = 2026-05-05T10:00:00+08:00 }',
                   extra='channels = ["email"]')
        + campaign("c", '{ kind = "once", at = 2026-05-06T10:00:00+08:00 }',
                   extra='channels = ["email"]')
        + campaign("d", '{ kind = "cron", cron = "0 10 * * *" }',
                   extra='channels = ["email"]\nfrequency_cap = { max = 1, days = 30 }'),
        defaults=capped)
    clock = Clock(utc(2026, 5, 4, 2, 0))
    runner = scheduler(db, config, clock)
    await runner.tick()  # a and d's first day: two messages, the global cap is full
    clock.set(utc(2026, 5, 5, 2, 0))
    await runner.tick()  # b and d's second day: both over the cap
    clock.set(utc(2026, 5, 12, 2, 0))  # a week later: the global window moved on
    await runner.tick()
    outcome = [(r.occurrence, r.status, r.skip_reason) for r in await sends(db)]
    assert sorted(outcome) == sorted([
        ("once", "queued", None),                                   # a
        ("cron:2026-05-04T02:00Z", "queued", None),                 # d, day 1
        ("once", "skipped", "frequency_cap"),                       # b
        ("cron:2026-05-05T02:00Z", "skipped", "frequency_cap"),     # d, day 2
        ("cron:2026-05-12T02:00Z", "skipped", "campaign_frequency_cap"),  # d: 1 per 30 days
    ]) and customer


async def test_opt_outs_after_planning_are_honoured_at_send_time(db: Database) -> None:
    keeps = await add_customer(db, "张伟", birthday=date(1990, 5, 4),
                               **email_customer("zw@example.cn"))
    stops = await add_customer(db, "李娜", birthday=date(1990, 5, 4),
                               **email_customer("ln@example.cn"))
    withdraws = await add_customer(db, "王芳", birthday=date(1990, 5, 4),
                                   **email_customer("wf@example.cn"))
    config = config_from(campaign("birthday", '{ kind = "birthday", at = "10:00" }',
                                  extra='purpose = "marketing"\nchannels = ["email"]'))
    clock = Clock(utc(2026, 5, 3, 12, 0))
    runner = scheduler(db, config, clock)
    await runner.tick()
    assert [r.status for r in await sends(db)] == ["pending"] * 3
    async with db.transaction() as session:
        await session.execute(update(Customer).where(Customer.id == stops)
                              .values(do_not_contact=True))
        await session.execute(update(Customer).where(Customer.id == withdraws)
                              .values(marketing_opt_in={"email": False}))
    clock.set(utc(2026, 5, 4, 2, 0))
    await runner.tick()
    outcome = {r.customer_id: (r.status, r.skip_reason) for r in await sends(db)}
    assert outcome == {keeps: ("queued", None), stops: ("skipped", "do_not_contact"),
                       withdraws: ("skipped", "opted_out")}
    assert [m.customer_id for m in await outbox(db)] == [keeps]


async def test_channel_order_falls_back_past_missing_bounced_and_unconsented(
        db: Database) -> None:
    prefers_telegram = await add_customer(
        db, "A", preferred_channel="telegram", identities=[{"kind": "telegram", "value": "42"}],
        emails=["a@example.cn"], marketing_opt_in={"telegram": True, "email": True})
    no_telegram = await add_customer(db, "B", preferred_channel="telegram",
                                     **email_customer("b@example.cn"))
    bounced = await add_customer(
        db, "C", identities=[{"kind": "webchat",
                              "value": "0f9a8b7c-1d2e-4f30-8a9b-0c1d2e3f4a5b"}],
        emails=["c@example.cn"], marketing_opt_in={"email": True, "webchat": True})
    unconsented = await add_customer(db, "D", emails=["d@example.cn"])
    nowhere = await add_customer(db, "E")
    async with db.transaction() as session:
        await session.execute(update(CustomerIdentity)
                              .where(CustomerIdentity.value == "c@example.cn")
                              .values(bounced_at=utc(2026, 5, 1)))
    config = config_from(campaign(
        "offer", '{ kind = "once", at = 2026-05-04T10:00:00+08:00 }',
        extra='purpose = "marketing"\nchannels = ["preferred", "email", "webchat"]'))
    clock = Clock(utc(2026, 5, 4, 2, 0))
    await scheduler(db, config, clock).tick()
    rows = {r.customer_id: r for r in await sends(db)}
    assert rows[prefers_telegram].channel == Channel.TELEGRAM
    assert rows[no_telegram].channel == Channel.EMAIL
    assert rows[bounced].channel == Channel.WEBCHAT
    assert (rows[unconsented].status, rows[unconsented].skip_reason) == ("skipped",
                                                                         "no_channel")
    assert "email: no_consent" in (rows[unconsented].detail or "")
    assert rows[nowhere].skip_reason == "no_channel"
    messages = {m.customer_id: m for m in await outbox(db)}
    assert messages[prefers_telegram].payload["thread"]["chat_id"] == "42"
    assert "回复 TD 退订" in messages[prefers_telegram].payload["text"]
    assert messages[bounced].payload["to"]["visitor_id"].startswith("0f9a8b7c")


async def test_service_messages_need_no_opt_in_but_respect_an_opt_out(db: Database) -> None:
    plain = await add_customer(db, "A", emails=["a@example.cn"])
    refused = await add_customer(db, "B", emails=["b@example.cn"],
                                 marketing_opt_in={"email": False})
    config = config_from(campaign("notice", '{ kind = "once", at = 2026-05-04T10:00:00+08:00 }',
                                  extra='purpose = "service"\nchannels = ["email"]'))
    await scheduler(db, config, Clock(utc(2026, 5, 4, 2, 0))).tick()
    outcome = {r.customer_id: (r.status, r.skip_reason) for r in await sends(db)}
    assert outcome == {plain: ("queued", None), refused: ("skipped", "opted_out")}


async def test_unconfigured_channels_are_passed_over(db: Database) -> None:
    customer = await add_customer(db, identities=[{"kind": "telegram", "value": "42"}],
                                  emails=["a@example.cn"])
    config = config_from(campaign("notice", '{ kind = "once", at = 2026-05-04T10:00:00+08:00 }',
                                  extra='channels = ["telegram", "email"]'))
    await scheduler(db, config, Clock(utc(2026, 5, 4, 2, 0)),
                    available_channels=frozenset({Channel.EMAIL})).tick()
    [row] = await sends(db)
    assert (row.customer_id, row.channel) == (customer, Channel.EMAIL)


async def test_holdout_and_variants_are_stable_and_in_proportion(db: Database) -> None:
    async with db.transaction() as session:
        customers = [Customer(display_name=f"客户{i}", name_key=f"客户{i}",
                              identities=[CustomerIdentity(kind=IdentityKind.EMAIL,
                                                           value=f"c{i}@example.cn")])
                     for i in range(400)]
        session.add_all(customers)
    variants = """
[[campaigns.variants]]
name = "a"
weight = 3
[campaigns.variants.templates.default.zh-CN]
text = "A：{{ customer.name }}"
[[campaigns.variants]]
name = "b"
weight = 1
[campaigns.variants.templates.default.zh-CN]
text = "B：{{ customer.name }}"
"""
    config = config_from(campaign("ab", '{ kind = "once", at = 2026-05-04T10:00:00+08:00 }',
                                  extra='channels = ["email"]\nholdout_percent = 10',
                                  templates=variants))
    await scheduler(db, config, Clock(utc(2026, 5, 4, 2, 0))).tick()
    rows = await sends(db)
    held = [r for r in rows if r.holdout]
    assert all(r.status == "holdout" for r in held)
    assert 20 <= len(held) <= 60  # 10 % of 400
    counts = Counter(r.variant for r in rows)
    assert 240 <= counts["a"] <= 360 and 40 <= counts["b"] <= 160
    spec = config.campaigns[0]
    for row in rows:
        assert assign_group(spec, row.campaign_id, row.customer_id) == (row.holdout, row.variant)
    texts = {m.customer_id: m.payload["text"] for m in await outbox(db)}
    assert len(texts) == len(rows) - len(held)
    for row in rows:
        if not row.holdout:
            assert texts[row.customer_id].startswith(row.variant.upper() + "：")
    assert bucket(7, 42) == bucket(7, 42) and bucket(7, 42) != bucket(8, 42)


async def test_a_customer_leaving_the_audience_before_the_send_is_skipped(db: Database) -> None:
    from tests.campaign_support import add_tier

    await add_tier(db, "vip")
    customer = await add_customer(db, tier_code="vip", birthday=date(1990, 5, 4),
                                  **email_customer("zw@example.cn"))
    config = config_from(campaign("vip-birthday", '{ kind = "birthday" }',
                                  extra='audience = { tier = "vip" }\nchannels = ["email"]'))
    clock = Clock(utc(2026, 5, 3, 12, 0))
    runner = scheduler(db, config, clock)
    await runner.tick()
    async with db.transaction() as session:
        await session.execute(update(Customer).where(Customer.id == customer)
                              .values(tier_code=None))
    clock.set(utc(2026, 5, 4, 2, 0))
    await runner.tick()
    [row] = await sends(db)
    assert (row.status, row.skip_reason) == ("skipped", "left_audience")


async def test_campaign_end_date_stops_pending_sends(db: Database) -> None:
    await add_customer(db, birthday=date(1990, 5, 4), **email_customer("zw@example.cn"))
    config = config_from(campaign("birthday", '{ kind = "birthday" }',
                                  extra='channels = ["email"]\nend = 2026-05-03'))
    clock = Clock(utc(2026, 5, 3, 12, 0))
    await scheduler(db, config, clock).tick()
    assert await sends(db) == []  # due after the end: not even planned


async def test_a_template_error_fails_the_send_and_not_the_batch(db: Database) -> None:
    good = await add_customer(db, "张伟", custom_attributes={"plan": "金卡"},
                              **email_customer("zw@example.cn"))
    bad = await add_customer(db, "李娜", **email_customer("ln@example.cn"))
    config = config_from(campaign(
        "plan", '{ kind = "once", at = 2026-05-04T10:00:00+08:00 }',
        extra='channels = ["email"]', templates="""
[campaigns.templates.default.zh-CN]
text = "您的套餐：{{ customer.attributes.plan }}"
"""))
    await scheduler(db, config, Clock(utc(2026, 5, 4, 2, 0))).tick()
    outcome = {r.customer_id: (r.status, r.skip_reason) for r in await sends(db)}
    assert outcome == {good: ("queued", None), bad: ("failed", "template_error")}


async def _population(db: Database, size: int) -> None:
    async with db.transaction() as session:
        session.add_all([
            Customer(display_name=f"客户{i}", name_key=f"客户{i}",
                     identities=[CustomerIdentity(kind=IdentityKind.EMAIL,
                                                  value=f"c{i}@example.cn")])
            for i in range(size)])


async def test_two_schedulers_on_postgresql_send_each_message_exactly_once(
        postgres_db: Database) -> None:
    await _population(postgres_db, 300)
    config = config_from(campaign("notice", '{ kind = "once", at = 2026-05-04T10:00:00+08:00 }',
                                  extra='channels = ["email"]'))
    clock = Clock(utc(2026, 5, 4, 2, 0))
    second_db = Database(postgres_db.url)
    try:
        first = scheduler(postgres_db, config, clock, batch_size=17, name="first")
        second = scheduler(second_db, config, clock, batch_size=17, name="second")
        await asyncio.gather(first.sync(), second.sync())
        planned = await asyncio.gather(first.plan(), second.plan(), first.plan())
        reports = await asyncio.gather(first.deliver(), second.deliver())
        again = await asyncio.gather(first.tick(), second.tick())
    finally:
        await second_db.dispose()
    assert sum(planned) == 300
    assert sum(r.queued for r in reports) == 300
    assert all(r.queued > 0 for r in reports)  # both took part of the work
    assert sum(r.queued + r.planned for r in again) == 0
    messages = await outbox(postgres_db)
    assert len(messages) == 300
    assert len({m.customer_id for m in messages}) == 300
    assert await count(postgres_db, CampaignSend, CampaignSend.status == "queued") == 300


async def test_frequency_caps_hold_across_concurrent_schedulers(
        postgres_db: Database) -> None:
    """Two campaigns reach the same customers at once, two schedulers share the work, and
    the cap (one per week) still allows one message per customer."""
    await _population(postgres_db, 120)
    capped = '[defaults]\ntimezone = "Asia/Shanghai"\nfrequency_cap = { max = 1, days = 7 }\n'
    config = config_from(
        campaign("a", '{ kind = "once", at = 2026-05-04T10:00:00+08:00 }',
                 extra='channels = ["email"]')
        + campaign("b", '{ kind = "once", at = 2026-05-04T10:00:00+08:00 }',
                   extra='channels = ["email"]'), defaults=capped)
    clock = Clock(utc(2026, 5, 4, 2, 0))
    second_db = Database(postgres_db.url)
    try:
        first = scheduler(postgres_db, config, clock, batch_size=15, name="first")
        second = scheduler(second_db, config, clock, batch_size=15, name="second")
        await first.sync()
        await second.sync()
        # Both sends of a customer side by side: batches of 15 split some customers'
        # pair between the two schedulers, which then decide on them at the same time.
        async with postgres_db.transaction() as session:
            customers = list(await session.scalars(select(Customer.id).order_by(Customer.id)))
            session.add_all([
                CampaignSend(campaign_id=first.campaign_id(key), customer_id=customer_id,
                             occurrence="once", due_at=clock.now)
                for customer_id in customers for key in ("a", "b")])
        reports = await asyncio.gather(first.deliver(), second.deliver())
    finally:
        await second_db.dispose()
    assert all(r.queued > 0 for r in reports)
    messages = await outbox(postgres_db)
    assert len(messages) == 120 and len({m.customer_id for m in messages}) == 120
    assert await count(postgres_db, CampaignSend,
                       CampaignSend.skip_reason == "frequency_cap") == 120


async def test_two_scheduler_processes_on_postgresql(postgres_db: Database) -> None:
    """Two OS processes claim the same due sends; each message is queued once."""
    import subprocess
    import sys

    await _population(postgres_db, 200)
    config_text = campaign("notice", '{ kind = "once", at = 2026-05-04T10:00:00+08:00 }',
                           extra='channels = ["email"]')
    script = (
        "import asyncio, sys\n"
        "from crm_core.db import Database\n"
        "from tests.campaign_support import Clock, config_from, scheduler, utc\n"
        "async def main():\n"
        "    db = Database(sys.argv[1])\n"
        "    runner = scheduler(db, config_from(sys.argv[2]), Clock(utc(2026, 5, 4, 2, 0)),"
        " batch_size=13)\n"
        "    for _ in range(3):\n"
        "        await runner.tick()\n"
        "    await db.dispose()\n"
        "asyncio.run(main())\n"
    )
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, postgres_db.url, config_text,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    results = await asyncio.gather(*(p.communicate() for p in procs))
    assert [p.returncode for p in procs] == [0, 0], [r[1][-2000:] for r in results]
    messages = await outbox(postgres_db)
    assert len(messages) == 200 and len({m.customer_id for m in messages}) == 200


async def test_a_crash_mid_batch_loses_and_repeats_nothing(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    await _population(db, 60)
    config = config_from(campaign("notice", '{ kind = "once", at = 2026-05-04T10:00:00+08:00 }',
                                  extra='channels = ["email"]'))
    clock = Clock(utc(2026, 5, 4, 2, 0))
    original = scheduler_module.enqueue_reply
    calls = 0

    async def crashing(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 25:  # the second batch dies half-way
            raise ConnectionError("the database went away")
        return await original(*args, **kwargs)

    monkeypatch.setattr(scheduler_module, "enqueue_reply", crashing)
    crashed = scheduler(db, config, clock, batch_size=20)
    with pytest.raises(ConnectionError):
        await crashed.tick()
    assert await count(db, OutboxMessage) == 20  # the first batch committed, the second not
    assert await count(db, CampaignSend, CampaignSend.status == "pending") == 40
    monkeypatch.setattr(scheduler_module, "enqueue_reply", original)
    clock.advance(minutes=1)
    await scheduler(db, config, clock, batch_size=20).tick()  # the restarted process
    messages = await outbox(db)
    assert len(messages) == 60 and len({m.customer_id for m in messages}) == 60
    assert await count(db, Interaction) == 60


async def test_a_restart_resumes_event_scanning_where_it_stopped(db: Database) -> None:
    from crm_core.models import Conversation, Ticket, TicketStatus

    customer = await add_customer(db, **email_customer("zw@example.cn"))
    config = config_from(campaign("thanks", '{ kind = "ticket_resolved" }',
                                  extra='channels = ["email"]'))
    clock = Clock(utc(2026, 5, 4, 2, 0))
    await scheduler(db, config, clock).tick()
    async with db.transaction() as session:  # resolved while no scheduler ran
        conversation = Conversation(customer_id=customer, channel=Channel.EMAIL)
        session.add(conversation)
        await session.flush()
        for minutes in (30, 90):
            session.add(Ticket(subject="s", customer_id=customer, status=TicketStatus.RESOLVED,
                               conversation_id=conversation.id,
                               resolved_at=clock.now + timedelta(minutes=minutes)))
    clock.advance(hours=3)
    await scheduler(db, config, clock).tick()
    assert [r.status for r in await sends(db)] == ["queued", "queued"]


async def test_retired_campaigns_skip_their_pending_work(db: Database) -> None:
    await add_customer(db, birthday=date(1990, 5, 4), **email_customer("zw@example.cn"))
    config = config_from(campaign("birthday", '{ kind = "birthday" }',
                                  extra='channels = ["email"]'))
    clock = Clock(utc(2026, 5, 3, 12, 0))
    await scheduler(db, config, clock).tick()
    empty = config_from("")
    await scheduler(db, empty, clock).tick()
    [row] = await sends(db)
    assert (row.status, row.skip_reason) == ("skipped", "campaign_removed")

