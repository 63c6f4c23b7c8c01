"""Customer classification: admin-defined categories and tiers, rules that assign them.

An administrator defines **categories** (what kind of customer: retail, manufacturing,
government …) and **tiers** (service level: standard, gold, VIP, ranked), and
**rules** that put customers into them, such as *tier ``vip`` when lifetime_value >=
100000* or *category ``manufacturing`` when industry in 制造业, manufacturing*.

How rules decide
    A rule has a target (``tier`` or ``category``), a value (the code it assigns) and a
    list of conditions ``{"field", "op", "value"}``, all of which must hold. For each
    target, enabled rules are tried by ascending ``position`` (then id); the first that
    matches wins. A rule without conditions matches everybody: put one last as a default.
    :func:`evaluate` does this on a plain dict of facts and touches no database.

What re-classification keeps
    :func:`reclassify` walks every live customer. When a rule matches, the customer gets
    its value. When **no** rule of a target matches, the customer **keeps** the class it
    has, so a class an agent set by hand (:func:`set_class`) is not wiped by the next run;
    ``reset=True`` clears the classes no rule supports instead. Where a rule matches it
    wins over a manual class.

Auditing
    Creating, renaming and deleting categories, tiers and rules writes one audit entry each
    (entity types ``customer_category``, ``customer_tier``, ``classification_rule``). A
    changed customer gets **one audit entry per customer** (entity ``customer``, action
    ``classify``, tier/category before and after, and the rule or reason), so the class
    shows in that customer's own history like any other change. Only customers whose class
    changes are written, so a steady-state run costs a few rows; a first run over a large
    base writes one small row per changed customer, inserted in bulk with the batch. Every
    non-dry run also writes one summary entry (``classification_rule`` / ``reclassify``).

Condition fields and operators
    See :data:`FIELDS` and :data:`OPS`. Text comparisons ignore case and outer spaces.
    ``ne`` and ``not_in`` hold when the field is empty; every other operator except
    ``exists`` fails on an empty field. ``industry`` falls back to the organization's
    industry when the customer has none. Dates compare by calendar day (``created_at`` in
    UTC). ``attr.<key>`` reads a custom attribute (``attr.a.b`` a nested one); a list
    attribute matches ``eq``/``in``/``contains`` when any element does.
"""

from __future__ import annotations

import enum
import re
import tomllib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.db import Database
from crm_core.errors import CrmError, NotFoundError, StateError, ValidationError
from crm_core.models import (
    AuditLog,
    Channel,
    ClassificationRule,
    Customer,
    CustomerCategory,
    CustomerTag,
    CustomerTier,
    LifecycleStage,
    Organization,
    utcnow,
)
from crm_core.services import audit

TARGETS: tuple[str, ...] = ("tier", "category")
"""What a rule can assign."""

OPS: tuple[str, ...] = (
    "eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "contains", "exists",
)
"""Condition operators."""

ATTR_PREFIX = "attr."
CODE_PATTERN = re.compile(r"^[a-z0-9_-]{1,50}$")
NONE_KEY = "(none)"
"""The key under which reports count customers left without a class."""
MAX_NAME_LENGTH = 100
MAX_RULE_NAME_LENGTH = 200
DEFAULT_BATCH_SIZE = 1000
_IN_CHUNK = 500
"""Ids per ``IN (...)``: well under every SQLite build's bound-parameter limit."""

_ORDERED = frozenset({"gt", "gte", "lt", "lte"})
_SETS = frozenset({"in", "not_in"})

ENTITY_CATEGORY = "customer_category"
ENTITY_TIER = "customer_tier"
ENTITY_RULE = "classification_rule"


class DuplicateError(CrmError):
    """A code or name that is already taken by another record of the same kind."""

    code = "conflict"

    def __init__(self, entity: str, key: str) -> None:
        self.entity = entity
        self.key = key
        super().__init__(f"{entity} {key!r} already exists")

    def to_dict(self) -> dict[str, Any]:
        """The kind of record and the key that is taken."""
        return {**super().to_dict(), "entity": self.entity, "key": self.key}


class _Unset(enum.Enum):
    UNSET = "unset"


UNSET = _Unset.UNSET
"""Marks an argument that was not given (``None`` means "clear")."""


# --------------------------------------------------------------------------- fields


@dataclass(frozen=True)
class FieldSpec:
    """A customer fact a condition can test: its kind decides the operators and value type."""

    name: str
    kind: str
    """``number``, ``text``, ``enum``, ``date``, ``bool``, ``tag`` or ``attr``."""
    ops: frozenset[str]
    choices: tuple[str, ...] = ()
    """Allowed values of an ``enum`` field."""


_KIND_OPS: dict[str, frozenset[str]] = {
    "number": frozenset({"eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "exists"}),
    "date": frozenset({"eq", "ne", "gt", "gte", "lt", "lte", "exists"}),
    "text": frozenset({"eq", "ne", "in", "not_in", "contains", "exists"}),
    "enum": frozenset({"eq", "ne", "in", "not_in", "exists"}),
    "bool": frozenset({"eq", "ne", "exists"}),
    "tag": frozenset({"eq", "ne", "in", "not_in", "contains", "exists"}),
    "attr": frozenset(OPS),
}


def _spec(name: str, kind: str, choices: tuple[str, ...] = ()) -> FieldSpec:
    return FieldSpec(name, kind, _KIND_OPS[kind], choices)


FIELDS: dict[str, FieldSpec] = {
    spec.name: spec
    for spec in (
        _spec("lifetime_value", "number"),
        _spec("industry", "text"),
        _spec("city", "text"),
        _spec("province", "text"),
        _spec("country", "text"),
        _spec("language", "text"),
        _spec("organization", "text"),
        _spec("lifecycle_stage", "enum", tuple(s.value for s in LifecycleStage)),
        _spec("preferred_channel", "enum", tuple(c.value for c in Channel)),
        _spec("tag", "tag"),
        _spec("created_at", "date"),
        _spec("birthday", "date"),
        _spec("do_not_contact", "bool"),
    )
}
"""The fixed fields; ``attr.<key>`` (a custom attribute) is allowed besides these."""


def field_spec(name: str) -> FieldSpec | None:
    """The spec of a condition field, ``attr.<key>`` included; ``None`` when unknown."""
    if name.startswith(ATTR_PREFIX) and len(name) > len(ATTR_PREFIX):
        return _spec(name, "attr")
    return FIELDS.get(name)


def _known_fields() -> str:
    return ", ".join([*FIELDS, "attr.<key>"])


# --------------------------------------------------------------------------- syntax

_SYMBOL_OPS = {">=": "gte", "<=": "lte", "!=": "ne", "==": "eq", "=": "eq", ">": "gt",
               "<": "lt", "~": "contains"}
_OP_SYMBOLS = {"eq": "=", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=",
               "contains": "~"}
_SYMBOL_RE = re.compile(
    r"^\s*(?P<field>[^\s<>=!~]+)\s*(?P<op>>=|<=|!=|==|=|>|<|~)\s*(?P<value>.*)$"
)
_IN_RE = re.compile(r"^\s*(?P<field>[^\s<>=!~]+)\s+(?P<op>not\s+in|in)\s+(?P<value>.*)$", re.I)
_EXISTS_RE = re.compile(r"^\s*(?P<field>[^\s<>=!~]+)\s+(?P<neg>not\s+)?exists\s*$", re.I)
_LIST_SPLIT = re.compile(r"[,，]")


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def parse_condition(text: str) -> dict[str, Any]:
    """Read ``field op value`` (``lifetime_value>=100000``, ``industry in 制造业,manufacturing``).

    Operators: ``>= <= > < = != ~`` (``~`` is contains), ``in a,b,c``, ``not in a,b``,
    ``exists`` and ``not exists``. Values may be quoted; list items are split on commas.
    The result is a raw condition for :func:`check_condition`, which types the value.
    """
    match = _EXISTS_RE.match(text)
    if match:
        return {"field": match["field"], "op": "exists", "value": not match["neg"]}
    match = _IN_RE.match(text)
    if match:
        op = "not_in" if match["op"].lower() != "in" else "in"
        items = [_unquote(item) for item in _LIST_SPLIT.split(match["value"])]
        return {"field": match["field"], "op": op, "value": [i for i in items if i]}
    match = _SYMBOL_RE.match(text)
    if match:
        value = _unquote(match["value"])
        if not value:
            raise ValidationError("condition", text, "no value after the operator")
        return {"field": match["field"], "op": _SYMBOL_OPS[match["op"]], "value": value}
    raise ValidationError(
        "condition",
        text,
        "expected 'field op value' with op one of >=, <=, >, <, =, !=, ~, in, not in, "
        "or 'field exists' (e.g. 'lifetime_value>=100000', 'industry in 制造业,manufacturing')",
    )


def format_condition(condition: Mapping[str, Any]) -> str:
    """The condition in the syntax :func:`parse_condition` reads."""
    name, op, value = condition.get("field"), condition.get("op"), condition.get("value")
    if op == "exists":
        return f"{name} exists" if value is not False else f"{name} not exists"
    if op in _SETS:
        items = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
        return f"{name} {'in' if op == 'in' else 'not in'} {items}"
    return f"{name} {_OP_SYMBOLS.get(str(op), str(op))} {value}"


# --------------------------------------------------------------------------- validation


def _as_decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, int | float | str):
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


def _as_date(value: Any) -> date | None:
    if isinstance(value, datetime):
        return (value.astimezone(UTC) if value.tzinfo else value).date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip()[:10]) if len(value.strip()) >= 10 else None
        except ValueError:
            return None
    return None


