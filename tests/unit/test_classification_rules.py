"""Classification rules without a database: condition syntax, validation, evaluation."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from crm_core.errors import ValidationError
from crm_core.models import Customer, CustomerTag, LifecycleStage, Organization
from crm_core.services.classification import (
    check_code,
    check_condition,
    check_conditions,
    compile_rules,
    customer_facts,
    evaluate,
    format_condition,
    make_facts,
    match,
    parse_condition,
    read_classification_file,
)


def rule(
    target: str, value: str, *conditions: str, position: int = 100, rule_id: int | None = None,
    enabled: bool = True,
) -> dict[str, Any]:
    """A rule as a plain dict, conditions in the CLI syntax."""
    return {
        "id": rule_id,
        "name": f"{target}={value}",
        "target": target,
        "value_code": value,
        "position": position,
        "enabled": enabled,
        "conditions": [parse_condition(c) for c in conditions],
    }


def facts(**columns: Any) -> dict[str, Any]:
    tags = columns.pop("tags", ())
    org = columns.pop("organization", None)
    org_industry = columns.pop("organization_industry", None)
    columns.setdefault("lifetime_value", Decimal("0"))
    return make_facts(columns, tags=tags, organization_name=org,
                      organization_industry=org_industry)


# ----------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("lifetime_value>=100000", {"field": "lifetime_value", "op": "gte", "value": "100000"}),
        ("lifetime_value >= 100000", {"field": "lifetime_value", "op": "gte", "value": "100000"}),
        ("lifetime_value<=5", {"field": "lifetime_value", "op": "lte", "value": "5"}),
        ("lifetime_value>5", {"field": "lifetime_value", "op": "gt", "value": "5"}),
        ("lifetime_value<5", {"field": "lifetime_value", "op": "lt", "value": "5"}),
        ("city=上海", {"field": "city", "op": "eq", "value": "上海"}),
        ("city == 上海", {"field": "city", "op": "eq", "value": "上海"}),
        ("city != '北京'", {"field": "city", "op": "ne", "value": "北京"}),
        ("organization ~ bank", {"field": "organization", "op": "contains", "value": "bank"}),
        ("attr.note = a=b", {"field": "attr.note", "op": "eq", "value": "a=b"}),
        (
            "industry in 制造业, manufacturing",
            {"field": "industry", "op": "in", "value": ["制造业", "manufacturing"]},
        ),
        (
            "industry in 制造业，工业",
            {"field": "industry", "op": "in", "value": ["制造业", "工业"]},
        ),
        ("tag not in a,b", {"field": "tag", "op": "not_in", "value": ["a", "b"]}),
        ("birthday exists", {"field": "birthday", "op": "exists", "value": True}),
        ("birthday not exists", {"field": "birthday", "op": "exists", "value": False}),
    ],
)
def test_parse_condition(text: str, expected: dict[str, Any]) -> None:
    assert parse_condition(text) == expected


@pytest.mark.parametrize("text", ["", "lifetime_value", "lifetime_value >=", "city 上海"])
def test_parse_condition_refuses_malformed_text(text: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_condition(text)
    assert info.value.field == "condition"


@pytest.mark.parametrize(
    "condition",
    [
        {"field": "lifetime_value", "op": "gte", "value": 100000},
        {"field": "industry", "op": "in", "value": ["制造业", "manufacturing"]},
        {"field": "tag", "op": "not_in", "value": ["a", "b"]},
        {"field": "birthday", "op": "exists", "value": False},
        {"field": "city", "op": "contains", "value": "shang"},
    ],
)
def test_format_then_parse_round_trips(condition: dict[str, Any]) -> None:
    assert check_condition(parse_condition(format_condition(condition))) == condition


# ----------------------------------------------------------------- validation


def test_check_condition_types_values() -> None:
    assert check_condition(parse_condition("lifetime_value>=100000"))["value"] == 100000
    assert check_condition(parse_condition("lifetime_value>=99.5"))["value"] == 99.5
    assert check_condition(parse_condition("do_not_contact=false"))["value"] is False
    assert check_condition(parse_condition("birthday<2000-01-01"))["value"] == "2000-01-01"
    assert check_condition({"field": "birthday", "op": "lt", "value": date(2000, 1, 1)})[
        "value"
    ] == "2000-01-01"
    assert check_condition(parse_condition("lifecycle_stage=ACTIVE"))["value"] == "active"
    assert check_condition(parse_condition("Lifetime_Value>1"))["field"] == "lifetime_value"
    assert check_condition(parse_condition("attr.level>=3"))["value"] == 3
    assert check_condition({"field": "city", "op": "exists"}) == {
        "field": "city", "op": "exists", "value": True
    }


@pytest.mark.parametrize(
    ("condition", "bad_field", "bad_value", "reason_part"),
    [
        ({"field": "email", "op": "eq", "value": "x"}, "conditions[0].field", "email",
         "unknown field"),
        ({"field": "lifetime_value", "op": "gtx", "value": 1}, "conditions[0].op", "gtx",
         "unknown operator"),
        ({"field": "city", "op": "gt", "value": "a"}, "conditions[0].op", "gt",
         "not allowed on city"),
        ({"field": "lifetime_value", "op": "gte", "value": "lots"}, "conditions[0].value",
         "lots", "needs a number"),
        ({"field": "lifetime_value", "op": "gte", "value": True}, "conditions[0].value", True,
         "needs a number"),
        ({"field": "birthday", "op": "lt", "value": "01/02/2000"}, "conditions[0].value",
         "01/02/2000", "YYYY-MM-DD"),
        ({"field": "lifecycle_stage", "op": "eq", "value": "vip"}, "conditions[0].value",
         "vip", "lead"),
        ({"field": "preferred_channel", "op": "eq", "value": "fax"}, "conditions[0].value",
         "fax", "telegram"),
        ({"field": "do_not_contact", "op": "eq", "value": "maybe"}, "conditions[0].value",
         "maybe", "true or false"),
        ({"field": "industry", "op": "in", "value": []}, "conditions[0].value", [],
         "non-empty list"),
        ({"field": "industry", "op": "in", "value": "制造业"}, "conditions[0].value", "制造业",
         "non-empty list"),
        ({"field": "lifetime_value", "op": "in", "value": [1, "x"]}, "conditions[0].value[1]",
         "x", "needs a number"),
        ({"field": "city", "op": "eq", "value": " "}, "conditions[0].value", " ",
         "empty value"),
        ({"field": "city", "op": "eq", "value": ["a"]}, "conditions[0].value", ["a"],
         "single value"),
        ({"field": "attr.level", "op": "gt", "value": "high"}, "conditions[0].value", "high",
         "number or a YYYY-MM-DD date"),
        ({"field": "city", "op": "eq", "value": "x", "extra": 1}, "conditions[0].extra", 1,
         "unknown key"),
        ({"op": "eq", "value": "x"}, "conditions[0].field", None, "missing field"),
    ],
)
def test_check_conditions_names_the_bad_part(
    condition: dict[str, Any], bad_field: str, bad_value: Any, reason_part: str
) -> None:
    with pytest.raises(ValidationError) as info:
        check_conditions([condition])
    assert info.value.field == bad_field
    assert info.value.value == bad_value
    assert reason_part in info.value.reason
    assert bad_field in str(info.value)


def test_check_conditions_points_at_the_right_index() -> None:
    with pytest.raises(ValidationError) as info:
        check_conditions([{"field": "city", "op": "eq", "value": "a"},
                          {"field": "city", "op": "nope", "value": "a"}])
    assert info.value.field == "conditions[1].op"


@pytest.mark.parametrize("code", ["vip", "gold-2", "key_account", "a" * 50])
def test_check_code_accepts_slugs(code: str) -> None:
    assert check_code(code) == code


@pytest.mark.parametrize("code", ["VIP", "gold card", "", "a" * 51, "贵宾", None, "a.b"])
def test_check_code_refuses_others(code: Any) -> None:
    with pytest.raises(ValidationError) as info:
        check_code(code)
    assert info.value.field == "code"


def test_check_code_suggests_a_slug() -> None:
    with pytest.raises(ValidationError, match="'gold-card'"):
        check_code("Gold Card")


# ----------------------------------------------------------------- evaluation

VIP = rule("tier", "vip", "lifetime_value>=100000", position=10)
MANUFACTURING = rule("category", "manufacturing", "industry in 制造业,manufacturing")


def test_example_rules() -> None:
    rules = [VIP, MANUFACTURING]
    assert evaluate(rules, facts(lifetime_value=Decimal("100000"), industry="制造业")) == {
        "tier": "vip", "category": "manufacturing"
    }
    assert evaluate(rules, facts(lifetime_value=Decimal("99999.99"), industry="Manufacturing")) \
        == {"tier": None, "category": "manufacturing"}
    assert evaluate(rules, facts(lifetime_value=Decimal("5"), industry="retail")) == {
        "tier": None, "category": None
    }
    assert evaluate([], facts()) == {"tier": None, "category": None}


def test_first_match_by_position_wins_whatever_the_list_order() -> None:
    rules = [
        rule("tier", "standard", position=1000),  # no conditions: matches everybody
        rule("tier", "gold", "lifetime_value>=20000", position=20),
        rule("tier", "vip", "lifetime_value>=100000", position=10),
    ]
    assert evaluate(rules, facts(lifetime_value=500000))["tier"] == "vip"
    assert evaluate(rules, facts(lifetime_value=30000))["tier"] == "gold"
    assert evaluate(rules, facts(lifetime_value=1))["tier"] == "standard"


def test_equal_positions_are_tried_by_id() -> None:
    rules = [
        rule("tier", "b", "city=上海", position=5, rule_id=2),
        rule("tier", "a", "city=上海", position=5, rule_id=1),
    ]
    assert evaluate(rules, facts(city="上海"))["tier"] == "a"


def test_disabled_rules_are_ignored() -> None:
    rules = [rule("tier", "vip", "lifetime_value>=1", enabled=False)]
    assert evaluate(rules, facts(lifetime_value=10))["tier"] is None


def test_all_conditions_must_hold() -> None:
    rules = [rule("tier", "vip", "lifetime_value>=100", "city=上海")]
    assert evaluate(rules, facts(lifetime_value=200, city="上海"))["tier"] == "vip"
    assert evaluate(rules, facts(lifetime_value=200, city="北京"))["tier"] is None
    assert evaluate(rules, facts(lifetime_value=50, city="上海"))["tier"] is None


def test_match_names_the_rule() -> None:
    rules = [rule("tier", "vip", "lifetime_value>=1", rule_id=7)]
    matched = match(rules, facts(lifetime_value=3))
    assert matched["tier"] is not None and matched["tier"].id == 7
    assert matched["category"] is None


def holds(condition: str, **columns: Any) -> bool:
    return evaluate([rule("tier", "x", condition)], facts(**columns))["tier"] == "x"


def test_number_comparisons() -> None:
    assert holds("lifetime_value>=100", lifetime_value=Decimal("100.00"))
    assert not holds("lifetime_value>100", lifetime_value=Decimal("100"))
    assert holds("lifetime_value<100", lifetime_value=Decimal("99.99"))
    assert holds("lifetime_value<=100", lifetime_value=100)
    assert holds("lifetime_value=100", lifetime_value=Decimal("100.00"))
    assert holds("lifetime_value!=100", lifetime_value=Decimal("100.01"))
    assert holds("lifetime_value in 1,2,3", lifetime_value=Decimal("2"))
    assert holds("lifetime_value>0.1", lifetime_value=Decimal("0.11"))


def test_text_ignores_case_and_empty_fields_fail_except_ne() -> None:
    assert holds("city=shanghai", city="Shanghai ")
    assert holds("city~HANG", city="Shanghai")
    assert holds("country in cn,hk", country="CN")
    assert not holds("city=上海", city=None)
    assert not holds("city~上", city="")
    assert holds("city!=上海", city=None)
    assert holds("city not in 上海,北京", city=None)
    assert not holds("city not in 上海,北京", city="北京")
    assert holds("city exists", city="上海")
    assert not holds("city exists", city="  ")
    assert holds("city not exists", city=None)


def test_industry_falls_back_to_the_organization() -> None:
    assert holds("industry=制造业", industry=None, organization_industry="制造业")
    assert not holds("industry=制造业", industry="零售", organization_industry="制造业")


def test_organization_name() -> None:
    assert holds("organization~政府", organization="上海市政府办公厅")
    assert not holds("organization~政府", organization=None)


def test_tags() -> None:
    assert holds("tag=VIP", tags=["vip", "x"])
    assert not holds("tag=vip", tags=["x"])
    assert holds("tag!=blocked", tags=["x"])
    assert holds("tag!=blocked", tags=[])
    assert not holds("tag!=blocked", tags=["blocked"])
    assert holds("tag in a,b", tags=["b"])
    assert holds("tag not in a,b", tags=["c"])
    assert holds("tag~acc", tags=["key-account"])
    assert holds("tag exists", tags=["x"])
    assert holds("tag not exists", tags=[])


def test_enums_and_bools() -> None:
    assert holds("lifecycle_stage=active", lifecycle_stage=LifecycleStage.ACTIVE)
    assert holds("lifecycle_stage in lead,prospect", lifecycle_stage="prospect")
    assert holds("preferred_channel=telegram", preferred_channel="telegram")
    assert not holds("preferred_channel=telegram", preferred_channel=None)
    assert holds("do_not_contact=false", do_not_contact=False)
    assert holds("do_not_contact=true", do_not_contact=True)
    assert not holds("do_not_contact=true", do_not_contact=False)


def test_dates() -> None:
    assert holds("birthday<2000-01-01", birthday=date(1999, 12, 31))
    assert not holds("birthday<2000-01-01", birthday=date(2000, 1, 1))
    assert holds("birthday=2000-01-01", birthday=date(2000, 1, 1))
    assert not holds("birthday<2000-01-01", birthday=None)
    created = datetime(2023, 5, 1, 23, 30, tzinfo=UTC)
    assert holds("created_at>=2023-05-01", created_at=created)
    assert holds("created_at<2023-05-02", created_at=created)
    assert holds("created_at=2023-05-01", created_at=created)


def test_custom_attributes() -> None:
    attrs = {"level": "3", "member": True, "since": "2020-06-01", "interests": ["Golf", "tea"],
             "profile": {"size": 250}}
    assert holds("attr.level>=3", custom_attributes=attrs)
    assert holds("attr.level=3", custom_attributes=attrs)
    assert not holds("attr.level>3", custom_attributes=attrs)
    assert holds("attr.member=true", custom_attributes=attrs)
    assert holds("attr.since<2021-01-01", custom_attributes=attrs)
    assert holds("attr.interests=golf", custom_attributes=attrs)
    assert holds("attr.interests~te", custom_attributes=attrs)
    assert holds("attr.interests!=chess", custom_attributes=attrs)
    assert holds("attr.profile.size>200", custom_attributes=attrs)
    assert holds("attr.missing not exists", custom_attributes=attrs)
    assert not holds("attr.missing=1", custom_attributes=attrs)
    assert not holds("attr.level>=3", custom_attributes={"level": "high"})


def test_compile_rules_names_a_broken_stored_rule() -> None:
    broken = {"id": 4, "name": "x", "target": "tier", "value_code": "v", "position": 1,
              "conditions": [{"field": "nope", "op": "eq", "value": 1}]}
    with pytest.raises(ValidationError) as info:
        compile_rules([broken])
    assert info.value.field == "rule #4.conditions[0].field"


def test_compile_rules_only_reports_used_fields() -> None:
    compiled = compile_rules([VIP, MANUFACTURING, rule("tier", "t", "tag=x", enabled=False)])
    assert compiled.fields() == {"lifetime_value", "industry"}


def test_customer_facts_from_a_customer_object() -> None:
    customer = Customer(
        id=5,
        display_name="张伟",
        lifetime_value=Decimal("150000"),
        industry=None,
        city="上海",
        lifecycle_stage=LifecycleStage.ACTIVE,
        custom_attributes={"level": 2},
        do_not_contact=False,
        tag_rows=[CustomerTag(tag="key-account")],
        organization=Organization(name="上海机械厂", industry="制造业"),
    )
    built = customer_facts(customer)
    assert built["tags"] == ["key-account"]
    assert built["organization"] == "上海机械厂"
    assert built["lifecycle_stage"] == "active"
    rules = [VIP, MANUFACTURING, rule("category", "x", "tag=key-account", position=1)]
    assert evaluate(rules, built) == {"tier": "vip", "category": "x"}


# ----------------------------------------------------------------- classification file


def test_read_example_file() -> None:
    example = Path(__file__).parents[2] / "config" / "classification.example.toml"
    checked = read_classification_file(example)
    assert {item["code"] for _, item in checked["tiers"]} >= {"vip", "gold", "standard"}
    rules = {item["name"]: item for _, item in checked["rules"]}
    assert rules["VIP by lifetime value"]["conditions"] == [
        {"field": "lifetime_value", "op": "gte", "value": 100000}
    ]
    assert rules["Everyone else is standard"]["conditions"] == []


@pytest.mark.parametrize(
    ("body", "field_part"),
    [
        ('[[tiers]]\ncode = "VIP"\nname = "VIP"\n', "tiers[0] (VIP).code"),
        ('[[tiers]]\ncode = "vip"\n', "tiers[0] (vip).name"),
        ('[[tiers]]\ncode = "vip"\nname = "V"\nrank = "high"\n', "tiers[0] (vip).rank"),
        ('[[categories]]\ncode = "a"\nname = "A"\ncolour = 1\n', "categories[0] (a).colour"),
        ('[[rules]]\nname = "r"\ntarget = "tier"\nvalue = "v"\nwhen = ["lifetime_value >> 1"]\n',
         "rules[0] (r).when[0].value"),
        ('[[rules]]\nname = "r"\ntarget = "tier"\nvalue = "v"\nwhen = ["nonsense"]\n',
         "rules[0] (r).when[0]"),
        ('[[rules]]\nname = "r"\ntarget = "tier"\nvalue = "v"\n'
         'conditions = [{ field = "city", op = "gt", value = "x" }]\n',
         "rules[0] (r).conditions[0].op"),
        ('[[rules]]\nname = "r"\ntarget = "segment"\nvalue = "v"\nalways = true\n',
         "rules[0] (r).target"),
        ('[[rules]]\nname = "r"\ntarget = "tier"\nvalue = "v"\n', "rules[0] (r).conditions"),
        ('[[tiers]]\ncode = "a"\nname = "A"\n[[tiers]]\ncode = "a"\nname = "B"\n',
         "tiers[1] (a).code"),
        ('[[widgets]]\ncode = "a"\n', "widgets"),
    ],
)
def test_file_errors_name_the_entry(tmp_path: Path, body: str, field_part: str) -> None:
    path = tmp_path / "classes.toml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ValidationError) as info:
        read_classification_file(path)
    assert info.value.field.startswith(str(path))
    assert info.value.field.endswith(field_part)


def test_file_that_is_not_toml(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[[tiers]\n", encoding="utf-8")
    with pytest.raises(ValidationError, match="not valid TOML"):
        read_classification_file(path)
    with pytest.raises(ValidationError, match="no such file"):
        read_classification_file(tmp_path / "missing.toml")
