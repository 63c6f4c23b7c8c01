"""``contact-center worker`` and ``contact-center bus …``: run routing, inspect dead letters."""

from __future__ import annotations

import click

from contact_center.cli import run, settings_from
from contact_center.runtime import database_of


@click.command()
@click.option("--concurrency", type=int, default=1, show_default=True,
              help="Consumers in this process.")
@click.option("--metrics-port", type=int, default=None, envvar="CC_METRICS_PORT",
              help="Serve /metrics (Prometheus) and /healthz on this port.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True,
              envvar="CC_METRICS_HOST", help="Address of the metrics port.")
@click.pass_context
def worker(
    ctx: click.Context, concurrency: int, metrics_port: int | None, metrics_host: str
) -> None:
    """Route inbound messages from the bus and send the outbox until stopped."""
    from contact_center.worker import run_worker

    run(run_worker(settings_from(ctx), concurrency=concurrency,
                   metrics=(metrics_host, metrics_port) if metrics_port else None))


@click.group()
def bus() -> None:
    """The message bus: dead letters and replay."""


@bus.command("dead-letters")
@click.option("--limit", type=int, default=50, show_default=True)
@click.pass_context
def dead_letters(ctx: click.Context, limit: int) -> None:
    """List messages that failed on every attempt, with their last error."""
    from contact_center.wiring import build_bus, redis_client
    from routing.engine import INBOUND_TOPIC

    settings = settings_from(ctx)

    async def go() -> list[str]:
        redis = redis_client(settings)
        try:
            async with database_of(settings) as database:
                the_bus = build_bus(settings, database, redis)
                rows = await the_bus.dead_letters(INBOUND_TOPIC, limit=limit)
        finally:
            if redis is not None:
                await redis.aclose()
        lines = []
        for row in rows:
            if isinstance(row, dict):
                lines.append(f"{row['id']}  {row['key']}  attempts={row.get('attempts')}  "
                             f"{row.get('error', '')}")
            else:
                lines.append(f"{row.id}  {row.key}  attempts={row.attempts}  {row.last_error}")
        return lines

    lines = run(go())
    for line in lines:
        click.echo(line)
    click.echo(f"{len(lines)} dead letter(s)", err=True)


@bus.command()
@click.argument("entry_id")
@click.pass_context
def replay(ctx: click.Context, entry_id: str) -> None:
    """Put a dead letter back on the bus with a fresh count of attempts."""
    from contact_center.wiring import build_bus, redis_client
    from routing.bus import DatabaseBus
    from routing.engine import INBOUND_TOPIC

    settings = settings_from(ctx)

    async def go() -> bool:
        redis = redis_client(settings)
        try:
            async with database_of(settings) as database:
                the_bus = build_bus(settings, database, redis)
                if isinstance(the_bus, DatabaseBus):
                    return await the_bus.replay(int(entry_id))
                return bool(await the_bus.replay(INBOUND_TOPIC, entry_id))
        finally:
            if redis is not None:
                await redis.aclose()

    if not run(go()):
        raise click.ClickException(f"no dead letter {entry_id}")
    click.echo(f"replayed {entry_id}")


@click.group()
def outbox() -> None:
    """Outgoing messages: what failed, and sending it again."""


@outbox.command("failed")
@click.option("--limit", type=int, default=50, show_default=True)
@click.pass_context
def outbox_failed(ctx: click.Context, limit: int) -> None:
    """List messages that could not be sent, with the reason."""
    from sqlalchemy import select

    from crm_core.models import OutboxMessage
    from routing.outbox import FAILED

    settings = settings_from(ctx)

    async def go() -> list[OutboxMessage]:
        async with database_of(settings) as database, database.sessions() as session:
            rows = await session.scalars(
                select(OutboxMessage)
                .where(OutboxMessage.status == FAILED)
                .order_by(OutboxMessage.id.desc())
                .limit(limit)
            )
            return list(rows)

    rows = run(go())
    for row in rows:
        click.echo(
            f"{row.id}  {row.channel.value}  customer #{row.customer_id}  "
            f"attempts={row.attempts}  {row.last_error}"
        )
    click.echo(f"{len(rows)} failed message(s)", err=True)


@outbox.command("retry")
@click.argument("outbox_id", type=int)
@click.pass_context
def outbox_retry(ctx: click.Context, outbox_id: int) -> None:
    """Queue a failed message for sending again."""
    from contact_center.wiring import build_dispatcher

    settings = settings_from(ctx)

    async def go() -> bool:
        async with database_of(settings) as database:
            return await build_dispatcher(settings, database).retry(outbox_id)

    if not run(go()):
        raise click.ClickException(f"no failed outbox message {outbox_id}")
    click.echo(f"outbox message {outbox_id} queued again")
