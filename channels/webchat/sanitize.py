"""Cleaning of what visitors type: control characters, bidi overrides and lone surrogates go.

The widget shows text with ``textContent`` and the console escapes it, so no HTML is
interpreted anywhere; cleaning keeps invisible and spoofing characters out of the record.
"""

from __future__ import annotations

import re
import unicodedata

_LINE_BREAKS = re.compile(r"\r\n?|[\u2028\u2029\x85]")
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")
_MANY_BLANK_LINES = re.compile(r"\n{3,}")
_SPACES = re.compile(r"\s+")


def _keep(char: str) -> bool:
    if char in "\n\t":
        return True
    if char in _BIDI_CONTROLS:
        return False
    code = ord(char)
    if 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE:  # noncharacters
        return False
    # Cc: C0/C1 controls; Cs: lone surrogates (JSON "\ud800"), unstorable as UTF-8.
    # Unassigned code points stay: they may be emoji newer than this Python's Unicode.
    return unicodedata.category(char) not in {"Cc", "Cs"}


def clean_text(text: str) -> str:
    """A visitor's message as stored: NFC, ``\\n`` line breaks, no controls, trimmed.

    Tabs and line breaks are kept (at most two blank lines in a row); zero-width joiners
    stay, so emoji sequences survive.
    """
    text = "".join(c for c in _LINE_BREAKS.sub("\n", text) if _keep(c))
    text = unicodedata.normalize("NFC", text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _MANY_BLANK_LINES.sub("\n\n", text).strip()


def clean_line(text: str, max_chars: int) -> str:
    """A one-line value (a name): controls removed, whitespace collapsed, cut to ``max_chars``."""
    text = "".join(c for c in _LINE_BREAKS.sub("\n", text) if _keep(c))
    text = unicodedata.normalize("NFC", text)
    return _SPACES.sub(" ", text).strip()[:max_chars].strip()
