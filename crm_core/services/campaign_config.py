"""Care campaigns from ``config/campaigns.toml``: loaded, checked, and ready to render.

The file is read and checked once: every mistake raises :class:`CampaignConfigError`
naming the file, the campaign (number and key) and the bad key, e.g.
``config/campaigns.toml: campaigns[2] (renewal).trigger.days_before: must be a whole
number from 0 to 3650, not -3``. Templates are compiled in a sandbox and rendered once
against sample values at load, so an unknown variable is found at start-up, not at the
first customer. The loaded :class:`CampaignConfig` touches no database.

Sections
    ``[defaults]``   ``timezone`` (for one-off and cron times and customers without a
                     zone), ``language``, ``channels`` (the order tried), ``quiet_hours``,
                     ``frequency_cap`` (across all campaigns).
    ``[feedback]``   ``classes`` (keyword lists per class, tried in order),
                     ``opt_out_words``, ``survey_window_days``, ``comment_window_minutes``.
    ``[[campaigns]]`` one table per campaign; see the shipped file for a worked example.

Campaign keys
    ``key``, ``name``, ``enabled``, ``purpose`` (``marketing`` or ``service``),
    ``action`` (``message``, ``survey`` or ``task``), ``audience`` (a customer search
    filter: ``tier``, ``tag``, ``lifecycle``, ``category`` … as in a segment),
    ``segment`` (the name of a saved segment, instead of ``audience``), ``trigger``,
    ``channels``, ``quiet_hours``, ``frequency_cap``, ``start``, ``end``,
    ``holdout_percent``, ``reply_window_days``, ``templates``, ``variants``, ``survey``,
    ``task``.

Triggers (``trigger.kind``)
    ``once`` (``at``), ``cron`` (``cron``, ``timezone``), ``ticket_resolved``
    (``category``), ``customer_created``, ``birthday``, ``contract_end`` (``attribute``,
    ``days_before``; with the default attribute ``contract_end`` the active contracts of
    the sales module count too), ``no_interaction`` (``days``), ``lifecycle_change`` and
    ``tier_change`` (``from``, ``to``). Events take ``delay_minutes``; day-based
    triggers send at ``at`` (``"10:00"``) in the customer's time zone; every trigger has
    ``grace_hours``: work that could not be planned that long after it was due (the
    scheduler was down) is left out rather than sent late.

Templates
    ``[campaigns.templates.<channel>.<language>]`` with ``text`` (and ``subject`` for
    e-mail); ``default`` stands for any channel. Jinja2 in a sandbox, variables
    ``customer`` (``name``, ``greeting``, ``given_name``, ``family_name``, ``language``,
    ``tier``, ``lifecycle``, ``attributes``), ``ticket`` (``number``, ``subject``,
    ``category``; ticket triggers only), ``campaign`` (``key``, ``name``),
    ``unsubscribe_url``, ``survey_url``, ``survey_links``, ``opt_out_hint`` and
    ``track(url)`` (a tracked link).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import pydantic
from croniter import croniter
from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from crm_core.config_file import ConfigFileError, TableChecker, describe, read_toml
from crm_core.models import Channel, LifecycleStage, TicketCategory

DEFAULT_CAMPAIGNS_PATH = Path(__file__).resolve().parents[2] / "config" / "campaigns.toml"
"""The campaigns file shipped with the code."""

ACTIONS = ("message", "survey", "task")
PURPOSES = ("marketing", "service")
TRIGGERS = (
    "once", "cron", "ticket_resolved", "customer_created", "birthday", "contract_end",
    "no_interaction", "lifecycle_change", "tier_change",
)
EVENT_TRIGGERS = ("ticket_resolved", "customer_created", "lifecycle_change", "tier_change")
"""Triggers found by scanning what happened since the last scan."""
DAY_TRIGGERS = ("birthday", "contract_end", "no_interaction")
"""Triggers that fire on a calendar day of the customer, at ``at`` in their zone."""
SCHEDULED_TRIGGERS = ("once", "cron")
"""Triggers that fire at a time for the whole audience."""
SENDABLE_CHANNELS = (Channel.EMAIL, Channel.TELEGRAM, Channel.WEBCHAT)
"""Channels a campaign message can go out on (the phone is for tasks)."""
CHANNEL_WORDS = ("preferred", *(c.value for c in SENDABLE_CHANNELS))
TEMPLATE_CHANNELS = ("default", *(c.value for c in SENDABLE_CHANNELS))
SURVEY_KINDS = {"csat": (1, 5), "nps": (0, 10)}
"""Survey kinds and their scales."""
FEEDBACK_CLASSES = ("complaint", "suggestion", "praise", "question")
ASSIGN_MODES = ("owner", "team")
FALLBACK_LANGUAGES = ("zh-CN", "en")
_LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*$")
_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
_CLOCK = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*$")

_CAMPAIGN_KEYS = (
    "key", "name", "enabled", "purpose", "action", "audience", "segment", "trigger",
    "channels", "quiet_hours", "frequency_cap", "start", "end", "holdout_percent",
    "reply_window_days", "templates", "variants", "survey", "task",
)
_TRIGGER_KEYS: dict[str, tuple[str, ...]] = {
    "once": ("at",),
    "cron": ("cron", "timezone"),
    "ticket_resolved": ("delay_minutes", "category"),
    "customer_created": ("delay_minutes",),
    "birthday": ("at",),
    "contract_end": ("at", "attribute", "days_before"),
    "no_interaction": ("at", "days"),
    "lifecycle_change": ("delay_minutes", "from", "to"),
    "tier_change": ("delay_minutes", "from", "to"),
}
_DEFAULT_GRACE_HOURS = {"once": 6.0, "cron": 6.0, **dict.fromkeys(DAY_TRIGGERS, 20.0),
                        **dict.fromkeys(EVENT_TRIGGERS, 48.0)}


class CampaignConfigError(ConfigFileError):
    """A campaigns file that cannot be used; the message names the file, campaign and key."""


# --- keyword matching -------------------------------------------------------------------


def normalize_text(value: str) -> str:
    """Text as keywords see it: NFKC (full-width → ASCII) and case-folded."""
    return unicodedata.normalize("NFKC", value).casefold()


class KeywordList:
    """Keywords matched as routing rules match them: case-insensitive substrings after
    NFKC; a keyword starting with a Latin letter or digit must start a word."""

    def __init__(self, keywords: Sequence[str]) -> None:
        self.keywords = tuple(keywords)
        self._patterns = []
        for keyword in self.keywords:
            needle = normalize_text(keyword)
            boundary = r"(?<![a-z0-9])" if needle[:1].isascii() and needle[:1].isalnum() else ""
            self._patterns.append((keyword, re.compile(boundary + re.escape(needle))))

    def find(self, text: str | None) -> list[str]:
        """The keywords (as configured) found in ``text``."""
        if not text:
            return []
        haystack = normalize_text(text)
        return [keyword for keyword, pattern in self._patterns if pattern.search(haystack)]


# --- the loaded configuration -------------------------------------------------------------


@dataclass(frozen=True)
class QuietHours:
    """Local hours in which nothing is sent (``start`` up to ``end``, across midnight)."""

    start: time
    end: time

    def contains(self, moment: time) -> bool:
        """Whether a local wall-clock time falls in the quiet hours."""
        if self.start == self.end:
            return False
        if self.start < self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end

    def release(self, moment: datetime, zone: tzinfo) -> datetime | None:
        """When sending may resume (UTC), or ``None`` when ``moment`` is not quiet there."""
        local = moment.astimezone(zone)
        if not self.contains(local.time().replace(tzinfo=None)):
            return None
        day = local.date()
        if self.start > self.end and local.time().replace(tzinfo=None) >= self.start:
            day = day + timedelta(days=1)
        return datetime.combine(day, self.end, tzinfo=zone).astimezone(UTC)


@dataclass(frozen=True)
class FrequencyCap:
    """At most ``max`` messages per customer in any ``days``-long window."""

    max: int
    days: float

    @property
    def window(self) -> timedelta:
        """The window as a duration."""
        return timedelta(days=self.days)


@dataclass(frozen=True)
class Trigger:
    """When a campaign fires; which fields matter depends on ``kind`` (module docstring)."""

    kind: str
    at: datetime | None = None
    """``once``: the moment."""
    cron: str | None = None
    timezone: str = "Asia/Shanghai"
    send_time: time = time(10, 0)
    """Day triggers: the local time of day to send."""
    delay: timedelta = timedelta(0)
    days: int = 0
    """``no_interaction``: days of silence; ``contract_end``: days before the end."""
    attribute: str = "contract_end"
    categories: tuple[str, ...] = ()
    from_values: tuple[str, ...] = ()
    to_values: tuple[str, ...] = ()
    grace: timedelta = timedelta(hours=6)

    def cron_times(self, after: datetime, until: datetime) -> list[datetime]:
        """Cron firings in ``(after, until]``, UTC."""
        assert self.cron is not None
        zone = ZoneInfo(self.timezone)
        found: list[datetime] = []
        iterator = croniter(self.cron, after.astimezone(zone))
        while True:
            moment = iterator.get_next(datetime).astimezone(UTC)
            if moment > until:
                return found
            found.append(moment)
            if len(found) > 10_000:  # a runaway expression; the grace window bounds it anyway
                return found


@dataclass(frozen=True)
class MessageTemplate:
    """One message in one language for one channel (``subject`` for e-mail)."""

    language: str
    text: Any
    subject: Any | None = None


@dataclass(frozen=True)
class TemplateSet:
    """Templates by channel (or ``default``) and language."""

    by_channel: Mapping[str, Mapping[str, MessageTemplate]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.by_channel)

    def pick(self, channel: Channel, language: str | None, default_language: str,
             ) -> MessageTemplate | None:
        """The template for a channel in the best language: the customer's, the same
        language in another region, the default, zh-CN, en, then any."""
        for key in (channel.value, "default"):
            texts = self.by_channel.get(key)
            if texts:
                return _pick_language(texts, language, default_language)
        return None


@dataclass(frozen=True)
class Variant:
    """One arm of an A/B test: a share of the audience and its own templates."""

    name: str
    weight: float
    templates: TemplateSet


@dataclass(frozen=True)
class SurveySpec:
    """A satisfaction survey: CSAT (1–5) or NPS (0–10), answered within ``window``."""

    kind: str = "csat"
    window: timedelta = timedelta(days=3)

    @property
    def scale(self) -> tuple[int, int]:
        """The lowest and highest score."""
        return SURVEY_KINDS[self.kind]


@dataclass(frozen=True)
class TaskSpec:
    """A care task for an agent instead of a message."""

    kind: str = "call"
    title: Any = None
    note: Any = None
    due_in: timedelta = timedelta(hours=24)
    remind_before: timedelta | None = timedelta(hours=1)
    assign: str = "owner"
    team: str | None = None


@dataclass(frozen=True)
class CampaignSpec:
    """One ``[[campaigns]]`` table, checked."""

    key: str
    name: str
    action: str
    purpose: str
    trigger: Trigger
    audience: Mapping[str, Any] = field(default_factory=dict)
    segment: str | None = None
    enabled: bool = True
    channels: tuple[str, ...] = ()
    quiet_hours: QuietHours | None = None
    frequency_cap: FrequencyCap | None = None
    start: datetime | None = None
    end: datetime | None = None
    holdout_percent: float = 0.0
    reply_window: timedelta = timedelta(days=7)
    templates: TemplateSet = field(default_factory=TemplateSet)
    variants: tuple[Variant, ...] = ()
    survey: SurveySpec | None = None
    task: TaskSpec | None = None
    definition: Mapping[str, Any] = field(default_factory=dict)

    def active_at(self, moment: datetime) -> bool:
        """Whether ``moment`` lies within the campaign's start and end."""
        return (self.start is None or moment >= self.start) and (
            self.end is None or moment <= self.end)

    def variant(self, name: str | None) -> Variant | None:
        """A variant by name."""
        return next((v for v in self.variants if v.name == name), None)

    def template(self, variant: str | None, channel: Channel, language: str | None,
                 default_language: str) -> MessageTemplate | None:
        """The variant's template for the channel, else the campaign's."""
        chosen = self.variant(variant)
        if chosen is not None and chosen.templates:
            found = chosen.templates.pick(channel, language, default_language)
            if found is not None:
                return found
        return self.templates.pick(channel, language, default_language)


