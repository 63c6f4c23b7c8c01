"""MIME → a plain record of what an e-mail says: sender, thread ids, readable text, files.

The standard library's parser with the ``compat32`` policy reads the structure; headers
and bodies are decoded here, because declared charsets are often wrong in real mail
(see ``charsets``). The modern ``email.policy.default`` gets the same answers on clean
mail but costs several times more per message (``bench/email_ingest.py`` measures both)
and still garbles GBK declared as GB2312 and raw 8-bit headers.

Nothing here raises for a mail that is merely broken: defects are recorded and the
best reading is returned. Only input with no headers at all is ``UnparseableEmail``.
"""

from __future__ import annotations

import email
import email.header
import email.utils
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from email.policy import compat32

from channels.email.charsets import decode_bytes, decode_surrogates
from channels.email.html import html_to_text, sanitize_html
from channels.email.quoting import strip_reply

AUTO_REPLY = "auto_reply"
BOUNCE = "bounce"
LIST = "list"

_MESSAGE_ID = re.compile(r"<([^<>\s]+)>")
_BARE_ID = re.compile(r"[^<>\s,;]+@[^<>\s,;]+")
_AUTO_SUBJECT = re.compile(
    r"^\s*(?:automatic reply|auto(?:matic)?[- ]?(?:reply|response)|out of (?:the )?office"
    r"|自动回复|自動回覆|自动答复|休假)\s*[:：]",
    re.IGNORECASE,
)
_QMAIL_RECIPIENT = re.compile(r"^<([^<>\s]+@[^<>\s]+)>:", re.MULTILINE)
_BOUNCE_SENDERS = {"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon"}
_WHITESPACE = re.compile(r"\s+")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_SURROGATES = re.compile("[\udc80-\udcff]")


class UnparseableEmail(ValueError):
    """The bytes are not an e-mail at all (no header could be read)."""


@dataclass(frozen=True)
class ParsedAttachment:
    """One file carried by a mail (attachment, inline image or forwarded message)."""

    filename: str
    content_type: str
    data: bytes
    content_id: str | None = None
    inline: bool = False


@dataclass(frozen=True)
class ParsedEmail:
    """What an inbound mail says, decoded; the raw bytes are kept elsewhere."""

    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    sender_email: str | None
    sender_name: str | None
    to: tuple[str, ...]
    cc: tuple[str, ...]
    subject: str
    date: datetime | None
    text: str
    reply_text: str
    html: str | None
    attachments: tuple[ParsedAttachment, ...] = ()
    automated: str | None = None
    bounced_recipients: tuple[str, ...] = ()
    defects: tuple[str, ...] = field(default_factory=tuple)


def decode_header_value(value: str | email.header.Header | None) -> str:
    """Decode RFC 2047 words and raw 8-bit bytes of a header into one clean line."""
    if value is None:
        return ""
    value = _FOLD.sub("", decode_surrogates(str(value)))
    try:
        chunks = email.header.decode_header(value)
    except Exception:  # a malformed encoded word: keep the text as it came
        chunks = [(value, None)]
    parts: list[str] = []
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            parts.append(chunk)
        elif charset is None:  # text around encoded words, as decode_header hands it back
            parts.append(chunk.decode("raw-unicode-escape"))
        else:
            parts.append(decode_bytes(chunk, charset)[0])
    return _WHITESPACE.sub(" ", "".join(parts)).strip()


def _header(msg: Message, name: str) -> str:
    raw = msg.get(name)
    return decode_surrogates(str(raw)) if raw is not None else ""


def _message_ids(value: str) -> list[str]:
    found = [f"<{m}>" for m in _MESSAGE_ID.findall(value)]
    if not found:
        found = [f"<{m}>" for m in _BARE_ID.findall(value)]
    return found


def _addresses(msg: Message, *names: str) -> list[tuple[str, str]]:
    values = [decode_surrogates(str(v)) for name in names for v in msg.get_all(name, [])]
    pairs = []
    for display, address in email.utils.getaddresses(values):
        address = address.strip().lower()
        if "@" in address:
            pairs.append((decode_header_value(display), address))
    return pairs


def _date(msg: Message) -> datetime | None:
    raw = msg.get("Date")
    if not raw:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(str(raw))
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _part_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    text, _ = decode_bytes(payload, part.get_content_charset())
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _filename(part: Message) -> str | None:
    for header, param in (("content-disposition", "filename"), ("content-type", "name")):
        value = part.get_param(param, header=header)
        if value is None:
            continue
        if isinstance(value, tuple):  # RFC 2231: (charset, language, percent-decoded text)
            charset, _, text = value
            raw = bytes(text, "raw-unicode-escape")
            name = decode_bytes(raw, charset)[0]
        else:
            name = decode_header_value(email.utils.unquote(value))
        name = name.replace("/", "_").replace("\\", "_").strip()
        if name:
            return name
    return None


_EXTENSIONS = {
    "text/plain": ".txt", "text/html": ".html", "text/calendar": ".ics",
    "image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif",
    "application/pdf": ".pdf", "message/rfc822": ".eml",
}


@dataclass
class _Walk:
    plain: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    attachments: list[ParsedAttachment] = field(default_factory=list)
    bounced: list[str] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)


def _decode_raw_headers(part: Message) -> None:
    """Replace headers holding raw 8-bit bytes with their decoded text.

    ``compat32`` keeps such bytes as surrogate escapes and, on access, wraps them in a
    ``Header`` whose text has already lost them; decoding the raw values first keeps
    raw GBK or UTF-8 subjects, names and file names readable.
    """
    raw = list(part.raw_items())
    broken = {name.lower() for name, value in raw if _SURROGATES.search(value)}
    for name in broken:
        values = [value for key, value in raw if key.lower() == name]
        del part[name]
        for value in values:
            part[name] = decode_surrogates(value)


