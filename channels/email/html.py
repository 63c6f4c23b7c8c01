"""HTML mail: sanitized for display in the console, and turned into readable text.

Sanitizing uses nh3 (the Rust ``ammonia`` sanitizer): scripts, styles, event handlers
and ``javascript:`` URLs go; ``cid:`` and ``data:`` images stay so inline pictures can
be shown. Text comes from inscriptis, which keeps the layout of tables and lists
readable instead of running every cell together.
"""

from __future__ import annotations

import re

import nh3
from inscriptis import get_text
from inscriptis.model.config import ParserConfig

_URL_SCHEMES = {"http", "https", "mailto", "tel", "cid", "data"}
_ATTRIBUTES = {
    "*": {"title", "lang", "dir", "align", "valign", "width", "height", "colspan", "rowspan"},
    "a": {"href", "name", "target"},
    "img": {"src", "alt", "width", "height"},
    "font": {"color", "face", "size"},
    "td": {"bgcolor"},
    "th": {"bgcolor"},
    "table": {"border", "cellpadding", "cellspacing", "bgcolor"},
}
_TAGS = set(nh3.ALLOWED_TAGS) | {"font"}
_TEXT_CONFIG = ParserConfig(display_links=False, display_images=False)
_BLANK_RUNS = re.compile(r"\n{3,}")
_TRAILING_SPACE = re.compile(r"[ \t\u3000]+\n")


def sanitize_html(html: str) -> str:
    """HTML safe to show in the agent console (no scripts, handlers or JS URLs)."""
    return nh3.clean(
        html,
        tags=_TAGS,
        clean_content_tags={"script", "style", "title", "head"},
        attributes=_ATTRIBUTES,
        url_schemes=_URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
    )


def html_to_text(html: str) -> str:
    """Readable plain text of an HTML body (tables and lists laid out, no markup)."""
    if not html.strip():
        return ""
    text = get_text(html, _TEXT_CONFIG)
    text = _TRAILING_SPACE.sub("\n", text)
    return _BLANK_RUNS.sub("\n\n", text).strip()
