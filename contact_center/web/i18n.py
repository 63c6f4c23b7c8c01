"""The console's languages: English message ids, Simplified Chinese from a gettext catalogue.

Texts in templates and code are written ``_("English text")``; the Chinese lives in
``locale/zh_CN/LC_MESSAGES/messages.po`` (extract new ids with ``pybabel extract``, see
the README). Catalogues are read with Babel at start-up; no compile step. A missing
translation falls back to the English text, and a test lists any id without one.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

from babel.messages.pofile import read_po

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
LANGUAGES = ("zh-CN", "en")
DEFAULT_LANGUAGE = "zh-CN"
LANGUAGE_NAMES = {"zh-CN": "中文", "en": "English"}


@cache
def catalogue(language: str) -> dict[str, str]:
    """msgid → translation for ``language`` (English: empty, the ids are English)."""
    if language == "en":
        return {}
    folder = language.replace("-", "_")
    path = LOCALE_DIR / folder / "LC_MESSAGES" / "messages.po"
    if not path.exists():
        return {}
    with path.open("rb") as handle:
        catalog = read_po(handle, locale=folder)
    return {str(m.id): str(m.string) for m in catalog if m.id and m.string
            and isinstance(m.id, str)}


def normalize_language(value: str | None) -> str:
    """``zh``, ``zh_CN``, ``zh-Hans`` → ``zh-CN``; ``en-GB`` → ``en``; else the default."""
    tag = (value or "").strip().replace("_", "-").lower()
    if tag.startswith("zh"):
        return "zh-CN"
    if tag.startswith("en"):
        return "en"
    return DEFAULT_LANGUAGE


def from_accept_language(header: str | None) -> str:
    """The first supported language of an ``Accept-Language`` header."""
    for part in (header or "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith(("zh", "en")):
            return normalize_language(tag)
    return DEFAULT_LANGUAGE


def translator(language: str) -> Callable[..., str]:
    """``_(text, **values)`` for ``language``; values fill ``{name}`` placeholders."""
    table = catalogue(normalize_language(language))

    def gettext(text: str, **values: object) -> str:
        translated = table.get(text, text)
        return translated.format(**values) if values else translated

    return gettext