@dataclass(frozen=True)
class FeedbackSpec:
    """``[feedback]``: comment classes, opt-out words and answer windows."""

    classes: tuple[tuple[str, KeywordList], ...] = ()
    opt_out_words: frozenset[str] = frozenset()
    survey_window: timedelta = timedelta(days=3)
    comment_window: timedelta = timedelta(minutes=30)

    def classify(self, text: str | None) -> tuple[str | None, list[str]]:
        """The class of a free-text comment and the keywords that decided it."""
        for name, keywords in self.classes:
            found = keywords.find(text)
            if found:
                return name, [f"{name}:{k}" for k in found]
        return None, []

    def is_opt_out(self, text: str | None) -> bool:
        """Whether the whole message is an opt-out word (``STOP``, ``退订``, ``TD`` …)."""
        if not text:
            return False
        cleaned = normalize_text(text).strip().strip("。.!！ ")
        return cleaned in self.opt_out_words


@dataclass(frozen=True)
class Defaults:
    """``[defaults]``."""

    timezone: str = "Asia/Shanghai"
    language: str = "zh-CN"
    channels: tuple[str, ...] = ("preferred", "telegram", "webchat", "email")
    quiet_hours: QuietHours | None = None
    frequency_cap: FrequencyCap | None = None


@dataclass(frozen=True)
class CampaignConfig:
    """The loaded campaigns file."""

    source: str
    defaults: Defaults
    feedback: FeedbackSpec
    campaigns: tuple[CampaignSpec, ...]

    def get(self, key: str) -> CampaignSpec | None:
        """A campaign by key."""
        return next((c for c in self.campaigns if c.key == key), None)

    def __repr__(self) -> str:
        return f"CampaignConfig({self.source!r}, {len(self.campaigns)} campaigns)"


