"""Routing rules: loading and validation, categories, priority, teams, automation, templates."""

from __future__ import annotations

import textwrap
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from crm_core.models import TicketCategory, TicketPriority
from routing.rules import (
    DEFAULT_RULES_PATH,
    Action,
    RulesError,
    RuleSet,
    escalate,
    language_matches,
    load_rules,
)

VALID = """
[categories]
complaint = ["投诉", "complaint"]
fault = ["坏了", "broken"]

[assignment]
strategy = "least_loaded"

[templates.hello]
zh-CN = "{customer_name}您好"
en = "Hello {customer_name}"

[[automation]]
name = "greet"
when = { ticket_is_new = true }
actions = [{ auto_reply = "hello" }]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(RulesError) as info:
        load_rules(path)
    message = str(info.value)
    assert message.startswith(str(path) + ": "), message
    return message


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return RuleSet.default()


def facts(**values: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "channel": "email",
        "text": "",
        "subject": "",
        "category": "inquiry",
        "priority": "normal",
        "tier": None,
        "customer_language": "zh-CN",
        "customer_tags": [],
        "is_new_customer": False,
        "hour": 10,
        "weekday": 1,
        "in_business_hours": True,
        "ticket_status": "new",
        "ticket_is_new": True,
    }
    return {**base, **values}


# --- the shipped file ---------------------------------------------------------------------


def test_shipped_rules_load(rules: RuleSet) -> None:
    assert rules.source == str(DEFAULT_RULES_PATH)
    assert RuleSet.default() is rules  # cached
    assert rules.strategy == "round_robin"
    assert rules.sticky_owner is True
    assert rules.reopen_within == timedelta(days=7)
    assert rules.calendar.timezone == "Asia/Shanghai"
    assert date(2026, 2, 17) in rules.calendar.holidays
    assert date(2026, 2, 14) in rules.calendar.workdays
    assert rules.sla.counts_business_hours(TicketPriority.NORMAL)
    assert not rules.sla.counts_business_hours(TicketPriority.URGENT)


def test_shipped_calendar_and_sla(rules: RuleSet) -> None:
    # Friday 2026-12-04 17:30 in Shanghai: 30 min Friday, 3h30 Monday (lunch skipped)
    opened = datetime(2026, 12, 4, 9, 30, tzinfo=UTC)
    first, _ = rules.sla.due_times(TicketPriority.NORMAL, opened, rules.calendar)
    assert first == datetime(2026, 12, 7, 5, 30, tzinfo=UTC)  # Monday 13:30 local
    # Saturday 2026-02-14 is a make-up workday (春节调休)
    assert rules.calendar.is_open(datetime(2026, 2, 14, 2, 0, tzinfo=UTC))
    assert not rules.calendar.is_open(datetime(2026, 2, 17, 2, 0, tzinfo=UTC))


# --- categories ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "category", "hit"),
    [
        ("我要投诉你们的快递员", TicketCategory.COMPLAINT, "category:complaint:投诉"),
        ("对服务很不满意", TicketCategory.COMPLAINT, "category:complaint:不满意"),
        ("This is UNACCEPTABLE, I want a refund", TicketCategory.COMPLAINT,
         "category:complaint:unacceptable"),
        ("手机坏了，开不了机", TicketCategory.FAULT, "category:fault:坏了"),
        ("App 打不开", TicketCategory.FAULT, "category:fault:打不开"),
        ("The app is not working since yesterday", TicketCategory.FAULT,
         "category:fault:not working"),
        ("Crash on start", TicketCategory.FAULT, "category:fault:crash"),
        ("建议增加夜间模式", TicketCategory.SUGGESTION, "category:suggestion:建议"),
        ("Feature request: dark mode", TicketCategory.SUGGESTION,
         "category:suggestion:feature request"),
        ("请问这个多少钱", TicketCategory.INQUIRY, "category:inquiry:请问"),
        ("What is the price?", TicketCategory.INQUIRY, "category:inquiry:what"),
        ("ＣＲＡＳＨ again", TicketCategory.FAULT, "category:fault:crash"),  # full-width
    ],
)
def test_categorize(rules: RuleSet, text: str, category: TicketCategory, hit: str) -> None:
    found, hits = rules.categorize(text)
    assert found == category
    assert hit in hits


def test_categorize_first_category_in_configured_order(rules: RuleSet) -> None:
    # a fault word and a complaint word: complaint comes first in the file
    category, hits = rules.categorize("东西坏了，我要投诉")
    assert category == TicketCategory.COMPLAINT
    assert hits == ["category:complaint:投诉"]


def test_categorize_default_and_word_start(rules: RuleSet) -> None:
    assert rules.categorize("谢谢") == (TicketCategory.INQUIRY, ["category:inquiry:default"])
    # "how" must start a word: "show" is no question
    assert rules.categorize("please show me") == (
        TicketCategory.INQUIRY, ["category:inquiry:default"]
    )
    # "error" inside "terror" is no fault, "errors" is
    assert rules.categorize("terror")[0] == TicketCategory.INQUIRY
    assert rules.categorize("I get errors")[0] == TicketCategory.FAULT


def test_configured_default_category(tmp_path: Path) -> None:
    rules = load_rules(write(tmp_path, '[categories]\ndefault = "other"\nfault = ["x1"]\n'))
    assert rules.categorize("hello") == (TicketCategory.OTHER, ["category:other:default"])


# --- priority -----------------------------------------------------------------------------


def test_priority_by_tier(rules: RuleSet) -> None:
    assert rules.priority("vip", "hello") == (TicketPriority.HIGH, ["priority:tier:vip:high"])
    assert rules.priority("VIP", "hello")[0] == TicketPriority.HIGH
    assert rules.priority("gold", "hello")[0] == TicketPriority.NORMAL
    assert rules.priority(None, "hello") == (
        TicketPriority.NORMAL, ["priority:default:normal"]
    )
    assert rules.priority("unknown-tier", "hello")[0] == TicketPriority.NORMAL


def test_priority_by_keywords(rules: RuleSet) -> None:
    priority, hits = rules.priority(None, "紧急！系统宕机")
    assert priority == TicketPriority.URGENT
    assert "priority:urgent:紧急" in hits
    assert rules.priority(None, "Please reply ASAP")[0] == TicketPriority.URGENT
    assert rules.priority("vip", "马上处理")[0] == TicketPriority.URGENT
    priority, hits = rules.priority(None, "请尽快处理")
    assert (priority, hits[-1]) == (TicketPriority.HIGH, "priority:high:尽快")
    # keywords only raise: a VIP with a "high" word stays high
    assert rules.priority("vip", "请尽快")[0] == TicketPriority.HIGH


def test_escalate() -> None:
    assert escalate(TicketPriority.LOW) == TicketPriority.NORMAL
    assert escalate(TicketPriority.HIGH) == TicketPriority.URGENT
    assert escalate(TicketPriority.URGENT) == TicketPriority.URGENT


# --- teams --------------------------------------------------------------------------------


def test_team_rules_first_match_wins(rules: RuleSet) -> None:
    vip_complaint = facts(tier="vip", category="complaint")
    assert rules.team_for(vip_complaint) == (
        "VIP 专席 VIP desk", ["team:VIP 专席 VIP desk:teams#1"]
    )
    english = facts(channel="telegram", customer_language="en-GB", category="complaint")
    assert rules.team_for(english)[0] == "国际客服 International desk"
    assert rules.team_for(facts(category="complaint"))[0] == "投诉处理 Complaints"
    assert rules.team_for(facts(channel="telegram", customer_language="zh-CN")) == (None, [])


def test_default_team(tmp_path: Path) -> None:
    rules = load_rules(write(tmp_path, """
        [assignment]
        default_team = "Front line"

        [[teams]]
        team = "Billing"
        when = { keywords = ["发票", "invoice"] }
    """))
    assert rules.team_for(facts(text="我要开发票")) == ("Billing", ["team:Billing:teams#1"])
    assert rules.team_for(facts(text="hello")) == ("Front line", ["team:Front line:default"])


# --- automation ---------------------------------------------------------------------------

CONDITIONS = """
[templates.night]
en = "Good night"

