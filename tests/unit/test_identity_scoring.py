"""The fuzzy matcher's pure parts: name forms, blocking keys and the score."""

from __future__ import annotations

from datetime import date

import pytest

from crm_core.identity import (
    MatchCandidate,
    MatchThresholds,
    customer_keys,
    email_local,
    name_forms,
    name_similarity,
    phone_suffix,
    query_keys,
    score_match,
    worth_suggesting,
)

THRESHOLDS = MatchThresholds()


def score(a: str, b: str, **signals: object) -> float:
    return score_match(name_forms(a), name_forms(b), **signals)[0]  # type: ignore[arg-type]


# --------------------------------------------------------------------------- name forms


def test_chinese_name_is_split_into_surname_and_given_name_in_pinyin() -> None:
    forms = name_forms("张伟明")
    assert forms is not None
    assert (forms.chars, forms.surname, forms.given) == ("张伟明", "张", "伟明")
    assert forms.roman == "weiming zhang"
    assert forms.han


def test_compound_surname_and_surname_readings() -> None:
    forms = name_forms("欧阳晓东")
    assert forms is not None and (forms.surname, forms.given) == ("欧阳", "晓东")
    assert name_forms("单伟").roman == "shan wei"  # type: ignore[union-attr]  # not "dan"
    assert name_forms("曾强").roman == "qiang zeng"  # type: ignore[union-attr]
    assert name_forms("吕敏").roman == "lu min"  # type: ignore[union-attr]  # as in passports


def test_latin_names_fold_and_sort_their_tokens() -> None:
    assert name_forms("Smith, Jonathan").roman == name_forms("jonathan SMITH").roman  # type: ignore[union-attr]
    assert name_forms("José García").roman == "garcia jose"  # type: ignore[union-attr]
    assert name_forms("Ｊｏｈｎ Smith").chars == "johnsmith"  # type: ignore[union-attr]  # full width


@pytest.mark.parametrize("value", ["", None, "王", "li.na@example.cn", "+86 138 0013 8000", "123"])
def test_no_usable_name(value: str | None) -> None:
    assert name_forms(value) is None
    assert customer_keys(value) == []


# --------------------------------------------------------------------------- keys


def test_keys_of_a_chinese_customer() -> None:
    keys = customer_keys(
        "张伟明", date(1990, 1, 2), ["+8613800138000"], ["Wei.Ming+shop@Example.cn"]
    )
    assert {"n:weiming zhang", "c:张伟", "c:张明", "g:伟明", "b:19900102", "p:0138000",
            "e:wei.ming"} <= set(keys)
    assert len(keys) == len(set(keys))
    assert all(len(k) <= 64 for k in keys)


def test_a_homophone_typo_shares_the_pinyin_key() -> None:
    assert "n:weiming zhang" in customer_keys("张伟名")
    assert "n:weiming zhang" in query_keys("zhang weiming")  # typed in Latin letters
    assert "n:weiming zhang" in query_keys("Weiming Zhang")  # either order


def test_a_wrong_character_still_shares_a_character_key() -> None:
    assert set(customer_keys("张伟明")) & set(query_keys("张伟亮")) >= {"c:张伟"}
    assert set(customer_keys("李伟明")) & set(query_keys("季伟明")) >= {"g:伟明"}


@pytest.mark.parametrize(
    "typo",
    ["Jonathon Smith", "Jonathan Smyth", "Jonathn Smith", "Jonathann Smith", "Jnoathan Smith",
     "Jonathan Smiht", "jonathan smith"],
)
def test_one_typo_in_a_latin_name_shares_a_key(typo: str) -> None:
    assert set(customer_keys("Jonathan Smith")) & set(query_keys(typo))


def test_signal_keys() -> None:
    assert phone_suffix("+86 138-0013-8000") == "0138000"
    assert phone_suffix("12345") is None
    assert email_local("li.na+news@example.cn") == "li.na"
    assert email_local("info@example.cn") is None  # generic mailbox: no evidence
    assert email_local("ab@example.cn") is None


# --------------------------------------------------------------------------- similarity


def test_chinese_characters_and_pinyin_are_compared_after_transliteration() -> None:
    # Characters alone share 2 of 3; pinyin is identical: a likely input-method slip.
    assert name_similarity(name_forms("张伟明"), name_forms("张伟名")) == pytest.approx(95.0)
    assert name_similarity(name_forms("张伟明"), name_forms("Zhang Weiming")) == pytest.approx(95.0)
    assert name_similarity(name_forms("张伟明"), name_forms("张伟明")) == 100.0
    # Not a partial match: a short name inside a longer one is not the same person.
    assert name_similarity(name_forms("任秀"), name_forms("任秀嘉")) < 88


# --------------------------------------------------------------------------- score


def test_identical_name_alone_is_a_suggestion_never_a_link() -> None:
    for name in ("张伟", "王芳", "John Smith"):
        value = score(name, name)
        assert THRESHOLDS.suggest <= value < THRESHOLDS.link


