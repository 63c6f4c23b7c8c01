"""``contact-center customers import`` and ``export``: customers from and to CSV files."""

from __future__ import annotations

import contextlib
import csv
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import click

from contact_center.cli import run, settings_from
from contact_center.commands.filters import customer_filters
from contact_center.runtime import SYSTEM_ACTOR, database_of
from crm_core.errors import CrmError

if TYPE_CHECKING:
    from crm_core.services.csv_import import ImportPlan

SHOWN_ERRORS = 20


def _print_plan(plan: ImportPlan) -> None:
    """Show how the file is read: encoding, delimiter and where each column goes."""
    click.echo(f"file {plan.file_name}: encoding {plan.encoding}, delimiter {plan.delimiter!r}")
    click.echo("columns:")
    for column in plan.columns:
        origin = " (--map)" if column.explicit else ""
        click.echo(f"  {column.index + 1:>3}. {column.describe()}{origin}")


@click.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--encoding", default=None,
    help="Encoding of the file (e.g. utf-8, gbk); found automatically when not given.",
)
@click.option(
    "--map", "mapping", default=None, metavar="HEADER=FIELD,…",
    help='Override the column mapping, e.g. "surname=family_name,suburb=city"; '
    "FIELD may be attribute or ignore.",
)
@click.option(
    "--on-conflict", type=click.Choice(["report", "skip"]), default="report", show_default=True,
    help="A row whose e-mail or phone already belongs to a customer: report it, or skip it.",
)
@click.option(
    "--errors", "errors_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Write every row error to this CSV file.",
)
@click.option("--delimiter", default=None, help="Field delimiter; guessed from the header.")
@click.option(
    "--batch-size", type=click.IntRange(1, 10_000), default=1000, show_default=True,
    help="Rows written per transaction.",
)
@click.option(
    "--workers", type=click.IntRange(min=0), default=None,
    help="Processes validating rows (0: a thread). Default: by file size and CPUs.",
)
@click.pass_context
def import_command(
    ctx: click.Context,
    file: Path,
    encoding: str | None,
    mapping: str | None,
    on_conflict: str,
    errors_path: Path | None,
    delimiter: str | None,
    batch_size: int,
    workers: int | None,
) -> None:
    """Import customers from a CSV FILE (UTF-8 or GBK, English or Chinese headers).

    Good rows are imported and bad rows reported with their line number; the exit
    status is 0 whenever the file could be read, even if some rows were rejected.
    """
    from crm_core.services.csv_columns import parse_mapping_option
    from crm_core.services.csv_import import (
        ERROR_REPORT_HEADERS,
        ImportProgress,
        RowError,
        default_workers,
        import_customers,
    )

    settings = settings_from(ctx)
    try:
        overrides = parse_mapping_option(mapping)
    except CrmError as exc:
        raise click.BadParameter(str(exc), param_hint="--map") from None
    if delimiter == "\\t":
        delimiter = "\t"
    size = file.stat().st_size if file.is_file() else 0

    with contextlib.ExitStack() as stack:
        error_writer: Any = None
        if errors_path is not None:
            handle = stack.enter_context(
                errors_path.open("w", encoding="utf-8-sig", newline="")
            )
            error_writer = csv.writer(handle)
            error_writer.writerow(ERROR_REPORT_HEADERS)
        bar: Any = None
        done = 0

        def on_start(plan: ImportPlan) -> None:
            nonlocal bar
            _print_plan(plan)
            bar = stack.enter_context(
                click.progressbar(length=max(plan.bytes_total, 1), label="importing",
                                  file=sys.stderr)
            )

        def on_progress(state: ImportProgress) -> None:
            nonlocal done
            if bar is not None and state.bytes_read > done:
                bar.update(state.bytes_read - done)
                done = state.bytes_read

        def on_error(error: RowError) -> None:
            if error_writer is not None:
                error_writer.writerow(error.as_row())

        async def go() -> Any:
            async with database_of(settings) as database:
                return await import_customers(
                    database,
                    file,
                    actor=SYSTEM_ACTOR,
                    region=settings.locale.default_region,
                    encoding=encoding,
                    mapping=overrides,
                    delimiter=delimiter,
                    on_conflict=on_conflict,  # type: ignore[arg-type]
                    batch_size=batch_size,
                    workers=default_workers(size) if workers is None else workers,
                    on_start=on_start,
                    progress=on_progress,
                    on_error=on_error,
                    max_errors=SHOWN_ERRORS,
                )

        try:
            report = run(go())
        except CrmError as exc:
            raise click.ClickException(str(exc)) from None

    click.echo(
        f"rows read: {report.rows_read}, imported: {report.imported}, "
        f"skipped: {report.skipped}, failed: {report.failed}"
        + (f", organizations created: {report.organizations_created}"
           if report.organizations_created else "")
    )
    if report.failed:
        click.echo(f"errors (first {min(report.failed, SHOWN_ERRORS)} of {report.failed}):")
        for error in report.errors[:SHOWN_ERRORS]:
            column = f" [{error.column}]" if error.column and error.column != error.field else ""
            click.echo(
                f"  line {error.line}: {error.field}{column} {error.value!r}: {error.reason}"
            )
        if errors_path is not None:
            click.echo(f"all errors written to {errors_path}")
        rows = "row" if report.failed == 1 else "rows"
        click.echo(
            f"the file was processed: {report.failed} {rows} with errors not imported, "
            "all other rows were"
        )


@click.command("export")
@click.argument("output", default="-", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--headers", type=click.Choice(["en", "zh"]), default="en", show_default=True,
    help="Header language; the importer maps both back.",
)
@click.option(
    "--encoding", type=click.Choice(["utf-8-sig", "utf-8", "gbk", "gb18030"]),
    default="utf-8-sig", show_default=True, help="utf-8-sig opens cleanly in Excel.",
)
@click.option("--text", default=None, help="Free text: name, phone or e-mail.")
@customer_filters
@click.pass_context
def export_command(
    ctx: click.Context, output: str, headers: str, encoding: str, **criteria: object
) -> None:
    """Export the customers matching the options (all by default) as CSV to OUTPUT ('-': stdout)."""
    import pydantic

    from crm_core.services.csv_export import export_customers
    from crm_core.services.customer_query import CustomerQuery

    settings = settings_from(ctx)
    values = {k: v for k, v in criteria.items() if v not in (None, False)}
    try:
        query = CustomerQuery.model_validate(values)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        raise click.BadParameter(
            first["msg"], param_hint=".".join(map(str, first["loc"]))
        ) from None

    with contextlib.ExitStack() as stack:
        # '-' is stdout (kept open); a path is opened (and truncated) here.
        sink: BinaryIO = stack.enter_context(click.open_file(output, "wb"))

        async def go() -> Any:
            async with database_of(settings) as database:
                return await export_customers(
                    database,
                    sink,
                    region=settings.locale.default_region,
                    timezone=settings.locale.timezone,
                    query=query,
                    headers=headers,
                    encoding=encoding,
                )

        try:
            report = run(go())
        except CrmError as exc:
            raise click.ClickException(str(exc)) from None
        sink.flush()
    where = "stdout" if output == "-" else output
    click.echo(f"exported {report.rows} customers to {where}", err=True)
    if report.lossy_rows:
        click.echo(
            f"{report.lossy_rows} rows had characters {encoding} cannot hold (written as ?); "
            "use --encoding utf-8-sig to keep them",
            err=True,
        )
