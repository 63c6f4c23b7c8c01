"""Decoding text the way real mail is written, not the way it is declared.

Chinese mail routinely declares ``gb2312`` while using GBK-only characters, sends 8-bit
bodies with no charset at all, and puts raw GBK or UTF-8 bytes into headers. Declared
names are therefore widened to their supersets (GB2312/GBK → GB18030, Big5 → Big5-HKSCS,
ISO-8859-1 → Windows-1252), and text whose charset is missing or wrong is decoded by
trying the charsets our customers actually use, strictest first.
"""

from __future__ import annotations

import codecs

SUPERSETS: dict[str, str] = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "gb_2312-80": "gb18030",
    "gb_2312": "gb18030",
    "euc-cn": "gb18030",
    "x-euc-cn": "gb18030",
    "cp936": "gb18030",
    "ms936": "gb18030",
    "windows-936": "gb18030",
    "chinese": "gb18030",
    "csgb2312": "gb18030",
    "hz-gb-2312": "hz",
    "big5": "big5hkscs",
    "x-big5": "big5hkscs",
    "cp950": "big5hkscs",
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "us-ascii": "utf-8",
    "ascii": "utf-8",
    "ansi_x3.4-1968": "utf-8",
    "utf8": "utf-8",
    "unicode-1-1-utf-7": "utf-7",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "shift_jis": "cp932",
    "x-sjis": "cp932",
    "windows-31j": "cp932",
}
"""Declared charset → the codec to decode it with (a superset where senders overreach)."""

SEVEN_BIT_CODECS = frozenset(
    {"iso2022_jp", "iso2022_jp_1", "iso2022_jp_2", "iso2022_jp_2004", "iso2022_jp_3",
     "iso2022_jp_ext", "iso2022_kr", "utf_7", "hz"}
)
"""Charsets whose text is pure ASCII bytes but not ASCII text (escape sequences)."""

FALLBACKS: tuple[str, ...] = ("utf-8", "gb18030", "big5hkscs", "cp1252")
"""Tried in order when the declared charset is missing, unknown or wrong."""


def codec_for(declared: str | None) -> str | None:
    """The Python codec for a declared charset name, or None when it is unknown."""
    if not declared:
        return None
    name = declared.strip().strip('"').lower()
    name = SUPERSETS.get(name, name)
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def decode_bytes(data: bytes, declared: str | None = None) -> tuple[str, bool]:
    """Decode ``data``; returns the text and whether it decoded without loss.

    The declared charset is honoured when it decodes cleanly (widened to its superset);
    otherwise UTF-8, GB18030, Big5-HKSCS and Windows-1252 are tried strictly, and as a
    last resort UTF-8 with replacement characters.
    """
    if not data:
        return "", True
    codec = codec_for(declared)
    if data.isascii() and codec not in SEVEN_BIT_CODECS:
        return data.decode("ascii"), True
    tried: list[str] = []
    if codec and codec not in {"utf_8"}:
        tried.append(codec)
    tried.extend(FALLBACKS)
    if codec == "utf_8":
        tried.insert(0, "utf-8")
    for name in tried:
        try:
            return data.decode(name), True
        except (UnicodeDecodeError, LookupError):
            continue
    return data.decode("utf-8", errors="replace"), False


def decode_surrogates(value: str) -> str:
    """Recover raw 8-bit header bytes that the parser kept as surrogate escapes."""
    if value.isascii():
        return value
    try:
        raw = value.encode("ascii", errors="surrogateescape")
    except UnicodeEncodeError:  # already real text (not from bytes)
        return value
    return decode_bytes(raw)[0]