@pytest.mark.parametrize(
    ("a", "b"),
    [("张伟明", "张伟名"), ("Jonathan Smith", "Jonathon Smith"), ("张伟明", "zhang weiming")],
)
def test_a_typo_scores_in_the_suggestion_band(a: str, b: str) -> None:
    assert THRESHOLDS.suggest <= score(a, b) < THRESHOLDS.link


def test_a_second_agreeing_signal_reaches_the_link_threshold() -> None:
    day = date(1990, 1, 2)
    assert score("张伟", "张伟", birthdays=(day, day)) >= THRESHOLDS.link
    assert score("张伟", "张伟", phone_agrees=True) >= THRESHOLDS.link
    assert score("张伟", "张伟", email_agrees=True) >= THRESHOLDS.link
    assert score("张伟明", "张伟名", birthdays=(day, day)) >= THRESHOLDS.link
    # A city is weak evidence: many people of one name live in one city.
    assert score("张伟", "张伟", cities=("北京市", "北京")) < THRESHOLDS.link


def test_different_birthdays_speak_against_a_common_name() -> None:
    assert score("张伟", "张伟", birthdays=(date(1990, 1, 2), date(1975, 6, 30))) < 75
    # A likely typo in the birthday (day and month swapped) is neutral.
    swapped = score("张伟", "张伟", birthdays=(date(1990, 1, 2), date(1990, 2, 1)))
    assert swapped == score("张伟", "张伟")


def test_unrelated_names_score_low_and_reasons_say_why() -> None:
    assert score("张伟明", "李娜") < 40
    assert score("John Smith", "Mary Jones") < 50
    value, reasons = score_match(
        name_forms("张伟"), name_forms("张伟"), phone_agrees=True, birthdays=(None, None)
    )
    assert reasons == {"name": 100.0, "phone": 100.0}
    assert value == 100.0


def test_no_name_means_no_name_evidence() -> None:
    value, reasons = score_match(None, name_forms("张伟"), phone_agrees=True)
    assert value < THRESHOLDS.suggest
    assert reasons["name"] == 0.0


def test_thresholds_are_ordered() -> None:
    with pytest.raises(ValueError):
        MatchThresholds(link=70, suggest=80)


def test_chinese_pinyin_counts_whole_syllables_not_letters() -> None:
    # 伟/文 spell "wei"/"wen": one letter apart, but different characters and people.
    assert name_similarity(name_forms("张伟"), name_forms("张文")) == 50.0
    assert score("艾静娟", "艾静军") < THRESHOLDS.suggest
    assert score("刘婷娟", "刘敏轩", birthdays=(date(1990, 1, 2),) * 2) < THRESHOLDS.suggest
    # Pinyin typed in Latin letters is compared letter by letter: a typo stays close.
    assert THRESHOLDS.suggest <= score("张伟明", "Zhang Weimin") < THRESHOLDS.link


def test_same_street_address_is_evidence_and_has_a_key() -> None:
    keys = customer_keys("Emily Wilson", city="Boston", street="12 Beacon St.")
    assert "a:boston|12beaconst" in keys
    assert "a:boston|12beaconst" in query_keys("Emily Willson", city="boston",
                                               street="12 beacon st")
    value, reasons = score_match(
        name_forms("Christopher Wilson"), name_forms("Christopher Willson"),
        cities=("Boston", "boston"), streets=("12 Beacon St.", "12 beacon st"),
    )
    assert reasons["address"] == 100.0 and reasons["city"] == 100.0
    assert value >= THRESHOLDS.link
    # A family: one address, different given names.
    family = score("Emily Wilson", "Thomas Wilson", cities=("Boston",) * 2,
                   streets=("12 Beacon St.",) * 2)
    assert family < THRESHOLDS.suggest


def _candidate(customer_id: int, score: float, **reasons: float) -> MatchCandidate:
    return MatchCandidate(customer_id, score, {"name": 100.0, **reasons})


def test_a_rare_name_alone_is_worth_suggesting() -> None:
    found = [_candidate(1, 85.0), _candidate(2, 85.0), _candidate(3, 60.0)]
    assert [c.customer_id for c in worth_suggesting(found, 75.0)] == [1, 2]


def test_a_common_name_alone_is_not_but_corroborated_matches_are() -> None:
    found = [
        _candidate(1, 90.0, phone=100.0),
        *(_candidate(i, 85.0) for i in range(2, 7)),
        _candidate(7, 80.0, birthday=100.0),
        _candidate(8, 76.0, birthday=50.0, city=100.0),  # a near birthday, a city: no
    ]
    assert [c.customer_id for c in worth_suggesting(found, 75.0)] == [1, 7]
    # Up to common_name_limit name-only matches are still proposed.
    assert len(worth_suggesting(found[:4], 75.0, common_name_limit=3)) == 4
    assert [c.customer_id for c in worth_suggesting(found[:5], 75.0, common_name_limit=3)] == [1]


def test_suggestions_are_capped() -> None:
    found = [_candidate(i, 95.0, email=100.0) for i in range(10)]
    assert len(worth_suggesting(found, 75.0, limit=5)) == 5
