"""Care tasks from campaigns: assignment, reminders as events, outcomes."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from contact_center.scheduler import CARE_TASK_CREATED, CARE_TASK_DUE
from crm_core.db import Database
from crm_core.errors import StateError, ValidationError
from crm_core.models import (
    Agent,
    AuditLog,
    Availability,
    CareTask,
    Channel,
    Conversation,
    Team,
    Ticket,
    TicketCategory,
    TicketStatus,
    WebhookDelivery,
)
from crm_core.services import webhooks
from crm_core.services.care_tasks import complete_task, list_tasks
from tests.campaign_support import (
    Clock,
    Recorder,
    add_customer,
    config_from,
    count,
    scheduler,
    sends,
    utc,
)

CHECK_IN = """
[[campaigns]]
key = "check-in"
name = "投诉回访"
action = "task"
trigger = { kind = "ticket_resolved", category = "complaint" }

[campaigns.task]
kind = "call"
title = "回访 {{ customer.name }}（{{ ticket.number }}）"
note = "投诉「{{ ticket.subject }}」已解决，请致电回访。"
due_in_hours = 24
remind_before_minutes = 60
assign = "owner"
team = "投诉处理 Complaints"
"""


async def _agents(db: Database) -> tuple[int, int, int, int]:
    """A complaints team with two online agents, and an owner agent outside it."""
    async with db.transaction() as session:
        team = Team(name="投诉处理 Complaints")
        members = [Agent(login=f"member{i}", display_name=f"组员{i}", password_hash="!",
                         availability=Availability.ONLINE, teams=[team]) for i in (1, 2)]
        owner = Agent(login="owner", display_name="客户经理", password_hash="!")
        session.add_all([team, *members, owner])
        await session.flush()
        return team.id, members[0].id, members[1].id, owner.id


async def _complaint_resolved(db: Database, customer_id: int, at: datetime) -> int:
    async with db.transaction() as session:
        conversation = Conversation(customer_id=customer_id, channel=Channel.PHONE)
        session.add(conversation)
        await session.flush()
        ticket = Ticket(subject="快递员态度差", customer_id=customer_id,
                        category=TicketCategory.COMPLAINT, status=TicketStatus.RESOLVED,
                        conversation_id=conversation.id, resolved_at=at)
        session.add(ticket)
        await session.flush()
        ticket.number = f"T-{ticket.id:06d}"
        return ticket.id


async def test_check_in_tasks_go_to_the_owner_else_round_robin_with_reminders(
        db: Database) -> None:
    team_id, first, second, owner = await _agents(db)
    managed = await add_customer(db, "于海", owner_agent_id=owner)
    plain = [await add_customer(db, f"客户{i}") for i in range(3)]
    barred = await add_customer(db, "免打扰", do_not_contact=True)
    recorder = Recorder()
    clock = Clock(utc(2026, 5, 4, 2, 0))
    runner = scheduler(db, config_from(CHECK_IN), clock, events=recorder.bus)
    await runner.tick()
    resolved = clock.advance(minutes=5)
    tickets = {cid: await _complaint_resolved(db, cid, resolved)
               for cid in (managed, *plain, barred)}
    report = await runner.tick()
    assert report.tasks == 4 and report.skipped == {"do_not_contact": 1}
    async with db.sessions() as session:
        tasks = {t.customer_id: t for t in await session.scalars(select(CareTask))}
    assert set(tasks) == {managed, *plain}
    assert (tasks[managed].assignee_id, tasks[managed].assignment_reason) == (owner, "owner")
    assert [tasks[c].assignee_id for c in plain] == [first, second, first]  # round robin
    assert all(tasks[c].team_id == team_id for c in plain)
    task = tasks[managed]
    assert task.title == f"回访 于海（T-{tickets[managed]:06d}）"
    assert task.note == "投诉「快递员态度差」已解决，请致电回访。"
    assert task.due_at == clock.now + timedelta(hours=24)
    assert task.reminder_at == clock.now + timedelta(hours=23)
    assert task.ticket_id == tickets[managed] and task.kind == "call"
    assert len(recorder.named(CARE_TASK_CREATED)) == 4
    [row] = await sends(db, customer_id=managed)
    assert row.status == "task" and row.care_task_id == task.id

    clock.advance(hours=22)
    assert (await runner.tick()).reminders == 0
    clock.advance(hours=1)
    assert (await runner.tick()).reminders == 4
    assert (await runner.tick()).reminders == 0  # once each
    due = recorder.named(CARE_TASK_DUE)
    assert {e.data["care_task_id"] for e in due} == {t.id for t in tasks.values()}
    assert {e.data["assignee_id"] for e in due} == {owner, first, second}

    async with db.transaction() as session:
        done = await complete_task(session, task.id, outcome="reached", actor="owner",
                                   note="客户表示满意", now=clock.now)
    assert (done.status, done.outcome, done.completed_by) == ("done", "reached", "owner")
    async with db.transaction() as session:
        with pytest.raises(StateError):
            await complete_task(session, task.id, outcome="reached", actor="owner",
                                now=clock.now)
        with pytest.raises(ValidationError):
            await complete_task(session, tasks[plain[0]].id, outcome=" ", actor="x",
                                now=clock.now)
    async with db.sessions() as session:
        assert len(await list_tasks(session)) == 3
        assert [t.id for t in await list_tasks(session, assignee_id=owner, status=None)] == [
            task.id]
    assert await count(db, AuditLog, AuditLog.entity_type == "care_task") == 5


async def test_with_nobody_online_the_task_waits_in_the_team_queue(db: Database) -> None:
    async with db.transaction() as session:
        team = Team(name="投诉处理 Complaints")
        session.add_all([team, Agent(login="away", display_name="离开", password_hash="!",
                                     availability=Availability.AWAY, teams=[team])])
    customer = await add_customer(db, "张伟")
    clock = Clock(utc(2026, 5, 4, 2, 0))
    runner = scheduler(db, config_from(CHECK_IN), clock)
    await runner.tick()
    await _complaint_resolved(db, customer, clock.advance(minutes=1))
    await runner.tick()
    async with db.sessions() as session:
        task = await session.scalar(select(CareTask))
    assert task is not None and task.assignee_id is None and task.team_id is not None
    assert task.assignment_reason == "queue:no-agent-available"


async def test_created_tasks_leave_webhook_deliveries_in_their_transaction(
        db: Database) -> None:
    """No event bus at all: the deliveries come from the scheduler's own transaction."""
    async with db.transaction() as session:
        await webhooks.create_subscription(
            session, name="crm", url="https://crm.example.com/hook",
            events=["care_task.created"], known_events=webhooks.PUBLIC_EVENTS, actor="test")
    await _agents(db)
    customers = [await add_customer(db, f"客户{i}") for i in range(2)]
    clock = Clock(utc(2026, 5, 4, 2, 0))
    runner = scheduler(db, config_from(CHECK_IN), clock)
    await runner.tick()
    resolved = clock.advance(minutes=5)
    for customer_id in customers:
        await _complaint_resolved(db, customer_id, resolved)
    assert (await runner.tick()).tasks == 2
    async with db.sessions() as session:
        rows = list(await session.scalars(select(WebhookDelivery)))
    assert sorted(r.payload["data"]["customer_id"] for r in rows) == sorted(customers)
    assert {r.event for r in rows} == {"care_task.created"}
