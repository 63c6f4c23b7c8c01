"""``contact-center customers …``: search, show, import, export and maintain customer records."""

from __future__ import annotations

import click

from contact_center.cli import run, settings_from
from contact_center.commands.filters import customer_filters
from contact_center.runtime import database_of
from crm_core.errors import CrmError
from crm_core.models import Customer


def describe(customer: Customer) -> str:
    """One line about a customer: id, name, organization, phones, e-mails, class."""
    parts = [f"#{customer.id}", customer.display_name]
    if customer.organization is not None:
        parts.append(f"({customer.organization.name})")
    parts.extend(customer.phones)
    parts.extend(customer.emails)
    klass = "/".join(x for x in (customer.tier_code, customer.category_code) if x)
    if klass:
        parts.append(f"[{klass}]")
    parts.append(customer.lifecycle_stage.value)
    if customer.deleted_at is not None:
        parts.append("(deleted)")
    return "  ".join(parts)


@click.group()
def customers() -> None:
    """Customer records."""


@customers.command()
@click.argument("text", required=False)
@customer_filters
@click.option("--sort", default="relevance", show_default=True)
@click.option("--page", type=int, default=1, show_default=True)
@click.option("--page-size", type=int, default=20, show_default=True)
@click.pass_context
def search(ctx: click.Context, text: str | None, **criteria: object) -> None:
    """Find customers by free TEXT (name, phone or e-mail) and/or the options."""
    import pydantic

    from crm_core.services.customer_query import CustomerQuery, search_customers

    settings = settings_from(ctx)
    values = {k: v for k, v in criteria.items() if v not in (None, False)}
    try:
        query = CustomerQuery.model_validate({"text": text, **values})
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        raise click.BadParameter(
            first["msg"], param_hint=".".join(map(str, first["loc"]))
        ) from None
    if query.sort == "relevance" and not (query.text or query.name):
        query = query.model_copy(update={"sort": "-created_at"})

    async def go() -> None:
        async with database_of(settings) as database, database.sessions() as session:
            page = await search_customers(
                session,
                query,
                region=settings.locale.default_region,
                timezone=settings.locale.timezone,
            )
        if page.fuzzy and page.items:
            click.echo("no exact match; nearest names:", err=True)
        for customer in page.items:
            click.echo(describe(customer))
        shown = len(page.items)
        first = (page.page - 1) * page.page_size + 1 if shown else 0
        click.echo(f"{first}-{first + shown - 1 if shown else 0} of {page.total}", err=True)

    try:
        run(go())
    except CrmError as exc:
        raise click.ClickException(str(exc)) from None


from contact_center.commands.customer_files import export_command, import_command  # noqa: E402

customers.add_command(import_command)
customers.add_command(export_command)