def _leaves(part: Message) -> Iterator[Message]:
    _decode_raw_headers(part)
    if part.is_multipart() and part.get_content_maintype() == "multipart":
        for child in part.get_payload():
            if isinstance(child, Message):
                yield from _leaves(child)
    else:
        yield part


def _attachment(part: Message, index: int, ctype: str) -> ParsedAttachment:
    if ctype == "message/rfc822":
        inner = part.get_payload()
        inner_msg = inner[0] if isinstance(inner, list) and inner else None
        data = inner_msg.as_bytes(policy=compat32) if isinstance(inner_msg, Message) else b""
        subject = decode_header_value(inner_msg.get("Subject")) if inner_msg else ""
        name = _filename(part) or (f"{subject[:80]}.eml" if subject else f"message-{index}.eml")
    else:
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        name = _filename(part) or f"attachment-{index}{_EXTENSIONS.get(ctype, '.bin')}"
    content_id = part.get("Content-ID")
    cid = str(content_id).strip().strip("<>").strip() if content_id else None
    disposition = (part.get_content_disposition() or "").lower()
    inline = disposition == "inline" or (disposition != "attachment" and cid is not None)
    return ParsedAttachment(name, ctype, data, cid or None, inline)


def _delivery_status_recipients(part: Message) -> list[str]:
    found: list[str] = []
    blocks = part.get_payload()
    if not isinstance(blocks, list):
        blocks = [email.message_from_string(str(blocks), policy=compat32)]
    for block in blocks:
        if not isinstance(block, Message):
            continue
        for name in ("Final-Recipient", "Original-Recipient"):
            value = block.get(name)
            if value:
                address = str(value).split(";", 1)[-1].strip().strip("<>").lower()
                if "@" in address and address not in found:
                    found.append(address)
    return found


def _walk(msg: Message) -> _Walk:
    result = _Walk()
    for index, part in enumerate(_leaves(msg), start=1):
        result.defects.extend(type(d).__name__ for d in part.defects)
        ctype = part.get_content_type().lower()
        disposition = (part.get_content_disposition() or "").lower()
        if ctype == "message/delivery-status":
            result.bounced.extend(_delivery_status_recipients(part))
            continue
        if ctype == "text/rfc822-headers":
            continue
        named = _filename(part) is not None
        is_body = disposition != "attachment" and not (named and disposition == "inline")
        if is_body and ctype == "text/plain" and not named:
            result.plain.append(_part_text(part))
        elif is_body and ctype == "text/html" and not named:
            result.html.append(_part_text(part))
        else:
            result.attachments.append(_attachment(part, index, ctype))
    result.defects.extend(type(d).__name__ for d in msg.defects)
    return result


def _automation(msg: Message, sender: str | None, subject: str) -> str | None:
    ctype = msg.get_content_type().lower()
    report_type = str(msg.get_param("report-type") or "").lower()
    local = (sender or "").split("@", 1)[0]
    return_path = _header(msg, "Return-Path").strip()
    if (ctype == "multipart/report" and report_type in {"delivery-status", ""}) or (
        local in _BOUNCE_SENDERS
    ):
        return BOUNCE
    auto_submitted = _header(msg, "Auto-Submitted").strip().lower()
    precedence = _header(msg, "Precedence").strip().lower()
    if (auto_submitted and auto_submitted != "no") or precedence == "auto_reply":
        return AUTO_REPLY
    if any(msg.get(name) for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder")):
        return AUTO_REPLY
    if precedence in {"bulk", "list", "junk"} or msg.get("List-Id") or msg.get("List-Unsubscribe"):
        return LIST
    if return_path == "<>" or _AUTO_SUBJECT.match(subject):
        return AUTO_REPLY
    return None


def parse_email(raw: bytes) -> ParsedEmail:
    """Read a raw RFC 5322 message; broken parts are decoded as well as they can be."""
    if not raw or not raw.strip():
        raise UnparseableEmail("empty message")
    msg = email.message_from_bytes(raw, policy=compat32)
    if not msg.keys():
        raise UnparseableEmail("no header could be read")
    _decode_raw_headers(msg)

    senders = _addresses(msg, "From") or _addresses(msg, "Sender") or _addresses(msg, "Return-Path")
    sender_name, sender_email = senders[0] if senders else ("", None)
    subject = decode_header_value(msg.get("Subject"))
    walked = _walk(msg)
    if walked.plain:
        text = "\n\n".join(t.strip("\n") for t in walked.plain if t.strip())
    else:
        text = "\n\n".join(html_to_text(h) for h in walked.html)
    html = sanitize_html("\n".join(walked.html)) if walked.html else None
    automated = _automation(msg, sender_email, subject)
    bounced = walked.bounced
    if automated == BOUNCE and not bounced:
        bounced = [a.lower() for a in _QMAIL_RECIPIENT.findall(text)]
    message_ids = _message_ids(_header(msg, "Message-ID"))
    in_reply_to = _message_ids(_header(msg, "In-Reply-To"))
    return ParsedEmail(
        message_id=message_ids[0] if message_ids else None,
        in_reply_to=in_reply_to[0] if in_reply_to else None,
        references=tuple(_message_ids(_header(msg, "References"))),
        sender_email=sender_email,
        sender_name=sender_name or None,
        to=tuple(address for _, address in _addresses(msg, "To")),
        cc=tuple(address for _, address in _addresses(msg, "Cc")),
        subject=subject,
        date=_date(msg),
        text=text,
        reply_text=strip_reply(text),
        html=html,
        attachments=tuple(walked.attachments),
        automated=automated,
        bounced_recipients=tuple(dict.fromkeys(bounced)),
        defects=tuple(dict.fromkeys(walked.defects)),
    )