_TRUE = {"true", "yes", "1", "on", "是"}
_FALSE = {"false", "no", "0", "off", "否"}


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    return None


def _json_number(number: Decimal) -> int | float:
    return int(number) if number == number.to_integral_value() else float(number)


def _check_scalar(spec: FieldSpec, op: str, value: Any, where: str) -> Any:
    """One comparison value, typed for the field; JSON-ready."""
    if value is None or isinstance(value, list | dict):
        raise ValidationError(where, value, f"{spec.name} {op} needs a single value")
    if spec.kind == "number":
        number = _as_decimal(value)
        if number is None:
            raise ValidationError(where, value, f"{spec.name} needs a number")
        return _json_number(number)
    if spec.kind == "date":
        day = _as_date(value) if not isinstance(value, datetime) else None
        if day is None or (isinstance(value, str) and len(value.strip()) != 10):
            raise ValidationError(where, value, f"{spec.name} needs a date as YYYY-MM-DD")
        return day.isoformat()
    if spec.kind == "bool":
        flag = _as_bool(value)
        if flag is None:
            raise ValidationError(where, value, f"{spec.name} needs true or false")
        return flag
    if spec.kind == "enum":
        text = str(value.value if isinstance(value, enum.Enum) else value).strip().lower()
        if text not in spec.choices:
            raise ValidationError(
                where, value, f"not a {spec.name}; use one of {', '.join(spec.choices)}"
            )
        return text
    if spec.kind == "attr":
        if isinstance(value, datetime):
            raise ValidationError(where, value, "use a date (YYYY-MM-DD), not a date-time")
        if isinstance(value, date):
            return value.isoformat()
        if op in _ORDERED:
            if isinstance(value, bool):
                raise ValidationError(where, value, f"{op} needs a number or a date")
            number = _as_decimal(value)
            if number is not None:
                return _json_number(number)
            if _as_date(value) is None or len(str(value).strip()) != 10:
                raise ValidationError(where, value, f"{op} needs a number or a YYYY-MM-DD date")
            return str(value).strip()
        if isinstance(value, bool | int | float):
            return value
        text = str(value).strip()
        if not text:
            raise ValidationError(where, value, "empty value")
        return text
    # text and tag
    if isinstance(value, bool | date):
        raise ValidationError(where, value, f"{spec.name} needs text")
    text = str(value).strip()
    if not text:
        raise ValidationError(where, value, "empty value")
    return text


def check_condition(raw: Mapping[str, Any], *, where: str = "condition") -> dict[str, Any]:
    """Validate one condition and type its value; errors name ``where.field/op/value``.

    Pure: touches no database. The result is what is stored on the rule.
    """
    if not isinstance(raw, Mapping):
        raise ValidationError(where, raw, "a condition is a table of field, op and value")
    unknown = sorted(set(raw) - {"field", "op", "value"})
    if unknown:
        raise ValidationError(
            f"{where}.{unknown[0]}", raw[unknown[0]], "unknown key; use field, op and value"
        )
    name = raw.get("field")
    if not isinstance(name, str) or not name.strip():
        raise ValidationError(f"{where}.field", name, "missing field name")
    name = name.strip()
    if not name.startswith(ATTR_PREFIX):
        name = name.lower()
    spec = field_spec(name)
    if spec is None:
        raise ValidationError(
            f"{where}.field", name, f"unknown field; use one of {_known_fields()}"
        )
    op = raw.get("op")
    if not isinstance(op, str) or op.strip().lower() not in OPS:
        raise ValidationError(f"{where}.op", op, f"unknown operator; use one of {', '.join(OPS)}")
    op = op.strip().lower()
    if op not in spec.ops:
        allowed = ", ".join(o for o in OPS if o in spec.ops)
        raise ValidationError(f"{where}.op", op, f"not allowed on {name}; use one of {allowed}")
    value_where = f"{where}.value"
    value = raw.get("value", True if op == "exists" else None)
    if op == "exists":
        flag = _as_bool(value)
        if flag is None:
            raise ValidationError(value_where, value, "exists takes true or false")
        return {"field": name, "op": op, "value": flag}
    if op in _SETS:
        items = value if isinstance(value, list | tuple) else None
        if not items:
            raise ValidationError(value_where, value, f"{op} needs a non-empty list of values")
        checked = [_check_scalar(spec, op, item, f"{value_where}[{i}]")
                   for i, item in enumerate(items)]
        return {"field": name, "op": op, "value": checked}
    return {"field": name, "op": op, "value": _check_scalar(spec, op, value, value_where)}


def check_conditions(raw: Any, *, where: str = "conditions") -> list[dict[str, Any]]:
    """Validate a list of conditions (all must hold); an empty list matches every customer."""
    if raw is None:
        return []
    if not isinstance(raw, list | tuple):
        raise ValidationError(where, raw, "conditions are a list of {field, op, value}")
    return [check_condition(c, where=f"{where}[{i}]") for i, c in enumerate(raw)]


def check_code(code: Any, *, where: str = "code") -> str:
    """A category or tier code: a lowercase slug of letters, digits, ``_`` and ``-``."""
    if not isinstance(code, str) or not CODE_PATTERN.match(code.strip()):
        hint = ""
        if isinstance(code, str) and code.strip():
            suggestion = re.sub(r"[^a-z0-9_-]+", "-", code.strip().lower()).strip("-")[:50]
            if suggestion:
                hint = f" (e.g. {suggestion!r})"
        raise ValidationError(
            where, code, f"use 1-50 lowercase letters, digits, '_' or '-'{hint}"
        )
    return code.strip()


