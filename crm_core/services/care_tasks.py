"""Care tasks: things an agent does for a customer (a check-in call after a complaint …).

Campaigns with ``action = "task"`` create them (the scheduler chooses the assignee);
agents record the outcome. A task's reminder is claimed once by one scheduler
(:func:`claim_reminders`) and published as the ``care_task.due`` event. Every change is
audited (entity type ``care_task``).
"""

from __future__ import annotations

from datetime import datetime

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.errors import NotFoundError, StateError, ValidationError
from crm_core.models import CareTask
from crm_core.services import audit

log = structlog.get_logger(__name__)

ENTITY = "care_task"
OPEN = "open"
DONE = "done"
CANCELLED = "cancelled"
OUTCOMES = ("reached", "no_answer", "resolved", "declined", "rescheduled", "other")
"""Suggested outcomes; a team may record its own word (up to 50 characters)."""


def _snapshot(task: CareTask) -> dict[str, object]:
    return {"status": task.status, "assignee_id": task.assignee_id, "team_id": task.team_id,
            "due_at": task.due_at, "outcome": task.outcome, "outcome_note": task.outcome_note}


async def create_task(
    session: AsyncSession, *, customer_id: int, title: str, due_at: datetime, now: datetime,
    actor: str, kind: str = "call", note: str | None = None,
    reminder_at: datetime | None = None, campaign_id: int | None = None,
    ticket_id: int | None = None, assignee_id: int | None = None, team_id: int | None = None,
    assignment_reason: str | None = None,
) -> CareTask:
    """Create an open task (audited)."""
    title = " ".join(title.split())[:300]
    if not title:
        raise ValidationError("title", title, "a task needs a title")
    task = CareTask(
        customer_id=customer_id, campaign_id=campaign_id, ticket_id=ticket_id,
        assignee_id=assignee_id, team_id=team_id, assignment_reason=assignment_reason,
        kind=kind[:50], title=title, note=(note or "").strip() or None, due_at=due_at,
        reminder_at=reminder_at, status=OPEN, created_at=now, updated_at=now,
    )
    session.add(task)
    await session.flush()
    audit.record(session, actor=actor, action="create", entity_type=ENTITY, entity_id=task.id,
                 after={**_snapshot(task), "customer_id": customer_id, "kind": task.kind,
                        "campaign_id": campaign_id})
    log.info("care_task.created", care_task_id=task.id, customer_id=customer_id,
             campaign_id=campaign_id, assignee_id=assignee_id, reason=assignment_reason)
    return task


async def get_task(session: AsyncSession, task_id: int) -> CareTask:
    """A task by id; NotFoundError otherwise."""
    task = await session.get(CareTask, task_id)
    if task is None:
        raise NotFoundError("care task", task_id)
    return task


async def complete_task(
    session: AsyncSession, task_id: int, *, outcome: str, actor: str, now: datetime,
    note: str | None = None,
) -> CareTask:
    """Record the outcome and close the task (audited)."""
    outcome = (outcome or "").strip()
    if not outcome or len(outcome) > 50:
        raise ValidationError("outcome", outcome, f"give an outcome such as {', '.join(OUTCOMES)}")
    task = await get_task(session, task_id)
    if task.status != OPEN:
        raise StateError(f"care task #{task_id} is {task.status}")
    before = _snapshot(task)
    task.status = DONE
    task.outcome = outcome
    task.outcome_note = (note or "").strip()[:4000] or None
    task.completed_at = now
    task.completed_by = actor[:100]
    task.updated_at = now
    old, new = audit.diff(before, _snapshot(task))
    audit.record(session, actor=actor, action="complete", entity_type=ENTITY,
                 entity_id=task.id, before=old, after=new)
    await session.flush()
    log.info("care_task.done", care_task_id=task.id, customer_id=task.customer_id,
             outcome=outcome)
    return task


async def cancel_task(session: AsyncSession, task_id: int, *, actor: str, now: datetime,
                      reason: str | None = None) -> CareTask:
    """Cancel an open task (audited)."""
    task = await get_task(session, task_id)
    if task.status != OPEN:
        raise StateError(f"care task #{task_id} is {task.status}")
    before = _snapshot(task)
    task.status = CANCELLED
    task.outcome_note = (reason or "").strip()[:4000] or None
    task.completed_at = now
    task.completed_by = actor[:100]
    task.updated_at = now
    old, new = audit.diff(before, _snapshot(task))
    audit.record(session, actor=actor, action="cancel", entity_type=ENTITY, entity_id=task.id,
                 before=old, after=new)
    await session.flush()
    return task


async def list_tasks(session: AsyncSession, *, status: str | None = OPEN,
                     assignee_id: int | None = None, limit: int = 200) -> list[CareTask]:
    """Tasks by due time (open ones by default; one agent's with ``assignee_id``)."""
    query = select(CareTask).order_by(CareTask.due_at, CareTask.id).limit(limit)
    if status is not None:
        query = query.where(CareTask.status == status)
    if assignee_id is not None:
        query = query.where(CareTask.assignee_id == assignee_id)
    return list(await session.scalars(query))


async def claim_reminders(session: AsyncSession, *, now: datetime, limit: int = 200,
                          ) -> list[CareTask]:
    """Open tasks whose reminder is due and not yet sent, marked as reminded in the
    caller's transaction. On PostgreSQL rows another scheduler holds are skipped
    (``FOR UPDATE SKIP LOCKED``), so each reminder goes out once."""
    query = (select(CareTask)
             .where(CareTask.status == OPEN, CareTask.reminder_at.is_not(None),
                    CareTask.reminder_at <= now, CareTask.reminded_at.is_(None))
             .order_by(CareTask.reminder_at, CareTask.id).limit(limit))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    tasks = list(await session.scalars(query))
    for task in tasks:
        task.reminded_at = now
    await session.flush()
    return tasks
