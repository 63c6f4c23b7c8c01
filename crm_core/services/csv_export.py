"""Streaming export of customers to CSV, with the filters of the customer search.

Customers are read in batches by id (keyset: ``id > last id``, never OFFSET), each
batch with its organization names, e-mail addresses, phone numbers and tags, and
written out encoded as they come, so an export of any size uses little memory.
Headers are English by default or Chinese; the importer maps either back.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, BinaryIO, Final

from sqlalchemy import ColumnElement, select

from crm_core.errors import ValidationError
from crm_core.models import (
    Customer,
    CustomerIdentity,
    CustomerTag,
    IdentityKind,
    Organization,
)
from crm_core.services.csv_columns import export_headers
from crm_core.services.csv_import import SessionSource, session_factory
from crm_core.services.customer_query import (
    CustomerQuery,
    build_filters,
    name_condition,
    name_query_text,
    resolve_free_text,
)

DEFAULT_EXPORT_BATCH: Final = 1000
LIST_SEPARATOR: Final = ";"
EXPORT_ENCODINGS: Final = ("utf-8-sig", "utf-8", "gbk", "gb18030")


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote."""

    rows: int
    lossy_rows: int
    """Rows with characters the encoding cannot hold, written with ``?`` in their place."""
    encoding: str
    headers: str


def export_conditions(
    query: CustomerQuery, *, region: str, timezone: str = "UTC"
) -> list[ColumnElement[bool]]:
    """The conditions of a customer search (free text, name and every filter), for export.

    Free text is routed to e-mail, phone or name exactly as ``search_customers`` does;
    names match the search key exactly (no fuzzy fallback in an export).
    """
    name = name_query_text(query)
    resolved = resolve_free_text(query)
    conditions = build_filters(resolved, region=region, timezone=timezone)
    if name:
        conditions.append(name_condition(name))
    return conditions


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


class _Encoder:
    """Encodes rows of text, replacing what the encoding cannot hold and counting those rows."""

    def __init__(self, sink: BinaryIO, encoding: str) -> None:
        try:
            name = codecs.lookup(encoding).name
        except LookupError:
            raise ValidationError("encoding", encoding, "unknown encoding") from None
        self.sink = sink
        self.encoding = "utf-8" if name == "utf-8-sig" else encoding
        self.bom = name == "utf-8-sig"
        self.lossy = 0
        self.buffer = io.StringIO()
        self.writer = csv.writer(self.buffer)

    def write_rows(self, rows: Sequence[Sequence[str]]) -> None:
        """Render rows as CSV and write them encoded (the BOM first, if any)."""
        texts: list[str] = []
        for row in rows:
            self.writer.writerow(row)
            texts.append(self.buffer.getvalue())
            self.buffer.seek(0)
            self.buffer.truncate()
        try:
            data = "".join(texts).encode(self.encoding)
        except UnicodeEncodeError:
            parts = []
            for text in texts:
                try:
                    parts.append(text.encode(self.encoding))
                except UnicodeEncodeError:
                    parts.append(text.encode(self.encoding, errors="replace"))
                    self.lossy += 1
            data = b"".join(parts)
        if self.bom:
            data = codecs.BOM_UTF8 + data
            self.bom = False
        self.sink.write(data)


async def export_customers(
    database: SessionSource,
    sink: BinaryIO,
    *,
    region: str,
    timezone: str = "UTC",
    query: CustomerQuery | dict[str, Any] | None = None,
    headers: str = "en",
    encoding: str = "utf-8-sig",
    batch_size: int = DEFAULT_EXPORT_BATCH,
    progress: Callable[[int], None] | None = None,
) -> ExportReport:
    """Write the customers matching ``query`` to ``sink`` as CSV, in id order, batch by batch.

    ``headers`` is ``en`` or ``zh``; ``encoding`` ``utf-8-sig`` (Excel-friendly, the
    default), ``utf-8``, ``gbk`` or ``gb18030``. E-mails, phones and tags are joined with
    ``;``. Rows come in id order (the query's sort and page are not used). ``progress``
    is called with the number of rows written after each batch.
    """
    if isinstance(query, dict):
        query = CustomerQuery.model_validate(query)
    query = query or CustomerQuery()
    header_row = export_headers(headers)
    if batch_size < 1:
        raise ValidationError("batch_size", batch_size, "must be at least 1")
    conditions = export_conditions(query, region=region, timezone=timezone)
    encoder = _Encoder(sink, encoding)
    encoder.write_rows([header_row])
    sessions = session_factory(database)
    base = (
        select(
            Customer.id,
            Customer.display_name,
            Customer.given_name,
            Customer.family_name,
            Organization.name,
            Customer.tier_code,
            Customer.category_code,
            Customer.lifecycle_stage,
            Customer.city,
            Customer.province,
            Customer.country,
            Customer.postcode,
            Customer.street,
            Customer.birthday,
            Customer.language,
            Customer.created_at,
        )
        .outerjoin(Organization, Organization.id == Customer.organization_id)
        .where(*conditions)
        .order_by(Customer.id)
        .limit(batch_size)
    )
    last_id = 0
    written = 0
    while True:
        async with sessions() as session:
            rows = (await session.execute(base.where(Customer.id > last_id))).all()
            if not rows:
                break
            ids = [row[0] for row in rows]
            handles: dict[tuple[int, IdentityKind], list[str]] = defaultdict(list)
            # All kinds, filtered here: with a condition on the kind, SQLite would read
            # the (kind, value) index whole instead of looking the customers up.
            for customer_id, kind, value in await session.execute(
                select(CustomerIdentity.customer_id, CustomerIdentity.kind, CustomerIdentity.value)
                .where(CustomerIdentity.customer_id.in_(ids))
                .order_by(CustomerIdentity.id)
            ):
                handles[(customer_id, kind)].append(value)
            tags: dict[int, list[str]] = defaultdict(list)
            for customer_id, tag in await session.execute(
                select(CustomerTag.customer_id, CustomerTag.tag)
                .where(CustomerTag.customer_id.in_(ids))
                .order_by(CustomerTag.customer_id, CustomerTag.tag)
            ):
                tags[customer_id].append(tag)
        out: list[list[str]] = []
        for (
            customer_id, display, given, family, organization, tier, category, stage, city,
            province, country, postcode, street, birthday, language, created_at,
        ) in rows:
            out.append([
                str(customer_id), display, _text(given), _text(family), _text(organization),
                LIST_SEPARATOR.join(handles.get((customer_id, IdentityKind.EMAIL), ())),
                LIST_SEPARATOR.join(handles.get((customer_id, IdentityKind.PHONE), ())),
                LIST_SEPARATOR.join(tags.get(customer_id, ())),
                _text(tier), _text(category), _text(stage.value if stage else None), _text(city),
                _text(province), _text(country), _text(postcode), _text(street),
                _text(birthday), _text(language), _text(created_at),
            ])
        encoder.write_rows(out)
        written += len(out)
        last_id = ids[-1]
        if progress is not None:
            progress(written)
        if len(rows) < batch_size:
            break
    return ExportReport(written, encoder.lossy, encoding, headers)