# --- templates ----------------------------------------------------------------------------


@cache
def template_environment() -> ImmutableSandboxedEnvironment:
    """The sandbox campaign templates run in: no markup escaping (texts, not HTML), an
    unknown variable is an error, nothing a template touches can be changed."""
    return ImmutableSandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=False,
    )


def _language_key(tag: str) -> str:
    return tag.strip().replace("_", "-").casefold()


def _pick_language(texts: Mapping[str, MessageTemplate], language: str | None,
                   default_language: str) -> MessageTemplate:
    by_key = {_language_key(k): v for k, v in texts.items()}
    wanted = [language, default_language, *FALLBACK_LANGUAGES]
    for candidate in wanted:
        if candidate and _language_key(candidate) in by_key:
            return by_key[_language_key(candidate)]
        if candidate:
            primary = _language_key(candidate).split("-")[0]
            for key, value in by_key.items():
                if key.split("-")[0] == primary:
                    return value
    return next(iter(texts.values()))


class _AnyAttributes(dict[str, Any]):
    """Sample custom attributes for checking templates: every key has a value."""

    def __missing__(self, key: str) -> str:
        return f"<{key}>"


def sample_values(*, with_ticket: bool, survey: bool) -> dict[str, Any]:
    """Values a template is rendered with at load, to find unknown variables early."""
    values: dict[str, Any] = {
        "customer": {
            "id": 1, "name": "张伟", "display_name": "张伟", "greeting": "张先生",
            "given_name": "伟", "family_name": "张", "language": "zh-CN", "tier": "vip",
            "lifecycle": "active", "birthday": date(1990, 5, 4),
            "attributes": _AnyAttributes(),
        },
        "ticket": {"id": 1, "number": "T-000001", "subject": "subject", "category": "inquiry",
                   "resolved_at": datetime(2026, 1, 1, tzinfo=UTC)} if with_ticket else None,
        "campaign": {"key": "key", "name": "name"},
        "unsubscribe_url": "https://example.invalid/unsubscribe/x",
        "opt_out_hint": "回复 TD 退订",
        "channel": "email",
        "track": lambda url: str(url),
    }
    if survey:
        values["survey_url"] = "https://example.invalid/feedback/x"
        values["survey_links"] = [(n, f"https://example.invalid/feedback/x?score={n}")
                                  for n in range(1, 6)]
        values["survey_scale"] = (1, 5)
    return values


