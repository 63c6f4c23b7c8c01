"""``contact-center scheduler`` and ``contact-center campaigns …``: care campaigns from the
command line — run the scheduler, check the campaigns file, see results, work care tasks."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import click

from contact_center.cli import run, settings_from
from contact_center.runtime import database_of


@click.command()
@click.option("--once", is_flag=True, help="One tick (plan, deliver, remind), then exit.")
@click.pass_context
def scheduler(ctx: click.Context, once: bool) -> None:
    """Run the care scheduler until stopped (any number of them may run at once)."""
    from contact_center.scheduler import run_scheduler

    report = run(run_scheduler(settings_from(ctx), once=once))
    if report is not None:
        click.echo(json.dumps(report.to_dict(), ensure_ascii=False))


@click.group()
def campaigns() -> None:
    """Care campaigns: check the file, results, care tasks, feedback."""


@campaigns.command("check")
@click.pass_context
def campaigns_check(ctx: click.Context) -> None:
    """Check the campaigns file and list its campaigns."""
    from contact_center.scheduler import load_config
    from crm_core.services.campaign_config import CampaignConfigError

    settings = settings_from(ctx)
    try:
        config = load_config(settings)
    except CampaignConfigError as exc:
        raise click.ClickException(str(exc)) from None
    for spec in config.campaigns:
        state = "enabled" if spec.enabled else "disabled"
        click.echo(f"{spec.key}  {spec.action}  {spec.trigger.kind}  {state}  {spec.name}")
    click.echo(f"{config.source}: {len(config.campaigns)} campaign(s), OK", err=True)


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


@campaigns.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def campaigns_list(ctx: click.Context, as_json: bool) -> None:
    """Every campaign known to the database with its results."""
    from sqlalchemy import select

    from crm_core.models import Campaign
    from crm_core.services.campaign_results import campaign_results

    settings = settings_from(ctx)

    async def go() -> list[dict[str, Any]]:
        async with database_of(settings) as database, database.sessions() as session:
            rows = list(await session.scalars(select(Campaign).order_by(Campaign.id)))
            found = []
            for row in rows:
                window = timedelta(days=float(row.definition.get("reply_window_days", 7)))
                results = await campaign_results(session, row.id, reply_window=window)
                found.append({"id": row.id, "key": row.key, "name": row.name,
                              "action": row.action, "trigger": row.trigger_kind,
                              "status": row.status, "enabled": row.enabled,
                              **results.to_dict()})
            return found

    rows = run(go())
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2, default=str))
        return
    for row in rows:
        click.echo(
            f"{row['id']}  {row['key']}  {row['status']}  sent={row['sent']} "
            f"delivered={row['delivered']} failed={row['failed']} tasks={row['tasks']} "
            f"skipped={sum(row['skipped'].values())} opted_out={row['opted_out']} "
            f"clicked={row['clicked']} replied={_rate(row['treatment']['reply_rate'])} "
            f"holdout_replied={_rate(row['holdout']['reply_rate'])}")
    click.echo(f"{len(rows)} campaign(s)", err=True)


@campaigns.command("tasks")
@click.option("--agent", "agent_login", default=None, help="Only this agent's tasks.")
@click.option("--all", "show_all", is_flag=True, help="Done and cancelled ones too.")
@click.pass_context
def campaigns_tasks(ctx: click.Context, agent_login: str | None, show_all: bool) -> None:
    """Care tasks by due time."""
    from sqlalchemy import select

    from crm_core.models import Agent
    from crm_core.services.care_tasks import list_tasks

    settings = settings_from(ctx)

    async def go() -> list[str]:
        async with database_of(settings) as database, database.sessions() as session:
            agent_id = None
            if agent_login:
                agent_id = await session.scalar(select(Agent.id).where(
                    Agent.login == agent_login.strip().lower()))
                if agent_id is None:
                    raise click.ClickException(f"no agent {agent_login!r}")
            tasks = await list_tasks(session, status=None if show_all else "open",
                                     assignee_id=agent_id)
            return [f"{t.id}  {t.status}  due {t.due_at:%Y-%m-%d %H:%M}Z  customer "
                    f"#{t.customer_id}  agent #{t.assignee_id or '-'}  {t.kind}  {t.title}"
                    for t in tasks]

    lines = run(go())
    for line in lines:
        click.echo(line)
    click.echo(f"{len(lines)} task(s)", err=True)


@campaigns.command("task-done")
@click.argument("task_id", type=int)
@click.option("--outcome", required=True,
              help="reached, no_answer, resolved, declined, rescheduled or your own word.")
@click.option("--note", default=None)
@click.pass_context
def campaigns_task_done(ctx: click.Context, task_id: int, outcome: str,
                        note: str | None) -> None:
    """Record a care task's outcome and close it."""
    from contact_center.runtime import SYSTEM_ACTOR
    from crm_core.errors import CrmError
    from crm_core.models import utcnow
    from crm_core.services.care_tasks import complete_task

    settings = settings_from(ctx)

    async def go() -> None:
        async with database_of(settings) as database, database.transaction() as session:
            await complete_task(session, task_id, outcome=outcome, note=note,
                                actor=SYSTEM_ACTOR, now=utcnow())

    try:
        run(go())
    except CrmError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"care task {task_id} done: {outcome}")


@campaigns.command("feedback")
@click.option("--days", type=int, default=30, show_default=True, help="The last N days.")
@click.pass_context
def campaigns_feedback(ctx: click.Context, days: int) -> None:
    """Satisfaction statistics: average CSAT, NPS, comments per class."""
    from crm_core.models import utcnow
    from crm_core.services.feedback import feedback_statistics

    settings = settings_from(ctx)

    async def go() -> dict[str, Any]:
        async with database_of(settings) as database, database.sessions() as session:
            stats = await feedback_statistics(session, since=utcnow() - timedelta(days=days))
            return stats.to_dict()

    click.echo(json.dumps(run(go()), ensure_ascii=False, indent=2))
