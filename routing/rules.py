"""Routing rules from ``config/rules.toml``: category, priority, team, automation, SLA.

The file is read and checked once, at load: every mistake raises :class:`RulesError`
naming the file, the rule (section, number and name) and the bad key or value, so a
deployer never finds out at the first customer message. The loaded :class:`RuleSet` is
pure: it decides on text and a flat dict of *facts* the engine builds, and touches no
database.

Sections (all optional; see the shipped file for a commented example)
    ``[categories]``     keyword lists per ticket category, tried in the order written;
                         ``default`` (inquiry) when none matches.
    ``[priority]``       ``default``, ``by_tier`` and ``urgent_keywords``/``high_keywords``.
    ``[sla]``            first-response and resolution targets in minutes per priority,
                         ``business_hours_only`` (one flag or one per priority).
    ``[business_hours]`` ``timezone``, ``mon`` … ``sun`` opening hours ("09:00-12:00"),
                         ``holidays``, make-up ``workdays`` (调休) and ``workday_hours``.
                         Without the section the calendar is open around the clock (UTC).
    ``[reopen]``         ``within_days``: a reply within this time reopens a solved ticket.
    ``[assignment]``     ``strategy``, ``sticky_owner``, ``default_team`` and ``skills``
                         (required agent skills per ticket category).
    ``[[teams]]``        ``team`` and ``when``: the first matching rule picks the team.
    ``[[automation]]``   ``name``, ``when``, ``actions``, optional ``stop`` and ``enabled``.
    ``[templates.X]``    auto-reply texts per language (``zh-CN``, ``en`` …).

Conditions (``when``)
    Every key must hold. ``field = value`` is equality, ``field = [a, b]`` means any of
    them; text comparisons ignore case. Fields: see :data:`FACT_FIELDS`. Besides fields:
    ``keywords`` / ``subject_keywords`` (any keyword occurs in the text / subject),
    ``hour_between = [18, 9]`` (from 18:00 up to 09:00, across midnight), ``not = {…}``
    (the inner conditions do not all hold) and ``any = [{…}, {…}]`` (one of them holds).
    An empty or missing ``when`` always holds.

Keywords
    Matched case-insensitively after NFKC normalization (full-width letters count), as
    substrings. A keyword that starts with a Latin letter or digit must also start a word
    (``how`` matches "How much" but not "show"); Chinese keywords match anywhere.
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from crm_core.config_file import ConfigFileError, TableChecker, describe, read_toml
from crm_core.models import Channel, TicketCategory, TicketPriority, TicketStatus
from routing.sla import MIDNIGHT, BusinessCalendar, Interval, SlaPolicy

DEFAULT_RULES_PATH = Path(__file__).resolve().parents[1] / "config" / "rules.toml"
"""The rules shipped with the code."""

PRIORITY_ORDER: tuple[TicketPriority, ...] = (
    TicketPriority.LOW,
    TicketPriority.NORMAL,
    TicketPriority.HIGH,
    TicketPriority.URGENT,
)
"""Priorities from least to most urgent."""

STRATEGIES: tuple[str, ...] = ("round_robin", "least_loaded")
"""How an agent is chosen among a team's available members."""

ACTION_KINDS: tuple[str, ...] = (
    "set_priority", "set_category", "add_tag", "assign_team", "auto_reply", "notify", "escalate",
)
"""What an automation rule can do."""

TEMPLATE_PLACEHOLDERS: frozenset[str] = frozenset({"customer_name", "ticket_number"})
"""Names a template may use as ``{placeholder}``."""

WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
FALLBACK_LANGUAGES: tuple[str, ...] = ("zh-CN", "en")
"""Languages a template falls back to, in order, when it has no text in the one asked."""

FACT_FIELDS: dict[str, str] = {
    "channel": "channel",
    "category": "category",
    "priority": "priority",
    "ticket_status": "ticket_status",
    "tier": "text",
    "customer_language": "language",
    "customer_tags": "tags",
    "is_new_customer": "bool",
    "in_business_hours": "bool",
    "ticket_is_new": "bool",
    "hour": "hour",
    "weekday": "weekday",
}
"""Fields a condition can compare, with the kind of value each holds.

``text`` and ``subject`` are facts too, but are matched with ``keywords`` and
``subject_keywords``, not by equality. ``weekday`` is ISO: 1 (Monday) to 7 (Sunday), or
``"mon"`` … ``"sun"``; ``hour`` is 0 to 23; both in the business time zone. A language
without region (``zh``) matches every region of it (``zh-CN``, ``zh-TW``).
"""

