"""``contact-center classes …``: customer categories, tiers, classification rules, re-classify.

Conditions on the command line read ``field op value``: ``lifetime_value>=100000``,
``city=上海``, ``industry in 制造业,manufacturing``, ``tag!=blocked``, ``attr.level>3``,
``organization~bank`` (``~`` is contains), ``email exists``. See
:mod:`crm_core.services.classification` for the fields and what each operator means.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy.ext.asyncio import AsyncSession

from contact_center.cli import run, settings_from
from contact_center.runtime import database_of
from contact_center.settings import Settings
from crm_core.errors import CrmError
from crm_core.services import classification as cls

ACTOR = "cli"
T = TypeVar("T")


def _in_transaction(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run ``work`` in one transaction of the configured database; domain errors end the command."""

    async def go() -> T:
        async with database_of(settings) as database, database.transaction() as session:
            return await work(session)

    try:
        return run(go())
    except CrmError as exc:
        raise click.ClickException(str(exc)) from None


@click.group("classes")
def classes() -> None:
    """Customer categories and tiers, and the rules that assign them."""


@classes.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.pass_context
def list_classes(ctx: click.Context, as_json: bool) -> None:
    """Show tiers, categories (with how many customers hold each) and rules."""
    settings = settings_from(ctx)

    async def work(session: AsyncSession) -> dict[str, Any]:
        counts = await cls.class_counts(session)
        return {
            "tiers": [
                {"code": t.code, "name": t.name, "name_zh": t.name_zh, "rank": t.rank,
                 "customers": counts["tier"].get(t.code, 0)}
                for t in await cls.list_tiers(session)
            ],
            "categories": [
                {"code": c.code, "name": c.name, "name_zh": c.name_zh,
                 "customers": counts["category"].get(c.code, 0)}
                for c in await cls.list_categories(session)
            ],
            "rules": [
                {"id": r.id, "name": r.name, "target": r.target, "value": r.value_code,
                 "position": r.position, "enabled": r.enabled, "conditions": r.conditions,
                 "text": cls.describe_rule(r)}
                for r in await cls.list_rules(session)
            ],
            "unclassified": {"tier": counts["tier"].get(cls.NONE_KEY, 0),
                             "category": counts["category"].get(cls.NONE_KEY, 0)},
        }

    data = _in_transaction(settings, work)
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    click.echo("tiers:")
    for tier in data["tiers"]:
        zh = f" / {tier['name_zh']}" if tier["name_zh"] else ""
        click.echo(f"  {tier['code']}  rank {tier['rank']}  {tier['name']}{zh}  "
                   f"({tier['customers']} customers)")
    click.echo("categories:")
    for category in data["categories"]:
        zh = f" / {category['name_zh']}" if category["name_zh"] else ""
        click.echo(f"  {category['code']}  {category['name']}{zh}  "
                   f"({category['customers']} customers)")
    click.echo("rules:")
    for rule in data["rules"]:
        click.echo(f"  {rule['text']}")
    unclassified = data["unclassified"]
    click.echo(
        f"without tier: {unclassified['tier']}, without category: {unclassified['category']}"
    )


@classes.command("add-category")
@click.argument("code")
@click.argument("name")
@click.option("--zh", "name_zh", default=None, help="Chinese name.")
@click.option("--description", default=None)
@click.pass_context
def add_category(
    ctx: click.Context, code: str, name: str, name_zh: str | None, description: str | None
) -> None:
    """Create category CODE (lowercase letters, digits, _ and -) called NAME."""
    settings = settings_from(ctx)

    async def work(session: AsyncSession) -> None:
        await cls.create_category(session, code, name, name_zh=name_zh,
                                  description=description, actor=ACTOR)

    _in_transaction(settings, work)
    click.echo(f"category {code} created")


@classes.command("add-tier")
@click.argument("code")
@click.argument("name")
@click.option("--rank", type=int, required=True, help="Higher is a better service level.")
@click.option("--zh", "name_zh", default=None, help="Chinese name.")
@click.pass_context
def add_tier(ctx: click.Context, code: str, name: str, rank: int, name_zh: str | None) -> None:
    """Create tier CODE called NAME, with its rank."""
    settings = settings_from(ctx)

    async def work(session: AsyncSession) -> None:
        await cls.create_tier(session, code, name, rank=rank, name_zh=name_zh, actor=ACTOR)

    _in_transaction(settings, work)
    click.echo(f"tier {code} created (rank {rank})")


