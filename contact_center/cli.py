"""The ``contact-center`` command: migrate, serve, administer and inspect the contact center."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import Any, TypeVar

import click

from contact_center.settings import Settings, SettingsError, load_settings

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from a synchronous click command."""
    return asyncio.run(coroutine)


def settings_from(ctx: click.Context) -> Settings:
    """The validated settings, loaded once per invocation; a bad value stops with its reason."""
    root = ctx.find_root()
    root.ensure_object(dict)
    if "settings" not in root.obj:
        try:
            root.obj["settings"] = load_settings()
        except SettingsError as exc:
            click.echo(f"contact-center: {exc}", err=True)
            ctx.exit(2)
        from contact_center.runtime import configure_logging

        configure_logging(root.obj["settings"])
    settings: Settings = root.obj["settings"]
    return settings


@click.group()
@click.version_option(package_name="contact-center")
def main() -> None:
    """Self-hosted omnichannel contact-center CRM."""


@main.group("config")
def config_group() -> None:
    """Inspect the settings."""


@config_group.command("check")
@click.pass_context
def config_check(ctx: click.Context) -> None:
    """Print the effective settings (secrets masked); fail on a bad value."""
    settings = settings_from(ctx)
    click.echo(json.dumps(settings.masked(), indent=2, ensure_ascii=False))


@main.command()
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@click.pass_context
def migrate(ctx: click.Context, revision: str) -> None:
    """Create or upgrade the database schema."""
    from contact_center.runtime import database_of
    from crm_core import schema

    settings = settings_from(ctx)

    async def go() -> str | None:
        async with database_of(settings) as database:
            await schema.upgrade(database.engine, revision)
            return await schema.current_revision(database.engine)

    click.echo(f"database at revision {run(go())}")


@main.command("create-admin")
@click.option("--login", required=True, help="Login name of the new administrator.")
@click.option("--name", "display_name", default=None, help="Name shown in the console.")
@click.option("--email", default=None)
@click.password_option(
    "--password", envvar="CC_ADMIN_PASSWORD", help="Prompted for when not given."
)
@click.pass_context
def create_admin(
    ctx: click.Context, login: str, display_name: str | None, email: str | None, password: str
) -> None:
    """Create an administrator account for the console."""
    from contact_center.runtime import SYSTEM_ACTOR, database_of
    from crm_core.errors import CrmError
    from crm_core.models import AgentRole
    from crm_core.services.agents import create_agent

    settings = settings_from(ctx)

    async def go() -> int:
        async with database_of(settings) as database, database.transaction() as session:
            agent = await create_agent(
                session,
                login=login,
                display_name=display_name or login,
                email=email,
                password=password,
                role=AgentRole.ADMIN,
                actor=SYSTEM_ACTOR,
            )
            return agent.id

    try:
        agent_id = run(go())
    except CrmError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"administrator {login} created (agent #{agent_id})")


@main.command()
@click.option("--host", default=None, help="Overrides http.host.")
@click.option("--port", type=int, default=None, help="Overrides http.port.")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Run the web server (console, API, webhooks, health checks)."""
    from contact_center.app import serve_forever

    settings = settings_from(ctx)
    if host:
        settings.http.host = host
    if port:
        settings.http.port = port
    run(serve_forever(settings))


def _register_command_groups() -> None:
    from contact_center.commands import customers, demo

    main.add_command(customers.customers)
    main.add_command(demo.demo)
    from contact_center.commands import (
        classify,
        customer_admin,
        duplicates,
        email_cmds,
        routing_cmds,
        telegram_cmds,
    )

    del customer_admin, duplicates  # imported for their commands on the customers group

    main.add_command(classify.classes)
    main.add_command(routing_cmds.worker)
    main.add_command(routing_cmds.bus)
    main.add_command(routing_cmds.outbox)
    main.add_command(email_cmds.email)
    main.add_command(telegram_cmds.telegram)
    from contact_center.commands import scheduler_cmds

    main.add_command(scheduler_cmds.scheduler)
    main.add_command(scheduler_cmds.campaigns)
    from contact_center.commands import api_cmds

    main.add_command(api_cmds.api)
    from contact_center.commands import analytics_cmds

    main.add_command(analytics_cmds.analytics)


_register_command_groups()

