"""Reports as files: CSV (one block per table, a title line before each) and XLSX (one
sheet per table, via openpyxl). Headers are the labels the caller gives (translated)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable

from openpyxl import Workbook

from crm_core.services.analytics.base import Report

Label = Callable[[str], str]


def _cell(value: object) -> object:
    return "" if value is None else value


def to_csv(report: Report, label: Label = str) -> str:
    """The report as CSV text: for each table a line with its title, the header, the rows,
    and an empty line."""
    out = io.StringIO()
    writer = csv.writer(out)
    for table in report.tables.values():
        writer.writerow([label(table.key)])
        writer.writerow([label(c) for c in table.columns])
        for row in table.rows:
            writer.writerow([_cell(v) for v in row])
        writer.writerow([])
    return out.getvalue()


def to_xlsx(report: Report, label: Label = str) -> bytes:
    """The report as an XLSX workbook: one sheet per table (named by its key), numbers as
    numbers."""
    book = Workbook()
    book.remove(book.active)  # type: ignore[arg-type]
    for table in report.tables.values():
        sheet = book.create_sheet(title=table.key[:31])
        sheet.append([label(c) for c in table.columns])
        for row in table.rows:
            sheet.append([_cell(v) for v in row])
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()