[[automation]]
name = "night"
when = { hour_between = [18, 9] }
actions = [{ add_tag = "night" }]

[[automation]]
name = "day"
when = { hour_between = [9, 18] }
actions = [{ add_tag = "day" }]

[[automation]]
name = "refund words"
when = { keywords = ["退款", "Refund"] }
actions = [{ add_tag = "refund" }]

[[automation]]
name = "not email"
when = { not = { channel = "email" } }
actions = [{ add_tag = "not-email" }]

[[automation]]
name = "chat channels"
when = { channel = ["telegram", "webchat"], ticket_is_new = true }
actions = [{ set_priority = "high" }, "escalate"]

[[automation]]
name = "tagged or weekend"
when = { any = [{ customer_tags = ["大客户", "key-account"] }, { weekday = ["sat", 7] }] }
actions = [{ notify = "supervisors" }]

[[automation]]
name = "english"
when = { language = "en" }
actions = [{ auto_reply = "night" }]

[[automation]]
name = "switched off"
enabled = false
actions = [{ add_tag = "never" }]
"""


def tags(actions: list[Action]) -> list[str]:
    return [a.value for a in actions if a.kind == "add_tag"]


def test_hour_between_wraps_midnight(tmp_path: Path) -> None:
    rules = load_rules(write(tmp_path, CONDITIONS))
    assert "night" in tags(rules.automation(facts(hour=23)))
    assert "night" in tags(rules.automation(facts(hour=0)))
    assert "night" in tags(rules.automation(facts(hour=18)))
    assert "night" not in tags(rules.automation(facts(hour=9)))
    assert "day" in tags(rules.automation(facts(hour=9)))
    assert "day" not in tags(rules.automation(facts(hour=18)))
    assert tags(rules.automation(facts(hour=None))) == []


def test_keywords_not_and_lists(tmp_path: Path) -> None:
    rules = load_rules(write(tmp_path, CONDITIONS))
    assert "refund" in tags(rules.automation(facts(text="我要退款")))
    assert "refund" in tags(rules.automation(facts(text="REFUND please")))
    assert "refund" not in tags(rules.automation(facts(text="thanks")))
    assert "not-email" not in tags(rules.automation(facts(channel="email")))
    assert "not-email" in tags(rules.automation(facts(channel="phone")))
    chat = rules.automation(facts(channel="webchat", hour=10))
    assert [(a.kind, a.value, a.rule) for a in chat if a.rule == "chat channels"] == [
        ("set_priority", "high", "chat channels"),
        ("escalate", "", "chat channels"),
    ]
    assert not [a for a in rules.automation(facts(channel="webchat", ticket_is_new=False))
                if a.rule == "chat channels"]
    assert "never" not in tags(rules.automation(facts()))


def test_any_tags_weekday_and_language(tmp_path: Path) -> None:
    rules = load_rules(write(tmp_path, CONDITIONS))

    def notified(**values: Any) -> bool:
        return any(a.kind == "notify" for a in rules.automation(facts(**values)))

    assert notified(customer_tags=["Key-Account"])
    assert notified(customer_tags=[], weekday=6)  # ISO Saturday
    assert notified(weekday=7)
    assert not notified(weekday=5, customer_tags=["other"])
    replies = [a for a in rules.automation(facts(customer_language="en-US"))
               if a.kind == "auto_reply"]
    assert replies == [Action("auto_reply", "night", "english")]
    assert not [a for a in rules.automation(facts(customer_language="zh-CN"))
                if a.kind == "auto_reply"]


def test_stop_ends_the_list(tmp_path: Path) -> None:
    rules = load_rules(write(tmp_path, """
        [[automation]]
        name = "first"
        when = { channel = "email" }
        actions = [{ add_tag = "a" }]
        stop = true

        [[automation]]
        name = "second"
        actions = [{ add_tag = "b" }]
    """))
    assert tags(rules.automation(facts(channel="email"))) == ["a"]
    assert tags(rules.automation(facts(channel="phone"))) == ["b"]


def test_shipped_automation(rules: RuleSet) -> None:
    after_hours = rules.automation(facts(in_business_hours=False, channel="telegram"))
    assert Action("auto_reply", "after_hours", "after hours: auto-reply") in after_hours
    vip = rules.automation(facts(tier="vip", category="complaint", text="我要退款"))
    kinds = [(a.kind, a.value) for a in vip]
    assert ("escalate", "") in kinds
    assert ("add_tag", "refund") in kinds
    assert ("notify", "supervisors") in kinds


# --- templates ----------------------------------------------------------------------------


def test_render_template_in_both_languages(rules: RuleSet) -> None:
    values = {"customer_name": "王先生", "ticket_number": "T-000042"}
    zh = rules.render_template("received", "zh-CN", **values)
    assert zh.startswith("王先生，您好") and "T-000042" in zh
    en = rules.render_template("received", "en", **values)
    assert en.startswith("Hello 王先生") and "T-000042" in en
    assert rules.render_template("received", "en-GB", **values) == en
    assert rules.render_template("received", "zh", **values) == zh
    assert rules.render_template("received", "fr", **values) == zh  # falls back to zh-CN
    assert rules.render_template("received", None, **values) == zh


def test_render_template_fallback_to_english_and_missing_values(tmp_path: Path) -> None:
    rules = load_rules(write(tmp_path, """
        [templates.only_en]
        en = "Hi {customer_name}, ticket {ticket_number} {{ok}}"
    """))
    assert rules.render_template("only_en", "zh-CN", customer_name="Li") == "Hi Li, ticket  {ok}"
    with pytest.raises(KeyError, match="nope"):
        rules.render_template("nope", "en")


def test_language_matches() -> None:
    assert language_matches("zh", "zh-CN")
    assert language_matches("zh-CN", "zh_cn")
    assert not language_matches("zh-CN", "zh-TW")
    assert not language_matches("en", None)


# --- validation ---------------------------------------------------------------------------


def test_valid_minimal_file(tmp_path: Path) -> None:
    rules = load_rules(write(tmp_path, VALID))
    assert rules.strategy == "least_loaded"
    assert rules.calendar.is_open(datetime(2026, 1, 1, 3, tzinfo=UTC))  # no hours: 24x7
    assert rules.sla.first_response[TicketPriority.URGENT] == timedelta(minutes=15)


def test_unknown_action(tmp_path: Path) -> None:
    message = load_error(tmp_path, """
        [[automation]]
        name = "ok"
        actions = [{ add_tag = "a" }]

        [[automation]]
        name = "after hours"
        actions = [{ add_tag = "x" }, { assign_agent = "li.na" }]
    """)
    assert "automation #2 'after hours'" in message
    assert "actions[1].assign_agent" in message
    assert "unknown action 'assign_agent'" in message
    assert "set_priority" in message  # lists the known ones


def test_unknown_condition_field(tmp_path: Path) -> None:
    message = load_error(tmp_path, """
        [[automation]]
        name = "vip"
        when = { tier = "vip", customer_level = 3 }
        actions = ["escalate"]
    """)
    assert "automation #1 'vip': when.customer_level" in message
    assert "unknown field 'customer_level'" in message


def test_unknown_field_in_team_rule(tmp_path: Path) -> None:
    message = load_error(tmp_path, """
        [[teams]]
        team = "VIP desk"
        when = { not = { vip = true } }
    """)
    assert "teams #1 'VIP desk': when.not.vip" in message


def test_bad_template_placeholder(tmp_path: Path) -> None:
    message = load_error(tmp_path, """
        [templates.after_hours]
        zh-CN = "{customer_name}您好"
        en = "Dear {customer}, ticket {ticket_number}"
    """)
    assert "templates.after_hours.en" in message
    assert "unknown placeholder {customer}" in message
    assert "{customer_name}" in message


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ('"{customer_name.__class__}"', "unknown placeholder"),
        ('"{0}"', "unknown placeholder {0}"),
        ('"{customer_name!r}"', "takes no format"),
        ('"unclosed {customer_name"', "literal braces"),
    ],
)
def test_unsafe_template_placeholders(tmp_path: Path, template: str, expected: str) -> None:
    message = load_error(tmp_path, f"[templates.t]\nen = {template}\n")
    assert "templates.t.en" in message and expected in message


def test_auto_reply_needs_a_known_template(tmp_path: Path) -> None:
    message = load_error(tmp_path, """
        [[automation]]
        name = "reply"
        actions = [{ auto_reply = "missing" }]
    """)
    assert "automation #1 'reply': actions[0].auto_reply" in message
    assert "no template 'missing'" in message


@pytest.mark.parametrize(
    ("hours", "expected"),
    [
        ('["18:00-09:00"]', "ends before it starts"),
        ('["9-18"]', "is not a range"),
        ('["09:00-25:00"]', "not a valid time range"),
        ('["09:00-13:00", "12:00-18:00"]', "overlap"),
    ],
)
def test_bad_time_range(tmp_path: Path, hours: str, expected: str) -> None:
    message = load_error(tmp_path, f"""
        [business_hours]
        timezone = "Asia/Shanghai"
        mon = {hours}
    """)
    assert "business_hours" in message and expected in message


def test_bad_time_range_names_the_day_and_item(tmp_path: Path) -> None:
    message = load_error(tmp_path, """
        [business_hours]
        timezone = "Asia/Shanghai"
        tue = ["09:00-12:00", "18:00-13:00"]
    """)
    assert "business_hours.tue[1]" in message and "'18:00-13:00'" in message


def test_unknown_strategy(tmp_path: Path) -> None:
    message = load_error(tmp_path, '[assignment]\nstrategy = "random"\n')
    assert "assignment.strategy" in message
    assert "'random' is not one of round_robin, least_loaded" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[colours]\nred = 1\n", "colours: unknown key 'colours'"),
        ("[categories]\nspam = ['x']\n", "categories.spam: unknown category 'spam'"),
        ("[priority]\nby_tier = { vip = 'top' }\n", "priority.by_tier.vip: 'top' is not one"),
        (
            "[sla.first_response]\nlow = 1\nnormal = 1\nhigh = 1\nurgent = 1\n",
            "sla.resolution: missing",
        ),
        (
            "[sla]\nfirst_response = { low = 1, normal = 1, high = 1 }\n"
            "resolution = { low = 1, normal = 1, high = 1, urgent = 1 }\n",
            "sla.first_response.urgent: missing",
        ),
        ("[business_hours]\nmon = ['09:00-18:00']\n", "business_hours.timezone: missing"),
        ("[business_hours]\ntimezone = 'Mars/Base'\nmon = []\n", "IANA"),
        (
            "[business_hours]\ntimezone = 'UTC'\nmon = ['09:00-18:00']\n"
            "holidays = ['2027-02-30']\n",
            "business_hours.holidays[0]: '2027-02-30' is not a date",
        ),
        ("[business_hours]\ntimezone = 'UTC'\nmonday = []\n", "business_hours.monday"),
        ("[reopen]\nwithin_days = -1\n", "reopen.within_days"),
        ("[assignment]\nsticky_owner = 'yes'\n", "assignment.sticky_owner: must be true"),
        ("[[teams]]\nwhen = { tier = 'vip' }\n", "teams #1: team: missing"),
        ("[[automation]]\nactions = ['escalate']\n", "automation #1: name: missing"),
        ("[[automation]]\nname = 'a'\n", "automation #1 'a': actions: missing"),
        (
            "[[automation]]\nname = 'a'\nwhen = { hour_between = [9, 9] }\n"
            "actions = ['escalate']\n",
            "when.hour_between",
        ),
        (
            "[[automation]]\nname = 'a'\nwhen = { category = 'spam' }\n"
            "actions = ['escalate']\n",
            "when.category: 'spam' is not one of inquiry",
        ),
        (
            "[[automation]]\nname = 'a'\nwhen = { text = 'x' }\nactions = ['escalate']\n",
            "match text with keywords",
        ),
        (
            "[[automation]]\nname = 'a'\nactions = [{ set_priority = 'asap' }]\n",
            "actions[0].set_priority: 'asap' is not one of",
        ),
        (
            "[[automation]]\nname = 'a'\nactions = ['add_tag']\n",
            "actions[0].add_tag: needs a value",
        ),
        (
            "[[automation]]\nname = 'a'\nactions = [{ add_tag = 'x' }]\n"
            "[[automation]]\nname = 'a'\nactions = [{ add_tag = 'y' }]\n",
            "automation #2 'a': name: 'a' is used by an earlier rule",
        ),
        ("[[automation]\nname = 1\n", "not valid TOML"),
    ],
)
def test_validation_messages(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in load_error(tmp_path, text)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="no such file"):
        load_rules(tmp_path / "nope.toml")


def test_rules_error_is_a_value_error() -> None:
    error = RulesError("rules.toml", "automation #1 'x': actions", "bad")
    assert isinstance(error, ValueError)
    assert str(error) == "rules.toml: automation #1 'x': actions: bad"