def check_target(target: Any, *, where: str = "target") -> str:
    """``tier`` or ``category``."""
    cleaned = target.strip().lower() if isinstance(target, str) else target
    if cleaned not in TARGETS:
        raise ValidationError(where, target, "use tier or category")
    return str(cleaned)


def _check_name(value: Any, where: str, *, limit: int = MAX_NAME_LENGTH) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(where, value, "a name is required")
    if len(value.strip()) > limit:
        raise ValidationError(where, value, f"longer than {limit} characters")
    return value.strip()


def _check_optional_name(value: Any, where: str) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return _check_name(value, where)


def _check_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(where, value, "needs a whole number")
    return value


# --------------------------------------------------------------------------- evaluation


def _text(value: Any) -> str:
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip().casefold()


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list | tuple | set | dict):
        return not value
    return False


def _flex_equal(actual: Any, expected: Any) -> bool:
    """Equality across JSON types: numbers numerically, everything else as folded text."""
    if not isinstance(actual, bool) and not isinstance(expected, bool):
        left, right = _as_decimal(actual), _as_decimal(expected)
        if left is not None and right is not None:
            return left == right
    return _text(actual) == _text(expected)


def _compare(op: str, left: Any, right: Any) -> bool:
    if op == "gt":
        return bool(left > right)
    if op == "gte":
        return bool(left >= right)
    if op == "lt":
        return bool(left < right)
    return bool(left <= right)


def _ordered_holds(op: str, actual: Any, expected: Any, kind: str) -> bool:
    if kind == "date" or (kind == "attr" and isinstance(expected, str)):
        left_day, right_day = _as_date(actual), _as_date(expected)
        if left_day is None or right_day is None:
            return False
        return _compare(op, left_day, right_day)
    left, right = _as_decimal(actual), _as_decimal(expected)
    if left is None or right is None:
        return False
    return _compare(op, left, right)


def _equal(kind: str, actual: Any, expected: Any) -> bool:
    if kind == "number":
        left, right = _as_decimal(actual), _as_decimal(expected)
        return left is not None and left == right
    if kind == "date":
        return _as_date(actual) == _as_date(expected)
    if kind == "bool":
        return _as_bool(actual) is expected
    if kind == "attr":
        return _flex_equal(actual, expected)
    return _text(actual) == _text(expected)


@dataclass(frozen=True)
class Condition:
    """A checked condition, ready to test facts."""

    field: str
    op: str
    value: Any
    kind: str

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, where: str = "condition") -> Condition:
        """Check a stored or typed condition and compile it."""
        checked = check_condition(raw, where=where)
        spec = field_spec(checked["field"])
        assert spec is not None  # check_condition refused unknown fields
        return cls(checked["field"], checked["op"], checked["value"], spec.kind)

    def _actual(self, facts: Mapping[str, Any]) -> Any:
        if self.kind == "tag":
            return list(facts.get("tags") or [])
        if self.kind == "attr":
            attributes = facts.get("custom_attributes") or {}
            key = self.field[len(ATTR_PREFIX):]
            if key in attributes:
                return attributes[key]
            current: Any = attributes
            for part in key.split("."):
                if not isinstance(current, Mapping) or part not in current:
                    return None
                current = current[part]
            return current
        if self.field == "industry" and _is_empty(facts.get("industry")):
            return facts.get("organization_industry")
        return facts.get(self.field)

    def holds(self, facts: Mapping[str, Any]) -> bool:
        """Whether the customer described by ``facts`` satisfies this condition."""
        actual = self._actual(facts)
        if self.op == "exists":
            return (not _is_empty(actual)) is bool(self.value)
        if self.op in ("ne", "not_in"):
            return not self._positive("eq" if self.op == "ne" else "in", actual)
        return self._positive(self.op, actual)

    def _positive(self, op: str, actual: Any) -> bool:
        if _is_empty(actual):
            return False
        if isinstance(actual, list | tuple):  # tags, or a list attribute: any element
            return any(self._positive(op, item) for item in actual if not _is_empty(item))
        if op == "eq":
            return _equal(self.kind, actual, self.value)
        if op == "in":
            return any(_equal(self.kind, actual, item) for item in self.value)
        if op == "contains":
            return _text(self.value) in _text(actual)
        return _ordered_holds(op, actual, self.value, self.kind)

    def describe(self) -> str:
        """The condition in the CLI syntax."""
        return format_condition({"field": self.field, "op": self.op, "value": self.value})


@dataclass(frozen=True)
class CompiledRule:
    """A rule whose conditions are checked and compiled, ready to evaluate."""

    id: int | None
    name: str
    target: str
    value_code: str
    position: int
    conditions: tuple[Condition, ...]

    def matches(self, facts: Mapping[str, Any]) -> bool:
        """All conditions hold (a rule without conditions matches everybody)."""
        return all(c.holds(facts) for c in self.conditions)

    def describe(self) -> str:
        """``rule #3 'VIP by value'``, for audit entries and reports."""
        return f"rule #{self.id} {self.name!r}" if self.id is not None else f"rule {self.name!r}"


@dataclass(frozen=True)
class CompiledRules:
    """Enabled rules grouped by target, in the order they are tried."""

    by_target: dict[str, tuple[CompiledRule, ...]]

    def fields(self) -> set[str]:
        """Every field a condition reads (to load only the facts needed)."""
        return {c.field for rules in self.by_target.values() for r in rules for c in r.conditions}

    def codes(self) -> dict[str, set[str]]:
        """The values each target's rules assign."""
        return {t: {r.value_code for r in rules} for t, rules in self.by_target.items()}


def _get(rule: Any, name: str, default: Any = None) -> Any:
    if isinstance(rule, Mapping):
        return rule.get(name, default)
    return getattr(rule, name, default)


def compile_rules(rules: Iterable[Any]) -> CompiledRules:
    """Check and order rules (``ClassificationRule`` rows or dicts with the same keys).

    Disabled rules are left out. A stored rule that no longer passes validation raises
    ValidationError naming the rule.
    """
    grouped: dict[str, list[tuple[int, int, CompiledRule]]] = {t: [] for t in TARGETS}
    for index, rule in enumerate(rules):
        if _get(rule, "enabled", True) is False:
            continue
        rule_id = _get(rule, "id")
        label = f"rule #{rule_id}" if rule_id is not None else f"rules[{index}]"
        target = check_target(_get(rule, "target"), where=f"{label}.target")
        conditions = tuple(
            Condition.from_dict(c, where=f"{label}.conditions[{i}]")
            for i, c in enumerate(_get(rule, "conditions") or [])
        )
        position = _get(rule, "position", 100)
        compiled = CompiledRule(
            id=rule_id,
            name=str(_get(rule, "name") or label),
            target=target,
            value_code=str(_get(rule, "value_code")),
            position=position if isinstance(position, int) else 100,
            conditions=conditions,
        )
        order_id = rule_id if isinstance(rule_id, int) else index
        grouped[target].append((compiled.position, order_id, compiled))
    return CompiledRules(
        {t: tuple(r for _, _, r in sorted(items, key=lambda x: (x[0], x[1])))
         for t, items in grouped.items()}
    )


