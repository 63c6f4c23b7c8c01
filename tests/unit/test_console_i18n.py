"""Every console text has its Chinese translation; none is written in one language only."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from contact_center.web.i18n import catalogue, from_accept_language, normalize_language

WEB = Path(__file__).resolve().parents[2] / "contact_center" / "web"
TEMPLATE_CALL = re.compile(r"""\b_\(\s*(["'])((?:\\.|(?!\1).)*)\1""", re.DOTALL)
TRANSLATING = {"_", "gettext"}


def template_ids() -> set[str]:
    """Message ids in ``_("…")`` calls of the templates."""
    found = set()
    for path in (WEB / "templates").rglob("*.html"):
        for match in TEMPLATE_CALL.finditer(path.read_text(encoding="utf-8")):
            found.add(match.group(2).replace("\\'", "'").replace('\\"', '"'))
    return found


def python_ids() -> set[str]:
    """Message ids in ``_("…")`` / ``gettext("…")`` / ``x.gettext("…")`` calls of the code."""
    found = set()
    for path in WEB.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else (
                node.func.attr if isinstance(node.func, ast.Attribute) else "")
            first = node.args[0]
            if name in TRANSLATING and isinstance(first, ast.Constant) and isinstance(
                    first.value, str):
                found.add(first.value)
    return found


def test_every_console_text_has_a_chinese_translation() -> None:
    """A text added without its translation fails here, naming it."""
    chinese = catalogue("zh-CN")
    ids = template_ids() | python_ids()
    assert len(ids) > 20
    missing = sorted(i for i in ids if i not in chinese)
    assert missing == [], f"add these to locale/zh_CN/LC_MESSAGES/messages.po: {missing}"


def test_placeholders_survive_translation() -> None:
    """A translation keeps the ``{name}`` placeholders of its id."""
    for msgid, text in catalogue("zh-CN").items():
        assert set(re.findall(r"{(\w+)}", msgid)) == set(re.findall(r"{(\w+)}", text)), msgid


def test_language_negotiation() -> None:
    """Accept-Language and stored preferences map onto the two console languages."""
    assert from_accept_language("en-GB,en;q=0.9,zh;q=0.5") == "en"
    assert from_accept_language("zh-TW,zh;q=0.9") == "zh-CN"
    assert from_accept_language("fr-FR") == "zh-CN"
    assert normalize_language("zh_Hans") == "zh-CN" and normalize_language("EN") == "en"