def render(template: Any, values: Mapping[str, Any]) -> str:
    """Render a compiled campaign template (raises jinja2's errors)."""
    return str(template.render(**values)).strip()


# --- loading --------------------------------------------------------------------------------


def load_campaigns(path: Path | str, *, default_timezone: str | None = None) -> CampaignConfig:
    """Read and check a campaigns file; raise :class:`CampaignConfigError` on any mistake.

    ``default_timezone`` (the business time zone) applies when ``[defaults]`` names none.
    """
    data = read_toml(path, CampaignConfigError)
    return parse_campaigns(data, source=str(path), default_timezone=default_timezone)


def parse_campaigns(data: Mapping[str, Any], *, source: str = "<campaigns>",
                    default_timezone: str | None = None) -> CampaignConfig:
    """Build a :class:`CampaignConfig` from parsed TOML (``source`` names it in errors)."""
    return _Parser(source, default_timezone).parse(data)


@cache
def default_campaigns() -> CampaignConfig:
    """The shipped ``config/campaigns.toml`` (read once)."""
    return load_campaigns(DEFAULT_CAMPAIGNS_PATH)


class _Parser(TableChecker):
    """Turns the TOML tables into a CampaignConfig, raising with a precise location."""

    error_type = CampaignConfigError
    text_limit = 10_000
    list_item_limit = 200

    def __init__(self, source: str, default_timezone: str | None) -> None:
        super().__init__(source)
        self.default_timezone = default_timezone

    # --- generic checks ---------------------------------------------------------------

    def number(self, value: Any, where: str, *, low: float, high: float) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not (
                low <= value <= high):
            raise self.error(where, f"must be a number from {low:g} to {high:g}, "
                                    f"not {describe(value)}")
        return float(value)

    def whole(self, value: Any, where: str, *, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.error(where, f"must be a whole number from {low} to {high}, "
                                    f"not {describe(value)}")
        return value

    def choice(self, value: Any, allowed: Sequence[str], where: str) -> str:
        if not isinstance(value, str) or value.strip().lower() not in allowed:
            raise self.error(where, f"{describe(value)} is not one of {', '.join(allowed)}")
        return value.strip().lower()

    def choices(self, value: Any, allowed: Sequence[str], where: str) -> tuple[str, ...]:
        items = value if isinstance(value, list) else [value]
        return tuple(self.choice(v, allowed, f"{where}[{i}]" if isinstance(value, list)
                                 else where) for i, v in enumerate(items))

    def zone(self, value: Any, where: str) -> str:
        name = self.text(value, where, limit=64)
        if name not in known_timezones():
            raise self.error(where, f"{name!r} is not a time zone such as Asia/Shanghai")
        return name

    def clock(self, value: Any, where: str) -> time:
        match = _CLOCK.match(value) if isinstance(value, str) else None
        if match is None:
            raise self.error(where, f"must be a time like \"09:30\", not {describe(value)}")
        hour, minute = int(match.group(1)), int(match.group(2))
        if hour > 23 or minute > 59:
            raise self.error(where, f"{value!r} is not a time of day")
        return time(hour, minute)

    def moment(self, value: Any, where: str, zone: str, *, end: bool = False) -> datetime:
        """A TOML date (a whole day in ``zone``) or datetime (naive: in ``zone``)."""
        if isinstance(value, datetime):
            return (value if value.tzinfo else value.replace(tzinfo=ZoneInfo(zone))).astimezone(
                UTC)
        if isinstance(value, date):
            clock = time.max if end else time.min
            return datetime.combine(value, clock, tzinfo=ZoneInfo(zone)).astimezone(UTC)
        raise self.error(where, f"must be a date (2026-05-01) or a date and time, "
                                f"not {describe(value)}")

    def language(self, value: str, where: str) -> str:
        if not _LANGUAGE_TAG.match(value):
            raise self.error(where, f"{value!r} is not a language tag such as zh-CN or en")
        return value

    # --- sections ---------------------------------------------------------------------

    def parse(self, data: Mapping[str, Any]) -> CampaignConfig:
        self.known_keys(data, ("defaults", "feedback", "campaigns"), "")
        defaults = self.defaults(self.table(data.get("defaults", {}), "defaults"))
        feedback = self.feedback(self.table(data.get("feedback", {}), "feedback"))
        raw = data.get("campaigns", [])
        if not isinstance(raw, list):
            raise self.error("campaigns", "must be an array of tables ([[campaigns]])")
        campaigns: list[CampaignSpec] = []
        seen: set[str] = set()
        for index, item in enumerate(raw):
            where = f"campaigns[{index}]"
            table = self.table(item, where)
            key = table.get("key")
            if isinstance(key, str):
                where = f"{where} ({key})"
            spec = self.campaign(table, where, defaults)
            if spec.key in seen:
                raise self.error(f"{where}.key", f"{spec.key!r} is used by another campaign")
            seen.add(spec.key)
            campaigns.append(spec)
        return CampaignConfig(self.source, defaults, feedback, tuple(campaigns))

    def quiet_hours(self, value: Any, where: str) -> QuietHours:
        table = self.table(value, where)
        self.known_keys(table, ("start", "end"), f"{where}.")
        for key in ("start", "end"):
            if key not in table:
                raise self.error(f"{where}.{key}", "missing")
        return QuietHours(self.clock(table["start"], f"{where}.start"),
                          self.clock(table["end"], f"{where}.end"))

    def frequency_cap(self, value: Any, where: str) -> FrequencyCap:
        table = self.table(value, where)
        self.known_keys(table, ("max", "days"), f"{where}.")
        for key in ("max", "days"):
            if key not in table:
                raise self.error(f"{where}.{key}", "missing")
        return FrequencyCap(self.whole(table["max"], f"{where}.max", low=1, high=1000),
                            self.number(table["days"], f"{where}.days", low=0.01, high=3650))

    def channel_order(self, value: Any, where: str) -> tuple[str, ...]:
        words = self.strings(value, where)
        if not words:
            raise self.error(where, "name at least one channel")
        return tuple(self.choice(w, CHANNEL_WORDS, f"{where}[{i}]") for i, w in enumerate(words))

    def defaults(self, table: Mapping[str, Any]) -> Defaults:
        self.known_keys(table, ("timezone", "language", "channels", "quiet_hours",
                                "frequency_cap"), "defaults.")
        timezone = (self.zone(table["timezone"], "defaults.timezone") if "timezone" in table
                    else self.default_timezone or "Asia/Shanghai")
        language = (self.language(self.text(table["language"], "defaults.language", limit=20),
                                  "defaults.language") if "language" in table else "zh-CN")
        return Defaults(
            timezone=timezone,
            language=language,
            channels=(self.channel_order(table["channels"], "defaults.channels")
                      if "channels" in table else Defaults.channels),
            quiet_hours=(self.quiet_hours(table["quiet_hours"], "defaults.quiet_hours")
                         if "quiet_hours" in table else None),
            frequency_cap=(self.frequency_cap(table["frequency_cap"], "defaults.frequency_cap")
                           if "frequency_cap" in table else None),
        )

    def feedback(self, table: Mapping[str, Any]) -> FeedbackSpec:
        self.known_keys(table, ("classes", "opt_out_words", "survey_window_days",
                                "comment_window_minutes"), "feedback.")
        classes: list[tuple[str, KeywordList]] = []
        raw_classes = self.table(table.get("classes", {}), "feedback.classes")
        for name, words in raw_classes.items():
            where = f"feedback.classes.{name}"
            if name not in FEEDBACK_CLASSES:
                raise self.error(where, f"unknown class {name!r}; known: "
                                        f"{', '.join(FEEDBACK_CLASSES)}")
            classes.append((name, KeywordList(self.strings(words, where))))
        words = self.strings(table.get("opt_out_words", ["STOP", "退订", "TD"]),
                             "feedback.opt_out_words")
        return FeedbackSpec(
            classes=tuple(classes),
            opt_out_words=frozenset(normalize_text(w).strip() for w in words),
            survey_window=timedelta(days=self.number(
                table.get("survey_window_days", 3), "feedback.survey_window_days",
                low=0.01, high=365)),
            comment_window=timedelta(minutes=self.number(
                table.get("comment_window_minutes", 30), "feedback.comment_window_minutes",
                low=0, high=10_080)),
        )

    def campaign(self, table: Mapping[str, Any], where: str, defaults: Defaults,
                 ) -> CampaignSpec:
        self.known_keys(table, _CAMPAIGN_KEYS, f"{where}.")
        for required in ("key", "name", "trigger"):
            if required not in table:
                raise self.error(f"{where}.{required}", "missing")
        key = self.text(table["key"], f"{where}.key", limit=100)
        if not _KEY.match(key):
            raise self.error(f"{where}.key", f"{key!r}: use lower-case letters, digits, - and _")
        action = self.choice(table.get("action", "message"), ACTIONS, f"{where}.action")
        purpose = self.choice(table.get("purpose", "service"), PURPOSES, f"{where}.purpose")
        trigger = self.trigger(table["trigger"], f"{where}.trigger", defaults)
        audience = self.audience(table.get("audience", {}), f"{where}.audience")
        segment = (self.text(table["segment"], f"{where}.segment", limit=200)
                   if "segment" in table else None)
        if segment and audience:
            raise self.error(f"{where}.segment", "give audience or segment, not both")
        survey = None
        if action == "survey":
            survey = self.survey(table.get("survey", {}), f"{where}.survey")
        elif "survey" in table:
            raise self.error(f"{where}.survey", "only for action = \"survey\"")
        task = None
        if action == "task":
            task = self.task(table.get("task", {}), f"{where}.task")
        elif "task" in table:
            raise self.error(f"{where}.task", "only for action = \"task\"")
        zone = defaults.timezone
        start = (self.moment(table["start"], f"{where}.start", zone)
                 if "start" in table else None)
        end = self.moment(table["end"], f"{where}.end", zone, end=True) if "end" in table else None
        if start and end and end < start:
            raise self.error(f"{where}.end", "is before start")
        with_ticket = trigger.kind == "ticket_resolved"
        templates = self.templates(table.get("templates", {}), f"{where}.templates",
                                   with_ticket=with_ticket, survey=action == "survey")
        variants = self.variants(table.get("variants", []), f"{where}.variants",
                                 with_ticket=with_ticket, survey=action == "survey")
        if action != "task" and not templates and not all(v.templates for v in variants):
            raise self.error(f"{where}.templates", "a message campaign needs templates")
        if action != "task":
            self.check_channels_have_templates(table, where, templates, variants, defaults)
        if task is not None:
            task = self.compile_task(task, table.get("task", {}), f"{where}.task",
                                     with_ticket=with_ticket)
        definition = {k: v for k, v in table.items() if k not in ("templates", "variants")}
        return CampaignSpec(
            key=key,
            name=self.text(table["name"], f"{where}.name", limit=200),
            action=action,
            purpose=purpose,
            trigger=trigger,
            audience=audience,
            segment=segment,
            enabled=self.boolean(table.get("enabled", True), f"{where}.enabled"),
            channels=(self.channel_order(table["channels"], f"{where}.channels")
                      if "channels" in table else defaults.channels),
            quiet_hours=(self.quiet_hours(table["quiet_hours"], f"{where}.quiet_hours")
                         if "quiet_hours" in table else defaults.quiet_hours),
            frequency_cap=(self.frequency_cap(table["frequency_cap"], f"{where}.frequency_cap")
                           if "frequency_cap" in table else None),
            start=start,
            end=end,
            holdout_percent=self.number(table.get("holdout_percent", 0),
                                        f"{where}.holdout_percent", low=0, high=90),
            reply_window=timedelta(days=self.number(table.get("reply_window_days", 7),
                                                    f"{where}.reply_window_days",
                                                    low=0.01, high=365)),
            templates=templates,
            variants=variants,
            survey=survey,
            task=task,
            definition=_jsonable(definition),
        )

    def audience(self, value: Any, where: str) -> dict[str, Any]:
        """A customer search filter (the terms of a segment), kept as JSON."""
        from crm_core.services.customer_query import CustomerQuery

        table = self.table(value, where)
        for key in ("page", "page_size", "sort"):
            if key in table:
                raise self.error(f"{where}.{key}", "paging and sorting have no meaning here")
        try:
            query = CustomerQuery.model_validate(dict(table))
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            name = ".".join(str(p) for p in first["loc"])
            raise self.error(f"{where}.{name}" if name else where, first["msg"]) from None
        return query.model_dump(mode="json", exclude_defaults=True, exclude_none=True,
                                exclude={"page", "page_size"})

    def trigger(self, value: Any, where: str, defaults: Defaults) -> Trigger:
        table = self.table(value, where)
        if "kind" not in table:
            raise self.error(f"{where}.kind", f"missing: one of {', '.join(TRIGGERS)}")
        kind = self.choice(table["kind"], TRIGGERS, f"{where}.kind")
        self.known_keys(table, ("kind", "grace_hours", *_TRIGGER_KEYS[kind]), f"{where}.")
        grace = timedelta(hours=self.number(
            table.get("grace_hours", _DEFAULT_GRACE_HOURS[kind]), f"{where}.grace_hours",
            low=0.01, high=24 * 365))
        values: dict[str, Any] = {"kind": kind, "grace": grace, "timezone": defaults.timezone}
        if kind == "once":
            if "at" not in table:
                raise self.error(f"{where}.at", "missing: when to send (2026-05-01T10:00:00)")
            values["at"] = self.moment(table["at"], f"{where}.at", defaults.timezone)
        elif kind == "cron":
            if "cron" not in table:
                raise self.error(f"{where}.cron", "missing: a cron expression (\"0 10 * * mon\")")
            expression = self.text(table["cron"], f"{where}.cron", limit=200)
            if not croniter.is_valid(expression):
                raise self.error(f"{where}.cron", f"{expression!r} is not a cron expression")
            values["cron"] = expression
            if "timezone" in table:
                values["timezone"] = self.zone(table["timezone"], f"{where}.timezone")
        if kind in DAY_TRIGGERS and "at" in table:
            values["send_time"] = self.clock(table["at"], f"{where}.at")
        if "delay_minutes" in table:
            values["delay"] = timedelta(minutes=self.number(
                table["delay_minutes"], f"{where}.delay_minutes", low=0, high=525_600))
        if kind == "contract_end":
            values["days"] = self.whole(table.get("days_before", 30), f"{where}.days_before",
                                        low=0, high=3650)
            attribute = self.text(table.get("attribute", "contract_end"), f"{where}.attribute",
                                  limit=100)
            if not re.match(r"^[A-Za-z0-9_]{1,100}$", attribute):
                raise self.error(f"{where}.attribute", f"{attribute!r}: letters, digits and _")
            values["attribute"] = attribute
        if kind == "no_interaction":
            if "days" not in table:
                raise self.error(f"{where}.days", "missing: days without an interaction")
            values["days"] = self.whole(table["days"], f"{where}.days", low=1, high=3650)
        if kind == "ticket_resolved" and "category" in table:
            values["categories"] = self.choices(table["category"],
                                                tuple(c.value for c in TicketCategory),
                                                f"{where}.category")
        if kind == "lifecycle_change":
            stages = tuple(s.value for s in LifecycleStage)
            for key, target in (("from", "from_values"), ("to", "to_values")):
                if key in table:
                    values[target] = self.choices(table[key], stages, f"{where}.{key}")
        if kind == "tier_change":
            for key, target in (("from", "from_values"), ("to", "to_values")):
                if key in table:
                    raw = table[key] if isinstance(table[key], list) else [table[key]]
                    values[target] = tuple(self.text(v, f"{where}.{key}", limit=50).lower()
                                           for v in raw)
        return Trigger(**values)

    def survey(self, value: Any, where: str) -> SurveySpec:
        table = self.table(value, where)
        self.known_keys(table, ("kind", "window_days"), f"{where}.")
        return SurveySpec(
            kind=self.choice(table.get("kind", "csat"), tuple(SURVEY_KINDS), f"{where}.kind"),
            window=timedelta(days=self.number(table.get("window_days", 3),
                                              f"{where}.window_days", low=0.01, high=365)),
        )

    def task(self, value: Any, where: str) -> TaskSpec:
        table = self.table(value, where)
        self.known_keys(table, ("kind", "title", "note", "due_in_hours",
                                "remind_before_minutes", "assign", "team"), f"{where}.")
        remind = table.get("remind_before_minutes", 60)
        return TaskSpec(
            kind=self.text(table.get("kind", "call"), f"{where}.kind", limit=50),
            due_in=timedelta(hours=self.number(table.get("due_in_hours", 24),
                                               f"{where}.due_in_hours", low=0, high=24 * 365)),
            remind_before=(None if remind is False else timedelta(minutes=self.number(
                remind, f"{where}.remind_before_minutes", low=0, high=525_600))),
            assign=self.choice(table.get("assign", "owner"), ASSIGN_MODES, f"{where}.assign"),
            team=self.text(table["team"], f"{where}.team", limit=100) if "team" in table
            else None,
        )

    def compile_task(self, task: TaskSpec, raw: Mapping[str, Any], where: str, *,
                     with_ticket: bool) -> TaskSpec:
        title_source = raw.get("title", "{{ campaign.name }}: {{ customer.name }}")
        title = self.compile(self.text(title_source, f"{where}.title", limit=300),
                             f"{where}.title", with_ticket=with_ticket, survey=False)
        note = (self.compile(self.text(raw["note"], f"{where}.note"), f"{where}.note",
                             with_ticket=with_ticket, survey=False) if "note" in raw else None)
        return TaskSpec(kind=task.kind, title=title, note=note, due_in=task.due_in,
                        remind_before=task.remind_before, assign=task.assign, team=task.team)

    def compile(self, source: str, where: str, *, with_ticket: bool, survey: bool) -> Any:
        environment = template_environment()
        try:
            template = environment.from_string(source)
            render(template, sample_values(with_ticket=with_ticket, survey=survey))
        except TemplateError as exc:
            raise self.error(where, f"template error: {exc}") from None
        return template

    def templates(self, value: Any, where: str, *, with_ticket: bool, survey: bool,
                  ) -> TemplateSet:
        table = self.table(value, where)
        by_channel: dict[str, dict[str, MessageTemplate]] = {}
        for channel, languages in table.items():
            channel_where = f"{where}.{channel}"
            if channel not in TEMPLATE_CHANNELS:
                raise self.error(channel_where, f"unknown channel {channel!r}; known: "
                                                f"{', '.join(TEMPLATE_CHANNELS)}")
            texts: dict[str, MessageTemplate] = {}
            for language, body in self.table(languages, channel_where).items():
                lang_where = f"{channel_where}.{language}"
                self.language(language, lang_where)
                body_table = self.table(body, lang_where)
                self.known_keys(body_table, ("subject", "text"), f"{lang_where}.")
                if "text" not in body_table:
                    raise self.error(f"{lang_where}.text", "missing")
                text = self.compile(self.text(body_table["text"], f"{lang_where}.text"),
                                    f"{lang_where}.text", with_ticket=with_ticket, survey=survey)
                subject = None
                if "subject" in body_table:
                    subject = self.compile(
                        self.text(body_table["subject"], f"{lang_where}.subject", limit=500),
                        f"{lang_where}.subject", with_ticket=with_ticket, survey=survey)
                texts[language] = MessageTemplate(language, text, subject)
            if texts:
                by_channel[channel] = texts
        return TemplateSet(by_channel)

    def variants(self, value: Any, where: str, *, with_ticket: bool, survey: bool,
                 ) -> tuple[Variant, ...]:
        if not isinstance(value, list):
            raise self.error(where, "must be an array of tables ([[campaigns.variants]])")
        variants: list[Variant] = []
        names: set[str] = set()
        for index, item in enumerate(value):
            item_where = f"{where}[{index}]"
            table = self.table(item, item_where)
            self.known_keys(table, ("name", "weight", "templates"), f"{item_where}.")
            if "name" not in table:
                raise self.error(f"{item_where}.name", "missing")
            name = self.text(table["name"], f"{item_where}.name", limit=50)
            if name in names:
                raise self.error(f"{item_where}.name", f"{name!r} is used twice")
            names.add(name)
            variants.append(Variant(
                name=name,
                weight=self.number(table.get("weight", 1), f"{item_where}.weight",
                                   low=0.001, high=1_000_000),
                templates=self.templates(table.get("templates", {}), f"{item_where}.templates",
                                         with_ticket=with_ticket, survey=survey),
            ))
        if len(variants) == 1:
            raise self.error(where, "an A/B test needs at least two variants")
        return tuple(variants)

    def check_channels_have_templates(self, table: Mapping[str, Any], where: str,
                                      templates: TemplateSet, variants: tuple[Variant, ...],
                                      defaults: Defaults) -> None:
        channels = (self.channel_order(table["channels"], f"{where}.channels")
                    if "channels" in table else defaults.channels)
        named = [Channel(c) for c in channels if c != "preferred"]
        if "preferred" in channels:
            named = list(SENDABLE_CHANNELS)
        sets = [templates, *(v.templates for v in variants)]
        for channel in named:
            if not any(s and s.pick(channel, None, defaults.language) for s in sets):
                raise self.error(f"{where}.templates",
                                 f"no template for channel {channel.value} (add "
                                 f"templates.{channel.value} or templates.default)")


@cache
def known_timezones() -> frozenset[str]:
    """Every IANA time zone name this system knows."""
    return frozenset(available_timezones())


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