def match(
    rules: CompiledRules | Iterable[Any], facts: Mapping[str, Any]
) -> dict[str, CompiledRule | None]:
    """For each target, the first rule (by position) whose conditions all hold, or None."""
    compiled = rules if isinstance(rules, CompiledRules) else compile_rules(rules)
    result: dict[str, CompiledRule | None] = {}
    for target in TARGETS:
        result[target] = next(
            (r for r in compiled.by_target.get(target, ()) if r.matches(facts)), None
        )
    return result


def evaluate(
    rules: CompiledRules | Iterable[Any], facts: Mapping[str, Any]
) -> dict[str, str | None]:
    """``{"tier": code | None, "category": code | None}`` for one customer's facts.

    Pure: ``rules`` are ``ClassificationRule`` rows, dicts with the same keys, or
    :func:`compile_rules` output; ``facts`` is a plain dict as :func:`customer_facts`
    builds. ``None`` means no rule of that target matched.
    """
    return {t: (r.value_code if r is not None else None) for t, r in match(rules, facts).items()}


def make_facts(
    columns: Mapping[str, Any],
    *,
    tags: Iterable[str] = (),
    organization_name: str | None = None,
    organization_industry: str | None = None,
) -> dict[str, Any]:
    """The plain dict :func:`evaluate` reads, from customer column values."""
    stage = columns.get("lifecycle_stage")
    channel = columns.get("preferred_channel")
    return {
        "id": columns.get("id"),
        "lifetime_value": columns.get("lifetime_value"),
        "industry": columns.get("industry"),
        "city": columns.get("city"),
        "province": columns.get("province"),
        "country": columns.get("country"),
        "language": columns.get("language"),
        "lifecycle_stage": stage.value if isinstance(stage, enum.Enum) else stage,
        "preferred_channel": channel.value if isinstance(channel, enum.Enum) else channel,
        "created_at": columns.get("created_at"),
        "birthday": columns.get("birthday"),
        "do_not_contact": bool(columns.get("do_not_contact")),
        "custom_attributes": dict(columns.get("custom_attributes") or {}),
        "organization": organization_name,
        "organization_industry": organization_industry,
        "tags": sorted(tags),
        "tier_code": columns.get("tier_code"),
        "category_code": columns.get("category_code"),
    }


_FACT_COLUMNS = (
    "id", "tier_code", "category_code", "lifetime_value", "industry", "city", "province",
    "country", "language", "lifecycle_stage", "preferred_channel", "created_at", "birthday",
    "do_not_contact", "custom_attributes",
)


def customer_facts(
    customer: Customer,
    *,
    tags: Iterable[str] | None = None,
    organization_name: str | None = None,
    organization_industry: str | None = None,
) -> dict[str, Any]:
    """The facts of a Customer; tags and organization are read from it when loaded."""
    unloaded = sa_inspect(customer).unloaded
    if tags is None:
        tags = customer.tags if "tag_rows" not in unloaded else ()
    org = customer.organization if "organization" not in unloaded else None
    if org is not None:
        organization_name = organization_name or org.name
        organization_industry = organization_industry or org.industry
    columns = {n: (getattr(customer, n) if n not in unloaded else None) for n in _FACT_COLUMNS}
    return make_facts(
        columns,
        tags=tags,
        organization_name=organization_name,
        organization_industry=organization_industry,
    )


# --------------------------------------------------------------------------- categories, tiers


def _category_snapshot(category: CustomerCategory) -> dict[str, Any]:
    return {"code": category.code, "name": category.name, "name_zh": category.name_zh,
            "description": category.description}


def _tier_snapshot(tier: CustomerTier) -> dict[str, Any]:
    return {"code": tier.code, "name": tier.name, "name_zh": tier.name_zh, "rank": tier.rank}


async def list_categories(session: AsyncSession) -> list[CustomerCategory]:
    """Every category, by code."""
    return list(await session.scalars(select(CustomerCategory).order_by(CustomerCategory.code)))


async def list_tiers(session: AsyncSession) -> list[CustomerTier]:
    """Every tier, best (highest rank) first."""
    return list(
        await session.scalars(
            select(CustomerTier).order_by(CustomerTier.rank.desc(), CustomerTier.code)
        )
    )


async def get_category(session: AsyncSession, code: str) -> CustomerCategory:
    """A category by code; NotFoundError otherwise."""
    category = await session.get(CustomerCategory, code)
    if category is None:
        raise NotFoundError("category", code)
    return category


async def get_tier(session: AsyncSession, code: str) -> CustomerTier:
    """A tier by code; NotFoundError otherwise."""
    tier = await session.get(CustomerTier, code)
    if tier is None:
        raise NotFoundError("tier", code)
    return tier


async def create_category(
    session: AsyncSession,
    code: str,
    name: str,
    *,
    name_zh: str | None = None,
    description: str | None = None,
    actor: str,
) -> CustomerCategory:
    """Create a category; DuplicateError when the code is taken."""
    code = check_code(code)
    category = CustomerCategory(
        code=code,
        name=_check_name(name, "name"),
        name_zh=_check_optional_name(name_zh, "name_zh"),
        description=(description or "").strip() or None,
    )
    if await session.get(CustomerCategory, code) is not None:
        raise DuplicateError("category", code)
    session.add(category)
    await session.flush()
    audit.record(session, actor=actor, action="create", entity_type=ENTITY_CATEGORY,
                 entity_id=code, after=_category_snapshot(category))
    return category


async def update_category(
    session: AsyncSession,
    code: str,
    *,
    name: str | _Unset = UNSET,
    name_zh: str | _Unset | None = UNSET,
    description: str | _Unset | None = UNSET,
    actor: str,
) -> CustomerCategory:
    """Rename or re-describe a category (the code stays); audited when something changed."""
    category = await get_category(session, code)
    before = _category_snapshot(category)
    if not isinstance(name, _Unset):
        category.name = _check_name(name, "name")
    if not isinstance(name_zh, _Unset):
        category.name_zh = _check_optional_name(name_zh, "name_zh")
    if not isinstance(description, _Unset):
        category.description = (description or "").strip() or None
    old, new = audit.diff(before, _category_snapshot(category))
    if new:
        await session.flush()
        audit.record(session, actor=actor, action="update", entity_type=ENTITY_CATEGORY,
                     entity_id=code, before=old, after=new)
    return category


async def create_tier(
    session: AsyncSession,
    code: str,
    name: str,
    *,
    rank: int = 0,
    name_zh: str | None = None,
    actor: str,
) -> CustomerTier:
    """Create a tier (higher rank is better); DuplicateError when the code is taken."""
    code = check_code(code)
    tier = CustomerTier(
        code=code,
        name=_check_name(name, "name"),
        name_zh=_check_optional_name(name_zh, "name_zh"),
        rank=_check_int(rank, "rank"),
    )
    if await session.get(CustomerTier, code) is not None:
        raise DuplicateError("tier", code)
    session.add(tier)
    await session.flush()
    audit.record(session, actor=actor, action="create", entity_type=ENTITY_TIER,
                 entity_id=code, after=_tier_snapshot(tier))
    return tier


async def update_tier(
    session: AsyncSession,
    code: str,
    *,
    name: str | _Unset = UNSET,
    name_zh: str | _Unset | None = UNSET,
    rank: int | _Unset = UNSET,
    actor: str,
) -> CustomerTier:
    """Rename or re-rank a tier (the code stays); audited when something changed."""
    tier = await get_tier(session, code)
    before = _tier_snapshot(tier)
    if not isinstance(name, _Unset):
        tier.name = _check_name(name, "name")
    if not isinstance(name_zh, _Unset):
        tier.name_zh = _check_optional_name(name_zh, "name_zh")
    if not isinstance(rank, _Unset):
        tier.rank = _check_int(rank, "rank")
    old, new = audit.diff(before, _tier_snapshot(tier))
    if new:
        await session.flush()
        audit.record(session, actor=actor, action="update", entity_type=ENTITY_TIER,
                     entity_id=code, before=old, after=new)
    return tier


