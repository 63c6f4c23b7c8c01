"""``contact-center demo``: load the bilingual demo data set into an empty database."""

from __future__ import annotations

import click

from contact_center.cli import run, settings_from
from contact_center.runtime import database_of
from crm_core.errors import CrmError


@click.command()
@click.option(
    "--force",
    is_flag=True,
    help="Load even when the database already has customers (existing records are kept; "
    "demo customers whose e-mail or phone is taken are skipped).",
)
@click.pass_context
def demo(ctx: click.Context, force: bool) -> None:
    """Load demo data: teams, agents, ~200 customers (中文 + English), conversations, tickets.

    The database must be migrated first (contact-center migrate). A database that
    already holds customers is left alone unless --force is given.
    """
    from contact_center.demo import DemoSummary, load_demo, login_lines
    from crm_core import schema
    from crm_core.identity import MatchThresholds, scan_duplicates
    from crm_core.models import utcnow
    from crm_core.services.analytics.rollups import refresh_rollups

    settings = settings_from(ctx)

    async def go() -> DemoSummary:
        async with database_of(settings) as database:
            revision = await schema.current_revision(database.engine)
            if revision is None:
                raise click.ClickException(
                    "the database has no schema yet: run `contact-center migrate` first"
                )
            if revision != schema.head_revision():
                raise click.ClickException(
                    f"the database is at revision {revision}, the code expects "
                    f"{schema.head_revision()}: run `contact-center migrate` first"
                )
            summary = await load_demo(
                database, region=settings.locale.default_region, force=force
            )
            if summary.loaded:
                # The reports' roll-ups, so long ranges are fast from the start.
                async with database.transaction() as session:
                    await refresh_rollups(session, now=utcnow(),
                                          zone=settings.locale.timezone)
                # The duplicate scan, so the review queue shows the demo's look-alikes.
                await scan_duplicates(database, thresholds=MatchThresholds(
                    link=settings.routing.link_threshold,
                    suggest=settings.routing.suggest_threshold))
            return summary

    try:
        summary = run(go())
    except CrmError as exc:
        raise click.ClickException(str(exc)) from None
    for line in summary.lines():
        click.echo(line)
    if summary.agents:
        for line in login_lines():
            click.echo(line)