@classes.command("rename-category")
@click.argument("code")
@click.option("--name", default=None)
@click.option("--zh", "name_zh", default=None, help="Chinese name ('' clears it).")
@click.option("--description", default=None, help="'' clears it.")
@click.pass_context
def rename_category(
    ctx: click.Context, code: str, name: str | None, name_zh: str | None,
    description: str | None,
) -> None:
    """Change the names or description of category CODE (the code stays)."""
    settings = settings_from(ctx)

    async def work(session: AsyncSession) -> None:
        await cls.update_category(
            session, code,
            name=name if name is not None else cls.UNSET,
            name_zh=name_zh if name_zh is not None else cls.UNSET,
            description=description if description is not None else cls.UNSET,
            actor=ACTOR,
        )

    _in_transaction(settings, work)
    click.echo(f"category {code} updated")


@classes.command("rename-tier")
@click.argument("code")
@click.option("--name", default=None)
@click.option("--zh", "name_zh", default=None, help="Chinese name ('' clears it).")
@click.option("--rank", type=int, default=None)
@click.pass_context
def rename_tier(
    ctx: click.Context, code: str, name: str | None, name_zh: str | None, rank: int | None
) -> None:
    """Change the names or rank of tier CODE (the code stays)."""
    settings = settings_from(ctx)

    async def work(session: AsyncSession) -> None:
        await cls.update_tier(
            session, code,
            name=name if name is not None else cls.UNSET,
            name_zh=name_zh if name_zh is not None else cls.UNSET,
            rank=rank if rank is not None else cls.UNSET,
            actor=ACTOR,
        )

    _in_transaction(settings, work)
    click.echo(f"tier {code} updated")


@classes.command("delete-category")
@click.argument("code")
@click.pass_context
def delete_category(ctx: click.Context, code: str) -> None:
    """Delete category CODE; its customers keep working without one."""
    settings = settings_from(ctx)

    async def work(session: AsyncSession) -> int:
        return await cls.delete_category(session, code, actor=ACTOR)

    count = _in_transaction(settings, work)
    click.echo(f"category {code} deleted ({count} customers left without a category)")


@classes.command("delete-tier")
@click.argument("code")
@click.pass_context
def delete_tier(ctx: click.Context, code: str) -> None:
    """Delete tier CODE; its customers keep working without one."""
    settings = settings_from(ctx)

    async def work(session: AsyncSession) -> int:
        return await cls.delete_tier(session, code, actor=ACTOR)

    count = _in_transaction(settings, work)
    click.echo(f"tier {code} deleted ({count} customers left without a tier)")


@classes.command("add-rule")
@click.option("--target", type=click.Choice(cls.TARGETS), required=True)
@click.option("--value", required=True, help="The tier or category code to assign.")
@click.option("--when", "conditions", multiple=True,
              help="A condition such as 'lifetime_value>=100000'; repeat: all must hold.")
@click.option("--always", is_flag=True, help="No condition: matches every customer.")
@click.option("--position", type=int, default=None, help="Lower is tried first.")
@click.option("--name", default=None, help="Default: made from the conditions.")
@click.option("--disabled", is_flag=True, help="Create the rule switched off.")
@click.pass_context
def add_rule(
    ctx: click.Context, target: str, value: str, conditions: tuple[str, ...], always: bool,
    position: int | None, name: str | None, disabled: bool,
) -> None:
    """Add a rule that puts matching customers into a tier or category."""
    if not conditions and not always:
        raise click.UsageError("give at least one --when, or --always for a catch-all rule")
    if conditions and always:
        raise click.UsageError("--always takes no --when")
    settings = settings_from(ctx)

    async def work(session: AsyncSession) -> str:
        rule = await cls.create_rule(
            session, target=target, value=value, conditions=list(conditions), name=name,
            position=position, enabled=not disabled, actor=ACTOR,
        )
        return cls.describe_rule(rule)

    click.echo(f"rule added: {_in_transaction(settings, work)}")


def _set_enabled(ctx: click.Context, rule_id: int, enabled: bool) -> None:
    settings = settings_from(ctx)

    async def work(session: AsyncSession) -> str:
        rule = await cls.update_rule(session, rule_id, enabled=enabled, actor=ACTOR)
        return cls.describe_rule(rule)

    click.echo(_in_transaction(settings, work))


@classes.command("enable-rule")
@click.argument("rule_id", type=int)
@click.pass_context
def enable_rule(ctx: click.Context, rule_id: int) -> None:
    """Switch rule RULE_ID on."""
    _set_enabled(ctx, rule_id, True)