FIELD_ALIASES: dict[str, str] = {"language": "customer_language"}
"""Shorter names a condition may use for a fact field."""

_SPECIAL_CONDITIONS = ("keywords", "subject_keywords", "hour_between", "not", "any")
_ENUMS: dict[str, tuple[str, ...]] = {
    "channel": tuple(c.value for c in Channel),
    "category": tuple(c.value for c in TicketCategory),
    "priority": tuple(p.value for p in TicketPriority),
    "ticket_status": tuple(s.value for s in TicketStatus),
}
_SECTIONS = (
    "categories", "priority", "sla", "business_hours", "reopen", "assignment", "teams",
    "automation", "templates",
)
_LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$")
_TIME_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_MAX_TAG_LENGTH = 50

Facts = Mapping[str, Any]
Predicate = Callable[[Facts], bool]


class RulesError(ConfigFileError):
    """A rules file that cannot be used; the message names the file, the rule and the key."""


@dataclass(frozen=True)
class Action:
    """One thing an automation rule asks the engine to do (``value`` is ``""`` if none)."""

    kind: str
    value: str
    rule: str


@dataclass(frozen=True)
class Condition:
    """A compiled ``when`` table: call :meth:`matches` with the facts."""

    source: Mapping[str, Any]
    predicate: Predicate

    def matches(self, facts: Facts) -> bool:
        """Whether every condition holds for these facts."""
        return self.predicate(facts)


@dataclass(frozen=True)
class TeamRule:
    """``[[teams]]``: send what matches ``when`` to ``team``."""

    number: int
    label: str
    team: str
    when: Condition


@dataclass(frozen=True)
class AutomationRule:
    """``[[automation]]``: when ``when`` holds, do ``actions``; ``stop`` ends the list."""

    name: str
    when: Condition
    actions: tuple[Action, ...]
    stop: bool = False


def normalize_text(value: str) -> str:
    """Text as keywords see it: NFKC-normalized (full-width → ASCII) and case-folded."""
    return unicodedata.normalize("NFKC", value).casefold()


class Keywords:
    """A keyword list, matched as described in the module docstring."""

    def __init__(self, keywords: Sequence[str]) -> None:
        self.keywords = tuple(keywords)
        self._patterns: list[tuple[str, re.Pattern[str]]] = []
        for keyword in self.keywords:
            needle = normalize_text(keyword)
            boundary = r"(?<![a-z0-9])" if needle[:1].isascii() and needle[:1].isalnum() else ""
            self._patterns.append((keyword, re.compile(boundary + re.escape(needle))))

    def __bool__(self) -> bool:
        return bool(self.keywords)

    def find(self, text: str | None) -> list[str]:
        """The keywords (as configured) that occur in ``text``, in configured order."""
        if not text or not self._patterns:
            return []
        haystack = normalize_text(text)
        return [keyword for keyword, pattern in self._patterns if pattern.search(haystack)]


def escalate(priority: TicketPriority) -> TicketPriority:
    """One priority level up; urgent stays urgent."""
    index = PRIORITY_ORDER.index(TicketPriority(priority))
    return PRIORITY_ORDER[min(index + 1, len(PRIORITY_ORDER) - 1)]


def _max_priority(a: TicketPriority, b: TicketPriority) -> TicketPriority:
    return max(a, b, key=PRIORITY_ORDER.index)


def _language_key(tag: str) -> str:
    return tag.strip().replace("_", "-").casefold()


def language_matches(wanted: str, actual: str | None) -> bool:
    """Whether language ``actual`` satisfies ``wanted``.

    A tag with a region (``zh-CN``) needs that exact tag; a bare language (``zh``) takes
    every region of it. Case and ``_``/``-`` do not matter.
    """
    if not actual:
        return False
    wanted, actual = _language_key(wanted), _language_key(actual)
    if "-" in wanted:
        return wanted == actual
    return wanted == actual.split("-")[0]