async def _rules_using(session: AsyncSession, target: str, code: str) -> list[ClassificationRule]:
    return list(
        await session.scalars(
            select(ClassificationRule)
            .where(ClassificationRule.target == target, ClassificationRule.value_code == code)
            .order_by(ClassificationRule.id)
        )
    )


async def _delete_class(
    session: AsyncSession, target: str, code: str, *, actor: str
) -> int:
    model: type[CustomerTier] | type[CustomerCategory]
    model, entity, column = (
        (CustomerTier, ENTITY_TIER, Customer.tier_code)
        if target == "tier"
        else (CustomerCategory, ENTITY_CATEGORY, Customer.category_code)
    )
    record = await session.get(model, code)
    if record is None:
        raise NotFoundError(target, code)
    users = await _rules_using(session, target, code)
    if users:
        listed = ", ".join(f"#{r.id} {r.name!r}" for r in users)
        raise StateError(
            f"{target} {code!r} is assigned by classification rules {listed}; "
            "delete or change those rules first"
        )
    before = (
        _tier_snapshot(record) if isinstance(record, CustomerTier) else _category_snapshot(record)
    )
    # Customers lose the class (the foreign key says ON DELETE SET NULL); done here
    # explicitly so the count can be audited and it holds even without FK enforcement.
    cleared = await session.execute(
        update(Customer.__table__)
        .where(column == code)
        .values({column.key: None, "updated_at": utcnow()})
    )
    count = int(cleared.rowcount or 0)
    await session.delete(record)
    await session.flush()
    audit.record(session, actor=actor, action="delete", entity_type=entity, entity_id=code,
                 before=before, after={"customers_unclassified": count})
    return count


async def delete_category(session: AsyncSession, code: str, *, actor: str) -> int:
    """Delete a category; its customers keep working, without a category.

    Refused (StateError) while a rule assigns it. Returns how many customers lost it.
    """
    return await _delete_class(session, "category", code, actor=actor)


async def delete_tier(session: AsyncSession, code: str, *, actor: str) -> int:
    """Delete a tier; its customers keep working, without a tier.

    Refused (StateError) while a rule assigns it. Returns how many customers lost it.
    """
    return await _delete_class(session, "tier", code, actor=actor)


async def class_counts(session: AsyncSession) -> dict[str, dict[str, int]]:
    """How many live customers hold each tier and category (``(none)`` for no class)."""
    result: dict[str, dict[str, int]] = {}
    for target, column in (("tier", Customer.tier_code), ("category", Customer.category_code)):
        rows = await session.execute(
            select(column, func.count())
            .where(Customer.deleted_at.is_(None))
            .group_by(column)
        )
        result[target] = {(code if code is not None else NONE_KEY): n for code, n in rows}
    return result


async def _require_class(session: AsyncSession, target: str, code: str, where: str) -> None:
    model = CustomerTier if target == "tier" else CustomerCategory
    if await session.get(model, code) is None:
        raise ValidationError(where, code, f"no such {target}")


# --------------------------------------------------------------------------- rules


def _rule_snapshot(rule: ClassificationRule) -> dict[str, Any]:
    return {"name": rule.name, "target": rule.target, "value_code": rule.value_code,
            "conditions": rule.conditions, "position": rule.position, "enabled": rule.enabled}


def describe_rule(rule: ClassificationRule) -> str:
    """``#3 [10] tier=vip when lifetime_value >= 100000  'VIP by value'``."""
    when = " and ".join(format_condition(c) for c in rule.conditions) or "always"
    state = "" if rule.enabled else "  (disabled)"
    return f"#{rule.id} [{rule.position}] {rule.target}={rule.value_code} when {when}  " \
           f"{rule.name!r}{state}"


def _default_rule_name(target: str, value: str, conditions: list[dict[str, Any]]) -> str:
    when = " and ".join(format_condition(c) for c in conditions) or "always"
    return f"{target} {value} when {when}"[:MAX_RULE_NAME_LENGTH]


async def list_rules(
    session: AsyncSession, *, target: str | None = None, enabled_only: bool = False
) -> list[ClassificationRule]:
    """Rules in the order they are tried: by target, position, id."""
    stmt = select(ClassificationRule).order_by(
        ClassificationRule.target, ClassificationRule.position, ClassificationRule.id
    )
    if target is not None:
        stmt = stmt.where(ClassificationRule.target == check_target(target))
    if enabled_only:
        stmt = stmt.where(ClassificationRule.enabled.is_(True))
    return list(await session.scalars(stmt))


async def get_rule(session: AsyncSession, rule_id: int) -> ClassificationRule:
    """A rule by id; NotFoundError otherwise."""
    rule = await session.get(ClassificationRule, rule_id)
    if rule is None:
        raise NotFoundError("classification rule", rule_id)
    return rule


async def find_rule(session: AsyncSession, name: str) -> ClassificationRule | None:
    """The rule of this exact name, if any."""
    return await session.scalar(
        select(ClassificationRule).where(ClassificationRule.name == name.strip()).limit(1)
    )


async def _next_position(session: AsyncSession, target: str) -> int:
    highest = await session.scalar(
        select(func.max(ClassificationRule.position)).where(ClassificationRule.target == target)
    )
    return 10 if highest is None else int(highest) + 10


async def create_rule(
    session: AsyncSession,
    *,
    target: str,
    value: str,
    conditions: Sequence[Mapping[str, Any] | str],
    name: str | None = None,
    position: int | None = None,
    enabled: bool = True,
    actor: str,
) -> ClassificationRule:
    """Add a rule after validating target, value (must exist) and every condition.

    Conditions are dicts ``{"field", "op", "value"}`` or strings in the
    :func:`parse_condition` syntax. Without a position the rule goes last of its target;
    without a name one is made from the conditions. Names are unique (DuplicateError).
    """
    target = check_target(target)
    value = check_code(value, where="value")
    checked = _conditions_from(conditions)
    await _require_class(session, target, value, "value")
    rule_name = (
        _check_name(name, "name", limit=MAX_RULE_NAME_LENGTH)
        if name is not None
        else _default_rule_name(target, value, checked)
    )
    if await find_rule(session, rule_name) is not None:
        raise DuplicateError("classification rule", rule_name)
    rule = ClassificationRule(
        name=rule_name,
        target=target,
        value_code=value,
        conditions=checked,
        position=(
            _check_int(position, "position") if position is not None
            else await _next_position(session, target)
        ),
        enabled=bool(enabled),
    )
    session.add(rule)
    await session.flush()
    audit.record(session, actor=actor, action="create", entity_type=ENTITY_RULE,
                 entity_id=rule.id, after=_rule_snapshot(rule))
    return rule


def _conditions_from(conditions: Sequence[Mapping[str, Any] | str]) -> list[dict[str, Any]]:
    if isinstance(conditions, str | Mapping):
        conditions = [conditions]
    raw: list[Any] = []
    for index, item in enumerate(conditions):
        if isinstance(item, str):
            try:
                raw.append(parse_condition(item))
            except ValidationError as exc:
                raise ValidationError(f"conditions[{index}]", exc.value, exc.reason) from None
        else:
            raw.append(item)
    return check_conditions(raw)


