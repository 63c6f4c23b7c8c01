"""Streaming import of customers from a CSV file (UTF-8 with or without BOM, GBK/GB18030).

The file is never read whole. A first pass over its bytes finds the encoding; the
second parses rows and handles them in batches: each row is validated on its own
(``check_customer``, pure), then per batch one query checks every identity, the
organizations are found or created through a cache, and customers, identities, tags
and lifecycle transitions are written with bulk INSERTs in one transaction. A bad row
is reported (line, column, field, value, reason) and writes nothing; the good rows of
the same batch are written. One audit entry records the whole import.
"""

from __future__ import annotations

import asyncio
import codecs
import collections
import concurrent.futures
import contextlib
import csv
import enum
import functools
import io
import itertools
import json
import multiprocessing
import os
import re
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO, Final, Literal

from sqlalchemy import (
    JSON,
    ColumnElement,
    Select,
    String,
    Table,
    and_,
    any_,
    bindparam,
    func,
    insert,
    or_,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.db import Database
from crm_core.errors import CrmError, ValidationError
from crm_core.identity import rebuild_match_keys
from crm_core.models import (
    AuditLog,
    Customer,
    CustomerCategory,
    CustomerIdentity,
    CustomerTag,
    CustomerTier,
    IdentityKind,
    LifecycleStage,
    LifecycleTransition,
    Organization,
    utcnow,
)
from crm_core.normalize import name_key
from crm_core.services import audit
from crm_core.services.csv_columns import (
    ATTRIBUTE,
    IGNORE,
    NAME_FIELDS,
    ColumnMapping,
    map_columns,
    split_list,
    split_phones,
    split_tags,
)
from crm_core.services.customers import (
    CheckedCustomer,
    check_customer,
    parse_fields,
)

OnConflict = Literal["report", "skip"]
SessionSource = Database | async_sessionmaker[AsyncSession]

DEFAULT_BATCH_SIZE: Final = 1000
MAX_BATCH_SIZE: Final = 10_000
"""Keeps the identity lookup of a batch under SQLite's 32,766 parameters."""
PREPASS_CHUNK: Final = 1 << 20
READ_BUFFER: Final = 1 << 16
MAX_KEPT_ERRORS: Final = 1000
WRITE_ATTEMPTS: Final = 3
PROCESS_THRESHOLD_BYTES: Final = 4 << 20
MAX_WORKERS: Final = 4
IMPORT_REASON: Final = "imported"
ERROR_REPORT_HEADERS: Final = ("line", "column", "field", "value", "reason", "customer_id")

_DELIMITERS: Final = (",", "\t", ";", "|")
_BIRTHDAY = re.compile(
    r"^(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?(?:[ T]0{1,2}:00(?::00)?)?$"
)
_MONEY_NOISE = re.compile(r"[\s,¥￥$€£]")
_LIFECYCLE_ALIASES: Final[Mapping[str, LifecycleStage]] = {
    "线索": LifecycleStage.LEAD, "潜在客户": LifecycleStage.PROSPECT,
    "意向客户": LifecycleStage.PROSPECT, "活跃": LifecycleStage.ACTIVE,
    "活跃客户": LifecycleStage.ACTIVE, "成交客户": LifecycleStage.ACTIVE,
    "沉睡": LifecycleStage.DORMANT, "休眠": LifecycleStage.DORMANT,
    "沉睡客户": LifecycleStage.DORMANT, "流失": LifecycleStage.CHURNED,
    "流失客户": LifecycleStage.CHURNED,
}
_FIELD_OF_ERROR: Final[Mapping[str, str]] = {
    "emails": "email", "phones": "phone", "customer": "row", "organization": "organization_name",
}


class CsvFileError(CrmError):
    """The file cannot be imported at all: missing, unreadable, no header, no name column."""

    code = "csv_file_error"


@dataclass(frozen=True)
class RowError:
    """Why one row of the file was not imported."""

    line: int
    """Line in the file where the row starts; the header is line 1."""
    field: str
    value: str
    reason: str
    column: str = ""
    """The header of the column that held the value, when one did."""
    customer_id: int | None = None
    """The customer already holding the identity, for duplicates."""

    def as_row(self) -> list[str]:
        """The error as a row of the error report (see ``ERROR_REPORT_HEADERS``)."""
        return [
            str(self.line), self.column, self.field, self.value, self.reason,
            "" if self.customer_id is None else str(self.customer_id),
        ]


@dataclass(frozen=True)
class ImportPlan:
    """How the file will be read: its encoding, delimiter and column mapping."""

    file_name: str
    encoding: str
    delimiter: str
    columns: list[ColumnMapping]
    bytes_total: int


@dataclass(frozen=True)
class ImportProgress:
    """Where a running import stands."""

    bytes_read: int
    bytes_total: int
    rows_read: int
    imported: int
    skipped: int
    failed: int


@dataclass
class ImportReport:
    """The outcome of an import: counts, the mapping used and the first errors."""

    plan: ImportPlan
    rows_read: int = 0
    imported: int = 0
    skipped: int = 0
    failed: int = 0
    organizations_created: int = 0
    errors: list[RowError] = field(default_factory=list)
    """The first ``max_errors`` errors (all of them go to ``on_error``)."""

    def counts(self) -> dict[str, int]:
        """The counts, for summaries and the audit entry."""
        return {
            "rows_read": self.rows_read,
            "imported": self.imported,
            "skipped": self.skipped,
            "failed": self.failed,
            "organizations_created": self.organizations_created,
        }


def session_factory(source: SessionSource) -> async_sessionmaker[AsyncSession]:
    """The session factory of a ``Database``, or the factory itself."""
    return source.sessions if isinstance(source, Database) else source


# --- reading the file -------------------------------------------------------------------------


def _decode_error_offset(stream: BinaryIO, encoding: str) -> int | None:
    """Feed the stream through an incremental decoder; the byte offset of the first error."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    offset = 0
    while True:
        chunk = stream.read(PREPASS_CHUNK)
        pending = len(decoder.getstate()[0])
        try:
            decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            return offset - pending + max(exc.start, 0)
        if not chunk:
            return None
        offset += len(chunk)


def detect_encoding(path: Path, encoding: str | None = None) -> str:
    """The encoding of a file, found by streaming its bytes: UTF-8 (BOM noted), else GB18030.

    With ``encoding`` given, the file is only checked to decode with it. A file that
    decodes with neither raises ``CsvFileError`` naming the byte offset of the problem.
    """
    try:
        with path.open("rb") as stream:
            if encoding is not None:
                try:
                    codecs.lookup(encoding)
                except LookupError:
                    raise CsvFileError(f"unknown encoding {encoding!r}") from None
                bad = _decode_error_offset(stream, encoding)
                if bad is not None:
                    raise CsvFileError(
                        f"{path.name} is not valid {encoding} (first bad byte at offset {bad})"
                    )
                return encoding
            head = stream.read(4)
            stream.seek(0)
            if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                candidates: tuple[str, ...] = ("utf-16",)
            elif head.startswith(codecs.BOM_UTF8):
                candidates = ("utf-8-sig",)
            else:
                candidates = ("utf-8", "gb18030")
            offsets = []
            for candidate in candidates:
                stream.seek(0)
                bad = _decode_error_offset(stream, candidate)
                if bad is None:
                    return candidate
                offsets.append(f"{candidate} fails at byte {bad}")
    except OSError as exc:
        raise CsvFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    raise CsvFileError(
        f"cannot tell the encoding of {path.name} ({'; '.join(offsets)}); pass the encoding"
    )


class CountingReader(io.RawIOBase):
    """A readable binary stream that counts the bytes taken from the stream it wraps."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self.consumed = 0

    def readable(self) -> bool:
        """Always readable."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Read into ``buffer`` from the wrapped stream, counting what was read."""
        data = self._raw.read(len(buffer))
        size = len(data)
        buffer[:size] = data
        self.consumed += size
        return size


def guess_delimiter(header_line: str) -> str:
    """The most frequent of ``,`` tab ``;`` ``|`` in the header line (``,`` when none)."""
    counts = {d: header_line.count(d) for d in _DELIMITERS}
    best = max(_DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def parse_birthday(text: str) -> date:
    """A date written ``1990-05-17``, ``1990/5/17``, ``1990.05.17`` or ``1990年5月17日``."""
    match = _BIRTHDAY.match(text.strip())
    if match is None:
        raise ValidationError(
            "birthday",
            text,
            "expected a date like 1990-05-17, 1990/5/17, 1990.05.17 or 1990年5月17日",
        )
    year, month, day = (int(g) for g in match.groups())
    try:
        return date(year, month, day)
    except ValueError as exc:
        raise ValidationError("birthday", text, str(exc)) from None


def _code_lookup(rows: Sequence[tuple[str, str, str | None]]) -> dict[str, str]:
    """Code, English name and Chinese name (case-folded) → code."""
    lookup: dict[str, str] = {}
    for code, name, name_zh in rows:
        for key in (name_zh, name):
            if key:
                lookup.setdefault(key.strip().casefold(), code)
    for code, _, _ in rows:
        lookup[code.casefold()] = code
    return lookup


class RowConverter:
    """Turns the cells of one row into a validated ``CheckedCustomer`` per the column mapping."""

    def __init__(
        self,
        columns: Sequence[ColumnMapping],
        *,
        region: str,
        source: str,
        tiers: Mapping[str, str],
        categories: Mapping[str, str],
        today: date | None = None,
    ) -> None:
        self.width = len(columns)
        self.region = region
        self.source = source
        self.tiers = tiers
        self.categories = categories
        self.today = today or date.today()
        self.singles = [
            (c.index, c.target) for c in columns if c.target not in (ATTRIBUTE, IGNORE)
            and c.target not in ("email", "phone", "tags")
        ]
        self.emails = [c.index for c in columns if c.target == "email"]
        self.phones = [c.index for c in columns if c.target == "phone"]
        self.tags = [c.index for c in columns if c.target == "tags"]
        self.attributes: list[tuple[int, str]] = []
        seen: set[str] = set()
        for c in columns:
            if c.target == ATTRIBUTE:
                key, n = c.header, 2
                while key in seen:
                    key, n = f"{c.header} ({n})", n + 1
                seen.add(key)
                self.attributes.append((c.index, key))
        self.headers: dict[str, str] = {}
        for c in columns:
            if c.target == ATTRIBUTE:
                self.headers.setdefault(c.header, c.header)
            elif c.target != IGNORE:
                self.headers.setdefault(c.target, c.header)

    def column_of(self, field_name: str) -> str:
        """The header of the column that feeds a field (``""`` when none does)."""
        return self.headers.get(field_name, "")

    def _value(self, target: str, text: str) -> Any:
        if target == "birthday":
            return parse_birthday(text)
        if target == "tier_code":
            code = self.tiers.get(text.casefold())
            if code is None:
                raise ValidationError("tier_code", text, "no such tier")
            return code
        if target == "category_code":
            code = self.categories.get(text.casefold())
            if code is None:
                raise ValidationError("category_code", text, "no such category")
            return code
        if target == "lifecycle_stage":
            return _LIFECYCLE_ALIASES.get(text, text.lower())
        if target == "lifetime_value":
            return _MONEY_NOISE.sub("", text)
        return text

    def fields_of(self, cells: Sequence[str]) -> dict[str, Any]:
        """The ``CustomerFields`` input of one row (raises ``ValidationError`` on a bad cell)."""
        count = len(cells)
        if count > self.width and any(c.strip() for c in cells[self.width :]):
            raise ValidationError(
                "row", f"{count} cells", f"more cells than the {self.width} columns of the header"
            )
        data: dict[str, Any] = {"source": self.source}
        for index, target in self.singles:
            if index < count:
                text = cells[index].strip()
                if text:
                    data[target] = self._value(target, text)
        emails = [e for i in self.emails if i < count for e in split_list(cells[i])]
        if emails:
            data["emails"] = emails
        phones = [p for i in self.phones if i < count for p in split_phones(cells[i])]
        if phones:
            data["phones"] = phones
        tags = [t for i in self.tags if i < count for t in split_tags(cells[i])]
        if tags:
            data["tags"] = tags
        attributes = {}
        for index, key in self.attributes:
            if index < count:
                text = cells[index].strip()
                if text:
                    attributes[key] = text
        if attributes:
            data["custom_attributes"] = attributes
        return data

    def check(self, cells: Sequence[str]) -> CheckedCustomer:
        """Validate and normalize one row; pure, raises ``ValidationError``."""
        fields = parse_fields(self.fields_of(cells))
        return check_customer(fields, region=self.region, creating=True, today=self.today)

    def pending(self, line: int, cells: Sequence[str]) -> _Pending:
        """A validated row with its customer columns computed (pure, thread-safe)."""
        checked = self.check(cells)
        return _Pending(
            line,
            customer_row(checked),
            checked.identities or [],
            checked.tags or [],
            checked.organization_name,
        )

    def validate(
        self, rows: Sequence[tuple[int, list[str]]]
    ) -> tuple[list[_Pending], list[RowError]]:
        """Validate rows read from the file: the good ones, and an error for each bad one."""
        good: list[_Pending] = []
        bad: list[RowError] = []
        for line, cells in rows:
            try:
                good.append(self.pending(line, cells))
            except ValidationError as exc:
                bad.append(self.error(line, exc))
        return good, bad

    def error(self, line: int, exc: ValidationError) -> RowError:
        """A ``RowError`` for a validation problem of a row."""
        name = exc.field.split(".")[0]
        name = _FIELD_OF_ERROR.get(name, name)
        value = "" if exc.value is None else str(exc.value)
        return RowError(line, name, value, exc.reason, self.column_of(name))


# --- writing batches ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    """A row that passed validation, reduced to what the writer needs (cheap to pickle)."""

    line: int
    row: dict[str, Any]
    """The ``customers`` columns the row sets (see ``customer_row``)."""
    identities: list[tuple[IdentityKind, str, str | None]]
    tags: list[str]
    organization_name: str | None


@dataclass
class _BatchOutcome:
    """What writing one batch did."""

    created: list[tuple[int, int]] = field(default_factory=list)
    """(customer id, line) of the rows written."""
    errors: list[RowError] = field(default_factory=list)
    skipped: int = 0
    new_organizations: dict[str, int] = field(default_factory=dict)


class _ImportState:
    """What the import remembers across batches, kept small: ids and lines in arrays."""

    def __init__(self) -> None:
        self.ids = array("q")
        self.lines = array("q")
        self.organizations: dict[str, int] = {}

    def add(self, created: list[tuple[int, int]]) -> None:
        """Remember the customers a batch created, keeping the ids sorted for bisect."""
        for customer_id, line in sorted(created):
            if self.ids and customer_id < self.ids[-1]:  # not expected: ids only grow
                at = bisect_left(self.ids, customer_id)
                self.ids.insert(at, customer_id)
                self.lines.insert(at, line)
            else:
                self.ids.append(customer_id)
                self.lines.append(line)

    def line_of(self, customer_id: int) -> int | None:
        """The line of the file that created a customer, if this import created it."""
        at = bisect_left(self.ids, customer_id)
        if at < len(self.ids) and self.ids[at] == customer_id:
            return self.lines[at]
        return None


CUSTOMERS: Final[Table] = Customer.__table__  # type: ignore[assignment]
IDENTITIES: Final[Table] = CustomerIdentity.__table__  # type: ignore[assignment]
TAGS: Final[Table] = CustomerTag.__table__  # type: ignore[assignment]
TRANSITIONS: Final[Table] = LifecycleTransition.__table__  # type: ignore[assignment]
_CUSTOMER_KEYS: Final = tuple(c.key for c in CUSTOMERS.columns if c.key != "id")
_CUSTOMER_DEFAULTS: Final[Mapping[str, Any]] = {
    **dict.fromkeys(_CUSTOMER_KEYS),
    "lifecycle_stage": LifecycleStage.LEAD,
    "lifetime_value": Decimal("0"),
    "custom_attributes": {},
    "marketing_opt_in": {},
    "do_not_contact": False,
}


def customer_row(checked: CheckedCustomer) -> dict[str, Any]:
    """The ``customers`` columns a checked new customer sets, with its search key.

    Columns left out take ``_CUSTOMER_DEFAULTS`` when written (kept sparse, the row is
    cheap to send back from a validation process). The name key is computed exactly
    as ``create_customer`` does it.
    """
    row = dict(checked.columns)
    row["name_key"] = name_key(
        row.get("display_name"), row.get("given_name"), row.get("family_name")
    )
    return row


Columns = Sequence[tuple[str, Sequence[Any]]]
"""Column-wise rows: (column key, one value per row)."""


def _process_dicts(processor: Callable[[Any], Any], values: Sequence[Any]) -> list[Any]:
    """Bind JSON values, serializing each distinct flat dict once (most rows repeat)."""
    seen: dict[Any, Any] = {}
    out: list[Any] = []
    for value in values:
        if value is None:
            out.append(None)
            continue
        try:
            key = tuple(value.items())
            hash(key)
        except TypeError:  # nested values: no memo
            out.append(processor(value))
            continue
        if key not in seen:
            seen[key] = processor(value)
        out.append(seen[key])
    return out


class _SqliteInserts:
    """Bulk INSERTs through the driver's ``executemany``, values bound as SQLAlchemy would."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.quote = dialect.identifier_preparer.quote

    def _processor(self, table: Table, key: str) -> Callable[[Any], Any] | None:
        column_type = table.c[key].type
        processor: Callable[[Any], Any] | None = column_type.dialect_impl(
            self.dialect
        ).bind_processor(self.dialect)
        return processor

    def _statement(self, table: Table, keys: Sequence[str]) -> str:
        names = ", ".join(self.quote(table.c[k].name) for k in keys)
        marks = ", ".join("?" * len(keys))
        return f"INSERT INTO {self.quote(table.name)} ({names}) VALUES ({marks})"

    def _tuples(self, table: Table, columns: Columns) -> list[tuple[Any, ...]]:
        converted: list[Sequence[Any]] = []
        for key, values in columns:
            processor = self._processor(table, key)
            first = values[0] if values else None
            if processor is None:
                converted.append(values)
            elif all(v is first for v in values):  # a constant (a timestamp, a default)
                constant = None if first is None else processor(first)
                converted.append([constant] * len(values))
            elif isinstance(first, dict):
                converted.append(_process_dicts(processor, values))
            else:
                converted.append([None if v is None else processor(v) for v in values])
        return list(zip(*converted, strict=True))

    async def insert(self, session: AsyncSession, table: Table, columns: Columns) -> None:
        """Insert rows given column-wise."""
        if columns and columns[0][1]:
            connection = await session.connection()
            await connection.exec_driver_sql(
                self._statement(table, [k for k, _ in columns]), self._tuples(table, columns)
            )

    async def insert_with_ids(
        self, session: AsyncSession, table: Table, columns: Columns
    ) -> list[int]:
        """Insert rows given column-wise and return their ids, in order.

        The first row is inserted alone: its rowid comes back, and the transaction now
        holds SQLite's write lock, so the next ids are free to be given explicitly.
        """
        rows = self._tuples(table, columns)
        if not rows:
            return []
        keys = [k for k, _ in columns]
        connection = await session.connection()
        first = (await connection.exec_driver_sql(self._statement(table, keys), rows[0])).lastrowid
        if first is None:
            raise RuntimeError(f"{table.name}: SQLite returned no rowid")
        if len(rows) > 1:
            await connection.exec_driver_sql(
                self._statement(table, ["id", *keys]),
                [(first + n, *row) for n, row in enumerate(rows[1:], start=1)],
            )
        return list(range(first, first + len(rows)))

    async def add_customers(
        self,
        session: AsyncSession,
        customers: Columns,
        children: Callable[[Sequence[int]], tuple[Columns, Columns]],
        *,
        actor: str,
        at: datetime,
    ) -> list[int]:
        """Insert customers, their identities, tags and first lifecycle transitions."""
        ids = await self.insert_with_ids(session, CUSTOMERS, customers)
        if ids:
            identities, tags = children(ids)
            await self.insert(session, IDENTITIES, identities)
            await self.insert(session, TAGS, tags)
            await self._transitions(session, ids, actor=actor, at=at)
        return ids

    async def _transitions(
        self, session: AsyncSession, ids: Sequence[int], *, actor: str, at: datetime
    ) -> None:
        """A lifecycle transition from nothing to each new customer's stage.

        The ids are consecutive and this transaction holds the write lock, so the
        range holds exactly the new customers.
        """
        stamp = self._processor(TRANSITIONS, "at")
        connection = await session.connection()
        await connection.exec_driver_sql(
            "INSERT INTO lifecycle_transitions"
            " (customer_id, from_stage, to_stage, reason, actor, at)"
            " SELECT id, NULL, lifecycle_stage, ?, ?, ? FROM customers WHERE id BETWEEN ? AND ?"
            " ORDER BY id",
            (IMPORT_REASON, actor, stamp(at) if stamp else at, ids[0], ids[-1]),
        )


class _PostgresInserts:
    """Bulk INSERTs from arrays (``INSERT … SELECT … FROM unnest(…)``), one statement a batch."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.quote = dialect.identifier_preparer.quote

    def _value(self, value: Any, is_json: bool) -> Any:
        if value is None:
            return None
        if is_json:
            return json.dumps(value)
        if isinstance(value, enum.Enum):
            return value.value
        return value

    def _insert_sql(
        self, table: Table, columns: Columns, prefix: str, params: dict[str, Any]
    ) -> str:
        """``INSERT … SELECT``: equal values as one parameter, the others as arrays."""
        names: list[str] = []
        selected: list[str] = []
        arrays: list[str] = []
        aliases: list[str] = []
        for index, (key, values) in enumerate(columns):
            column = table.c[key]
            is_json = isinstance(column.type.dialect_impl(self.dialect), JSON)
            sql_type = "TEXT" if is_json else column.type.compile(dialect=self.dialect)
            names.append(self.quote(column.name))
            first = values[0]
            if all(v is None for v in values):
                selected.append("NULL")
                continue
            param = f"{prefix}{index}"
            if all(v == first and type(v) is type(first) for v in values):
                params[param] = self._value(first, is_json)
                expression = f"CAST(:{param} AS {sql_type})"
            else:
                params[param] = (
                    _process_dicts(json.dumps, values) if is_json
                    else [self._value(v, is_json) for v in values]
                )
                arrays.append(f"CAST(:{param} AS {sql_type}[])")
                aliases.append(f"c{index}")
                expression = f"u.c{index}"
            selected.append(f"CAST({expression} AS JSONB)" if is_json else expression)
        if arrays:
            source = f"unnest({', '.join(arrays)}) AS u({', '.join(aliases)})"
        else:
            source = f"generate_series(1, {len(columns[0][1])})"
        return (
            f"INSERT INTO {self.quote(table.name)} ({', '.join(names)})"
            f" SELECT {', '.join(selected)} FROM {source}"
        )

    async def _reserve_ids(self, session: AsyncSession, table: Table, count: int) -> list[int]:
        """``count`` new ids from the table's sequence."""
        result = await session.execute(
            text(
                "SELECT nextval(pg_get_serial_sequence(:table, 'id'))"
                " FROM generate_series(1, :count)"
            ),
            {"table": table.name, "count": count},
        )
        return list(result.scalars())

    async def insert_with_ids(
        self, session: AsyncSession, table: Table, columns: Columns
    ) -> list[int]:
        """Insert rows given column-wise with ids drawn from the table's sequence, in order."""
        count = len(columns[0][1]) if columns else 0
        if not count:
            return []
        ids = await self._reserve_ids(session, table, count)
        params: dict[str, Any] = {}
        statement = self._insert_sql(table, [("id", ids), *columns], "p", params)
        await session.execute(text(statement), params)
        return ids

    async def add_customers(
        self,
        session: AsyncSession,
        customers: Columns,
        children: Callable[[Sequence[int]], tuple[Columns, Columns]],
        *,
        actor: str,
        at: datetime,
    ) -> list[int]:
        """Insert customers, their identities, tags and first lifecycle transitions.

        The ids come from the sequence first; then a single statement writes the four
        tables (data-modifying CTEs), so a batch costs two round trips.
        """
        count = len(customers[0][1]) if customers else 0
        if not count:
            return []
        ids = await self._reserve_ids(session, CUSTOMERS, count)
        identities, tags = children(ids)
        params: dict[str, Any] = {"reason": IMPORT_REASON, "actor": actor, "at": at}
        ctes = [
            "new_customers AS ("
            + self._insert_sql(CUSTOMERS, [("id", ids), *customers], "c", params)
            + " RETURNING id, lifecycle_stage)"
        ]
        if identities and identities[0][1]:
            ctes.append(
                "new_identities AS ("
                + self._insert_sql(IDENTITIES, identities, "i", params)
                + ")"
            )
        if tags and tags[0][1]:
            ctes.append("new_tags AS (" + self._insert_sql(TAGS, tags, "t", params) + ")")
        statement = (
            "WITH " + ", ".join(ctes) + " INSERT INTO lifecycle_transitions"
            " (customer_id, from_stage, to_stage, reason, actor, at)"
            " SELECT id, NULL, lifecycle_stage, CAST(:reason AS VARCHAR(500)),"
            " CAST(:actor AS VARCHAR(100)), CAST(:at AS TIMESTAMP WITH TIME ZONE)"
            " FROM new_customers ORDER BY id"
        )
        await session.execute(text(statement), params)
        return ids


def bulk_inserts(dialect: Dialect) -> _SqliteInserts | _PostgresInserts:
    """The bulk-insert flavour of a database."""
    return _SqliteInserts(dialect) if dialect.name == "sqlite" else _PostgresInserts(dialect)


async def insert_returning_ids(
    session: AsyncSession, table: Table, rows: Sequence[Mapping[str, Any]]
) -> list[int]:
    """Bulk-insert ``rows`` (all with the same keys) and return their new ids, in row order."""
    keys = list(rows[0]) if rows else []
    columns = [(key, [row[key] for row in rows]) for key in keys]
    return await bulk_inserts(session.get_bind().dialect).insert_with_ids(session, table, columns)


async def identity_owners(
    session: AsyncSession, identities: Iterable[tuple[IdentityKind, str]]
) -> dict[tuple[IdentityKind, str], tuple[int, str, bool]]:
    """Which customer already holds each (kind, value): id, name and whether deleted.

    The same answer as ``customers.find_identity_owners``, in one query too, but
    filtered on (kind, value) so the unique index serves it. (That function filters on
    the value alone, which no index leads with, so each call scans every identity: for
    an import, one full scan per batch, and the scans grow with the table.)
    """
    by_kind: dict[IdentityKind, set[str]] = {}
    for kind, value in identities:
        by_kind.setdefault(kind, set()).add(value)
    if not by_kind:
        return {}
    kinds = sorted(by_kind)
    params: dict[str, Any] = {}
    for index, kind in enumerate(kinds):
        params[f"kind_{index}"] = kind
        params[f"values_{index}"] = sorted(by_kind[kind])
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        params.update(
            {k: json.dumps(v) for k, v in params.items() if k.startswith("values_")}
        )
    rows = await session.execute(_owners_statement(len(kinds), dialect), params)
    return {
        (kind, value): (cid, name, deleted is not None)
        for kind, value, cid, name, deleted in rows
    }


@functools.lru_cache(maxsize=16)
def _owners_statement(kinds: int, dialect: str) -> Select[Any]:
    """The owners query for ``kinds`` kinds, built once per dialect.

    The values of a kind go in as one parameter, so the statement is the same for
    every batch: an array (``= ANY``) on PostgreSQL, a JSON array read by
    ``json_each`` on SQLite; the unique (kind, value) index serves both.
    """

    def matches(index: int) -> ColumnElement[bool]:
        if dialect == "postgresql":
            return CustomerIdentity.value == any_(
                bindparam(f"values_{index}", type_=ARRAY(String()))
            )
        if dialect == "sqlite":
            values = func.json_each(bindparam(f"values_{index}", type_=String())).table_valued(
                "value"
            )
            return CustomerIdentity.value.in_(select(values.c.value))
        return CustomerIdentity.value.in_(bindparam(f"values_{index}", expanding=True))

    return (
        select(
            CustomerIdentity.kind,
            CustomerIdentity.value,
            Customer.id,
            Customer.display_name,
            Customer.deleted_at,
        )
        .join(Customer, Customer.id == CustomerIdentity.customer_id)
        .where(
            or_(
                *(
                    and_(CustomerIdentity.kind == bindparam(f"kind_{index}"), matches(index))
                    for index in range(kinds)
                )
            )
        )
    )


class _BatchWriter:
    """Writes one batch in one transaction: duplicates, organizations, then bulk INSERTs."""

    def __init__(
        self,
        *,
        actor: str,
        on_conflict: OnConflict,
        converter: RowConverter,
        state: _ImportState,
    ) -> None:
        self.actor = actor
        self.on_conflict = on_conflict
        self.converter = converter
        self.state = state

    def _resolve_duplicates(
        self,
        batch: Sequence[_Pending],
        owners: Mapping[tuple[IdentityKind, str], tuple[int, str, bool]],
        outcome: _BatchOutcome,
    ) -> list[_Pending]:
        accepted: list[_Pending] = []
        claimed: dict[tuple[IdentityKind, str], int] = {}
        for pending in batch:
            problem: RowError | None = None
            skip = False
            for kind, value, _ in pending.identities:
                column = self.converter.column_of(kind.value)
                owner = owners.get((kind, value))
                if owner is not None:
                    customer_id, name, deleted = owner
                    first = self.state.line_of(customer_id)
                    if first is not None:
                        reason = f"duplicate of line {first} of this file (customer #{customer_id})"
                    else:
                        who = f"{name}, deleted" if deleted else name
                        reason = f"already belongs to customer #{customer_id} ({who})"
                        skip = self.on_conflict == "skip"
                    problem = RowError(
                        pending.line, kind.value, value, reason, column, customer_id
                    )
                    break
                first_line = claimed.get((kind, value))
                if first_line is not None:
                    reason = f"duplicate of line {first_line} of this file"
                    problem = RowError(pending.line, kind.value, value, reason, column)
                    break
            if skip:
                outcome.skipped += 1
            elif problem is not None:
                outcome.errors.append(problem)
            else:
                for kind, value, _ in pending.identities:
                    claimed[(kind, value)] = pending.line
                accepted.append(pending)
        return accepted

    async def _organizations(
        self, session: AsyncSession, batch: Sequence[_Pending], outcome: _BatchOutcome
    ) -> dict[str, int]:
        names: dict[str, str] = {}
        for pending in batch:
            name = pending.organization_name
            if name:
                key = name.strip().lower()
                if key not in self.state.organizations:
                    names.setdefault(key, name.strip())
        found: dict[str, int] = {}
        if not names:
            return found
        rows = await session.execute(
            select(Organization.id, Organization.name)
            .where(
                func.lower(Organization.name).in_(list(names)),
                Organization.deleted_at.is_(None),
            )
            .order_by(Organization.id)
        )
        for org_id, org_name in rows:
            found.setdefault(org_name.strip().lower(), org_id)
        missing = [(key, names[key]) for key in names if key not in found]
        if missing:
            now = utcnow()
            ids = await insert_returning_ids(
                session,
                Organization.__table__,  # type: ignore[arg-type]
                [
                    {"name": name, "industry": None, "created_at": now, "updated_at": now}
                    for _, name in missing
                ],
            )
            # Audited one by one, as get_or_create_organization does.
            await session.execute(
                insert(AuditLog.__table__),
                [
                    {
                        "actor": self.actor, "action": "create",
                        "entity_type": "organization", "entity_id": str(org_id),
                        "before": None, "after": {"name": name, "industry": None}, "at": now,
                    }
                    for (_, name), org_id in zip(missing, ids, strict=True)
                ],
            )
            for (key, _), org_id in zip(missing, ids, strict=True):
                found[key] = org_id
                outcome.new_organizations[key] = org_id
        return found

    async def write(self, session: AsyncSession, batch: Sequence[_Pending]) -> _BatchOutcome:
        """Check the batch's identities with one query, then bulk-insert the good rows."""
        outcome = _BatchOutcome()
        wanted = [
            (kind, value) for p in batch for kind, value, _ in p.identities
        ]
        owners = await identity_owners(session, wanted)
        accepted = self._resolve_duplicates(batch, owners, outcome)
        if not accepted:
            return outcome
        batch_orgs = await self._organizations(session, accepted, outcome)
        now = utcnow()
        rows: list[dict[str, Any]] = []
        for pending in accepted:
            row = pending.row
            name = pending.organization_name
            if name:
                key = name.strip().lower()
                row["organization_id"] = self.state.organizations.get(key) or batch_orgs[key]
            row["created_at"] = row["updated_at"] = now
            rows.append(row)
        inserts = bulk_inserts(session.get_bind().dialect)

        def children(ids: Sequence[int]) -> tuple[Columns, Columns]:
            owners: list[int] = []
            kinds: list[str] = []
            values: list[str] = []
            labels: list[str | None] = []
            tag_owners: list[int] = []
            tags: list[str] = []
            for customer_id, pending in zip(ids, accepted, strict=True):
                for kind, value, label in pending.identities:
                    owners.append(customer_id)
                    kinds.append(kind.value)
                    values.append(value)
                    labels.append(label)
                for tag in pending.tags:
                    tag_owners.append(customer_id)
                    tags.append(tag)
            count = len(owners)
            return (
                [
                    ("customer_id", owners), ("kind", kinds), ("value", values),
                    ("label", labels), ("verified", [False] * count), ("created_at", [now] * count),
                ],
                [("customer_id", tag_owners), ("tag", tags)],
            )

        present = set().union(*rows)
        ids = await inserts.add_customers(
            session,
            [
                (key, [row.get(key, default) for row in rows] if key in present
                 else [default] * len(rows))
                for key, default in _CUSTOMER_DEFAULTS.items()
            ],
            children,
            actor=self.actor,
            at=now,
        )
        # Bulk inserts bypass the ORM flush that keeps the fuzzy-match keys: do it here,
        # in the same transaction, so routing and the duplicate scan see these customers.
        await rebuild_match_keys(session, ids)
        outcome.created.extend(
            (customer_id, pending.line) for customer_id, pending in zip(ids, accepted, strict=True)
        )
        return outcome


# --- the import ---------------------------------------------------------------------------------


async def _class_lookups(
    sessions: async_sessionmaker[AsyncSession],
) -> tuple[dict[str, str], dict[str, str]]:
    async with sessions() as session:
        tiers = [
            (code, name, name_zh)
            for code, name, name_zh in await session.execute(
                select(CustomerTier.code, CustomerTier.name, CustomerTier.name_zh)
            )
        ]
        categories = [
            (code, name, name_zh)
            for code, name, name_zh in await session.execute(
                select(CustomerCategory.code, CustomerCategory.name, CustomerCategory.name_zh)
            )
        ]
    return _code_lookup(tiers), _code_lookup(categories)


def _read_header(
    text: io.TextIOBase, delimiter: str | None, file_name: str
) -> tuple[Iterable[str], str]:
    """The lines of the file (the header line first again) and the delimiter to use."""
    first = text.readline()
    if not first.strip().lstrip("\ufeff").strip():
        raise CsvFileError(f"{file_name} has no header row (line 1 is empty)")
    return itertools.chain([first], text), delimiter or guess_delimiter(first)


def _plan_columns(
    headers: list[str] | None,
    mapping: Mapping[str, str] | None,
    file_name: str,
) -> list[ColumnMapping]:
    if not headers or not any(h.strip().lstrip("\ufeff") for h in headers):
        raise CsvFileError(f"{file_name} has no header row")
    columns = map_columns(headers, mapping)
    if not any(c.target in NAME_FIELDS for c in columns):
        shown = ", ".join(h.strip() for h in headers)
        raise CsvFileError(
            f"no column of {file_name} holds a name (headers: {shown}); map one to "
            "display_name, given_name or family_name"
        )
    return columns


def preview_columns(
    path: Path | str,
    *,
    encoding: str | None = None,
    mapping: Mapping[str, str] | None = None,
    delimiter: str | None = None,
) -> ImportPlan:
    """How a file would be read: encoding (found by a streaming pass), delimiter, mapping."""
    path = Path(path)
    if not path.is_file():
        raise CsvFileError(f"no such file: {path}")
    found = detect_encoding(path, encoding)
    with path.open("r", encoding=found, newline="") as text:
        lines, sep = _read_header(text, delimiter, path.name)
        headers = next(csv.reader(lines, delimiter=sep), None)
    return ImportPlan(path.name, found, sep, _plan_columns(headers, mapping, path.name),
                      path.stat().st_size)


@dataclass
class _RawChunk:
    """Up to one batch of rows as read from the file: (line, cells)."""

    rows: list[tuple[int, list[str]]]
    rows_read: int
    bytes_read: int


def _read_chunks(path: Path, plan: ImportPlan, batch_size: int) -> Iterator[_RawChunk]:
    """Read the file row by row; yield every ``batch_size`` non-empty rows.

    Blank rows are passed over; each row keeps the line it starts on (header = 1).
    """
    with path.open("rb") as raw:
        counter = CountingReader(raw)
        text = io.TextIOWrapper(
            io.BufferedReader(counter, READ_BUFFER), encoding=plan.encoding, newline=""
        )
        lines, _ = _read_header(text, plan.delimiter, plan.file_name)
        reader = csv.reader(lines, delimiter=plan.delimiter)
        next(reader)
        previous_line = reader.line_num
        rows: list[tuple[int, list[str]]] = []
        while True:
            try:
                cells = next(reader, None)
            except csv.Error as exc:
                raise CsvFileError(
                    f"{plan.file_name} line {previous_line + 1}: cannot parse CSV ({exc})"
                ) from None
            except UnicodeDecodeError as exc:
                raise CsvFileError(
                    f"{plan.file_name} near line {previous_line + 1}: not {plan.encoding} ({exc})"
                ) from None
            if cells is None:
                break
            line = previous_line + 1
            previous_line = reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            rows.append((line, cells))
            if len(rows) >= batch_size:
                yield _RawChunk(rows, len(rows), counter.consumed)
                rows = []
        yield _RawChunk(rows, len(rows), counter.consumed)


_WORKER_CONVERTER: RowConverter | None = None


def _init_worker(converter: RowConverter) -> None:
    """Process-pool initializer: keep the converter for the rows to come."""
    global _WORKER_CONVERTER
    _WORKER_CONVERTER = converter


def _validate_in_worker(
    rows: list[tuple[int, list[str]]],
) -> tuple[list[_Pending], list[RowError]]:
    """Validate a chunk in a worker process with the converter given at start-up."""
    if _WORKER_CONVERTER is None:  # pragma: no cover - the initializer always ran
        raise RuntimeError("validation worker started without a converter")
    return _WORKER_CONVERTER.validate(rows)


def default_workers(bytes_total: int) -> int:
    """Validation processes for a file: none below 4 MiB, else one per spare CPU (up to 4)."""
    if bytes_total < PROCESS_THRESHOLD_BYTES:
        return 0
    return max(1, min(MAX_WORKERS, (os.cpu_count() or 1) - 1))


class _Validator:
    """Validates chunks off the event loop: in one thread, or in a pool of processes.

    Validation (e-mail and phone parsing, pydantic, pinyin) is pure and CPU-bound, so
    on a large file it goes to processes, where it does not compete with the writes
    for the GIL. Results come back in file order.
    """

    def __init__(self, converter: RowConverter, workers: int) -> None:
        self.converter = converter
        self.workers = workers
        self.executor: concurrent.futures.Executor
        if workers > 0:
            self.executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(converter,),
            )
        else:
            self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    @property
    def depth(self) -> int:
        """How many chunks to keep in flight."""
        return self.workers + 1 if self.workers else 1

    def submit(self, rows: list[tuple[int, list[str]]]) -> asyncio.Future[Any]:
        """Start validating a chunk; the future gives (good rows, errors)."""
        loop = asyncio.get_running_loop()
        if self.workers:
            return loop.run_in_executor(self.executor, _validate_in_worker, rows)
        return loop.run_in_executor(self.executor, self.converter.validate, rows)

    async def close(self) -> None:
        """Stop the workers (pending chunks are cancelled)."""
        await asyncio.to_thread(self.executor.shutdown, wait=True, cancel_futures=True)


async def import_customers(
    database: SessionSource,
    path: Path | str,
    *,
    actor: str,
    region: str,
    encoding: str | None = None,
    mapping: Mapping[str, str] | None = None,
    delimiter: str | None = None,
    on_conflict: OnConflict = "report",
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int = 0,
    on_start: Callable[[ImportPlan], None] | None = None,
    progress: Callable[[ImportProgress], None] | None = None,
    on_error: Callable[[RowError], None] | None = None,
    max_errors: int = MAX_KEPT_ERRORS,
    today: date | None = None,
) -> ImportReport:
    """Import the customers of a CSV file in batches of ``batch_size`` rows.

    ``mapping`` overrides the automatic header mapping (header → field, ``attribute``
    or ``ignore``). ``on_conflict="skip"`` counts rows whose e-mail or phone already
    belongs to a customer (from before this import) as skipped rather than failed;
    duplicates within the file are always reported, naming the line of the first.
    Each batch is committed on its own, so a crash loses at most the batch in flight.
    Rows are validated off the event loop, ahead of the writes: in a thread, or with
    ``workers > 0`` in that many processes (see ``default_workers``). Processes are
    started with ``spawn``, which imports the caller's main module again: use them
    from a program whose ``__main__`` is guarded (the CLI is), not from a bare script.
    ``CsvFileError`` means nothing could be imported (missing file, no header, …).
    """
    if on_conflict not in ("report", "skip"):
        raise ValidationError("on_conflict", on_conflict, "expected report or skip")
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValidationError("batch_size", batch_size, f"must be 1 to {MAX_BATCH_SIZE}")
    if workers < 0:
        raise ValidationError("workers", workers, "must not be negative")
    sessions = session_factory(database)
    path = Path(path)
    plan = await asyncio.to_thread(
        preview_columns, path, encoding=encoding, mapping=mapping, delimiter=delimiter
    )
    tiers, categories = await _class_lookups(sessions)
    converter = RowConverter(
        plan.columns,
        region=region,
        source=f"import:{plan.file_name}"[:100],
        tiers=tiers,
        categories=categories,
        today=today,
    )
    state = _ImportState()
    writer = _BatchWriter(actor=actor, on_conflict=on_conflict, converter=converter, state=state)
    report = ImportReport(plan)
    if on_start is not None:
        on_start(plan)

    def add_error(error: RowError) -> None:
        report.failed += 1
        if len(report.errors) < max_errors:
            report.errors.append(error)
        if on_error is not None:
            on_error(error)

    async def flush(raw: _RawChunk, good: list[_Pending], bad: list[RowError]) -> None:
        report.rows_read += raw.rows_read
        outcome = _BatchOutcome()
        if good:
            for attempt in range(WRITE_ATTEMPTS):
                try:
                    async with sessions() as session, session.begin():
                        outcome = await writer.write(session, good)
                    break
                except (IntegrityError, OperationalError) as exc:
                    # Another writer took an identity (or SQLite's lock) between check
                    # and insert: the batch was rolled back whole; check it again.
                    if attempt == WRITE_ATTEMPTS - 1 or not _retryable(exc):
                        raise
                    await asyncio.sleep(0.05 * (attempt + 1))
        state.add(outcome.created)
        state.organizations.update(outcome.new_organizations)
        report.organizations_created += len(outcome.new_organizations)
        report.imported += len(outcome.created)
        report.skipped += outcome.skipped
        for error in sorted([*bad, *outcome.errors], key=lambda e: e.line):
            add_error(error)
        if progress is not None:
            progress(ImportProgress(
                raw.bytes_read, plan.bytes_total, report.rows_read,
                report.imported, report.skipped, report.failed,
            ))

    validator = _Validator(converter, workers)
    chunks = _read_chunks(path, plan, batch_size)
    in_flight: collections.deque[tuple[_RawChunk, asyncio.Future[Any]]] = collections.deque()
    exhausted = False

    async def refill() -> None:
        nonlocal exhausted
        while not exhausted and len(in_flight) < validator.depth:
            raw = await asyncio.to_thread(next, chunks, None)
            if raw is None:
                exhausted = True
            else:
                in_flight.append((raw, validator.submit(raw.rows)))

    try:
        await refill()
        while in_flight:
            raw, future = in_flight.popleft()
            good, bad = await future
            await refill()  # the validators work on the next chunks while this one is written
            await flush(raw, good, bad)
    except BaseException as exc:
        for _, future in in_flight:
            future.cancel()
        if report.imported:
            # Some batches were committed: leave a trace of them, then let the error out.
            with contextlib.suppress(Exception):
                await _record_import(
                    sessions, report, actor=actor, on_conflict=on_conflict, completed=False
                )
        if isinstance(exc, CsvFileError) and report.rows_read:
            raise CsvFileError(
                f"{exc}; the import stopped there ({report.imported} rows before it were "
                "imported and stay)"
            ) from None
        raise
    finally:
        await validator.close()
        with contextlib.suppress(ValueError):  # still running in a cancelled reader thread
            chunks.close()
    await _record_import(sessions, report, actor=actor, on_conflict=on_conflict, completed=True)
    return report


def _retryable(exc: Exception) -> bool:
    """Whether a failed batch write is worth another try."""
    if isinstance(exc, IntegrityError):
        return True
    return "database is locked" in str(exc)


async def _record_import(
    sessions: async_sessionmaker[AsyncSession],
    report: ImportReport,
    *,
    actor: str,
    on_conflict: OnConflict,
    completed: bool,
) -> None:
    """One audit entry for the whole import: counts, encoding and the mapping used."""
    plan = report.plan
    after = {
        "file": plan.file_name,
        "status": "completed" if completed else "interrupted",
        **report.counts(),
        "encoding": plan.encoding,
        "on_conflict": on_conflict,
        "mapping": [
            {"column": c.index + 1, "header": c.header, "target": c.target}
            for c in plan.columns
        ],
    }
    async with sessions() as session, session.begin():
        audit.record(
            session,
            actor=actor,
            action="import",
            entity_type="customer_import",
            entity_id=plan.file_name[:50],
            after=after,
        )
