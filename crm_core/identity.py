"""Identity resolution: the fuzzy matcher, its blocking index, suggestions and the batch scan.

Exact matches on normalized identities (e-mail, E.164 phone, Telegram id …) are made
by the caller (``find_identity_owners``). This module handles what is left: a name,
perhaps with a phone, an e-mail, a birthday or an address, that matches nobody exactly.

**Blocking.** Comparing a name with every customer costs ~85 ms at a million customers,
so each active customer gets a few short *blocking keys* in ``customer_match_keys``
(see ``customer_keys``). Two records of one person, even with a typo, share at least
one key; a lookup reads the customers behind the query's keys (capped, those sharing
the most and the rarest keys first) and scores only those, from compact *match
profiles* (``customer_match_profiles``: the name as compared, birthday, city, street),
never touching the wide customers table. Keys and profiles are kept up to date by an
ORM ``after_flush``
listener registered on import of this module (``crm_core.services`` imports it):
created, renamed, re-dated, deleted, restored, merged and erased customers, and
added or removed phones and e-mails. Bulk paths that bypass the ORM call
``rebuild_match_keys``.

========  ===================================================  =============================
prefix    value                                                catches
========  ===================================================  =============================
``n:``    romanized name, words sorted (``weiming zhang``)      same name, homophones (张伟明/
                                                               张伟名), pinyin typed in Latin
                                                               letters, swapped name order
``c:``    Chinese surname + one given character (``张伟``)      a wrong given character
``g:``    Chinese given name of 2+ characters (``伟明``)        a wrong surname character
``hp:``   first half of the romanized name                     one typo in the second half
``hs:``   second half of the romanized name                    one typo in the first half
``w:``    a word + the first or last 2 letters of another      one typo in one word, also in
          word (``smith|jo``, ``smith|an``; ``zhang|we``)      pinyin typed for a Chinese
                                                               name, however common the
                                                               other word
``b:``    birthday ``YYYYMMDD``                                 same birthday, any name
``p:``    last 7 digits of a phone                             same number, other prefix
``e:``    e-mail local part (``+tag`` dropped)                 same mailbox name, other domain
``a:``    city and street (``boston|12beaconst``)              same address
========  ===================================================  =============================

A lookup reads at most ``PER_KEY_LIMIT`` customers of one key and scores the
``CANDIDATE_LIMIT`` that share the most (rarest) keys; the batch scan compares within
blocks of at most ``SCAN_MAX_BLOCK``.

**Score** (0-100)::

    name   = max(ratio(characters), 0.95 · ratio(pinyin))
             two Chinese names: pinyin syllable by syllable (homophones match, 伟/文
             "wei"/"wen" do not); Latin letters against Chinese: the spelled pinyin
             letter by letter; two Latin names: their words sorted (factor 1)
    score  = 0.85 · name
             + 12 same birthday | −20 both known and clearly different (a swapped
                                    day and month, or another year, counts 0)
             + 15 same phone suffix + 10 same e-mail local part
             + 10 same street address + 5 same city

so an identical name alone scores 85 (a suggestion, never a link: common names are
shared by many people) and reaches the link threshold (92) only with a second agreeing
signal other than the city; a one-character typo (张伟明/张伟名, Jonathan/Jonathon
Smith) scores 79-81. ``fuzz.ratio`` is used, not ``WRatio``: partial matching flatters
short Chinese names.

**Batch scan.** ``scan_duplicates`` applies the same score to customers who share a
birthday, phone suffix, e-mail local part or address, or a name few others carry: among
a million people, near-identical names of different people are the rule, so the scan
wants a corroborating fact besides the name.
"""

from __future__ import annotations

import heapq
import re
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Any

