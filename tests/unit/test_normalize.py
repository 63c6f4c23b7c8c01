"""Normalization of e-mails, phone numbers and names (pure functions, no database)."""

from __future__ import annotations

import pytest

from crm_core.errors import ValidationError
from crm_core.normalize import (
    fold,
    has_han,
    is_supported_region,
    looks_like_phone,
    name_key,
    normalize_email,
    normalize_phone,
    phone_digits,
    pinyin_of,
    search_tokens,
    try_normalize_phone,
)

# --- e-mail -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("john.smith@example.com", "john.smith@example.com"),
        ("John.Smith@Example.COM", "john.smith@example.com"),
        ("  JOHN@EXAMPLE.COM  ", "john@example.com"),
        ("user+tag@sub.example.co.uk", "user+tag@sub.example.co.uk"),
    ],
)
def test_email_is_lower_cased_and_trimmed(typed: str, stored: str) -> None:
    assert normalize_email(typed) == stored


def test_email_with_chinese_domain_is_kept_in_unicode() -> None:
    assert normalize_email("zhang@例子.中国") == "zhang@例子.中国"


def test_email_with_chinese_local_part() -> None:
    assert normalize_email("张伟@example.com") == "张伟@example.com"


def test_idn_domain_typed_in_punycode_equals_the_unicode_spelling() -> None:
    assert normalize_email("user@xn--bcher-kva.de") == normalize_email("user@Bücher.de")
    assert normalize_email("user@xn--fsqu00a.xn--fiqs8s") == normalize_email("user@例子.中国")


@pytest.mark.parametrize(
    "bad",
    ["not-an-email", "john@", "@example.com", "john@@example.com", "a@b", "john smith@x.com"],
)
def test_invalid_email_names_field_and_value(bad: str) -> None:
    with pytest.raises(ValidationError) as info:
        normalize_email(bad)
    assert info.value.field == "email"
    assert info.value.value == bad
    assert "email" in str(info.value)
    assert repr(bad) in str(info.value)
    assert info.value.reason


def test_empty_email_is_invalid() -> None:
    with pytest.raises(ValidationError):
        normalize_email("")


def test_invalid_email_uses_the_given_field_name() -> None:
    with pytest.raises(ValidationError) as info:
        normalize_email("nope", field="emails.0")
    assert info.value.field == "emails.0"
    assert "emails.0" in str(info.value)


def test_validation_error_to_dict() -> None:
    with pytest.raises(ValidationError) as info:
        normalize_email("nope")
    data = info.value.to_dict()
    assert data["error"] == "validation_error"
    assert data["field"] == "email"
    assert data["value"] == "nope"
    assert data["reason"]
    assert "nope" in data["message"]


# --- phone ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    [
        "138 0013 8000",
        "+86 138-0013-8000",
        "+86 138 0013 8000",
        "0086 13800138000",
        "13800138000",
        "138-0013-8000",
        "(+86) 138.0013.8000",
        " 13800138000 ",
    ],
)
def test_chinese_mobile_in_any_format(typed: str) -> None:
    assert normalize_phone(typed, "CN") == "+8613800138000"


def test_region_is_case_insensitive() -> None:
    assert normalize_phone("13800138000", "cn") == "+8613800138000"


def test_chinese_landline_with_trunk_prefix() -> None:
    assert normalize_phone("010-6552-9988", "CN") == "+861065529988"


@pytest.mark.parametrize(
    "typed",
    ["(415) 555-2671", "415-555-2671", "415.555.2671", "+1 415 555 2671", "1 415 555 2671"],
)
def test_us_numbers(typed: str) -> None:
    assert normalize_phone(typed, "US") == "+14155552671"


def test_international_number_ignores_default_region() -> None:
    assert normalize_phone("+1 415 555 2671", "CN") == "+14155552671"
    assert normalize_phone("+86 138 0013 8000", "US") == "+8613800138000"
    assert normalize_phone("+44 20 7946 0958", "CN") == "+442079460958"


def test_chinese_mobile_without_plus_is_not_a_us_number() -> None:
    assert try_normalize_phone("13800138000", "US") is None


