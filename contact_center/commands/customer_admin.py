"""``contact-center customers show|delete|restore|merge|erase``: one record at a time."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import click
from sqlalchemy.ext.asyncio import AsyncSession

from contact_center.cli import run, settings_from
from contact_center.commands.customers import customers, describe
from contact_center.runtime import database_of
from crm_core.errors import CrmError

CLI_ACTOR = "cli"


def _in_transaction(
    ctx: click.Context, work: Callable[[AsyncSession], Awaitable[str]]
) -> None:
    settings = settings_from(ctx)

    async def go() -> str:
        async with database_of(settings) as database, database.transaction() as session:
            return await work(session)

    try:
        click.echo(run(go()))
    except CrmError as exc:
        raise click.ClickException(str(exc)) from None


@customers.command()
@click.argument("customer_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print every field as JSON.")
@click.pass_context
def show(ctx: click.Context, customer_id: int, as_json: bool) -> None:
    """Show one customer, with lifecycle and merge history."""
    from crm_core.services.customers import get_customer, lifecycle_history, snapshot
    from crm_core.services.merge import merge_history

    async def work(session: AsyncSession) -> str:
        customer = await get_customer(session, customer_id, include_deleted=True)
        if as_json:
            return json.dumps(snapshot(customer), ensure_ascii=False, indent=2)
        lines = [describe(customer)]
        for move in await lifecycle_history(session, customer_id):
            was = move.from_stage.value if move.from_stage else "-"
            lines.append(
                f"  {move.at:%Y-%m-%d %H:%M} {was} → {move.to_stage.value}"
                f"  {move.reason or ''} ({move.actor})"
            )
        for merge in await merge_history(session, customer_id):
            lines.append(
                f"  merge #{merge.merged_id} → #{merge.survivor_id} at {merge.at:%Y-%m-%d}"
            )
        return "\n".join(lines)

    _in_transaction(ctx, work)


@customers.command()
@click.argument("customer_id", type=int)
@click.pass_context
def delete(ctx: click.Context, customer_id: int) -> None:
    """Soft-delete a customer (restorable)."""
    from crm_core.services.customers import delete_customer

    async def work(session: AsyncSession) -> str:
        await delete_customer(session, customer_id, actor=CLI_ACTOR)
        return f"customer #{customer_id} deleted (restore with: customers restore {customer_id})"

    _in_transaction(ctx, work)


@customers.command()
@click.argument("customer_id", type=int)
@click.pass_context
def restore(ctx: click.Context, customer_id: int) -> None:
    """Bring back a soft-deleted customer."""
    from crm_core.services.customers import restore_customer

    async def work(session: AsyncSession) -> str:
        customer = await restore_customer(session, customer_id, actor=CLI_ACTOR)
        return f"restored: {customer.display_name} (#{customer.id})"

    _in_transaction(ctx, work)


@customers.command()
@click.argument("survivor_id", type=int)
@click.argument("merged_id", type=int)
@click.option("--reason", default=None, help="Why the two records are one person.")
@click.pass_context
def merge(ctx: click.Context, survivor_id: int, merged_id: int, reason: str | None) -> None:
    """Fold MERGED_ID into SURVIVOR_ID (identities, history and tickets move over)."""
    from crm_core.services.merge import merge_customers

    async def work(session: AsyncSession) -> str:
        record = await merge_customers(
            session, survivor_id, merged_id, actor=CLI_ACTOR, reason=reason
        )
        moved: dict[str, Any] = record.moved
        details = ", ".join(f"{k}: {v}" for k, v in moved.items() if v)
        return f"merged #{merged_id} into #{survivor_id} ({details or 'nothing to move'})"

    _in_transaction(ctx, work)


@customers.command()
@click.argument("customer_id", type=int)
@click.option("--reason", default=None, help="E.g. the request reference.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def erase(ctx: click.Context, customer_id: int, reason: str | None, yes: bool) -> None:
    """Erase a customer's personal data for good (right to be forgotten)."""
    from crm_core.services.merge import erase_customer

    if not yes:
        click.confirm(f"Erase every personal detail of customer #{customer_id}?", abort=True)

    async def work(session: AsyncSession) -> str:
        counts = await erase_customer(session, customer_id, actor=CLI_ACTOR, reason=reason)
        summary = ", ".join(f"{k} {v}" for k, v in counts.items())
        return f"customer #{customer_id} erased: {summary}"

    _in_transaction(ctx, work)