from pypinyin.pinyin_dict import pinyin_dict
from rapidfuzz import fuzz, process
from sqlalchemy import (
    Date,
    Integer,
    String,
    bindparam,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import TextualSelect

from crm_core.db import Database
from crm_core.models import (
    Customer,
    CustomerIdentity,
    CustomerMatchKey,
    CustomerMatchProfile,
    DuplicateSuggestion,
    IdentityKind,
    utcnow,
)
from crm_core.models.match_keys import MATCH_KEY_LENGTH
from crm_core.normalize import fold, has_han, looks_like_phone

__all__ = [
    "SCAN_MAX_BLOCK",
    "MatchCandidate",
    "MatchThresholds",
    "NameForms",
    "ScanReport",
    "SuggestedPair",
    "customer_keys",
    "customers_without_keys",
    "dismiss_suggestion",
    "email_local",
    "find_candidates",
    "index_rows",
    "list_suggestions",
    "name_forms",
    "name_similarity",
    "phone_suffix",
    "profile_forms",
    "profile_of",
    "query_keys",
    "rebuild_match_keys",
    "record_suggestion",
    "refresh_match_keys",
    "scan_duplicates",
    "score_match",
    "settle_merge",
]

# ----------------------------------------------------------------------------- weights

NAME_WEIGHT = 0.85
PINYIN_FACTOR = 0.95
BIRTHDAY_AGREES = 12.0
BIRTHDAY_DIFFERS = -20.0
PHONE_AGREES = 15.0
EMAIL_AGREES = 10.0
ADDRESS_AGREES = 10.0
CITY_AGREES = 5.0

PER_KEY_LIMIT = 200
"""A lookup reads at most this many customers from one key's block …"""
CANDIDATE_LIMIT = 200
"""… and scores this many: those sharing the most (and the rarest) keys with the query."""
SCAN_MAX_BLOCK = 100
"""The batch scan compares within blocks of at most this many customers."""
COMMON_NAME_LIMIT = 3
"""The scan proposes records on an identical name alone only when so few share it."""
PHONE_SUFFIX = 7
HALF_KEY_MIN = 9
"""Names romanized to at least this many characters get the ``hp:``/``hs:`` half keys."""

_SIGNAL_PREFIXES = ("p:", "e:")
_SCAN_PREFIXES = ("a:", "b:", "e:", "n:", "p:")
"""The blocks the scan compares within: corroborating facts, and (rare) identical names."""


@dataclass(frozen=True)
class MatchThresholds:
    """Scores at which fuzzy evidence links (``link``) or only proposes (``suggest``)."""

    link: float = 92.0
    suggest: float = 75.0

    def __post_init__(self) -> None:
        if not 0 <= self.suggest <= self.link <= 100:
            raise ValueError("thresholds need 0 <= suggest <= link <= 100")


@dataclass
class MatchCandidate:
    """A customer who may be the person sought, with the score and what agreed (0-100 each)."""

    customer_id: int
    score: float
    reasons: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------- names

_COMPOUND_SURNAMES = frozenset({
    "欧阳", "司马", "诸葛", "上官", "东方", "皇甫", "尉迟", "公孙", "慕容", "长孙",
    "宇文", "司徒", "夏侯", "轩辕", "令狐", "端木", "独孤", "南宫", "西门", "百里",
    "呼延", "澹台", "太史", "申屠", "钟离", "闻人", "赫连", "万俟", "东郭", "公冶",
    "濮阳", "淳于", "单于",
})
_SURNAME_READINGS = {
    "单": "shan", "曾": "zeng", "解": "xie", "查": "zha", "区": "ou", "仇": "qiu", "朴": "piao",
    "覃": "qin", "乐": "yue", "盖": "ge", "缪": "miao", "种": "chong", "翟": "zhai", "召": "shao",
    "员": "yun", "长": "chang", "燕": "yan", "秘": "bi", "卜": "bu", "薄": "bo", "牟": "mou",
    "华": "hua", "任": "ren", "沈": "shen", "柏": "bai", "尉": "yu", "宿": "su", "繁": "po",
    "便": "pian", "都": "du", "重": "chong", "曲": "qu", "贾": "jia", "传": "chuan",
}
_HAN_RUN = r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+"
_TOKENS = re.compile(rf"{_HAN_RUN}|[^\W\d_]+")
_HAN_ONLY = re.compile(rf"^{_HAN_RUN}$")
_HAN_CHAR = re.compile(_HAN_RUN)
_GENERIC_LOCALS = frozenset({
    "info", "admin", "contact", "sales", "service", "support", "office", "mail", "email",
    "hello", "noreply", "no-reply", "kefu", "webmaster", "postmaster", "team", "test",
    "user", "billing", "hr", "job", "jobs",
})


@lru_cache(maxsize=32768)
def _char_pinyin(ch: str) -> str:
    """First dictionary reading of one character, toneless, ``ü`` as ``u`` (``吕`` → ``lu``).

    ``u``, not pypinyin's ``v``: names written in Latin letters (passports, e-mail
    display names) spell 吕 ``Lu``.
    """
    reading = pinyin_dict.get(ord(ch))
    if not reading:
        return ""
    first = reading.split(",", 1)[0]
    return "".join(c for c in unicodedata.normalize("NFD", first) if c.isascii())


def _pinyin(text: str, *, surname: bool = False) -> str:
    if surname and text in _SURNAME_READINGS:
        return _SURNAME_READINGS[text]
    return "".join(_char_pinyin(ch) for ch in text)


def _ascii_letters(word: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", word) if c.isascii() and c.isalpha())


@dataclass(frozen=True, slots=True)
class NameForms:
    """A name as compared: its characters, its romanized tokens sorted, its Chinese parts."""

    chars: str
    """Folded letters and characters without spaces: ``张伟明``, ``jonathansmith``."""
    roman: str
    """Romanized tokens (pinyin for Chinese), sorted, space-joined: ``weiming zhang``."""
    han: bool
    surname: str | None = None
    """For a Chinese personal name (2-4 characters): the surname, e.g. ``张`` or ``欧阳``."""
    given: str | None = None
    written: str = ""
    """Romanized tokens in the order written (``jonathan smith``), for the word keys."""


@lru_cache(maxsize=65536)
def name_forms(name: str | None) -> NameForms | None:
    """The comparable forms of a name, or ``None`` when it is no usable name.

    An e-mail address or a phone number used as a display name is no name, nor is a
    single character. A Chinese name of 2-4 characters is split into surname (compound
    surnames such as 欧阳 known) and given name, romanized as two tokens (``zhang
    weiming``), the way it is spelled in Latin letters; pinyin is the first dictionary
    reading of each character (surname readings such as 单 shan, 曾 zeng corrected).
    """
    if not name or "@" in name or looks_like_phone(name):
        return None
    tokens = _TOKENS.findall(fold(name))
    if not tokens:
        return None
    chars = "".join(tokens)
    if len(chars) < 2:
        return None
    han_runs = [t for t in tokens if _HAN_ONLY.match(t)]
    surname = given = None
    roman_tokens: list[str] = []
    if len(han_runs) == 1 and len(tokens) == 1 and 2 <= len(chars) <= 4:
        split = 2 if len(chars) >= 3 and chars[:2] in _COMPOUND_SURNAMES else 1
        surname, given = chars[:split], chars[split:]
        roman_tokens = [_pinyin(surname, surname=True), _pinyin(given)]
    else:
        for token in tokens:
            roman_tokens.append(_pinyin(token) if _HAN_ONLY.match(token) else _ascii_letters(token))
    kept = [t for t in roman_tokens if t]
    return NameForms(
        chars=chars,
        roman=" ".join(sorted(kept)),
        han=bool(han_runs),
        surname=surname,
        given=given,
        written=" ".join(kept),
    )


@lru_cache(maxsize=65536)
def _syllables(chars: str) -> tuple[str, ...]:
    """Pinyin syllables of an all-Chinese name, in order (surname readings applied)."""
    if not _HAN_ONLY.match(chars):
        return ()
    first = _SURNAME_READINGS.get(chars[0]) or _char_pinyin(chars[0])
    return (first, *(_char_pinyin(ch) for ch in chars[1:]))


def _similarity(a_chars: str, a_roman: str, a_han: bool, b_chars: str, b_roman: str) -> float:
    chars = fuzz.ratio(a_chars, b_chars)
    if a_han and _HAN_ONLY.match(b_chars) and _HAN_ONLY.match(a_chars):
        # Both Chinese: pinyin counts syllable by syllable (a homophone, not a near
        # spelling: 伟/文 are "wei"/"wen", different characters, different people).
        return max(chars, PINYIN_FACTOR * fuzz.ratio(_syllables(a_chars), _syllables(b_chars)))
    if not a_roman or not b_roman:
        return chars
    factor = PINYIN_FACTOR if a_han or _HAN_CHAR.search(b_chars) else 1.0
    return max(chars, factor * fuzz.ratio(a_roman, b_roman))


def name_similarity(a: NameForms | None, b: NameForms | None) -> float:
    """0-100: the better of the characters' ratio and the (discounted) pinyin ratio.

    Two Chinese names compare their pinyin syllable by syllable (张伟明/张伟名: every
    syllable alike, 95); a name in Latin letters against a Chinese one compares the
    spelled pinyin letter by letter (``Zhang Weimin``/张伟明: 91); Latin names compare
    their words sorted, so ``Smith, John`` is ``John Smith``.
    """
    if a is None or b is None:
        return 0.0
    return _similarity(a.chars, a.roman, a.han, b.chars, b.roman)


# ----------------------------------------------------------------------------- keys


def _key(prefix: str, value: str) -> str:
    return (prefix + value)[:MATCH_KEY_LENGTH]


def _half_keys(roman: str, *, tolerant: bool) -> list[str]:
    """``hp:``/``hs:`` keys: one typo leaves one half intact.

    Stored: the first ``L//2`` and the last ``L - L//2`` characters. A query may be one
    character longer or shorter than the stored name, so it asks for the halves of
    every length the stored name may have.
    """
    length = len(roman)
    lengths = (length - 1, length, length + 1) if tolerant else (length,)
    keys: list[str] = []
    for stored in lengths:
        if stored < HALF_KEY_MIN:
            continue
        head, tail = stored // 2, stored - stored // 2
        keys.append(_key("hp:", roman[:head]))
        keys.append(_key("hs:", roman[-tail:]))
    return list(dict.fromkeys(keys))


def _name_keys(forms: NameForms | None, *, tolerant: bool = False) -> list[str]:
    if forms is None:
        return []
    keys: list[str] = []
    if forms.roman:
        keys.append(_key("n:", forms.roman))
    if forms.surname and forms.given:
        keys.extend(_key("c:", forms.surname + ch) for ch in dict.fromkeys(forms.given))
        if len(forms.given) >= 2:
            keys.append(_key("g:", forms.given))
    if forms.roman:
        keys.extend(_half_keys(forms.roman, tolerant=tolerant))
    if forms.written and (not forms.han or forms.surname):
        keys.extend(_word_keys(forms, tolerant=tolerant))
    return keys


def _fragments(word: str) -> list[str]:
    """The first and last 2 letters of a word; also 1 (words of up to 3 letters) or 3
    (words of 6 or more, for smaller blocks: ``zhou|lij`` rather than ``zhou|li``).

    Any one typo, an inserted or dropped letter included, leaves one of them intact
    in a word of 4 or more letters; in shorter ones the single letters do. Two-letter
    fragments for every length, so two stored names one typo apart share one.
    """
    sizes = (1, 2) if len(word) <= 3 else (2,) if len(word) <= 5 else (2, 3)
    return list(dict.fromkeys(f for k in sizes for f in (word[:k], word[-k:])))


def _word_keys(forms: NameForms, *, tolerant: bool) -> list[str]:
    """``w:`` keys: each word with the first or last letters of another word.

    One typo changes one word; the other word is intact, and so is the start or the end
    of the changed one. Pairing the words both ways makes the keys independent of their
    order (``Smith, Jonathan``), and a common first name alone makes no big block. A
    Chinese name stores its surname's pairs only (``zhang|we``, ``zhang|ng``): typos of
    the surname are caught by the ``g:`` and ``hs:`` keys; a query pairs every way.
    """
    words = forms.written.split(" ")[:3]
    if forms.surname and not tolerant and len(words) == 2:  # written: surname, given name
        pairs = [(words[0], words[1])]
    else:
        pairs = [(a, b) for i, a in enumerate(words) for j, b in enumerate(words) if i != j]
    keys = [
        _key("w:", f"{word}|{fragment}")
        for word, other in pairs
        if word and other
        for fragment in _fragments(other)
    ]
    return list(dict.fromkeys(keys))


def phone_suffix(phone: str | None) -> str | None:
    """The last 7 digits of a phone number, or ``None`` if it has fewer."""
    digits = "".join(c for c in phone or "" if c.isdigit())
    return digits[-PHONE_SUFFIX:] if len(digits) >= PHONE_SUFFIX else None


def email_local(email: str | None) -> str | None:
    """The local part of an address without ``+tag``; ``None`` when short or generic."""
    if not email or "@" not in email:
        return None
    local = email.rsplit("@", 1)[0].split("+", 1)[0].strip().lower()
    if len(local) < 3 or local in _GENERIC_LOCALS:
        return None
    return local


def _signal_keys(
    birthday: date | None,
    phones: Iterable[str | None],
    emails: Iterable[str | None],
    city: str | None = None,
    street: str | None = None,
) -> list[str]:
    keys: list[str] = []
    if birthday is not None:
        keys.append(f"b:{birthday:%Y%m%d}")
    address = _address_key(city, street)
    if address:
        keys.append(_key("a:", address))
    for phone in phones:
        suffix = phone_suffix(phone)
        if suffix:
            keys.append("p:" + suffix)
    for email in emails:
        local = email_local(email)
        if local:
            keys.append(_key("e:", local))
    return keys


def customer_keys(
    name: str | None,
    birthday: date | None = None,
    phones: Iterable[str] = (),
    emails: Iterable[str] = (),
    *,
    city: str | None = None,
    street: str | None = None,
) -> list[str]:
    """The blocking keys stored for one customer (see the table in the module docstring)."""
    keys = _name_keys(name_forms(name)) + _signal_keys(birthday, phones, emails, city, street)
    return list(dict.fromkeys(keys))


def query_keys(
    name: str | None,
    birthday: date | None = None,
    phone: str | None = None,
    email: str | None = None,
    *,
    city: str | None = None,
    street: str | None = None,
) -> list[str]:
    """The keys a lookup reads: the stored kinds, pairing words every way, with half
    keys for a name one character longer or shorter."""
    keys = _name_keys(name_forms(name), tolerant=True) + _signal_keys(
        birthday, [phone], [email], city, street
    )
    return list(dict.fromkeys(keys))


# ----------------------------------------------------------------------------- scoring


def _city_key(city: str | None) -> str | None:
    """A city folded and romanized, its 市/省/city suffix dropped (``北京市`` → ``beijing``)."""
    if not city:
        return None
    folded = fold(city).replace(" ", "")
    for suffix in ("市", "省", "city"):
        if folded.endswith(suffix) and len(folded) > len(suffix) + 1:
            folded = folded[: -len(suffix)]
    if has_han(folded):
        folded = _pinyin(folded)
    return folded[:100] or None


def _street_key(street: str | None) -> str | None:
    """A street address folded to its letters, digits and characters."""
    if not street:
        return None
    return "".join(ch for ch in fold(street) if ch.isalnum())[:100] or None


def _address_key(city: str | None, street: str | None) -> str | None:
    """``city|street`` (city and street keys) when there is a street."""
    street_key = _street_key(street)
    return f"{_city_key(city) or ''}|{street_key}" if street_key else None


@dataclass(frozen=True, slots=True)
class Facts:
    """What is compared besides names and handles: birthday, city and street (normalized)."""

    birthday: date | None = None
    city: str | None = None
    street: str | None = None

    @classmethod
    def of(
        cls, birthday: date | None = None, city: str | None = None, street: str | None = None
    ) -> Facts:
        """Facts from raw values (city and street normalized as stored in profiles)."""
        return cls(birthday, _city_key(city), _street_key(street))


NO_FACTS = Facts()


def _birthday_points(a: date, b: date) -> tuple[float, float]:
    """Points and reason value: equal +12; a likely typo 0; clearly different −20."""
    if a == b:
        return BIRTHDAY_AGREES, 100.0
    near = (
        (a.month, a.day) == (b.month, b.day)
        or (a.year == b.year and (a.month, a.day) == (b.day, b.month))
        or (a.year, a.month) == (b.year, b.month)
    )
    return (0.0, 50.0) if near else (BIRTHDAY_DIFFERS, 0.0)


def _signal_points(
    score: float,
    a: Facts,
    b: Facts,
    phone_agrees: Any,
    email_agrees: Any,
    reasons: dict[str, float] | None,
) -> float:
    """``score`` plus the points of the other signals, clipped to 0-100; notes reasons."""
    if a.birthday is not None and b.birthday is not None:
        points, agreement = _birthday_points(a.birthday, b.birthday)
        score += points
        if reasons is not None:
            reasons["birthday"] = agreement
    if phone_agrees:
        score += PHONE_AGREES
        if reasons is not None:
            reasons["phone"] = 100.0
    if email_agrees:
        score += EMAIL_AGREES
        if reasons is not None:
            reasons["email"] = 100.0
    if a.city and a.city == b.city:
        score += CITY_AGREES
        if reasons is not None:
            reasons["city"] = 100.0
    if a.street and a.street == b.street and a.city == b.city:
        score += ADDRESS_AGREES
        if reasons is not None:
            reasons["address"] = 100.0
    return min(100.0, max(0.0, score))


def _score(
    query: NameForms | None,
    candidate: NameForms | None,
    a: Facts,
    b: Facts,
    phone_agrees: bool,
    email_agrees: bool,
) -> tuple[float, dict[str, float]]:
    name = name_similarity(query, candidate)
    reasons = {"name": round(name, 1)}
    score = _signal_points(NAME_WEIGHT * name, a, b, phone_agrees, email_agrees, reasons)
    return score, reasons


def score_match(
    query: NameForms | None,
    candidate: NameForms | None,
    *,
    birthdays: tuple[date | None, date | None] = (None, None),
    cities: tuple[str | None, str | None] = (None, None),
    streets: tuple[str | None, str | None] = (None, None),
    phone_agrees: bool = False,
    email_agrees: bool = False,
) -> tuple[float, dict[str, float]]:
    """The score of one pair (formula in the module docstring) and what agreed, 0-100 each."""
    a = Facts.of(birthdays[0], cities[0], streets[0])
    b = Facts.of(birthdays[1], cities[1], streets[1])
    score, reasons = _score(query, candidate, a, b, phone_agrees, email_agrees)
    return round(score, 1), reasons


# ----------------------------------------------------------------------------- key upkeep

_K = CustomerMatchKey.__table__
_P = CustomerMatchProfile.__table__
_C = Customer.__table__
_I = CustomerIdentity.__table__
_WATCHED = (
    "display_name", "birthday", "city", "street", "deleted_at", "erased_at", "merged_into_id"
)
_KEYED_KINDS = (IdentityKind.PHONE, IdentityKind.EMAIL)


def profile_of(
    name: str | None,
    birthday: date | None = None,
    city: str | None = None,
    street: str | None = None,
) -> dict[str, Any]:
    """The match profile columns of a customer (see ``CustomerMatchProfile``)."""
    forms = name_forms(name)
    return {
        "name_chars": forms.chars[:200] if forms else "",
        "name_roman": forms.roman[:200] if forms else "",
        "birthday": birthday,
        "city": _city_key(city),
        "street": _street_key(street),
    }


def index_rows(
    customers: Iterable[Any], identities: Iterable[Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Key rows and profile rows of customers ``(id, name, birthday, city, street,
    deleted_at)`` with their identities ``(customer_id, kind, value)``; none for deleted
    customers."""
    phones: dict[int, list[str]] = {}
    emails: dict[int, list[str]] = {}
    for customer_id, kind, value in identities:
        if kind == IdentityKind.PHONE:
            phones.setdefault(customer_id, []).append(value)
        elif kind == IdentityKind.EMAIL:
            emails.setdefault(customer_id, []).append(value)
    keys: list[dict[str, Any]] = []
    profiles: list[dict[str, Any]] = []
    for customer_id, name, birthday, city, street, deleted_at in customers:
        if deleted_at is not None:  # deleted, merged away or erased: not a candidate
            continue
        profiles.append(
            {"customer_id": customer_id, **profile_of(name, birthday, city, street)}
        )
        for key in customer_keys(
            name, birthday, phones.get(customer_id, ()), emails.get(customer_id, ()),
            city=city, street=street,
        ):
            keys.append({"key": key, "customer_id": customer_id})
    return keys, profiles


def refresh_match_keys(connection: Connection, customer_ids: Iterable[int]) -> int:
    """Recompute the keys and profiles of some customers from the database (synchronous).

    Customers that are gone, deleted, merged away or erased are left without either.
    Returns the number of keys written.
    """
    ids = sorted(set(customer_ids))
    written = 0
    for start in range(0, len(ids), 2000):
        chunk = ids[start : start + 2000]
        customers = connection.execute(
            select(
                _C.c.id, _C.c.display_name, _C.c.birthday, _C.c.city, _C.c.street,
                _C.c.deleted_at,
            ).where(_C.c.id.in_(chunk))
        ).all()
        # Kinds are filtered here, not in SQL: next to ``kind IN`` the planners may pick
        # the (kind, value) index and read every phone and e-mail on each batch.
        keyed = {kind.value for kind in _KEYED_KINDS} | set(_KEYED_KINDS)
        identities = [
            row
            for row in connection.execute(
                select(_I.c.customer_id, _I.c.kind, _I.c.value).where(
                    _I.c.customer_id.in_(chunk)
                )
            ).all()
            if row.kind in keyed
        ]
        keys, profiles = index_rows(customers, identities)
        connection.execute(delete(_K).where(_K.c.customer_id.in_(chunk)))
        connection.execute(delete(_P).where(_P.c.customer_id.in_(chunk)))
        if keys:
            connection.execute(insert(_K), keys)
        if profiles:
            connection.execute(insert(_P), profiles)
        written += len(keys)
    return written


def _changed(obj: Any, names: Sequence[str]) -> bool:
    state = inspect(obj)
    return any(state.attrs[name].history.has_changes() for name in names)


def _customers_to_refresh(session: Session) -> set[int]:
    ids: set[int] = set()
    for obj in session.new:
        if isinstance(obj, Customer):
            ids.add(obj.id)
        elif isinstance(obj, CustomerIdentity):
            ids.add(obj.customer_id)
    for obj in session.dirty:
        if isinstance(obj, Customer) and _changed(obj, _WATCHED):
            ids.add(obj.id)
            if obj.merged_into_id is not None:  # merge moved identities to the survivor
                ids.add(obj.merged_into_id)
        elif isinstance(obj, CustomerIdentity) and _changed(
            obj, ("customer_id", "kind", "value")
        ):
            history = inspect(obj).attrs.customer_id.history
            ids.update(v for v in (*history.added, *history.deleted) if v is not None)
            ids.add(obj.customer_id)
    for obj in session.deleted:
        if isinstance(obj, (Customer, CustomerIdentity)):
            ids.add(obj.id if isinstance(obj, Customer) else obj.customer_id)
    ids.discard(None)  # type: ignore[arg-type]
    return ids


def _after_flush(session: Session, _flush_context: Any) -> None:
    """Keep match keys in step with customers and their phones and e-mails."""
    ids = _customers_to_refresh(session)
    if ids:
        refresh_match_keys(session.connection(), ids)


if not event.contains(Session, "after_flush", _after_flush):
    event.listen(Session, "after_flush", _after_flush)


async def rebuild_match_keys(
    session: AsyncSession,
    customer_ids: Iterable[int] | None = None,
    *,
    batch_size: int = 2000,
) -> int:
    """Recompute the keys of the given customers, or of every customer (``None``).

    For writers that bypass the ORM (bulk CSV import, data migrations): call it in the
    same transaction after the insert. A full rebuild also drops keys of customers that
    no longer exist. Returns the number of customers processed.
    """
    if customer_ids is not None:
        ids = list(customer_ids)
        await session.run_sync(lambda s: refresh_match_keys(s.connection(), ids))
        return len(ids)
    done = 0
    last = 0
    while True:
        batch = list(
            await session.scalars(
                select(Customer.id)
                .where(Customer.id > last)
                .order_by(Customer.id)
                .limit(batch_size)
            )
        )
        if not batch:
            for table in (_K, _P):
                await session.execute(
                    delete(table).where(
                        ~select(_C.c.id).where(_C.c.id == table.c.customer_id).exists()
                    )
                )
            return done
        await session.run_sync(lambda s, b=batch: refresh_match_keys(s.connection(), b))
        done += len(batch)
        last = batch[-1]


async def customers_without_keys(session: AsyncSession) -> list[int]:
    """Active customers missing from the index (created before it, or by a bulk insert)."""
    indexed = select(_P.c.customer_id).where(_P.c.customer_id == Customer.id).exists()
    rows = await session.scalars(
        select(Customer.id).where(Customer.deleted_at.is_(None), ~indexed).order_by(Customer.id)
    )
    return list(rows)


# ----------------------------------------------------------------------------- lookup


@lru_cache(maxsize=256)
def _candidates_sql(count: int, phone_at: int, email_at: int) -> TextualSelect:
    """One statement: read the query's blocks, rank their customers, return the best.

    Each key ``:k<i>`` contributes at most ``:cap`` customers. A customer's weight is
    the sum of ``1 / block size`` over the keys it shares with the query (a rare key
    says more than a common one, sharing several more than one); the ``:top`` heaviest
    come back with their match profiles (names as compared, birthday, city).
    Plain SQL: building it with the expression language costs more than running it.
    """
    parts = " UNION ALL ".join(
        f"SELECT * FROM (SELECT {i} AS i, customer_id FROM customer_match_keys"
        f" WHERE key = :k{i} LIMIT :cap) AS h{i}"
        for i in range(count)
    )
    sql = f"""
        WITH hits AS ({parts}),
        sized AS (
            SELECT i, customer_id, count(*) OVER (PARTITION BY i) AS size
            FROM hits WHERE customer_id <> :exclude
        ),
        ranked AS (
            SELECT customer_id,
                   sum(1.0 / size) AS weight,
                   max(CASE WHEN i = {phone_at} THEN 1 ELSE 0 END) AS phone_hit,
                   max(CASE WHEN i = {email_at} THEN 1 ELSE 0 END) AS email_hit
            FROM sized GROUP BY customer_id
            ORDER BY weight DESC, customer_id LIMIT :top
        )
        SELECT p.customer_id, p.name_chars, p.name_roman, p.birthday, p.city, p.street,
               r.phone_hit, r.email_hit
        FROM ranked r JOIN customer_match_profiles p ON p.customer_id = r.customer_id
    """
    return (
        text(sql)
        .bindparams(
            bindparam("cap", type_=Integer),
            bindparam("top", type_=Integer),
            bindparam("exclude", type_=Integer),
        )
        .columns(
            customer_id=Integer, name_chars=String, name_roman=String, birthday=Date,
            city=String, street=String, phone_hit=Integer, email_hit=Integer,
        )
    )


def profile_forms(chars: str, roman: str) -> NameForms | None:
    """The comparable forms of a name as stored in a match profile."""
    if not chars:
        return None
    return NameForms(chars=chars, roman=roman, han=bool(_HAN_CHAR.search(chars)))


async def find_candidates(
    session: AsyncSession,
    *,
    name: str | None,
    phone: str | None = None,
    email: str | None = None,
    birthday: date | None = None,
    city: str | None = None,
    street: str | None = None,
    exclude_id: int | None = None,
    limit: int = 5,
    min_score: float = 0.0,
) -> list[MatchCandidate]:
    """Customers who may be the person described, best first (``limit`` of them).

    One statement reads the customers behind the query's blocking keys (at most
    ``PER_KEY_LIMIT`` per key) and returns the ``CANDIDATE_LIMIT`` that share the most,
    and the rarest, keys with the query; each is scored with the formula of
    ``score_match`` and those at or above ``min_score`` are kept. Only active customers
    (not deleted, merged away or erased) are candidates. Stored names are compared in
    the forms kept in their match profiles (no pinyin conversion at query time), and
    the cost does not grow with the number of customers.
    """
    forms = name_forms(name)
    keys = query_keys(name, birthday, phone, email, city=city, street=street)
    if not keys:
        return []
    suffix, local = phone_suffix(phone), email_local(email)
    phone_key = f"p:{suffix}" if suffix else None
    email_key = _key("e:", local) if local else None
    statement = _candidates_sql(
        len(keys),
        keys.index(phone_key) if phone_key in keys else -1,
        keys.index(email_key) if email_key in keys else -1,
    )
    params: dict[str, Any] = {f"k{i}": key for i, key in enumerate(keys)}
    params.update(cap=PER_KEY_LIMIT, top=CANDIDATE_LIMIT, exclude=exclude_id or -1)
    rows = (await session.execute(statement, params)).all()
    facts = Facts.of(birthday, city, street)
    signals = facts != NO_FACTS or phone_key is not None or email_key is not None
    # The name similarity inline (this loop is the hot path), plus the other signals when
    # the query has any; reasons are built for the best few only.
    q_chars, q_roman, q_han = (forms.chars, forms.roman, forms.han) if forms else ("", "", False)
    q_syllables = _syllables(q_chars) if forms else ()
    ratio, all_han = fuzz.ratio, _HAN_ONLY.match
    ranked: list[tuple[float, int, int]] = []
    for index, row in enumerate(rows):
        customer_id, chars, roman, cand_birthday, cand_city, cand_street, phone_hit, email_hit = (
            row
        )
        score = 0.0
        if not chars or forms is None:
            pass
        elif q_syllables and all_han(chars):  # as in _similarity, without re-checking q
            score = NAME_WEIGHT * max(
                ratio(q_chars, chars), PINYIN_FACTOR * ratio(q_syllables, _syllables(chars))
            )
        else:
            score = NAME_WEIGHT * _similarity(q_chars, q_roman, q_han, chars, roman)
        if signals:
            score = _signal_points(
                score, facts, Facts(cand_birthday, cand_city, cand_street),
                phone_hit, email_hit, None,
            )
        if score >= min_score:
            ranked.append((-score, customer_id, index))
    results = []
    for _, customer_id, index in heapq.nsmallest(limit, ranked):
        _, chars, roman, cand_birthday, cand_city, cand_street, phone_hit, email_hit = rows[index]
        score, reasons = _score(
            forms, profile_forms(chars, roman), facts,
            Facts(cand_birthday, cand_city, cand_street), bool(phone_hit), bool(email_hit),
        )
        results.append(MatchCandidate(customer_id, round(score, 1), reasons))
    return results


# ----------------------------------------------------------------------------- suggestions


def _insert_ignoring_duplicates(session: AsyncSession | Session, rows: list[dict[str, Any]]) -> Any:
    dialect = session.get_bind().dialect.name
    maker = pg_insert if dialect == "postgresql" else sqlite_insert
    return maker(DuplicateSuggestion).values(rows).on_conflict_do_nothing(
        index_elements=["customer_id", "candidate_id"]
    )


def _suggestion_row(
    low: int, high: int, score: float, reasons: dict[str, float], source: str
) -> dict[str, Any]:
    return {
        "customer_id": low,
        "candidate_id": high,
        "score": float(score),
        "reasons": {k: float(v) for k, v in reasons.items()},
        "source": source,
        "status": "open",
        "created_at": utcnow(),
    }


_CORROBORATING = ("phone", "email", "birthday", "address")


def corroborated(candidate: MatchCandidate) -> bool:
    """Whether more than a name backs the match: an agreeing phone, e-mail, birthday or
    street address (a shared city is too common to count)."""
    return any(candidate.reasons.get(reason, 0.0) >= 100.0 for reason in _CORROBORATING)


def worth_suggesting(
    candidates: list[MatchCandidate],
    threshold: float,
    *,
    common_name_limit: int = COMMON_NAME_LIMIT,
    limit: int = 5,
) -> list[MatchCandidate]:
    """The candidates (best first) to propose as possible duplicates of a new record.

    The rule of the batch scan, applied to one record: candidates at or above
    ``threshold`` whose match rests on more than the name are proposed; those that
    rest on the name alone only when at most ``common_name_limit`` of them reach the
    threshold. A new lead called 张伟 or John Smith is not proposed as a duplicate of
    every 张伟 or John Smith on file — among many customers that is the rule, not a sign
    of one person. ``candidates`` should hold ``limit + common_name_limit`` of the best,
    so that the name-only ones can be counted.
    """
    strong = [c for c in candidates if c.score >= threshold]
    name_only = [c for c in strong if not corroborated(c)]
    if len(name_only) > common_name_limit:
        strong = [c for c in strong if corroborated(c)]
    return strong[:limit]


async def record_suggestion(
    session: AsyncSession, customer_id: int, candidate: MatchCandidate, *, source: str
) -> DuplicateSuggestion | None:
    """Record that two customers may be one person, for an agent to confirm or dismiss.

    One row per unordered pair: the lower id is stored as ``customer_id`` and the higher
    as ``candidate_id``, so concurrent writers (routing workers, the scan) cannot make
    two. A repeat raises the score of the open suggestion if the new evidence is
    stronger. Returns the open suggestion, or ``None`` when the pair is one customer or
    an agent already resolved it (dismissed or merged: that decision stands).
    """
    low, high = sorted((customer_id, candidate.customer_id))
    if low == high:
        return None
    where = (DuplicateSuggestion.customer_id == low, DuplicateSuggestion.candidate_id == high)
    row = _suggestion_row(low, high, candidate.score, candidate.reasons, source)
    await session.execute(_insert_ignoring_duplicates(session, [row]))
    suggestion = await session.scalar(
        select(DuplicateSuggestion).where(*where).execution_options(populate_existing=True)
    )
    if suggestion is None or suggestion.status != "open":
        return None
    if candidate.score > suggestion.score:
        suggestion.score = float(candidate.score)
        suggestion.reasons = dict(row["reasons"])
        await session.flush()
    return suggestion


async def list_suggestions(
    session: AsyncSession, *, status: str | None = "open", limit: int = 50
) -> list[DuplicateSuggestion]:
    """Suggestions with a status (``None``: all), strongest first."""
    stmt = select(DuplicateSuggestion).order_by(
        DuplicateSuggestion.score.desc(), DuplicateSuggestion.id
    )
    if status:
        stmt = stmt.where(DuplicateSuggestion.status == status)
    return list(await session.scalars(stmt.limit(limit)))


async def dismiss_suggestion(
    session: AsyncSession, suggestion_id: int, *, actor: str
) -> DuplicateSuggestion:
    """Mark a suggestion as not the same person; the scan will not propose the pair again."""
    from crm_core.errors import NotFoundError, StateError

    suggestion = await session.get(DuplicateSuggestion, suggestion_id)
    if suggestion is None:
        raise NotFoundError("duplicate suggestion", suggestion_id)
    if suggestion.status != "open":
        raise StateError(f"suggestion #{suggestion_id} is already {suggestion.status}")
    await session.execute(
        update(DuplicateSuggestion)
        .where(DuplicateSuggestion.id == suggestion_id)
        .values(status="dismissed", resolved_at=utcnow(), resolved_by=actor)
    )
    await session.refresh(suggestion)
    return suggestion


async def settle_merge(
    session: AsyncSession, survivor_id: int, merged_id: int, *, actor: str
) -> None:
    """Before ``merged_id`` is folded into ``survivor_id``: its match keys and suggestions.

    The merged record's keys are dropped (the survivor's are recomputed when the merge
    flushes). A suggestion between the two is marked ``merged``; the merged record's
    other suggestions move to the survivor unless the survivor already has one with the
    same customer (then the merged one is deleted). ``merge_customers`` must call this
    and leave ``customer_match_keys`` and ``duplicate_suggestions`` out of its generic
    move of customer references (both keep a unique key on the customer column).
    """
    await session.execute(delete(_K).where(_K.c.customer_id == merged_id))
    await session.execute(delete(_P).where(_P.c.customer_id == merged_id))
    low, high = sorted((survivor_id, merged_id))
    suggestions = DuplicateSuggestion.__table__
    await session.execute(
        update(suggestions)
        .where(suggestions.c.customer_id == low, suggestions.c.candidate_id == high)
        .values(status="merged", resolved_at=utcnow(), resolved_by=actor)
    )
    rows = await session.execute(
        select(suggestions.c.id, suggestions.c.customer_id, suggestions.c.candidate_id).where(
            (suggestions.c.customer_id == merged_id) | (suggestions.c.candidate_id == merged_id),
            ~((suggestions.c.customer_id == low) & (suggestions.c.candidate_id == high)),
        )
    )
    for suggestion_id, one, other in rows.all():
        third = other if one == merged_id else one
        if third == survivor_id:
            continue
        new_low, new_high = sorted((survivor_id, third))
        taken = await session.scalar(
            select(suggestions.c.id).where(
                suggestions.c.customer_id == new_low, suggestions.c.candidate_id == new_high
            )
        )
        if taken is None:
            await session.execute(
                update(suggestions)
                .where(suggestions.c.id == suggestion_id)
                .values(customer_id=new_low, candidate_id=new_high)
            )
        else:
            await session.execute(delete(suggestions).where(suggestions.c.id == suggestion_id))


# ----------------------------------------------------------------------------- batch scan


@dataclass
class SuggestedPair:
    """Two customers the scan found alike."""

    customer_id: int
    candidate_id: int
    score: float
    reasons: dict[str, float]
    names: tuple[str, str]


@dataclass
class ScanReport:
    """What a duplicate scan did."""

    customers: int = 0
    keys_rebuilt: int = 0
    blocks: int = 0
    comparisons: int = 0
    pairs_found: int = 0
    above_link: int = 0
    suggestions_created: int = 0
    suggestions_known: int = 0
    """Pairs that already had a suggestion (open, dismissed or merged): left as they were."""
    seconds: float = 0.0
    top: list[SuggestedPair] = field(default_factory=list)


@dataclass(slots=True)
class _Member:
    id: int
    forms: NameForms | None
    facts: Facts


def _prefix_condition(prefix: str, dialect: str) -> Any:
    """Keys of one namespace. SQLite compares bytes, so a range reads just that part of
    the index; other databases may collate punctuation away, so only LIKE is safe."""
    like = _K.c.key.like(prefix + "%")
    if dialect != "sqlite":
        return like
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return (_K.c.key >= prefix) & (_K.c.key < upper) & like


async def _shared_signals(
    session: AsyncSession, max_block: int, dialect: str
) -> dict[int, set[str]]:
    """customer id → the phone-suffix and e-mail keys it shares with someone."""
    shared: dict[int, set[str]] = {}
    for prefix in _SIGNAL_PREFIXES:
        blocks = (
            select(_K.c.key)
            .where(_prefix_condition(prefix, dialect))
            .group_by(_K.c.key)
            .having(func.count().between(2, max_block))
        )
        rows = await session.execute(
            select(_K.c.key, _K.c.customer_id).where(_K.c.key.in_(blocks))
        )
        for key, customer_id in rows:
            shared.setdefault(customer_id, set()).add(key)
    return shared


class _BlockScorer:
    """Scores the pairs inside one block; cheap C-level name filters first."""

    def __init__(self, min_score: float, shared: dict[int, set[str]]) -> None:
        self.min_score = min_score
        self.shared = shared
        self.comparisons = 0

    def _cutoff(self, key: str, member: _Member) -> float:
        """The name similarity below which no pair of ``member`` in this block can pass."""
        best = CITY_AGREES + (ADDRESS_AGREES if member.facts.street else 0.0)
        if key.startswith("b:"):
            best += BIRTHDAY_AGREES
        if member.id in self.shared:
            best += PHONE_AGREES + EMAIL_AGREES
        return max(0.0, (self.min_score - best) / NAME_WEIGHT - 0.5)

    def pairs(self, key: str, members: list[_Member]) -> Iterable[tuple[_Member, _Member]]:
        if key.startswith(("p:", "e:", "n:")) or len(members) <= 3:
            for i, a in enumerate(members):
                for b in members[i + 1 :]:
                    yield a, b
            return
        chars = [m.forms.chars if m.forms else "" for m in members]
        romans = [m.forms.roman if m.forms else "" for m in members]
        syllables = [_syllables(c) for c in chars]
        for i, a in enumerate(members):
            rest = i + 1
            if rest >= len(members):
                break
            if a.forms is None:
                if a.id in self.shared:
                    yield from ((a, b) for b in members[rest:])
                continue
            cutoff = self._cutoff(key, a)
            # A superset of the pairs whose name similarity can reach the cutoff: by
            # characters, by spelled pinyin, or by pinyin syllables (scored exactly below).
            picked: set[int] = set()
            for query, choices in (
                (a.forms.chars, chars), (a.forms.roman, romans), (syllables[i], syllables)
            ):
                if query:
                    picked.update(
                        j for _, _, j in process.extract(
                            query, choices[rest:], scorer=fuzz.ratio,
                            score_cutoff=cutoff, limit=None,
                        )
                    )
            for j in sorted(picked):
                yield a, members[rest + j]

    def score(self, a: _Member, b: _Member) -> tuple[float, dict[str, float]] | None:
        self.comparisons += 1
        signals_a = self.shared.get(a.id)
        signals_b = self.shared.get(b.id) if signals_a else None
        common = signals_a & signals_b if signals_a and signals_b else set()
        score, reasons = _score(
            a.forms, b.forms, a.facts, b.facts,
            any(k.startswith("p:") for k in common),
            any(k.startswith("e:") for k in common),
        )
        score = round(score, 1)
        return (score, reasons) if score >= self.min_score else None


async def scan_duplicates(
    database: Database,
    *,
    thresholds: MatchThresholds | None = None,
    min_score: float | None = None,
    batch_size: int = 1000,
    max_block: int = SCAN_MAX_BLOCK,
    common_name_limit: int = COMMON_NAME_LIMIT,
    top: int = 20,
    progress: Callable[[int, int], None] | None = None,
) -> ScanReport:
    """Find likely duplicates among all active customers and record them as suggestions.

    Among a million people, near-identical names of different people are the rule, so
    the scan asks for corroboration: it compares customers who share a birthday, a
    phone suffix, an e-mail local part or a street address (blocks of at most
    ``max_block``), and those who share an identical or homophone name that at most
    ``common_name_limit`` customers carry. Within each block pairs are filtered with
    rapidfuzz and scored with the formula of ``score_match`` (name, birthday, address,
    phone, e-mail); pairs at or above ``min_score`` (default: the suggest threshold)
    become suggestions with source ``scan``, one per pair, existing ones (also dismissed
    ones) left as they are. Nothing is merged. Blocks are read in key order,
    ``batch_size`` per transaction, so memory stays flat; customers missing from the
    index (created before it, or by a bulk insert) are indexed first.
    ``progress(done, total)`` is called after each batch of blocks.
    """
    thresholds = thresholds or MatchThresholds()
    floor = thresholds.suggest if min_score is None else min_score
    report = ScanReport()
    started = time.perf_counter()
    async with database.transaction() as session:
        missing = await customers_without_keys(session)
    for start in range(0, len(missing), 5000):
        async with database.transaction() as session:
            await rebuild_match_keys(session, missing[start : start + 5000])
    report.keys_rebuilt = len(missing)

    dialect = database.engine.dialect.name
    namespaces = []
    async with database.sessions() as session:
        report.customers = await session.scalar(
            select(func.count()).select_from(_C).where(_C.c.deleted_at.is_(None))
        ) or 0
        total = 0
        for prefix in _SCAN_PREFIXES:
            largest = common_name_limit if prefix == "n:" else max_block
            blocks = (
                select(_K.c.key)
                .where(_prefix_condition(prefix, dialect))
                .group_by(_K.c.key)
                .having(func.count().between(2, largest))
            )
            total += await session.scalar(select(func.count()).select_from(blocks.subquery())) or 0
            namespaces.append(blocks)
        shared = await _shared_signals(session, max_block, dialect)
    scorer = _BlockScorer(floor, shared)
    seen: set[tuple[int, int]] = set()
    best: list[tuple[float, int, int, SuggestedPair]] = []
    done = 0
    for blocks in namespaces:
        last_key = ""
        while True:
            async with database.transaction() as session:
                keys = list(
                    await session.scalars(
                        blocks.where(_K.c.key > last_key).order_by(_K.c.key).limit(batch_size)
                    )
                )
                if not keys:
                    break
                last_key = keys[-1]
                rows = await session.execute(
                    select(
                        _K.c.key, _P.c.customer_id, _P.c.name_chars, _P.c.name_roman,
                        _P.c.birthday, _P.c.city, _P.c.street,
                    )
                    .join(_P, _P.c.customer_id == _K.c.customer_id)
                    .where(_K.c.key.in_(keys))
                    .order_by(_K.c.key, _P.c.customer_id)
                )
                members: dict[str, list[_Member]] = {}
                for key, customer_id, chars, roman, birthday, city, street in rows:
                    members.setdefault(key, []).append(
                        _Member(customer_id, profile_forms(chars, roman),
                                Facts(birthday, city, street))
                    )
                found: dict[tuple[int, int], tuple[float, dict[str, float]]] = {}
                for key, block in members.items():
                    for a, b in scorer.pairs(key, block):
                        pair = (a.id, b.id) if a.id < b.id else (b.id, a.id)
                        if pair in seen or pair in found:
                            continue
                        scored = scorer.score(a, b)
                        if scored is not None:
                            found[pair] = scored
                await _record_scan_pairs(session, found, report)
            for pair, (score, reasons) in found.items():
                seen.add(pair)
                report.pairs_found += 1
                if score >= thresholds.link:
                    report.above_link += 1
                entry = (score, -pair[0], -pair[1], SuggestedPair(*pair, score, reasons, ("", "")))
                if len(best) < top:
                    heapq.heappush(best, entry)
                elif top:
                    heapq.heappushpop(best, entry)
            report.blocks += len(keys)
            done += len(keys)
            if progress is not None:
                progress(done, total)
    report.comparisons = scorer.comparisons
    report.top = [entry[3] for entry in sorted(best, key=lambda e: (-e[0], -e[1], -e[2]))]
    if report.top:
        async with database.sessions() as session:
            ids = {p.customer_id for p in report.top} | {p.candidate_id for p in report.top}
            names = dict(
                (await session.execute(
                    select(_C.c.id, _C.c.display_name).where(_C.c.id.in_(ids))
                )).all()
            )
        for pair in report.top:
            pair.names = (names.get(pair.customer_id, ""), names.get(pair.candidate_id, ""))
    report.seconds = round(time.perf_counter() - started, 2)
    if progress is not None and done < total:
        progress(total, total)
    return report


async def _record_scan_pairs(
    session: AsyncSession,
    found: dict[tuple[int, int], tuple[float, dict[str, float]]],
    report: ScanReport,
) -> None:
    if not found:
        return
    pairs = list(found)
    known: set[tuple[int, int]] = set()
    for start in range(0, len(pairs), 500):
        chunk = pairs[start : start + 500]
        both_ways = chunk + [(b, a) for a, b in chunk]
        rows = await session.execute(
            select(DuplicateSuggestion.customer_id, DuplicateSuggestion.candidate_id).where(
                tuple_(DuplicateSuggestion.customer_id, DuplicateSuggestion.candidate_id).in_(
                    both_ways
                )
            )
        )
        known.update((min(a, b), max(a, b)) for a, b in rows)
    new = [
        _suggestion_row(low, high, found[(low, high)][0], found[(low, high)][1], "scan")
        for low, high in pairs
        if (low, high) not in known
    ]
    for start in range(0, len(new), 500):
        await session.execute(_insert_ignoring_duplicates(session, new[start : start + 500]))
    report.suggestions_known += len(known)
    report.suggestions_created += len(new)