@pytest.mark.parametrize("bad", ["12345", "abc", "+86 123", "000", "138001380001234567"])
def test_invalid_phone_names_field_and_value(bad: str) -> None:
    with pytest.raises(ValidationError) as info:
        normalize_phone(bad, "CN")
    assert info.value.field == "phone"
    assert info.value.value == bad
    assert repr(bad) in str(info.value)


def test_empty_phone_is_invalid() -> None:
    with pytest.raises(ValidationError) as info:
        normalize_phone("   ", "CN")
    assert info.value.field == "phone"


def test_invalid_phone_uses_the_given_field_name() -> None:
    with pytest.raises(ValidationError) as info:
        normalize_phone("12345", "CN", field="phones.1")
    assert info.value.field == "phones.1"


def test_try_normalize_phone() -> None:
    assert try_normalize_phone("138 0013 8000", "CN") == "+8613800138000"
    assert try_normalize_phone("12345", "CN") is None
    assert try_normalize_phone("", "CN") is None


def test_supported_regions() -> None:
    assert is_supported_region("CN")
    assert is_supported_region("us")
    assert not is_supported_region("XX")
    assert not is_supported_region("")


@pytest.mark.parametrize(
    "text",
    [
        "138 0013 8000",
        "+86 138-0013-8000",
        "(010) 6552-9988",
        "12345",
        "0086 13800138000",
        "(+86) 138 0013 8000",
    ],
)
def test_looks_like_phone(text: str) -> None:
    assert looks_like_phone(text)


@pytest.mark.parametrize(
    "text",
    ["1234", "john", "张伟", "abc12345", "john@example.com", "", "   ", "- - - - -", "12 34"],
)
def test_does_not_look_like_phone(text: str) -> None:
    assert not looks_like_phone(text)


def test_phone_digits() -> None:
    assert phone_digits("+86 (138) 0013-8000") == "8613800138000"
    assert phone_digits("abc") == ""


# --- names ------------------------------------------------------------------------------


def test_fold() -> None:
    assert fold("  John   SMITH ") == "john smith"
    assert fold("Ｊｏｈｎ") == "john"  # full-width letters
    assert fold("Straße") == "strasse"


def test_has_han() -> None:
    assert has_han("张伟")
    assert has_han("Mr 王")
    assert not has_han("Zhang Wei")
    assert not has_han("")


def test_pinyin_is_toneless_and_space_separated() -> None:
    assert pinyin_of("张伟") == "zhang wei"
    assert pinyin_of("张伟明") == "zhang wei ming"
    assert pinyin_of("绿") == "lv" or pinyin_of("绿") == "lu"


def test_name_key_of_chinese_name_holds_characters_and_pinyin() -> None:
    key = name_key("张伟")
    parts = key.split(" | ")
    assert "张伟" in parts
    assert "zhang wei" in parts
    assert "zhangwei" in parts


def test_name_key_of_chinese_names_with_parts() -> None:
    key = name_key("张伟", "伟", "张")
    assert "张伟" in key
    assert "zhang wei" in key
    assert "zhangwei" in key
    # each part appears once
    parts = key.split(" | ")
    assert len(parts) == len(set(parts))


def test_name_key_of_latin_name() -> None:
    key = name_key("John Smith", "John", "Smith")
    parts = key.split(" | ")
    assert "john smith" in parts
    assert "johnsmith" in parts
    assert "john" in parts
    assert "smith" in parts
    assert key == key.lower()


def test_name_key_of_pinyin_name_matches_chinese_pinyin() -> None:
    assert "zhang wei" in name_key("Zhang Wei")
    assert "zhangwei" in name_key("Zhang Wei")


def test_name_key_skips_empty_parts() -> None:
    assert name_key(None, "", "John") == "john"
    assert name_key() == ""


def test_name_key_is_bounded() -> None:
    assert len(name_key("张" * 400, "x" * 400)) <= 1000


def test_search_tokens() -> None:
    assert search_tokens("  Zhang   WEI ") == ["zhang", "wei"]
    assert search_tokens("a | b") == ["a", "b"]
    assert search_tokens("   ") == []