async def update_rule(
    session: AsyncSession,
    rule_id: int,
    *,
    name: str | _Unset = UNSET,
    target: str | _Unset = UNSET,
    value: str | _Unset = UNSET,
    conditions: Sequence[Mapping[str, Any] | str] | _Unset = UNSET,
    position: int | _Unset = UNSET,
    enabled: bool | _Unset = UNSET,
    actor: str,
) -> ClassificationRule:
    """Change the given parts of a rule, validated like :func:`create_rule`; audited."""
    rule = await get_rule(session, rule_id)
    before = _rule_snapshot(rule)
    if not isinstance(name, _Unset):
        new_name = _check_name(name, "name", limit=MAX_RULE_NAME_LENGTH)
        other = await find_rule(session, new_name)
        if other is not None and other.id != rule.id:
            raise DuplicateError("classification rule", new_name)
        rule.name = new_name
    if not isinstance(target, _Unset):
        rule.target = check_target(target)
    if not isinstance(value, _Unset):
        rule.value_code = check_code(value, where="value")
    if not isinstance(target, _Unset) or not isinstance(value, _Unset):
        await _require_class(session, rule.target, rule.value_code, "value")
    if not isinstance(conditions, _Unset):
        rule.conditions = _conditions_from(conditions)
    if not isinstance(position, _Unset):
        rule.position = _check_int(position, "position")
    if not isinstance(enabled, _Unset):
        rule.enabled = bool(enabled)
    old, new = audit.diff(before, _rule_snapshot(rule))
    if new:
        await session.flush()
        audit.record(session, actor=actor, action="update", entity_type=ENTITY_RULE,
                     entity_id=rule.id, before=old, after=new)
    return rule


async def delete_rule(session: AsyncSession, rule_id: int, *, actor: str) -> None:
    """Delete a rule; customers it classified keep their class."""
    rule = await get_rule(session, rule_id)
    before = _rule_snapshot(rule)
    await session.delete(rule)
    await session.flush()
    audit.record(session, actor=actor, action="delete", entity_type=ENTITY_RULE,
                 entity_id=rule_id, before=before)


# --------------------------------------------------------------------------- changing customers

_CLASS_COLUMNS = {"tier": Customer.tier_code, "category": Customer.category_code}


@dataclass(frozen=True)
class _Change:
    customer_id: int
    target: str
    old: str | None
    new: str | None
    reason: str


def _chunks(items: Sequence[int], size: int = _IN_CHUNK) -> Iterable[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def _apply_changes(
    session: AsyncSession, changes: Sequence[_Change], *, actor: str
) -> list[_Change]:
    """Write class changes with one UPDATE per (target, old, new) group; audit each customer.

    Each UPDATE only touches rows still holding the old value, so a class someone changed
    meanwhile is left alone (and not audited). Returns the changes actually written.
    """
    groups: dict[tuple[str, str | None, str | None], list[int]] = defaultdict(list)
    for change in changes:
        groups[(change.target, change.old, change.new)].append(change.customer_id)
    applied: set[tuple[int, str]] = set()
    now = utcnow()
    for (target, old, new), ids in groups.items():
        column = _CLASS_COLUMNS[target]
        held = column.is_(None) if old is None else column == old
        for chunk in _chunks(ids):
            result = await session.execute(
                update(Customer.__table__)
                .where(Customer.id.in_(chunk), held, Customer.deleted_at.is_(None))
                .values({column.key: new, "updated_at": now})
                .returning(Customer.__table__.c.id)
            )
            applied.update((row_id, target) for row_id in result.scalars())
    made = [c for c in changes if (c.customer_id, c.target) in applied]
    per_customer: dict[int, list[_Change]] = defaultdict(list)
    for change in made:
        per_customer[change.customer_id].append(change)
    entries = []
    for customer_id, own in per_customer.items():
        after: dict[str, Any] = {f"{c.target}_code": c.new for c in own}
        after["reason"] = "; ".join(dict.fromkeys(c.reason for c in own))
        entries.append({
            "at": now, "actor": actor, "action": "classify", "entity_type": "customer",
            "entity_id": str(customer_id),
            "before": {f"{c.target}_code": c.old for c in own}, "after": after,
        })
    if entries:
        # The rows audit.record would add, inserted in one executemany: adding thousands
        # of ORM objects per batch made the audit cost more than the classification.
        await session.execute(insert(AuditLog), entries)
    return made


@dataclass
class SetClassReport:
    """What a manual classification did."""

    requested: int
    changed: int
    unchanged: int


async def set_class(
    session: AsyncSession,
    customer_ids: Iterable[int],
    *,
    tier: str | _Unset | None = UNSET,
    category: str | _Unset | None = UNSET,
    actor: str,
) -> SetClassReport:
    """Put customers into a tier and/or category by hand (``None`` clears); audited.

    Runs in the caller's transaction with bulk UPDATEs, so Customer objects already
    loaded in ``session`` do not see the change until refreshed. Every id must be a live
    customer (NotFoundError lists the missing ones). A later :func:`reclassify` keeps a
    manual class unless a rule of that target matches the customer.
    """
    wanted: dict[str, str | None] = {}
    for target, value in (("tier", tier), ("category", category)):
        if isinstance(value, _Unset):
            continue
        if value is not None and value != "":
            code = check_code(value, where=target)
            await _require_class(session, target, code, target)
            wanted[target] = code
        else:
            wanted[target] = None
    if not wanted:
        raise ValidationError("class", None, "give a tier, a category, or both")
    ids = sorted({int(i) for i in customer_ids})
    if not ids:
        raise ValidationError("customer_ids", [], "no customers given")
    current: dict[int, dict[str, str | None]] = {}
    for chunk in _chunks(ids):
        rows = await session.execute(
            select(Customer.id, Customer.tier_code, Customer.category_code).where(
                Customer.id.in_(chunk), Customer.deleted_at.is_(None)
            )
        )
        for row_id, tier_code, category_code in rows:
            current[row_id] = {"tier": tier_code, "category": category_code}
    missing = [i for i in ids if i not in current]
    if missing:
        shown = ", ".join(f"#{i}" for i in missing[:20])
        more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise NotFoundError("customer", f"{shown}{more}")
    changes = [
        _Change(cid, target, current[cid][target], value, "manual")
        for cid in ids
        for target, value in wanted.items()
        if current[cid][target] != value
    ]
    made = await _apply_changes(session, changes, actor=actor) if changes else []
    changed = len({c.customer_id for c in made})
    return SetClassReport(requested=len(ids), changed=changed, unchanged=len(ids) - changed)


@dataclass
class ReclassifyReport:
    """What a re-classification found and (unless a dry run) did.

    ``changed`` counts customers whose class changed per target (would change, in a dry
    run); ``changed_to`` splits that by new value; ``totals`` is how many examined
    customers hold each value after the run; ``unmatched`` how many no rule matched
    (kept their class, or lost it with ``reset``). ``sample`` shows the first changes.
    """

    dry_run: bool
    reset: bool
    targets: tuple[str, ...]
    examined: int = 0
    customers_changed: int = 0
    changed: dict[str, int] = field(default_factory=dict)
    changed_to: dict[str, dict[str, int]] = field(default_factory=dict)
    totals: dict[str, dict[str, int]] = field(default_factory=dict)
    unmatched: dict[str, int] = field(default_factory=dict)
    skipped_concurrent: int = 0
    batches: int = 0
    sample: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self, *, with_sample: bool = True) -> dict[str, Any]:
        """JSON-ready."""
        data: dict[str, Any] = {
            "dry_run": self.dry_run, "reset": self.reset, "targets": list(self.targets),
            "examined": self.examined, "customers_changed": self.customers_changed,
            "changed": self.changed, "changed_to": self.changed_to, "totals": self.totals,
            "unmatched": self.unmatched, "skipped_concurrent": self.skipped_concurrent,
            "batches": self.batches,
        }
        if with_sample:
            data["sample"] = self.sample
        return data


