"""``contact-center telegram …``: poll the bot, register the webhook, make deep links."""

from __future__ import annotations

import asyncio
import signal

import click

from contact_center.cli import run, settings_from
from contact_center.runtime import database_of
from contact_center.settings import Settings


@click.group()
def telegram() -> None:
    """The Telegram bot: polling, webhook, deep links."""


def _configured(ctx: click.Context) -> Settings:
    settings = settings_from(ctx)
    if settings.telegram is None:
        raise click.ClickException("no Telegram bot configured ([telegram] in CC_CONFIG)")
    return settings


@telegram.command()
@click.option("--once", is_flag=True, help="One round of getUpdates, then exit.")
@click.pass_context
def poll(ctx: click.Context, once: bool) -> None:
    """Read the bot's updates into the bus (polling mode) until stopped."""
    from contact_center.channel_setup import telegram_bot, telegram_intake, telegram_poller
    from contact_center.wiring import build_engine, redis_client

    settings = _configured(ctx)

    async def go() -> int:
        redis = redis_client(settings)
        bot = telegram_bot(settings)
        assert bot is not None
        try:
            async with database_of(settings) as database:
                engine = build_engine(settings, database, redis)
                poller = telegram_poller(
                    settings, telegram_intake(settings, database, engine.publish, bot))
                if once:
                    poller.timeout = 0
                    return await poller.poll_once()
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, stop.set)
                await poller.run(stop)
                return 0
        finally:
            await bot.shutdown()
            if redis is not None:
                await redis.aclose()

    handled = run(go())
    if once:
        click.echo(f"{handled} update(s) read")


@telegram.command("set-webhook")
@click.option("--url", help="Public URL of /webhooks/telegram (default: http.public_base_url).")
@click.pass_context
def set_webhook(ctx: click.Context, url: str | None) -> None:
    """Register our webhook with Telegram (webhook mode)."""
    from channels.telegram.intake import ALLOWED_UPDATES
    from contact_center.channel_setup import telegram_bot
    from contact_center.telegram_webhook import WEBHOOK_PATH

    settings = _configured(ctx)
    assert settings.telegram is not None
    secret = settings.telegram.resolved_webhook_secret()
    if not secret:
        raise click.ClickException("set telegram.webhook_secret or webhook_secret_env first")
    base = settings.http.public_base_url
    target = url or (base.rstrip("/") + WEBHOOK_PATH if base else None)
    if not target:
        raise click.ClickException("give --url or set http.public_base_url")

    async def go() -> None:
        bot = telegram_bot(settings)
        assert bot is not None
        async with bot:
            await bot.set_webhook(url=target, secret_token=secret,
                                  allowed_updates=ALLOWED_UPDATES)

    run(go())
    click.echo(f"webhook set: {target}")


@telegram.command("link")
@click.argument("customer_id", type=int)
@click.option("--days", type=int, default=7, show_default=True, help="How long it is valid.")
@click.pass_context
def link(ctx: click.Context, customer_id: int, days: int) -> None:
    """A one-time deep link that ties the Telegram user who opens it to CUSTOMER_ID."""
    from datetime import timedelta

    from contact_center.channel_setup import telegram_bot
    from crm_core.models import Customer
    from crm_core.services.link_tokens import issue_link_token

    settings = _configured(ctx)

    async def go() -> str:
        bot = telegram_bot(settings)
        assert bot is not None
        async with bot:
            username = bot.username
        async with database_of(settings) as database, database.transaction() as session:
            if await session.get(Customer, customer_id) is None:
                raise click.ClickException(f"no customer {customer_id}")
            token = await issue_link_token(session, customer_id, ttl=timedelta(days=days))
        return f"https://t.me/{username}?start={token}"

    click.echo(run(go()))
