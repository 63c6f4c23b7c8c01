"""Validation and normalization of customer input, without a database."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from crm_core.errors import StateError, ValidationError
from crm_core.models import IdentityKind, LifecycleStage
from crm_core.services.customers import (
    CheckedCustomer,
    check_country,
    check_customer,
    check_language,
    check_tags,
    check_transition,
    derive_display_name,
    parse_fields,
)

TODAY = date(2024, 6, 1)


def check(data: dict[str, Any], *, creating: bool = True, region: str = "CN") -> CheckedCustomer:
    return check_customer(parse_fields(data), region=region, creating=creating, today=TODAY)


def assert_invalid(data: dict[str, Any], field: str, value: Any, *, creating: bool = True) -> None:
    with pytest.raises(ValidationError) as info:
        check(data, creating=creating)
    assert info.value.field == field
    assert str(value) in str(info.value.value)
    assert field in str(info.value)
    assert str(value) in str(info.value)


# --- names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "family", "display"),
    [
        ("伟", "张", "张伟"),
        ("John", "Smith", "John Smith"),
        ("John", None, "John"),
        (None, "Smith", "Smith"),
        (None, "张", "张"),
        ("小明", "欧阳", "欧阳小明"),
        (None, None, None),
    ],
)
def test_derive_display_name(given: str | None, family: str | None, display: str | None) -> None:
    assert derive_display_name(given, family) == display


def test_display_name_derived_on_create() -> None:
    assert check({"given_name": "伟", "family_name": "张"}).columns["display_name"] == "张伟"
    assert (
        check({"given_name": "John", "family_name": "Smith"}).columns["display_name"]
        == "John Smith"
    )


def test_given_display_name_wins() -> None:
    checked = check({"display_name": "Johnny", "given_name": "John", "family_name": "Smith"})
    assert checked.columns["display_name"] == "Johnny"


def test_name_is_required_on_create() -> None:
    with pytest.raises(ValidationError) as info:
        check({"city": "Beijing"})
    assert info.value.field == "display_name"


def test_blank_name_is_required_on_create() -> None:
    with pytest.raises(ValidationError) as info:
        check({"display_name": "   "})
    assert info.value.field == "display_name"


def test_update_without_name_keeps_name() -> None:
    checked = check({"city": "Beijing"}, creating=False)
    assert "display_name" not in checked.columns
    assert checked.columns == {"city": "Beijing"}


def test_update_cannot_blank_the_name() -> None:
    with pytest.raises(ValidationError) as info:
        check({"display_name": ""}, creating=False)
    assert info.value.field == "display_name"


def test_strings_are_stripped() -> None:
    checked = check({"display_name": "  张伟  ", "city": "  北京 "})
    assert checked.columns["display_name"] == "张伟"
    assert checked.columns["city"] == "北京"


# --- field validation -------------------------------------------------------------------


def test_unknown_field_is_named() -> None:
    assert_invalid({"display_name": "x", "shoe_size": 42}, "shoe_size", 42)


def test_overlong_name_is_named() -> None:
    with pytest.raises(ValidationError) as info:
        check({"display_name": "x" * 201})
    assert info.value.field == "display_name"


def test_bad_email_names_field_and_value() -> None:
    assert_invalid({"display_name": "x", "emails": ["not-an-email"]}, "email", "not-an-email")


def test_bad_phone_names_field_and_value() -> None:
    assert_invalid({"display_name": "x", "phones": ["12345"]}, "phone", "12345")


def test_bad_identity_email_names_value() -> None:
    assert_invalid(
        {"display_name": "x", "identities": [{"kind": "email", "value": "bad@"}]}, "email", "bad@"
    )


def test_bad_identity_kind_is_named() -> None:
    with pytest.raises(ValidationError) as info:
        check({"display_name": "x", "identities": [{"kind": "fax", "value": "1"}]})
    assert "identities" in info.value.field
    assert "kind" in info.value.field


@pytest.mark.parametrize("country", ["XX", "CHN", "Narnia", "1"])
def test_bad_country_names_field_and_value(country: str) -> None:
    assert_invalid({"display_name": "x", "country": country}, "country", country)


@pytest.mark.parametrize(
    ("typed", "code"),
    [("CN", "CN"), ("cn", "CN"), ("中国", "CN"), ("China", "CN"), (" us ", "US"), ("香港", "HK")],
)
def test_country_names_and_codes(typed: str, code: str) -> None:
    assert check_country(typed) == code
    assert check({"display_name": "x", "country": typed}).columns["country"] == code


def test_empty_country_clears_it() -> None:
    assert check({"country": ""}, creating=False).columns == {"country": None}


@pytest.mark.parametrize(
    ("typed", "tag"), [("zh-CN", "zh-CN"), ("中文", "zh-CN"), ("English", "en"), ("en", "en")]
)
def test_language_names_and_tags(typed: str, tag: str) -> None:
    assert check_language(typed) == tag


def test_bad_language_names_field_and_value() -> None:
    assert_invalid({"display_name": "x", "language": "Klingon!"}, "language", "Klingon!")


def test_timezone() -> None:
    checked = check({"display_name": "x", "timezone": "Asia/Shanghai"})
    assert checked.columns["timezone"] == "Asia/Shanghai"


@pytest.mark.parametrize("tz", ["Mars/Olympus", "GMT+8 Beijing", "asia/shanghai"])
def test_bad_timezone_names_field_and_value(tz: str) -> None:
    assert_invalid({"display_name": "x", "timezone": tz}, "timezone", tz)


def test_future_birthday_names_field_and_value() -> None:
    assert_invalid({"display_name": "x", "birthday": "2024-06-02"}, "birthday", "2024-06-02")


def test_ancient_birthday_is_refused() -> None:
    assert_invalid({"display_name": "x", "birthday": "1899-12-31"}, "birthday", "1899-12-31")


def test_birthday_today_is_allowed() -> None:
    assert check({"display_name": "x", "birthday": "2024-06-01"}).columns["birthday"] == TODAY


def test_unparseable_birthday_names_field_and_value() -> None:
    assert_invalid({"display_name": "x", "birthday": "next tuesday"}, "birthday", "next tuesday")


def test_negative_lifetime_value_names_field_and_value() -> None:
    assert_invalid({"display_name": "x", "lifetime_value": "-1.50"}, "lifetime_value", "-1.5")


def test_lifetime_value_too_large_for_the_column_is_refused() -> None:
    # the column is NUMERIC(14, 2): PostgreSQL would fail with an overflow on write
    with pytest.raises(ValidationError) as info:
        check({"display_name": "x", "lifetime_value": "1e20"})
    assert info.value.field == "lifetime_value"


def test_lifetime_value_not_a_number_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        check({"display_name": "x", "lifetime_value": "NaN"})
    assert info.value.field == "lifetime_value"


def test_lifetime_value_is_stored_with_cents() -> None:
    checked = check({"display_name": "x", "lifetime_value": "12.5"})
    assert checked.columns["lifetime_value"] == Decimal("12.50")
    assert str(checked.columns["lifetime_value"]) == "12.50"


def test_marketing_opt_in_must_name_channels() -> None:
    assert_invalid(
        {"display_name": "x", "marketing_opt_in": {"pigeon": True}}, "marketing_opt_in", "pigeon"
    )
    checked = check({"display_name": "x", "marketing_opt_in": {"email": True}})
    assert checked.columns["marketing_opt_in"] == {"email": True}


def test_bad_lifecycle_stage_is_named() -> None:
    assert_invalid({"display_name": "x", "lifecycle_stage": "zombie"}, "lifecycle_stage", "zombie")


def test_empty_tier_and_category_clear_them() -> None:
    checked = check({"tier_code": "", "category_code": ""}, creating=False)
    assert checked.columns == {"tier_code": None, "category_code": None}


# --- identities and tags ----------------------------------------------------------------


def test_identities_normalized() -> None:
    checked = check(
        {
            "display_name": "x",
            "emails": ["John@Example.com"],
            "phones": ["138 0013 8000"],
            "identities": [{"kind": "telegram", "value": " 12345 ", "label": "tg"}],
        }
    )
    assert checked.identities == [
        (IdentityKind.EMAIL, "john@example.com", None),
        (IdentityKind.PHONE, "+8613800138000", None),
        (IdentityKind.TELEGRAM, "12345", "tg"),
    ]
    assert checked.replaced_kinds == {
        IdentityKind.EMAIL,
        IdentityKind.PHONE,
        IdentityKind.TELEGRAM,
    }


def test_same_identity_in_two_spellings_is_kept_once() -> None:
    checked = check(
        {
            "display_name": "x",
            "emails": ["a@example.com", "A@EXAMPLE.COM"],
            "phones": ["13800138000", "+86 138 0013 8000", "0086 138-0013-8000"],
            "identities": [{"kind": "phone", "value": "138 0013 8000", "label": "mobile"}],
        }
    )
    assert checked.identities == [
        (IdentityKind.EMAIL, "a@example.com", None),
        (IdentityKind.PHONE, "+8613800138000", None),
    ]


def test_phone_uses_the_region() -> None:
    checked = check({"display_name": "x", "phones": ["(415) 555-2671"]}, region="US")
    assert checked.identities == [(IdentityKind.PHONE, "+14155552671", None)]


def test_no_identity_fields_leaves_identities_alone() -> None:
    checked = check({"display_name": "x"})
    assert checked.identities is None
    assert checked.replaced_kinds == set()


def test_empty_email_list_replaces_emails() -> None:
    checked = check({"emails": []}, creating=False)
    assert checked.identities == []
    assert checked.replaced_kinds == {IdentityKind.EMAIL}


def test_tags_stripped_and_deduplicated() -> None:
    assert check_tags([" vip ", "vip", "", "大客户", "  "]) == ["vip", "大客户"]
    assert check({"display_name": "x", "tags": ["b", "a", "b"]}).tags == ["b", "a"]


def test_overlong_tag_is_named() -> None:
    with pytest.raises(ValidationError) as info:
        check_tags(["x" * 101])
    assert info.value.field == "tags"


# --- lifecycle --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "target"),
    [
        ("lead", "prospect"),
        ("lead", "active"),
        ("prospect", "active"),
        ("active", "dormant"),
        ("dormant", "active"),
        ("churned", "active"),
        ("active", "churned"),
        ("active", "active"),
    ],
)
def test_allowed_transitions(current: str, target: str) -> None:
    check_transition(LifecycleStage(current), LifecycleStage(target))


@pytest.mark.parametrize(
    ("current", "target"),
    [("lead", "dormant"), ("active", "lead"), ("active", "prospect"), ("churned", "dormant")],
)
def test_forbidden_transitions(current: str, target: str) -> None:
    with pytest.raises(StateError) as info:
        check_transition(LifecycleStage(current), LifecycleStage(target))
    assert current in str(info.value)
    assert target in str(info.value)


def test_huge_lifetime_value_is_refused_not_crashed() -> None:
    with pytest.raises(ValidationError) as info:
        check({"display_name": "x", "lifetime_value": "1e40"})
    assert info.value.field == "lifetime_value"


def test_largest_lifetime_value_that_fits() -> None:
    checked = check({"display_name": "x", "lifetime_value": "999999999999.99"})
    assert checked.columns["lifetime_value"] == Decimal("999999999999.99")


def test_lifetime_value_rounded_to_cents() -> None:
    assert check({"display_name": "x", "lifetime_value": "12.345"}).columns[
        "lifetime_value"
    ] == Decimal("12.35")


def test_error_messages_show_values_as_typed_not_python_reprs() -> None:
    with pytest.raises(ValidationError) as info:
        check({"display_name": "x", "birthday": "2030-01-01"})
    assert "2030-01-01" in str(info.value)
    assert "datetime" not in str(info.value)
    with pytest.raises(ValidationError) as info:
        check({"display_name": "x", "lifetime_value": "-5"})
    assert "Decimal" not in str(info.value)