class RuleSet:
    """Loaded, validated routing rules. Build with :func:`load_rules` or :meth:`default`."""

    def __init__(
        self,
        *,
        source: str,
        categories: Sequence[tuple[TicketCategory, Keywords]],
        default_category: TicketCategory,
        default_priority: TicketPriority,
        priority_by_tier: Mapping[str, TicketPriority],
        urgent_keywords: Keywords,
        high_keywords: Keywords,
        sla: SlaPolicy,
        calendar: BusinessCalendar,
        reopen_within: timedelta,
        strategy: str,
        sticky_owner: bool,
        default_team: str | None,
        skills: Mapping[TicketCategory, Sequence[str]],
        teams: Sequence[TeamRule],
        automation: Sequence[AutomationRule],
        templates: Mapping[str, Mapping[str, str]],
    ) -> None:
        self.source = source
        self.categories = tuple(categories)
        self.default_category = default_category
        self.default_priority = default_priority
        self.priority_by_tier = {k.casefold(): v for k, v in priority_by_tier.items()}
        self.urgent_keywords = urgent_keywords
        self.high_keywords = high_keywords
        self._sla = sla
        self._calendar = calendar
        self._reopen_within = reopen_within
        self._strategy = strategy
        self._sticky_owner = sticky_owner
        self.default_team = default_team
        self.skills = {k: tuple(v) for k, v in skills.items()}
        self.teams = tuple(teams)
        self.automation_rules = tuple(automation)
        self.templates = {name: dict(texts) for name, texts in templates.items()}

    def __repr__(self) -> str:
        return (
            f"RuleSet({self.source!r}, {len(self.teams)} team rules, "
            f"{len(self.automation_rules)} automation rules)"
        )

    @classmethod
    def default(cls) -> RuleSet:
        """The rules shipped in ``config/rules.toml`` (read once, then cached)."""
        return _default_rules()

    # --- settings -------------------------------------------------------------------

    @property
    def reopen_within(self) -> timedelta:
        """How long after solving a ticket a customer's reply reopens it."""
        return self._reopen_within

    @property
    def strategy(self) -> str:
        """``round_robin`` or ``least_loaded``."""
        return self._strategy

    @property
    def sticky_owner(self) -> bool:
        """Whether a customer's owner agent gets their tickets when available."""
        return self._sticky_owner

    @property
    def sla(self) -> SlaPolicy:
        """Response and resolution targets per priority."""
        return self._sla

    @property
    def calendar(self) -> BusinessCalendar:
        """Business hours, holidays and make-up workdays."""
        return self._calendar

    def required_skills(self, category: TicketCategory | str | None) -> tuple[str, ...]:
        """Skills an agent needs for tickets of this category (``[assignment.skills]``)."""
        if category is None:
            return ()
        return self.skills.get(TicketCategory(category), ())

    # --- decisions ------------------------------------------------------------------

    def categorize(self, text: str) -> tuple[TicketCategory, list[str]]:
        """The category of a message, and the hits that decided it.

        Categories are tried in the configured order; the first with a keyword in the text
        wins and every keyword of it found is a hit (``category:complaint:投诉``).
        """
        for category, keywords in self.categories:
            found = keywords.find(text)
            if found:
                return category, [f"category:{category}:{k}" for k in found]
        return self.default_category, [f"category:{self.default_category}:default"]

    def priority(self, tier: str | None, text: str) -> tuple[TicketPriority, list[str]]:
        """The priority from the customer's tier and urgent/high keywords, with its hits."""
        tier_priority = self.priority_by_tier.get(tier.casefold()) if tier else None
        if tier_priority is None:
            result, hits = self.default_priority, [f"priority:default:{self.default_priority}"]
        else:
            result, hits = tier_priority, [f"priority:tier:{tier}:{tier_priority}"]
        urgent = self.urgent_keywords.find(text)
        if urgent:
            return TicketPriority.URGENT, [*hits, *(f"priority:urgent:{k}" for k in urgent)]
        high = self.high_keywords.find(text)
        if high:
            result = _max_priority(result, TicketPriority.HIGH)
            hits.extend(f"priority:high:{k}" for k in high)
        return result, hits

    def team_for(self, facts: Facts) -> tuple[str | None, list[str]]:
        """The team of the first ``[[teams]]`` rule that matches, else ``default_team``."""
        for rule in self.teams:
            if rule.when.matches(facts):
                return rule.team, [f"team:{rule.team}:teams#{rule.number}"]
        if self.default_team:
            return self.default_team, [f"team:{self.default_team}:default"]
        return None, []

    def automation(self, facts: Facts) -> list[Action]:
        """The actions of every matching automation rule, in order (``stop`` ends early).

        Conditions see the facts as given: actions are not applied between rules.
        """
        actions: list[Action] = []
        for rule in self.automation_rules:
            if rule.when.matches(facts):
                actions.extend(rule.actions)
                if rule.stop:
                    break
        return actions

    def render_template(self, name: str, language: str | None, **values: Any) -> str:
        """Template ``name`` in ``language`` (or its base language, then zh-CN, then en).

        ``values`` fill ``{customer_name}`` and ``{ticket_number}``; a missing or ``None``
        value renders empty.
        """
        try:
            texts = self.templates[name]
        except KeyError:
            raise KeyError(f"{self.source}: no template {name!r}") from None
        text = _pick_language(texts, language)
        filled = {key: "" if values.get(key) is None else str(values[key])
                  for key in TEMPLATE_PLACEHOLDERS}
        return text.format_map(filled)


