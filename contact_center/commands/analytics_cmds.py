"""``contact-center analytics …``: build and refresh the reports' daily roll-ups."""

from __future__ import annotations

import time

import click

from contact_center.cli import run, settings_from
from contact_center.runtime import database_of


@click.group()
def analytics() -> None:
    """Reports and analytics."""


@analytics.command("rollup")
@click.option("--rebuild", is_flag=True,
              help="Recompute every day instead of only what changed since the last refresh.")
@click.pass_context
def rollup(ctx: click.Context, rebuild: bool) -> None:
    """Bring the daily roll-ups up to yesterday (the scheduler does this every hour; the
    first run, or --rebuild, builds them from all existing data)."""
    from crm_core.models import utcnow
    from crm_core.services.analytics.rollups import refresh_rollups

    settings = settings_from(ctx)

    async def go() -> str:
        started = time.perf_counter()
        async with database_of(settings) as database, database.transaction() as session:
            result = await refresh_rollups(session, now=utcnow(),
                                           zone=settings.locale.timezone, rebuild=rebuild)
        if result.skipped:
            return "another refresh is running; nothing done"
        return (f"roll-ups {'built' if result.full else 'refreshed'} up to "
                f"{result.through} (exclusive) in {time.perf_counter() - started:.1f} s: "
                f"{result.days} days, {result.conversations} conversations, "
                f"{result.tickets} tickets")

    click.echo(run(go()))
