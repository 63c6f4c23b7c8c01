"""``contact-center customers find-duplicates|suggestions|dismiss-suggestion|rebuild-match-keys``.

The batch duplicate scan and the suggestions it (and the routing engine) leaves for
agents. Nothing here merges: a suggestion is confirmed with ``customers merge``.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

import click

from contact_center.cli import run, settings_from
from contact_center.commands.customers import customers
from contact_center.runtime import database_of
from crm_core.errors import CrmError

if TYPE_CHECKING:
    from crm_core.identity import ScanReport

CLI_ACTOR = "cli"


def _reasons(reasons: dict[str, float]) -> str:
    return " ".join(f"{name}={value:g}" for name, value in reasons.items())


@customers.command("find-duplicates")
@click.option(
    "--min-score", type=click.FloatRange(0, 100), default=None,
    help="Lowest score to suggest (default: routing.suggest_threshold).",
)
@click.option("--limit-report", type=click.IntRange(0), default=20, show_default=True,
              help="How many of the strongest pairs to print.")
@click.option("--max-block", type=click.IntRange(2), default=None,
              help="Skip blocks of more customers than this (default 100).")
@click.pass_context
def find_duplicates(
    ctx: click.Context, min_score: float | None, limit_report: int, max_block: int | None
) -> None:
    """Scan every customer for likely duplicates and record them as suggestions.

    Compares customers that share a blocking key (name, birthday, phone, e-mail) by
    name (characters and pinyin), birthday, address, phone and e-mail. Existing
    suggestions, and pairs an agent dismissed, are left as they are.
    """
    from crm_core.identity import SCAN_MAX_BLOCK, MatchThresholds, scan_duplicates

    settings = settings_from(ctx)
    thresholds = MatchThresholds(
        link=settings.routing.link_threshold, suggest=settings.routing.suggest_threshold
    )

    async def go() -> ScanReport:
        async with database_of(settings) as database:
            with click.progressbar(
                length=1, label="scanning blocks", file=sys.stderr, show_pos=True
            ) as bar:
                state = {"done": 0}

                def progress(done: int, total: int) -> None:
                    bar.length = max(total, 1)
                    bar.update(done - state["done"])
                    state["done"] = done

                return await scan_duplicates(
                    database,
                    thresholds=thresholds,
                    min_score=min_score,
                    max_block=max_block or SCAN_MAX_BLOCK,
                    top=limit_report,
                    progress=progress,
                )

    started = time.perf_counter()
    try:
        report = run(go())
    except CrmError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"{report.customers:,} customers, {report.blocks:,} blocks, "
        f"{report.comparisons:,} pairs compared in {time.perf_counter() - started:.1f} s"
    )
    if report.keys_rebuilt:
        click.echo(f"match keys built for {report.keys_rebuilt:,} customers")
    click.echo(
        f"{report.pairs_found:,} likely duplicates ({report.above_link:,} above the link "
        f"threshold): {report.suggestions_created:,} new suggestions, "
        f"{report.suggestions_known:,} already known"
    )
    for pair in report.top:
        click.echo(
            f"  {pair.score:5.1f}  #{pair.customer_id} {pair.names[0]}  ~  "
            f"#{pair.candidate_id} {pair.names[1]}  ({_reasons(pair.reasons)})"
        )


@customers.command("suggestions")
@click.option("--status", type=click.Choice(["open", "dismissed", "merged", "all"]),
              default="open", show_default=True)
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@click.pass_context
def suggestions(ctx: click.Context, status: str, limit: int) -> None:
    """List possible duplicates, strongest first."""
    from sqlalchemy import select

    from crm_core.identity import list_suggestions
    from crm_core.models import Customer

    settings = settings_from(ctx)

    async def go() -> list[str]:
        async with database_of(settings) as database, database.sessions() as session:
            rows = await list_suggestions(
                session, status=None if status == "all" else status, limit=limit
            )
            ids = {r.customer_id for r in rows} | {r.candidate_id for r in rows}
            names = dict(
                (await session.execute(
                    select(Customer.id, Customer.display_name).where(Customer.id.in_(ids))
                )).all()
            ) if ids else {}
        return [
            f"#{r.id}  {r.score:5.1f}  #{r.customer_id} {names.get(r.customer_id, '?')}  ~  "
            f"#{r.candidate_id} {names.get(r.candidate_id, '?')}  [{r.source}, {r.status}]"
            f"  ({_reasons(r.reasons)})"
            for r in rows
        ]

    lines = run(go())
    for line in lines:
        click.echo(line)
    click.echo(f"{len(lines)} suggestion(s)", err=True)


@customers.command("dismiss-suggestion")
@click.argument("suggestion_id", type=int)
@click.pass_context
def dismiss(ctx: click.Context, suggestion_id: int) -> None:
    """Mark a suggestion as two different people; it will not be proposed again."""
    from crm_core.identity import dismiss_suggestion

    settings = settings_from(ctx)

    async def go() -> str:
        async with database_of(settings) as database, database.transaction() as session:
            row = await dismiss_suggestion(session, suggestion_id, actor=CLI_ACTOR)
            return f"suggestion #{row.id} dismissed (#{row.customer_id} ~ #{row.candidate_id})"

    try:
        click.echo(run(go()))
    except CrmError as exc:
        raise click.ClickException(str(exc)) from None


@customers.command("rebuild-match-keys")
@click.option("--missing-only", is_flag=True, help="Only customers that have no key yet.")
@click.pass_context
def rebuild_keys(ctx: click.Context, missing_only: bool) -> None:
    """Recompute the fuzzy matcher's blocking keys (after a bulk load or an upgrade)."""
    from crm_core.identity import customers_without_keys, rebuild_match_keys

    settings = settings_from(ctx)

    async def go() -> int:
        async with database_of(settings) as database:
            if not missing_only:
                async with database.transaction() as session:
                    return await rebuild_match_keys(session)
            async with database.transaction() as session:
                missing = await customers_without_keys(session)
            for start in range(0, len(missing), 5000):
                async with database.transaction() as session:
                    await rebuild_match_keys(session, missing[start : start + 5000])
            return len(missing)

    click.echo(f"match keys rebuilt for {run(go()):,} customers")