def _pick_language(texts: Mapping[str, str], language: str | None) -> str:
    by_key = {_language_key(k): v for k, v in texts.items()}
    if language:
        wanted = _language_key(language)
        if wanted in by_key:
            return by_key[wanted]
        base = wanted.split("-")[0]
        for key, text in by_key.items():
            if key.split("-")[0] == base:
                return text
    for fallback in FALLBACK_LANGUAGES:
        if _language_key(fallback) in by_key:
            return by_key[_language_key(fallback)]
    return next(iter(texts.values()))


@functools.cache
def _default_rules() -> RuleSet:
    return load_rules(DEFAULT_RULES_PATH)


# --- loading --------------------------------------------------------------------------


def load_rules(path: Path) -> RuleSet:
    """Read and validate a rules file; raise :class:`RulesError` on any mistake."""
    return parse_rules(read_toml(path, RulesError), source=str(path))


def parse_rules(data: Mapping[str, Any], *, source: str = "<rules>") -> RuleSet:
    """Build a :class:`RuleSet` from already-parsed TOML data (``source`` names it in errors)."""
    return _Parser(source).parse(data)


class _Parser(TableChecker):
    """Turns the TOML tables into a RuleSet, raising RulesError with a precise location."""

    error_type = RulesError

    # --- generic checks ---------------------------------------------------------------

    def number(self, value: Any, where: str, *, positive: bool = True) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(where, f"must be a number, not {describe(value)}")
        if value < 0 or (positive and value == 0):
            kind = "positive" if positive else "zero or more"
            raise self.error(where, f"must be {kind}, not {value!r}")
        return float(value)

    def keywords(self, value: Any, where: str) -> Keywords:
        words = self.strings(value, where)
        return Keywords(words)

    def choice(self, value: Any, allowed: Sequence[str], where: str) -> str:
        if not isinstance(value, str) or value.strip().lower() not in allowed:
            raise self.error(where, f"{describe(value)} is not one of {', '.join(allowed)}")
        return value.strip().lower()

    def priority_value(self, value: Any, where: str) -> TicketPriority:
        return TicketPriority(self.choice(value, _ENUMS["priority"], where))

    def category_value(self, value: Any, where: str) -> TicketCategory:
        return TicketCategory(self.choice(value, _ENUMS["category"], where))

    # --- sections ---------------------------------------------------------------------

    def parse(self, data: Mapping[str, Any]) -> RuleSet:
        self.known_keys(data, _SECTIONS, "")
        categories, default_category = self.categories(data.get("categories", {}))
        priority = self.priority(data.get("priority", {}))
        templates = self.templates(data.get("templates", {}))
        assignment = self.assignment(data.get("assignment", {}))
        return RuleSet(
            source=self.source,
            categories=categories,
            default_category=default_category,
            default_priority=priority["default"],
            priority_by_tier=priority["by_tier"],
            urgent_keywords=priority["urgent_keywords"],
            high_keywords=priority["high_keywords"],
            sla=self.sla(data.get("sla")),
            calendar=self.calendar(data.get("business_hours")),
            reopen_within=self.reopen(data.get("reopen", {})),
            strategy=assignment["strategy"],
            sticky_owner=assignment["sticky_owner"],
            default_team=assignment["default_team"],
            skills=assignment["skills"],
            teams=self.teams(data.get("teams", [])),
            automation=self.automation(data.get("automation", []), templates),
            templates=templates,
        )

    def categories(
        self, value: Any
    ) -> tuple[list[tuple[TicketCategory, Keywords]], TicketCategory]:
        table = self.table(value, "categories")
        default = TicketCategory.INQUIRY
        result: list[tuple[TicketCategory, Keywords]] = []
        for key, words in table.items():
            where = f"categories.{key}"
            if key == "default":
                default = self.category_value(words, where)
            elif key in _ENUMS["category"]:
                result.append((TicketCategory(key), self.keywords(words, where)))
            else:
                known = ", ".join(("default", *_ENUMS["category"]))
                raise self.error(where, f"unknown category {key!r}; known: {known}")
        return result, default

    def priority(self, value: Any) -> dict[str, Any]:
        table = self.table(value, "priority")
        self.known_keys(table, ("default", "by_tier", "urgent_keywords", "high_keywords"),
                        "priority.")
        by_tier_table = self.table(table.get("by_tier", {}), "priority.by_tier")
        return {
            "default": self.priority_value(table.get("default", "normal"), "priority.default"),
            "by_tier": {
                tier: self.priority_value(level, f"priority.by_tier.{tier}")
                for tier, level in by_tier_table.items()
            },
            "urgent_keywords": self.keywords(
                table.get("urgent_keywords", []), "priority.urgent_keywords"
            ),
            "high_keywords": self.keywords(
                table.get("high_keywords", []), "priority.high_keywords"
            ),
        }

    def sla(self, value: Any) -> SlaPolicy:
        if value is None:
            return DEFAULT_SLA
        table = self.table(value, "sla")
        self.known_keys(table, ("first_response", "resolution", "business_hours_only"), "sla.")
        targets: dict[str, dict[TicketPriority, timedelta]] = {}
        for name in ("first_response", "resolution"):
            where = f"sla.{name}"
            if name not in table:
                raise self.error(where, "missing: give minutes for low, normal, high, urgent")
            minutes = self.table(table[name], where)
            self.known_keys(minutes, _ENUMS["priority"], f"{where}.")
            targets[name] = {}
            for priority in TicketPriority:
                if priority.value not in minutes:
                    raise self.error(f"{where}.{priority}", "missing: give minutes")
                amount = self.number(minutes[priority.value], f"{where}.{priority}")
                targets[name][priority] = timedelta(minutes=amount)
        flags = table.get("business_hours_only", True)
        only: bool | dict[TicketPriority, bool]
        if isinstance(flags, Mapping):
            self.known_keys(flags, _ENUMS["priority"], "sla.business_hours_only.")
            only = {
                TicketPriority(p): self.boolean(flag, f"sla.business_hours_only.{p}")
                for p, flag in flags.items()
            }
        else:
            only = self.boolean(flags, "sla.business_hours_only")
        return SlaPolicy(targets["first_response"], targets["resolution"], only)

    def time_ranges(self, value: Any, where: str) -> list[Interval]:
        ranges = self.strings(value, where)
        result: list[Interval] = []
        for i, text in enumerate(ranges):
            match = _TIME_RANGE.match(text)
            if not match:
                raise self.error(f"{where}[{i}]", f"{text!r} is not a range like \"09:00-18:00\"")
            h1, m1, h2, m2 = (int(g) for g in match.groups())
            if not (0 <= h1 <= 23 and 0 <= m1 <= 59 and 0 <= h2 <= 24 and 0 <= m2 <= 59) or (
                h2 == 24 and m2 != 0
            ):
                raise self.error(f"{where}[{i}]", f"{text!r} is not a valid time range")
            start, end = time(h1, m1), MIDNIGHT if h2 == 24 else time(h2, m2)
            if end != MIDNIGHT and end <= start:
                raise self.error(
                    f"{where}[{i}]", f"{text!r} ends before it starts (use 24:00 for midnight)"
                )
            result.append((start, end))
        return result

    def dates(self, value: Any, where: str) -> list[date]:
        if not isinstance(value, list):
            raise self.error(where, f"must be a list of dates, not {describe(value)}")
        result = []
        for i, item in enumerate(value):
            if isinstance(item, date) and not isinstance(item, datetime):
                result.append(item)  # a TOML date literal
                continue
            try:
                result.append(date.fromisoformat(item))
            except (TypeError, ValueError):
                raise self.error(
                    f"{where}[{i}]", f"{item!r} is not a date like 2027-01-01"
                ) from None
        return result

    def calendar(self, value: Any) -> BusinessCalendar:
        if value is None:
            return BusinessCalendar.always_open("UTC")
        table = self.table(value, "business_hours")
        self.known_keys(
            table, ("timezone", *WEEKDAYS, "holidays", "workdays", "workday_hours"),
            "business_hours.",
        )
        if "timezone" not in table:
            raise self.error("business_hours.timezone", "missing: e.g. \"Asia/Shanghai\"")
        timezone = self.text(table["timezone"], "business_hours.timezone")
        weekly = {
            index: self.time_ranges(table[day], f"business_hours.{day}")
            for index, day in enumerate(WEEKDAYS)
            if day in table
        }
        workday_hours = (
            self.time_ranges(table["workday_hours"], "business_hours.workday_hours")
            if "workday_hours" in table
            else None
        )
        holidays = self.dates(table.get("holidays", []), "business_hours.holidays")
        workdays = self.dates(table.get("workdays", []), "business_hours.workdays")
        try:
            return BusinessCalendar(timezone, weekly, holidays, workdays, workday_hours)
        except ValueError as exc:
            raise self.error("business_hours", str(exc)) from None

    def reopen(self, value: Any) -> timedelta:
        table = self.table(value, "reopen")
        self.known_keys(table, ("within_days",), "reopen.")
        days = self.number(table.get("within_days", 7), "reopen.within_days", positive=False)
        return timedelta(days=days)

    def assignment(self, value: Any) -> dict[str, Any]:
        table = self.table(value, "assignment")
        self.known_keys(table, ("strategy", "sticky_owner", "default_team", "skills"),
                        "assignment.")
        skills_table = self.table(table.get("skills", {}), "assignment.skills")
        skills: dict[TicketCategory, list[str]] = {}
        for category, names in skills_table.items():
            where = f"assignment.skills.{category}"
            if category not in _ENUMS["category"]:
                raise self.error(where, f"unknown category {category!r}; known: "
                                 + ", ".join(_ENUMS["category"]))
            skills[TicketCategory(category)] = self.strings(names, where)
        default_team = table.get("default_team")
        return {
            "strategy": self.choice(
                table.get("strategy", "round_robin"), STRATEGIES, "assignment.strategy"
            ),
            "sticky_owner": self.boolean(
                table.get("sticky_owner", True), "assignment.sticky_owner"
            ),
            "default_team": None
            if default_team is None
            else self.text(default_team, "assignment.default_team"),
            "skills": skills,
        }

    def rule_list(self, value: Any, section: str) -> list[Mapping[str, Any]]:
        if not isinstance(value, list):
            raise self.error(section, f"write each rule as [[{section}]], not {describe(value)}")
        return [self.table(rule, f"{section} #{i}") for i, rule in enumerate(value, start=1)]

    def teams(self, value: Any) -> list[TeamRule]:
        result = []
        for number, rule in enumerate(self.rule_list(value, "teams"), start=1):
            label = f"teams #{number}"
            if isinstance(rule.get("name"), str):
                label += f" {rule['name']!r}"
            elif isinstance(rule.get("team"), str):
                label += f" {rule['team']!r}"
            self.known_keys(rule, ("name", "team", "when"), f"{label}: ")
            if "team" not in rule:
                raise self.error(f"{label}: team", "missing: the team's name")
            team = self.text(rule["team"], f"{label}: team")
            when = self.condition(rule.get("when", {}), f"{label}: when")
            result.append(TeamRule(number=number, label=label, team=team, when=when))
        return result

    def automation(
        self, value: Any, templates: Mapping[str, Mapping[str, str]]
    ) -> list[AutomationRule]:
        result = []
        names: set[str] = set()
        for number, rule in enumerate(self.rule_list(value, "automation"), start=1):
            label = f"automation #{number}"
            if isinstance(rule.get("name"), str):
                label += f" {rule['name']!r}"
            self.known_keys(rule, ("name", "when", "actions", "stop", "enabled"), f"{label}: ")
            if "name" not in rule:
                raise self.error(f"{label}: name", "missing: every rule needs a name")
            name = self.text(rule["name"], f"{label}: name")
            if name in names:
                raise self.error(f"{label}: name", f"{name!r} is used by an earlier rule")
            names.add(name)
            when = self.condition(rule.get("when", {}), f"{label}: when")
            actions = self.actions(rule.get("actions"), f"{label}: actions", name, templates)
            stop = self.boolean(rule.get("stop", False), f"{label}: stop")
            if self.boolean(rule.get("enabled", True), f"{label}: enabled"):
                result.append(AutomationRule(name=name, when=when, actions=actions, stop=stop))
        return result

    def actions(
        self, value: Any, where: str, rule: str, templates: Mapping[str, Mapping[str, str]]
    ) -> tuple[Action, ...]:
        if value is None:
            raise self.error(where, "missing: a list such as [{ add_tag = \"vip\" }]")
        if not isinstance(value, list) or not value:
            raise self.error(where, f"must be a non-empty list, not {describe(value)}")
        result = []
        for i, item in enumerate(value):
            at = f"{where}[{i}]"
            if isinstance(item, str):
                kind, argument = item, None
            elif isinstance(item, Mapping) and len(item) == 1:
                kind, argument = next(iter(item.items()))
            else:
                raise self.error(at, "write one action per item, e.g. { add_tag = \"vip\" }")
            if kind not in ACTION_KINDS:
                raise self.error(
                    f"{at}.{kind}", f"unknown action {kind!r}; known: {', '.join(ACTION_KINDS)}"
                )
            result.append(Action(kind, self.action_value(kind, argument, f"{at}.{kind}",
                                                         templates), rule))
        return tuple(result)

    def action_value(
        self, kind: str, value: Any, where: str, templates: Mapping[str, Mapping[str, str]]
    ) -> str:
        if kind == "escalate":
            if value not in (None, True):
                raise self.error(where, "takes no value: write \"escalate\" or { escalate = true }")
            return ""
        if value is None:
            raise self.error(where, f"needs a value: {{ {kind} = \"…\" }}")
        if kind == "set_priority":
            return self.priority_value(value, where).value
        if kind == "set_category":
            return self.category_value(value, where).value
        text = self.text(value, where)
        if kind == "add_tag" and len(text) > _MAX_TAG_LENGTH:
            raise self.error(where, f"a tag has at most {_MAX_TAG_LENGTH} characters")
        if kind == "auto_reply" and text not in templates:
            known = ", ".join(templates) or "none defined"
            raise self.error(where, f"no template {text!r} in [templates]; known: {known}")
        return text

    def templates(self, value: Any) -> dict[str, dict[str, str]]:
        table = self.table(value, "templates")
        result: dict[str, dict[str, str]] = {}
        for name, texts in table.items():
            where = f"templates.{name}"
            texts = self.table(texts, where)
            if not texts:
                raise self.error(where, "has no text: add e.g. zh-CN = \"…\" and en = \"…\"")
            result[name] = {}
            for language, text in texts.items():
                at = f"{where}.{language}"
                if not _LANGUAGE_TAG.match(language):
                    raise self.error(at, f"{language!r} is not a language tag like zh-CN or en")
                self.check_template(self.text(text, at), at)
                result[name][language] = text
        return result

    def check_template(self, text: str, where: str) -> None:
        try:
            parts = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise self.error(where, f"{exc} (write {{{{ and }}}} for literal braces)") from None
        known = ", ".join(f"{{{p}}}" for p in sorted(TEMPLATE_PLACEHOLDERS))
        for _literal, field_name, spec, conversion in parts:
            if field_name is None:
                continue
            if field_name not in TEMPLATE_PLACEHOLDERS:
                raise self.error(where, f"unknown placeholder {{{field_name}}}; known: {known}")
            if spec or conversion:
                raise self.error(where, f"placeholder {{{field_name}}} takes no format or !r")

    # --- conditions -------------------------------------------------------------------

    def condition(self, value: Any, where: str) -> Condition:
        table = self.table(value, where)
        tests = [self.test(key, item, f"{where}.{key}") for key, item in table.items()]
        return Condition(dict(table), lambda facts: all(test(facts) for test in tests))

    def test(self, key: str, value: Any, where: str) -> Predicate:
        if key in ("keywords", "subject_keywords"):
            keywords = self.keywords(value, where)
            if not keywords:
                raise self.error(where, "needs at least one keyword")
            fact = "text" if key == "keywords" else "subject"
            return lambda facts: bool(keywords.find(facts.get(fact)))
        if key == "hour_between":
            return self.hour_between(value, where)
        if key == "not":
            inner = self.condition(value, where)
            return lambda facts: not inner.matches(facts)
        if key == "any":
            if not isinstance(value, list) or not value:
                raise self.error(where, "must be a non-empty list of tables")
            options = [self.condition(v, f"{where}[{i}]") for i, v in enumerate(value)]
            return lambda facts: any(option.matches(facts) for option in options)
        if key in ("text", "subject"):
            hint = "keywords" if key == "text" else "subject_keywords"
            raise self.error(where, f"match {key} with {hint} = [\"…\"], not by equality")
        key = FIELD_ALIASES.get(key, key)
        if key not in FACT_FIELDS:
            known = ", ".join((*FACT_FIELDS, *FIELD_ALIASES, *_SPECIAL_CONDITIONS))
            raise self.error(where, f"unknown field {key!r}; known: {known}")
        items = value if isinstance(value, list) else [value]
        if not items:
            raise self.error(where, "an empty list never matches")
        kind = FACT_FIELDS[key]
        wanted = [self.fact_value(kind, item, f"{where}") for item in items]
        return _field_test(key, kind, wanted)

    def hour_between(self, value: Any, where: str) -> Predicate:
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            raise self.error(where, f"must be two hours like [18, 9], not {describe(value)}")
        start, end = value
        if not (0 <= start <= 24 and 0 <= end <= 24) or start % 24 == end % 24:
            raise self.error(where, f"{value!r}: hours 0 to 24, start and end different")
        start, end = start % 24, end % 24

        def test(facts: Facts) -> bool:
            hour = facts.get("hour")
            if not isinstance(hour, int):
                return False
            return start <= hour < end if start < end else hour >= start or hour < end

        return test

    def fact_value(self, kind: str, value: Any, where: str) -> Any:
        if kind in _ENUMS:
            return self.choice(value, _ENUMS[kind], where)
        if kind == "bool":
            return self.boolean(value, where)
        if kind == "hour":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 23:
                raise self.error(where, f"{describe(value)} is not an hour 0 to 23")
            return value
        if kind == "weekday":
            day = _weekday(value)
            if day is None:
                raise self.error(where, f"{describe(value)} is not a weekday (1-7 or mon … sun)")
            return day
        if kind == "language":
            text = self.text(value, where)
            if not _LANGUAGE_TAG.match(text):
                raise self.error(where, f"{text!r} is not a language tag like zh-CN or en")
            return text
        return self.text(value, where).casefold()


