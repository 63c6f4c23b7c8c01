"""``contact-center email …``: import archives, read mailboxes, handle the quarantine."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click

from contact_center.cli import run, settings_from
from contact_center.runtime import database_of
from contact_center.settings import Settings


@click.group()
def email() -> None:
    """The e-mail channel: import archives, read mailboxes, quarantined mail."""


async def _outcomes(database: Any, keys: list[str]) -> dict[str, tuple[str | None, int]]:
    """Ticket number and customer id of each routed idempotency key."""
    from sqlalchemy import select

    from crm_core.models import Interaction, Ticket

    found: dict[str, tuple[str | None, int]] = {}
    async with database.sessions() as session:
        for start in range(0, len(keys), 500):
            rows = await session.execute(
                select(Interaction.external_id, Interaction.customer_id, Ticket.number)
                .outerjoin(Ticket, Ticket.conversation_id == Interaction.conversation_id)
                .where(Interaction.external_id.in_(keys[start : start + 500]))
            )
            for key, customer_id, number in rows:
                found[key] = (number, customer_id)
    return found


@email.command("import")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--mailbox", "mailbox_name", help="Record the mail as received by this mailbox.")
@click.option("--team", help="Team for new tickets unless a routing rule says otherwise.")
@click.option("--route/--no-route", default=True, show_default=True,
              help="Route the imported mail now (embedded mode) instead of leaving it to "
                   "the workers.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message.")
@click.pass_context
def import_(
    ctx: click.Context, path: Path, mailbox_name: str | None, team: str | None, route: bool,
    as_json: bool,
) -> None:
    """Import .eml files, Maildir folders and mbox archives through the routing pipeline."""
    from channels.email.importer import import_archive
    from contact_center.channel_setup import mail_intake
    from contact_center.wiring import build_engine, redis_client
    from routing.bus import DatabaseBus

    settings = settings_from(ctx)

    async def go() -> list[dict[str, Any]]:
        redis = redis_client(settings)
        try:
            async with database_of(settings) as database:
                engine = build_engine(settings, database, redis)
                intake = mail_intake(settings, database, engine.publish)
                reports = await import_archive(path, intake, mailbox_name=mailbox_name,
                                               team=team)
                keys = [r.result.idempotency_key for r in reports if r.result.idempotency_key]
                known_before = set(await _outcomes(database, keys))
                if route and isinstance(engine.bus, DatabaseBus):
                    while await engine.run_once("email-import"):
                        pass
                outcomes = await _outcomes(database, keys)
        finally:
            if redis is not None:
                await redis.aclose()
        lines = []
        for report in reports:
            result = report.result
            ticket, customer = outcomes.get(result.idempotency_key or "", (None, None))
            status = result.status
            if result.idempotency_key in known_before:
                status = "duplicate"  # logged by an earlier import or by live intake
            elif status == "queued" and customer is not None:
                status = "routed"
            lines.append({
                "ref": report.ref, "status": status, "ticket": ticket, "customer_id": customer,
                "message_id": result.message_id, "detail": result.detail or None,
            })
        return lines

    lines = run(go())
    counts: dict[str, int] = {}
    for line in lines:
        counts[line["status"]] = counts.get(line["status"], 0) + 1
        if as_json:
            click.echo(json.dumps(line, ensure_ascii=False))
        else:
            where = line["ticket"] or (f"customer #{line['customer_id']}"
                                       if line["customer_id"] else "")
            click.echo(f"{line['status']:<12} {where:<14} {line['ref']}"
                       + (f"  ({line['detail']})" if line["detail"] else ""))
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    click.echo(f"{len(lines)} message(s): {summary or 'none found'}", err=True)


@email.command()
@click.option("--once", is_flag=True, help="Read what is there now, then exit.")
@click.pass_context
def fetch(ctx: click.Context, once: bool) -> None:
    """Read the configured mailboxes (IDLE) into the bus until stopped."""
    settings = settings_from(ctx)
    if not settings.email.mailboxes:
        raise click.ClickException("no mailboxes configured ([[email.mailboxes]] in CC_CONFIG)")
    run(_fetch(settings, once))


async def _fetch(settings: Settings, once: bool) -> None:
    import signal

    from contact_center.channel_setup import imap_readers, run_intake
    from contact_center.wiring import build_engine, redis_client

    redis = redis_client(settings)
    try:
        async with database_of(settings) as database:
            engine = build_engine(settings, database, redis)
            readers = imap_readers(settings, database, engine.publish)
            if once:
                for reader in readers:
                    try:
                        count = await reader.sync_once()
                    finally:
                        await reader.close()
                    click.echo(f"{reader.config.name}: {count} message(s) read")
                return
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            await run_intake(readers, stop)
    finally:
        if redis is not None:
            await redis.aclose()


@email.group()
def quarantine() -> None:
    """Mail that could not be read: list, re-process, discard."""


@quarantine.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include re-processed and discarded.")
@click.option("--limit", type=int, default=100, show_default=True)
@click.pass_context
def quarantine_list(ctx: click.Context, show_all: bool, limit: int) -> None:
    """Quarantined mail, newest first, with the reason."""
    from routing.intake import QUARANTINED, list_quarantine

    settings = settings_from(ctx)

    async def go() -> list[Any]:
        async with database_of(settings) as database:
            return await list_quarantine(
                database, status=None if show_all else QUARANTINED, limit=limit
            )

    rows = run(go())
    for row in rows:
        click.echo(f"{row.id}  {row.status:<11} {row.created_at:%Y-%m-%d %H:%M}  {row.source}  "
                   f"{row.source_ref or ''}  {row.size} bytes  {row.reason}")
    click.echo(f"{len(rows)} item(s)", err=True)


@quarantine.command("reprocess")
@click.argument("item_id", type=int)
@click.pass_context
def quarantine_reprocess(ctx: click.Context, item_id: int) -> None:
    """Read a quarantined mail again (after a fix) and send it on if it now parses."""
    from contact_center.channel_setup import mail_intake
    from contact_center.wiring import build_engine, redis_client
    from crm_core.models import QuarantinedMessage
    from routing.intake import QUARANTINED, REPROCESSED, resolve_quarantine

    settings = settings_from(ctx)

    async def go() -> str:
        from channels.email.inbound import MailSource

        redis = redis_client(settings)
        try:
            async with database_of(settings) as database:
                async with database.sessions() as session:
                    row = await session.get(QuarantinedMessage, item_id)
                if row is None or row.status != QUARANTINED:
                    raise click.ClickException(f"no quarantined item {item_id}")
                engine = build_engine(settings, database, redis)
                intake = mail_intake(settings, database, engine.publish)
                raw = await intake.blobs.get(row.raw_ref)
                result = await intake.ingest(raw, MailSource(
                    source=row.source, source_ref=row.source_ref,
                ))
                if result.status != "quarantined":
                    await resolve_quarantine(database, item_id, REPROCESSED, "cli")
                return f"{result.status}: {result.detail or result.idempotency_key}"
        finally:
            if redis is not None:
                await redis.aclose()

    click.echo(run(go()))


@quarantine.command("discard")
@click.argument("item_id", type=int)
@click.pass_context
def quarantine_discard(ctx: click.Context, item_id: int) -> None:
    """Mark a quarantined mail as dealt with (its raw bytes stay in the blob store)."""
    from routing.intake import DISCARDED, resolve_quarantine

    settings = settings_from(ctx)

    async def go() -> bool:
        async with database_of(settings) as database:
            return await resolve_quarantine(database, item_id, DISCARDED, "cli")

    if not run(go()):
        raise click.ClickException(f"no quarantined item {item_id}")
    click.echo(f"discarded {item_id}")