def _session_factory(
    source: Database | async_sessionmaker[AsyncSession],
) -> Callable[[], AsyncSession]:
    if isinstance(source, Database):
        return source.sessions
    return source


def _check_targets(only_targets: Iterable[str] | str | None) -> tuple[str, ...]:
    if only_targets is None:
        return TARGETS
    if isinstance(only_targets, str):
        only_targets = [only_targets]
    chosen = {check_target(t, where="only_targets") for t in only_targets}
    if not chosen:
        raise ValidationError("only_targets", [], "name at least one of tier, category")
    return tuple(t for t in TARGETS if t in chosen)


async def _load_batch(
    session: AsyncSession, after_id: int, limit: int, *, with_org: bool, with_tags: bool
) -> list[dict[str, Any]]:
    columns = [getattr(Customer, name) for name in _FACT_COLUMNS]
    stmt = select(*columns)
    if with_org:
        stmt = stmt.add_columns(
            Organization.name.label("organization_name"),
            Organization.industry.label("organization_industry"),
        ).outerjoin(Organization, Organization.id == Customer.organization_id)
    stmt = (
        stmt.where(
            Customer.deleted_at.is_(None), Customer.erased_at.is_(None), Customer.id > after_id
        )
        .order_by(Customer.id)
        .limit(limit)
    )
    rows = [dict(row) for row in (await session.execute(stmt)).mappings()]
    if not rows:
        return rows
    tags: dict[int, list[str]] = defaultdict(list)
    if with_tags:
        ids = [row["id"] for row in rows]
        for chunk in _chunks(ids):
            result = await session.execute(
                select(CustomerTag.customer_id, CustomerTag.tag).where(
                    CustomerTag.customer_id.in_(chunk)
                )
            )
            for customer_id, tag in result:
                tags[customer_id].append(tag)
    facts = []
    for row in rows:
        facts.append(
            make_facts(
                row,
                tags=tags.get(row["id"], ()),
                organization_name=row.get("organization_name"),
                organization_industry=row.get("organization_industry"),
            )
        )
    return facts


async def _load_rules(session: AsyncSession) -> CompiledRules:
    compiled = compile_rules(await list_rules(session, enabled_only=True))
    for target, codes in compiled.codes().items():
        for code in sorted(codes):
            model = CustomerTier if target == "tier" else CustomerCategory
            if await session.get(model, code) is None:
                users = [r.describe() for r in compiled.by_target[target] if r.value_code == code]
                raise StateError(
                    f"{', '.join(users)} assign{'s' if len(users) == 1 else ''} {target} "
                    f"{code!r}, which does not exist; create it or fix the rule"
                )
    return compiled


async def reclassify(
    database_or_session_factory: Database | async_sessionmaker[AsyncSession],
    actor: str,
    *,
    dry_run: bool = False,
    only_targets: Iterable[str] | str | None = None,
    reset: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    sample_size: int = 20,
) -> ReclassifyReport:
    """Apply the enabled rules to every live customer and report what changed.

    Customers are streamed in id order (keyset, ``batch_size`` at a time); each batch is
    evaluated and written in its own transaction, so a huge base never holds one long
    transaction and an interrupted run keeps the batches done (running again finishes
    the job: customers already right are not touched). Only customers whose class
    changes are updated (bulk UPDATE per batch) and audited, one entry per customer.

    Customers no rule of a target matches keep their class, so manual classes survive;
    with ``reset=True`` they lose it instead. ``dry_run`` writes nothing and reports
    what would change. ``only_targets`` limits the run to ``tier`` or ``category``.
    """
    targets = _check_targets(only_targets)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValidationError("batch_size", batch_size, "needs a whole number of at least 1")
    sessions = _session_factory(database_or_session_factory)
    async with sessions() as session:
        compiled = await _load_rules(session)
    used = compiled.fields()
    with_tags = "tag" in used
    with_org = bool({"organization", "industry"} & used)

    report = ReclassifyReport(dry_run=dry_run, reset=reset, targets=targets)
    changed: Counter[str] = Counter()
    changed_to: dict[str, Counter[str]] = {t: Counter() for t in targets}
    totals: dict[str, Counter[str]] = {t: Counter() for t in targets}
    unmatched: Counter[str] = Counter()
    last_id = 0
    while True:
        async with sessions() as session, session.begin():
            batch = await _load_batch(
                session, last_id, batch_size, with_org=with_org, with_tags=with_tags
            )
            if not batch:
                break
            last_id = batch[-1]["id"]
            report.batches += 1
            report.examined += len(batch)
            changes: list[_Change] = []
            for facts in batch:
                matched = match(compiled, facts)
                for target in targets:
                    current = facts[f"{target}_code"]
                    rule = matched[target]
                    if rule is not None:
                        new, reason = rule.value_code, rule.describe()
                    else:
                        unmatched[target] += 1
                        new = None if reset else current
                        reason = "reset: no rule matches"
                    totals[target][new if new is not None else NONE_KEY] += 1
                    if new != current:
                        changes.append(_Change(facts["id"], target, current, new, reason))
            if not changes:
                continue
            if dry_run:
                made = changes
            else:
                made = await _apply_changes(session, changes, actor=actor)
                report.skipped_concurrent += len(changes) - len(made)
            report.customers_changed += len({c.customer_id for c in made})
            for change in made:
                changed[change.target] += 1
                changed_to[change.target][change.new or NONE_KEY] += 1
                if len(report.sample) < sample_size:
                    report.sample.append(
                        {"customer_id": change.customer_id, "target": change.target,
                         "from": change.old, "to": change.new, "reason": change.reason}
                    )
    report.changed = {t: changed[t] for t in targets}
    report.changed_to = {t: dict(sorted(changed_to[t].items())) for t in targets}
    report.totals = {t: dict(sorted(totals[t].items())) for t in targets}
    report.unmatched = {t: unmatched[t] for t in targets}
    if not dry_run:
        async with sessions() as session, session.begin():
            audit.record(session, actor=actor, action="reclassify", entity_type=ENTITY_RULE,
                         entity_id="reclassify", after=report.to_dict(with_sample=False))
    return report


# --------------------------------------------------------------------------- TOML file


@dataclass
class FileReport:
    """What loading a classification file did, per section: created, updated, unchanged."""

    path: str
    categories: Counter[str] = field(default_factory=Counter)
    tiers: Counter[str] = field(default_factory=Counter)
    rules: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"path": self.path, "categories": dict(self.categories),
                "tiers": dict(self.tiers), "rules": dict(self.rules)}


_SECTION_KEYS = {
    "categories": ({"code", "name"}, {"code", "name", "name_zh", "description"}),
    "tiers": ({"code", "name"}, {"code", "name", "name_zh", "rank"}),
    "rules": (
        {"name", "target", "value"},
        {"name", "target", "value", "position", "enabled", "conditions", "when", "always"},
    ),
}


def _file_error(label: str, exc: ValidationError) -> ValidationError:
    return ValidationError(f"{label}.{exc.field}", exc.value, exc.reason)