def _weekday(value: Any) -> int | None:
    """An ISO weekday (1 = Monday … 7 = Sunday) from a number or a name like "mon"."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 7:
        return value
    if isinstance(value, str) and value.strip().lower()[:3] in WEEKDAYS:
        return WEEKDAYS.index(value.strip().lower()[:3]) + 1
    return None


def _field_test(field: str, kind: str, wanted: list[Any]) -> Predicate:
    """A predicate comparing fact ``field`` with any of the ``wanted`` values."""

    def test(facts: Facts) -> bool:
        actual = facts.get(field)
        if actual is None:
            return False
        if kind == "bool":
            return bool(actual) in wanted
        if kind == "hour":
            return actual in wanted
        if kind == "weekday":
            return _weekday(actual) in wanted
        if kind == "language":
            return any(language_matches(w, str(actual)) for w in wanted)
        if kind == "tags":
            tags = {str(t).casefold() for t in actual} if isinstance(actual, list | tuple | set
                                                                      | frozenset) else set()
            return any(w in tags for w in wanted)
        return str(actual).casefold() in wanted

    return test


DEFAULT_SLA = SlaPolicy(
    first_response={
        TicketPriority.LOW: timedelta(hours=8),
        TicketPriority.NORMAL: timedelta(hours=4),
        TicketPriority.HIGH: timedelta(hours=1),
        TicketPriority.URGENT: timedelta(minutes=15),
    },
    resolution={
        TicketPriority.LOW: timedelta(days=5),
        TicketPriority.NORMAL: timedelta(days=3),
        TicketPriority.HIGH: timedelta(days=1),
        TicketPriority.URGENT: timedelta(hours=4),
    },
    business_hours_only={TicketPriority.URGENT: False},
)
"""SLA targets used when a rules file has no ``[sla]`` section."""
