"""Cleaning what visitors type: controls, bidi overrides and lone surrogates go; text stays."""

from __future__ import annotations

import pytest

from channels.webchat.sanitize import clean_line, clean_text


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("你好，我想退货", "你好，我想退货"),
        ("  hello  ", "hello"),
        ("line one\r\nline two\rline three", "line one\nline two\nline three"),
        ("a\u2028b\u2029c", "a\nb\nc"),
        ("bell\x07 and null\x00 and esc\x1b[31m", "bell and null and esc[31m"),
        ("c1\x85next\x9bcsi", "c1\nnextcsi"),
        ("evil\u202egnp.exe", "evilgnp.exe"),
        ("isolate\u2066x\u2069", "isolatex"),
        ("lone \ud800 surrogate", "lone  surrogate"),
        ("nonchar \ufffe\uffff\ufdd0", "nonchar"),
        ("tab\tkept", "tab\tkept"),
        ("a\n\n\n\n\nb", "a\n\nb"),
        ("trailing   \nspaces", "trailing\nspaces"),
        ("e\u0301", "é"),  # NFC
        ("<b>not html</b> & stays", "<b>not html</b> & stays"),
    ],
)
def test_clean_text(typed: str, stored: str) -> None:
    assert clean_text(typed) == stored


def test_emoji_sequences_survive() -> None:
    family = "👨\u200d👩\u200d👧"
    assert clean_text(f"hi {family} 🫎") == f"hi {family} 🫎"


def test_only_controls_is_empty() -> None:
    assert clean_text("\x00\x01\u202e \n\t") == ""


def test_cleaned_text_is_storable_as_utf8() -> None:
    clean_text("x\udfff\ud83dy").encode("utf-8")


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("  张伟  ", "张伟"),
        ("John\nSmith", "John Smith"),
        ("A\x00B\u202eC", "ABC"),
        ("Zhang   Wei\t", "Zhang Wei"),
    ],
)
def test_clean_line(typed: str, stored: str) -> None:
    assert clean_line(typed, 100) == stored


def test_clean_line_is_cut() -> None:
    assert clean_line("x" * 300, 100) == "x" * 100