def _entries(data: dict[str, Any], section: str, source: str) -> list[tuple[str, dict[str, Any]]]:
    raw = data.get(section, [])
    if not isinstance(raw, list):
        raise ValidationError(f"{source} {section}", raw, f"write each entry as [[{section}]]")
    required, allowed = _SECTION_KEYS[section]
    entries = []
    for index, entry in enumerate(raw):
        key = entry.get("code", entry.get("name")) if isinstance(entry, dict) else None
        label = f"{source} {section}[{index}]" + (f" ({key})" if key else "")
        if not isinstance(entry, dict):
            raise ValidationError(label, entry, "each entry is a table")
        unknown = sorted(set(entry) - allowed)
        if unknown:
            raise ValidationError(
                f"{label}.{unknown[0]}", entry[unknown[0]],
                f"unknown key; use {', '.join(sorted(allowed))}",
            )
        missing = sorted(required - set(entry))
        if missing:
            raise ValidationError(f"{label}.{missing[0]}", None, "missing")
        entries.append((label, entry))
    return entries


def read_classification_file(path: str | Path) -> dict[str, Any]:
    """Parse and check a classification TOML file without touching a database.

    Returns ``{"categories": [...], "tiers": [...], "rules": [...]}``, each entry checked
    and paired with its label (``file rules[2] (VIP)``) for error messages.
    """
    file_path = Path(path)
    source = str(path)
    try:
        data = tomllib.loads(file_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValidationError("classification file", source, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError("classification file", source, f"cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValidationError("classification file", source, f"not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(_SECTION_KEYS))
    if unknown:
        raise ValidationError(
            f"{source} {unknown[0]}", data[unknown[0]],
            "unknown section; use [[categories]], [[tiers]], [[rules]]",
        )
    checked: dict[str, Any] = {"categories": [], "tiers": [], "rules": []}
    for section in ("categories", "tiers"):
        seen: set[str] = set()
        for label, entry in _entries(data, section, source):
            try:
                item = {
                    "code": check_code(entry["code"]),
                    "name": _check_name(entry["name"], "name"),
                    "name_zh": _check_optional_name(entry.get("name_zh"), "name_zh"),
                }
                if section == "categories":
                    item["description"] = (entry.get("description") or "").strip() or None
                else:
                    item["rank"] = _check_int(entry.get("rank", 0), "rank")
            except ValidationError as exc:
                raise _file_error(label, exc) from None
            if item["code"] in seen:
                raise ValidationError(f"{label}.code", item["code"], "defined twice in the file")
            seen.add(item["code"])
            checked[section].append((label, item))
    names: set[str] = set()
    for label, entry in _entries(data, "rules", source):
        try:
            rule: dict[str, Any] = {
                "name": _check_name(entry["name"], "name", limit=MAX_RULE_NAME_LENGTH),
                "target": check_target(entry["target"]),
                "value": check_code(entry["value"], where="value"),
                "enabled": entry.get("enabled", True),
            }
            if not isinstance(rule["enabled"], bool):
                raise ValidationError("enabled", rule["enabled"], "needs true or false")
            if "position" in entry:
                rule["position"] = _check_int(entry["position"], "position")
            raw: list[Any] = list(check_conditions(entry.get("conditions", [])))
            when = entry.get("when", [])
            if isinstance(when, str):
                when = [when]
            if not isinstance(when, list):
                raise ValidationError("when", when, "a list of conditions such as 'city = 上海'")
            for index, text in enumerate(when):
                try:
                    raw.append(check_condition(parse_condition(str(text)),
                                               where=f"when[{index}]"))
                except ValidationError as exc:
                    field_name = exc.field if exc.field.startswith("when") else f"when[{index}]"
                    raise ValidationError(field_name, exc.value, exc.reason) from None
            always = entry.get("always", False)
            if not isinstance(always, bool):
                raise ValidationError("always", always, "needs true or false")
            if not raw and not always:
                raise ValidationError(
                    "conditions", None,
                    "give conditions or when; a rule that matches everybody needs always = true",
                )
            if raw and always:
                raise ValidationError("always", always, "a rule with conditions is not 'always'")
            rule["conditions"] = raw
        except ValidationError as exc:
            raise _file_error(label, exc) from None
        if rule["name"] in names:
            raise ValidationError(f"{label}.name", rule["name"], "defined twice in the file")
        names.add(rule["name"])
        checked["rules"].append((label, rule))
    return checked


async def apply_classification_file(
    session: AsyncSession, path: str | Path, actor: str
) -> FileReport:
    """Upsert the categories and tiers (by code) and rules (by name) of a TOML file.

    Everything is checked before anything is written, and the caller's transaction holds
    the whole file: one bad entry means nothing changes. Errors name the file and entry
    (``classification.toml rules[1] (VIP).conditions[0].op``). Records not in the file
    are left as they are. See ``config/classification.example.toml`` for the format.
    """
    checked = read_classification_file(path)
    report = FileReport(path=str(path))
    defined = {"category": {i["code"] for _, i in checked["categories"]},
               "tier": {i["code"] for _, i in checked["tiers"]}}
    for label, rule in checked["rules"]:
        model = CustomerTier if rule["target"] == "tier" else CustomerCategory
        if rule["value"] not in defined[rule["target"]] and (
            await session.get(model, rule["value"]) is None
        ):
            raise ValidationError(
                f"{label}.value", rule["value"],
                f"no such {rule['target']} in the file or the database",
            )
    for _label, item in checked["categories"]:
        existing = await session.get(CustomerCategory, item["code"])
        if existing is None:
            await create_category(session, item["code"], item["name"], name_zh=item["name_zh"],
                                  description=item["description"], actor=actor)
            report.categories["created"] += 1
        else:
            before = _category_snapshot(existing)
            await update_category(session, item["code"], name=item["name"],
                                  name_zh=item["name_zh"], description=item["description"],
                                  actor=actor)
            outcome = "updated" if _category_snapshot(existing) != before else "unchanged"
            report.categories[outcome] += 1
    for _label, item in checked["tiers"]:
        existing_tier = await session.get(CustomerTier, item["code"])
        if existing_tier is None:
            await create_tier(session, item["code"], item["name"], rank=item["rank"],
                              name_zh=item["name_zh"], actor=actor)
            report.tiers["created"] += 1
        else:
            before = _tier_snapshot(existing_tier)
            await update_tier(session, item["code"], name=item["name"], name_zh=item["name_zh"],
                              rank=item["rank"], actor=actor)
            outcome = "updated" if _tier_snapshot(existing_tier) != before else "unchanged"
            report.tiers[outcome] += 1
    for label, rule in checked["rules"]:
        try:
            existing_rule = await find_rule(session, rule["name"])
            if existing_rule is None:
                await create_rule(
                    session, target=rule["target"], value=rule["value"],
                    conditions=rule["conditions"], name=rule["name"],
                    position=rule.get("position"), enabled=rule["enabled"], actor=actor,
                )
                report.rules["created"] += 1
            else:
                before = _rule_snapshot(existing_rule)
                await update_rule(
                    session, existing_rule.id, target=rule["target"], value=rule["value"],
                    conditions=rule["conditions"],
                    position=rule.get("position", existing_rule.position),
                    enabled=rule["enabled"], actor=actor,
                )
                outcome = "updated" if _rule_snapshot(existing_rule) != before else "unchanged"
                report.rules[outcome] += 1
        except ValidationError as exc:
            raise _file_error(label, exc) from None
    return report
