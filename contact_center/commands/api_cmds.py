"""``contact-center api …``: issue, list and revoke API tokens; list webhooks."""

from __future__ import annotations

import json

import click

from contact_center.cli import run, settings_from
from contact_center.runtime import SYSTEM_ACTOR, database_of


@click.group()
def api() -> None:
    """The public REST API: tokens and webhooks."""


@api.group("token")
def token() -> None:
    """API tokens (stored hashed; the value is shown once)."""


@token.command("create")
@click.option("--name", required=True, help="Who uses it: an agent's tool, a shop, an ERP.")
@click.option("--scope", "scopes", multiple=True, required=True,
              help="Repeat for each scope, e.g. --scope customers:read.")
@click.option("--agent", "agent_login", default=None, help="Act for this agent (login).")
@click.option("--rate-limit", type=click.IntRange(1, 1_000_000), default=None,
              help="Requests per minute (default: [api] rate_limit_per_minute).")
@click.pass_context
def token_create(ctx: click.Context, name: str, scopes: tuple[str, ...],
                 agent_login: str | None, rate_limit: int | None) -> None:
    """Issue a token and print it (only now: it is stored as a hash)."""
    from sqlalchemy import select

    from crm_core.errors import CrmError
    from crm_core.models import Agent
    from crm_core.services.api_tokens import create_token

    async def go() -> str:
        async with database_of(settings_from(ctx)) as database, database.transaction() as session:
            agent_id = None
            if agent_login:
                agent_id = await session.scalar(select(Agent.id).where(
                    Agent.login == agent_login))
                if agent_id is None:
                    raise click.ClickException(f"no agent with login {agent_login!r}")
            issued = await create_token(session, name=name, scopes=list(scopes),
                                        actor=SYSTEM_ACTOR, agent_id=agent_id,
                                        rate_limit_per_minute=rate_limit)
            return issued.token

    try:
        value = run(go())
    except CrmError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(value)
    click.echo("Store it now: it cannot be shown again.", err=True)


@token.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def token_list(ctx: click.Context, as_json: bool) -> None:
    """Every token with its scopes, last use and state (never the value)."""
    from crm_core.services.api_tokens import list_tokens

    async def go() -> list[dict[str, object]]:
        async with database_of(settings_from(ctx)) as database, database.sessions() as session:
            return [{"id": t.id, "name": t.name, "prefix": t.prefix, "scopes": t.scopes,
                     "agent_id": t.agent_id,
                     "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
                     "revoked": t.revoked_at is not None}
                    for t in await list_tokens(session)]

    rows = run(go())
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    for r in rows:
        state = "revoked" if r["revoked"] else "active"
        click.echo(f"{r['id']}  {r['prefix']}…  {r['name']}  {state}  "
                   f"last used {r['last_used_at'] or 'never'}  {','.join(r['scopes'])}")


@token.command("revoke")
@click.argument("token_id", type=int)
@click.pass_context
def token_revoke(ctx: click.Context, token_id: int) -> None:
    """Revoke a token for good."""
    from crm_core.errors import NotFoundError
    from crm_core.services.api_tokens import revoke_token

    async def go() -> None:
        async with database_of(settings_from(ctx)) as database, database.transaction() as session:
            await revoke_token(session, token_id, actor=SYSTEM_ACTOR)

    try:
        run(go())
    except NotFoundError:
        raise click.ClickException(f"no token {token_id}") from None
    click.echo(f"token {token_id} revoked")


@api.command("scopes")
def scopes() -> None:
    """The scopes a token may carry."""
    from crm_core.services.api_tokens import SCOPES

    for name, text in SCOPES.items():
        click.echo(f"{name:22} {text}")
