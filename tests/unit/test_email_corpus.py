"""Contract test of the MIME parser over the tricky e-mail corpus in tests/fixtures/email.

Each ``*.eml`` file has one entry in ``expected.json``; every key present in an entry is
checked against ``parse_email`` and absent keys are not checked. See the ``note`` of each
entry for the trick the file exercises.
"""

from __future__ import annotations

import functools
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from channels.email.parse import ParsedEmail, UnparseableEmail, parse_email

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "email"
EXPECTED: list[dict[str, Any]] = json.loads((FIXTURES / "expected.json").read_text("utf-8"))
IDS = [entry["file"] for entry in EXPECTED]
MIN_FILES = 45

EXACT_KEYS = (
    "sender_email",
    "sender_name",
    "subject",
    "message_id",
    "in_reply_to",
    "text",
    "reply_text",
    "automated",
)
TUPLE_KEYS = ("references", "to", "cc")
CONTAINS_KEYS = {
    "subject_contains": ("subject", True),
    "subject_not_contains": ("subject", False),
    "text_contains": ("text", True),
    "text_not_contains": ("text", False),
    "reply_text_contains": ("reply_text", True),
    "reply_text_not_contains": ("reply_text", False),
    "html_contains": ("html", True),
    "html_not_contains": ("html", False),
}
OTHER_KEYS = {"file", "note", "allow_replacement_char", "html", "date", "bounced_recipients"}
ATTACHMENT_KEYS = {"filename", "content_type", "size", "inline", "content_id"}
KNOWN_KEYS = {*EXACT_KEYS, *TUPLE_KEYS, *CONTAINS_KEYS, *OTHER_KEYS, "attachments"}
AUTOMATED = {None, "auto_reply", "bounce", "list"}
MSGID = re.compile(r"^<[^<>\s]+>$")
CONTENT_TYPE = re.compile(r"^[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+$")
EVENT_ATTRIBUTE = re.compile(r"\son\w+\s*=", re.IGNORECASE)


@functools.cache
def parsed(name: str) -> ParsedEmail:
    """Parse one fixture file (once per test run)."""
    return parse_email((FIXTURES / name).read_bytes())


def check_entry(entry: dict[str, Any], mail: ParsedEmail) -> list[str]:
    """Compare a parse result with one expected.json entry; return the mismatches."""
    problems: list[str] = []
    for key in EXACT_KEYS:
        if key in entry and getattr(mail, key) != entry[key]:
            problems.append(f"{key}: expected {entry[key]!r}, got {getattr(mail, key)!r}")
    for key in TUPLE_KEYS:
        if key in entry and tuple(getattr(mail, key)) != tuple(entry[key]):
            problems.append(f"{key}: expected {entry[key]!r}, got {getattr(mail, key)!r}")
    for key, (field, wanted) in CONTAINS_KEYS.items():
        value = getattr(mail, field) or ""
        for needle in entry.get(key, []):
            if (needle in value) != wanted:
                verb = "lacks" if wanted else "contains"
                problems.append(f"{field} {verb} {needle!r}: {value[:300]!r}")
    if "html" in entry and (mail.html is not None) != entry["html"]:
        problems.append(f"html: expected present={entry['html']}, got {mail.html!r:.100}")
    if "date" in entry:
        want = datetime.fromisoformat(entry["date"]) if entry["date"] else None
        if mail.date != want or (mail.date is not None and mail.date.tzinfo is None):
            problems.append(f"date: expected {entry['date']!r}, got {mail.date!r}")
    if "bounced_recipients" in entry and sorted(set(mail.bounced_recipients)) != sorted(
        entry["bounced_recipients"]
    ):
        problems.append(
            f"bounced_recipients: expected {entry['bounced_recipients']!r}, "
            f"got {mail.bounced_recipients!r}"
        )
    if "attachments" in entry:
        problems += check_attachments(entry["attachments"], mail)
    return problems


def check_attachments(expected: list[dict[str, Any]], mail: ParsedEmail) -> list[str]:
    """Compare the attachments in document order, checking only the keys given."""
    got = [
        {
            "filename": a.filename,
            "content_type": a.content_type,
            "size": len(a.data),
            "inline": a.inline,
            "content_id": a.content_id,
        }
        for a in mail.attachments
    ]
    if len(got) != len(expected):
        return [f"attachments: expected {len(expected)}, got {len(got)}: {got!r}"]
    problems = []
    for number, (want, have) in enumerate(zip(expected, got, strict=True), start=1):
        for key, value in want.items():
            if have[key] != value:
                problems.append(f"attachment {number} {key}: expected {value!r}, got {have[key]!r}")
    return problems


