"""Normalization of the handles and names customers are found by.

E-mail through ``email-validator``, phone numbers through ``phonenumbers`` (E.164,
with a default region for numbers typed without ``+``), names into a search key
that holds the characters and, for Chinese, their toneless pinyin.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pypinyin import Style, lazy_pinyin

from crm_core.errors import ValidationError

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_PHONE_LIKE = re.compile(r"^\(?\+?[\d\s\-().]{5,}$")  # also "(+86) 138 …"
_SPACES = re.compile(r"\s+")


def normalize_email(value: str, *, field: str = "email") -> str:
    """Validate an address and return it lower-cased; raise ``ValidationError`` if bad."""
    raw = (value or "").strip()
    try:
        result = validate_email(raw, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        raise ValidationError(field, value, str(exc)) from None
    return result.normalized.lower()


def is_supported_region(region: str) -> bool:
    """Whether ``region`` is a two-letter region phonenumbers knows (e.g. ``CN``)."""
    return region.upper() in phonenumbers.SUPPORTED_REGIONS


def normalize_phone(value: str, region: str, *, field: str = "phone") -> str:
    """Parse a phone number as typed (``138 0013 8000``, ``+86-138…``, ``0086…``) into E.164."""
    raw = (value or "").strip()
    if not raw:
        raise ValidationError(field, value, "empty phone number")
    try:
        number = phonenumbers.parse(raw, region.upper())
    except phonenumbers.NumberParseException as exc:
        raise ValidationError(field, value, f"not a phone number ({exc._msg})") from None
    if not phonenumbers.is_valid_number(number):
        raise ValidationError(field, value, f"not a valid phone number (default region {region})")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def try_normalize_phone(value: str, region: str) -> str | None:
    """E.164 for a valid number, else ``None``."""
    try:
        return normalize_phone(value, region)
    except ValidationError:
        return None


def looks_like_phone(text: str) -> bool:
    """Whether a search term is made of digits and phone punctuation only."""
    return bool(_PHONE_LIKE.match(text.strip())) and sum(c.isdigit() for c in text) >= 5


def phone_digits(text: str) -> str:
    """Only the digits of ``text`` (for partial phone search)."""
    return "".join(c for c in text if c.isdigit())


def has_han(text: str) -> bool:
    """Whether ``text`` contains Chinese characters."""
    return bool(_HAN.search(text))


def fold(text: str) -> str:
    """Unicode-normalized, case-folded, single-spaced text."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


@lru_cache(maxsize=65536)
def pinyin_of(text: str) -> str:
    """Toneless pinyin of the Chinese characters in ``text``, syllables space-separated."""
    return " ".join(
        s for s in lazy_pinyin(text, style=Style.NORMAL, errors="ignore") if s.strip()
    )


def name_key(*names: str | None) -> str:
    """The search key of a customer's names: folded text, and pinyin spelled two ways.

    ``张伟`` gives ``张伟 zhang wei zhangwei``, so a search for ``张``, ``zhang``
    or ``zhangwei`` finds it; Latin names are kept folded, with and without spaces.
    """
    parts: list[str] = []
    for name in names:
        if not name:
            continue
        folded = fold(name)
        if folded and folded not in parts:
            parts.append(folded)
        compact = folded.replace(" ", "")
        if compact != folded and compact not in parts:
            parts.append(compact)
        if has_han(folded):
            py = pinyin_of(folded)
            for variant in (py, py.replace(" ", "")):
                if variant and variant not in parts:
                    parts.append(variant)
    return " | ".join(parts)[:1000]


def search_tokens(query: str) -> list[str]:
    """Terms of a name query, each to be found in the name key."""
    return [t for t in fold(query).replace("|", " ").split(" ") if t]
