"""The console's Content-Security-Policy allows our own script and style files only:
a template with an inline style, style block, event handler or script would be blocked
by the browser (and report an error), so none may have one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

TEMPLATES = sorted((Path(__file__).parents[2] / "contact_center" / "web" / "templates")
                   .glob("*.html"))
INLINE = {
    "style attribute": re.compile(r"<[^>]*\sstyle\s*=", re.I),
    "style block": re.compile(r"<style[\s>]", re.I),
    "event handler": re.compile(r"<[^>]*\son[a-z]+\s*=", re.I),
    "script without src": re.compile(
        r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", re.I),
}


def test_the_templates_are_found() -> None:
    assert len(TEMPLATES) > 20


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda path: path.name)
def test_no_inline_style_or_script(template: Path) -> None:
    text = template.read_text(encoding="utf-8")
    found = [kind for kind, pattern in INLINE.items() if pattern.search(text)]
    assert found == [], f"{template.name}: {', '.join(found)} (blocked by the CSP)"