@pytest.mark.parametrize("entry", EXPECTED, ids=IDS)
def test_fixture_matches_expected(entry: dict[str, Any]) -> None:
    """Every key given for a fixture matches what the parser returns."""
    problems = check_entry(entry, parsed(entry["file"]))
    assert not problems, f"{entry['file']} ({entry.get('note', '')}):\n  " + "\n  ".join(problems)


def test_every_fixture_has_exactly_one_entry() -> None:
    """The .eml files and the expected.json entries correspond one to one, at least 45 of them."""
    files = sorted(path.name for path in FIXTURES.glob("*.eml"))
    assert len(IDS) == len(set(IDS)), "duplicate entries in expected.json"
    assert sorted(IDS) == files
    assert len(files) >= MIN_FILES


@pytest.mark.parametrize("entry", EXPECTED, ids=IDS)
def test_expected_entry_is_well_formed(entry: dict[str, Any]) -> None:
    """No misspelled keys in expected.json, so nothing is silently left unchecked."""
    assert set(entry) <= KNOWN_KEYS, set(entry) - KNOWN_KEYS
    assert entry.get("note"), "every fixture explains its trick"
    for attachment in entry.get("attachments", []):
        assert set(attachment) <= ATTACHMENT_KEYS, set(attachment) - ATTACHMENT_KEYS


@pytest.mark.parametrize(
    "entry", [e for e in EXPECTED if not e.get("allow_replacement_char")], ids=lambda e: e["file"]
)
def test_no_replacement_character(entry: dict[str, Any]) -> None:
    """Where the charset is knowable, no decoded field contains U+FFFD."""
    mail = parsed(entry["file"])
    fields = {
        "subject": mail.subject,
        "sender_name": mail.sender_name or "",
        "text": mail.text,
        "reply_text": mail.reply_text,
        "html": mail.html or "",
    }
    fields.update({f"attachment {a.filename!r}": a.filename for a in mail.attachments})
    bad = [name for name, value in fields.items() if "\ufffd" in value]
    assert not bad, f"U+FFFD in {bad}"


@pytest.mark.parametrize("entry", EXPECTED, ids=IDS)
def test_html_is_sanitized(entry: dict[str, Any]) -> None:
    """Sanitized HTML never keeps scripts, event-handler attributes or javascript: URLs."""
    html = parsed(entry["file"]).html
    if html is None:
        return
    assert "<script" not in html.lower()
    assert not EVENT_ATTRIBUTE.search(html), EVENT_ATTRIBUTE.search(html)
    assert "javascript:" not in html.lower()


@pytest.mark.parametrize("entry", EXPECTED, ids=IDS)
def test_result_invariants(entry: dict[str, Any]) -> None:
    """Shape rules of the contract that hold for every message."""
    mail = parsed(entry["file"])
    assert "\r" not in mail.subject and "\n" not in mail.subject
    assert mail.subject == mail.subject.strip()
    assert "\r" not in mail.text and "\r" not in mail.reply_text
    for msgid in (mail.message_id, mail.in_reply_to, *mail.references):
        assert msgid is None or MSGID.match(msgid), msgid
    for address in (mail.sender_email, *mail.to, *mail.cc, *mail.bounced_recipients):
        assert address is None or (address == address.lower() and "@" in address), address
    assert mail.sender_name != ""
    assert mail.date is None or mail.date.tzinfo is not None
    assert mail.automated in AUTOMATED
    if mail.automated != "bounce":
        assert mail.bounced_recipients == ()
    for attachment in mail.attachments:
        assert attachment.filename and attachment.filename.strip(), attachment
        assert CONTENT_TYPE.match(attachment.content_type), attachment.content_type
        assert isinstance(attachment.data, bytes)
        cid = attachment.content_id
        assert cid is None or (cid and "<" not in cid and ">" not in cid), cid


@pytest.mark.parametrize("raw", [b"", b"\x00\x01garbage"], ids=["empty", "binary-garbage"])
def test_unparseable_input_raises(raw: bytes) -> None:
    """Input with no usable headers raises UnparseableEmail."""
    with pytest.raises(UnparseableEmail):
        parse_email(raw)


def test_headers_only_message_has_empty_text() -> None:
    """A message with headers and no body at all parses, with empty text and no HTML."""
    for raw in (
        (FIXTURES / "38-headers-only.eml").read_bytes(),
        b"From: a@example.com\r\nSubject: hi\r\n",
        b"From: a@example.com\nSubject: hi\n\n",
    ):
        mail = parse_email(raw)
        assert (mail.text, mail.reply_text, mail.html, mail.attachments) == ("", "", None, ())
        assert mail.sender_email in {"a@example.com", "headers@example.com"}