@classes.command("disable-rule")
@click.argument("rule_id", type=int)
@click.pass_context
def disable_rule(ctx: click.Context, rule_id: int) -> None:
    """Switch rule RULE_ID off (kept, but not applied)."""
    _set_enabled(ctx, rule_id, False)


@classes.command("delete-rule")
@click.argument("rule_id", type=int)
@click.pass_context
def delete_rule(ctx: click.Context, rule_id: int) -> None:
    """Delete rule RULE_ID; customers keep the class it gave them."""
    settings = settings_from(ctx)

    async def work(session: AsyncSession) -> None:
        await cls.delete_rule(session, rule_id, actor=ACTOR)

    _in_transaction(settings, work)
    click.echo(f"rule #{rule_id} deleted")


@classes.command("load")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def load(ctx: click.Context, file: Path) -> None:
    """Create or update categories, tiers and rules from a TOML FILE (all or nothing)."""
    settings = settings_from(ctx)

    async def work(session: AsyncSession) -> cls.FileReport:
        return await cls.apply_classification_file(session, file, ACTOR)

    report = _in_transaction(settings, work)
    for section in ("categories", "tiers", "rules"):
        counts = getattr(report, section)
        click.echo(f"{section}: {counts['created']} created, {counts['updated']} updated, "
                   f"{counts['unchanged']} unchanged")


@classes.command("reclassify")
@click.option("--dry-run", is_flag=True, help="Report what would change; write nothing.")
@click.option("--reset", is_flag=True,
              help="Clear the class of customers no rule matches (default: they keep it).")
@click.option("--only", "only_target", type=click.Choice(cls.TARGETS), default=None,
              help="Only tiers or only categories.")
@click.option("--batch-size", type=click.IntRange(min=1), default=cls.DEFAULT_BATCH_SIZE,
              show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def reclassify(
    ctx: click.Context, dry_run: bool, reset: bool, only_target: str | None, batch_size: int,
    as_json: bool,
) -> None:
    """Apply the rules to every live customer."""
    settings = settings_from(ctx)

    async def go() -> cls.ReclassifyReport:
        async with database_of(settings) as database:
            return await cls.reclassify(
                database, ACTOR, dry_run=dry_run, only_targets=only_target, reset=reset,
                batch_size=batch_size,
            )

    try:
        report = run(go())
    except CrmError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
        return
    verb = "would change" if dry_run else "changed"
    click.echo(f"examined {report.examined} customers; {verb} {report.customers_changed}"
               + (" (dry run: nothing written)" if dry_run else ""))
    for target in report.targets:
        moves = ", ".join(f"{k}: {v}" for k, v in report.changed_to[target].items()) or "-"
        totals = ", ".join(f"{k}: {v}" for k, v in report.totals[target].items()) or "-"
        click.echo(f"{target}: {verb} {report.changed[target]} ({moves}); "
                   f"no rule matched {report.unmatched[target]}; now {totals}")
    for item in report.sample:
        click.echo(f"  #{item['customer_id']} {item['target']}: {item['from'] or '-'} -> "
                   f"{item['to'] or '-'}  ({item['reason']})")


@classes.command("set")
@click.argument("customer_ids", nargs=-1, type=int, required=True)
@click.option("--tier", default=None, help="Tier code to give.")
@click.option("--category", default=None, help="Category code to give.")
@click.option("--clear-tier", is_flag=True, help="Remove the tier.")
@click.option("--clear-category", is_flag=True, help="Remove the category.")
@click.pass_context
def set_class(
    ctx: click.Context, customer_ids: tuple[int, ...], tier: str | None, category: str | None,
    clear_tier: bool, clear_category: bool,
) -> None:
    """Put customers CUSTOMER_IDS into a tier and/or category by hand."""
    if tier is not None and clear_tier:
        raise click.UsageError("--tier and --clear-tier exclude each other")
    if category is not None and clear_category:
        raise click.UsageError("--category and --clear-category exclude each other")
    if tier is None and category is None and not clear_tier and not clear_category:
        raise click.UsageError("give --tier, --category, --clear-tier or --clear-category")
    settings = settings_from(ctx)

    async def work(session: AsyncSession) -> cls.SetClassReport:
        return await cls.set_class(
            session, customer_ids,
            tier=None if clear_tier else (tier if tier is not None else cls.UNSET),
            category=None if clear_category else (
                category if category is not None else cls.UNSET
            ),
            actor=ACTOR,
        )

    report = _in_transaction(settings, work)
    click.echo(f"{report.changed} of {report.requested} customers changed")
