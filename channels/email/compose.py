"""Outbound mail: an ``OutboundMessage`` rendered into a threaded MIME message.

Replies carry our own Message-ID (derived from the outbox id, so a retried send keeps
it), ``In-Reply-To`` and ``References`` from the thread, and the ticket number in the
subject, which is how the customer's answer finds its ticket again even when a mail
program drops the threading headers. The body is rendered in the customer's language
from Jinja2 templates (text and HTML); automated mail says so (RFC 3834
``Auto-Submitted``) so that other systems do not answer it.
"""

from __future__ import annotations

import hashlib
import html
import re
from dataclasses import dataclass
from email import encoders
from email.charset import BASE64, QP, Charset
from email.generator import BytesGenerator
from email.header import Header
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import format_datetime, formataddr
from io import BytesIO
from pathlib import Path

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PackageLoader, select_autoescape
from markupsafe import Markup

from channels.email.html import sanitize_html
from crm_core.models import utcnow
from routing.envelope import OutboundMessage

_TICKET_TAG = re.compile(r"\[\s*T-\d{6,}\s*\]", re.IGNORECASE)
MAX_REFERENCES = 20

_UTF8_QP = Charset("utf-8")
_UTF8_QP.header_encoding = _UTF8_QP.body_encoding = QP
_UTF8_B = Charset("utf-8")
_UTF8_B.header_encoding = _UTF8_B.body_encoding = BASE64


@dataclass(frozen=True)
class MailAttachment:
    """A file to attach, already read from the blob store."""

    filename: str
    content_type: str
    data: bytes


class EmailTemplates:
    """Reply templates per language: ``reply.<lang>.txt.j2`` and ``reply.<lang>.html.j2``.

    A deployer's directory (``[email] templates_dir``) overrides the shipped ones file
    by file; languages fall back to English.
    """

    def __init__(self, override_dir: Path | None = None) -> None:
        loaders: list = []
        if override_dir is not None:
            loaders.append(FileSystemLoader(str(override_dir)))
        loaders.append(PackageLoader("channels.email", "templates"))
        self.env = Environment(
            loader=ChoiceLoader(loaders),
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
            keep_trailing_newline=True,
        )

    def _name(self, language: str | None, kind: str) -> str:
        for candidate in (language, (language or "").split("-")[0], "en"):
            if not candidate:
                continue
            name = f"reply.{candidate}.{kind}.j2"
            if name in self.env.list_templates():
                return name
            if candidate == "zh":
                return f"reply.zh-CN.{kind}.j2"
        return f"reply.en.{kind}.j2"

    def render(self, language: str | None, **values: object) -> tuple[str, str]:
        """The text and HTML bodies for ``language``."""
        text = self.env.get_template(self._name(language, "txt")).render(**values)
        markup = self.env.get_template(self._name(language, "html")).render(**values)
        return text.strip() + "\n", markup


def message_id_for(outbox_id: int, created_iso: str, domain: str) -> str:
    """Our Message-ID for an outbox message: stable across retries, unique per install."""
    digest = hashlib.sha256(f"{outbox_id}|{created_iso}".encode()).hexdigest()[:16]
    return f"<cc.{outbox_id}.{digest}@{domain}>"


def subject_with_ticket(subject: str | None, ticket_number: str | None) -> str:
    """The subject, tagged ``[T-000123]`` once."""
    subject = (subject or "").strip()
    if not ticket_number or _TICKET_TAG.search(subject):
        return subject
    return f"[{ticket_number}] {subject}".strip()


def _text_to_html(text: str) -> str:
    return html.escape(text).replace("\n", "<br>\n")


def _header(name: str, value: str) -> str | Header:
    """A header value: ASCII as it is, anything else as RFC 2047 UTF-8 encoded words."""
    return value if value.isascii() else Header(value, _UTF8_B, header_name=name)


def _address(name: str | None, address: str) -> str:
    # formataddr encodes a non-ASCII display name as an RFC 2047 word itself.
    return formataddr((name or "", address)) if name else address


def _text_part(text: str, subtype: str) -> MIMEText:
    """A text part: quoted-printable when ASCII (readable, long lines soft-wrapped),
    base64 otherwise (a third the size of quoted-printable for Chinese)."""
    return MIMEText(text, subtype, _UTF8_QP if text.isascii() else _UTF8_B)


def _attachment_part(item: MailAttachment) -> MIMEBase:
    maintype, _, subtype = item.content_type.partition("/")
    part = MIMEBase(maintype or "application", subtype or "octet-stream")
    part.set_payload(item.data)
    encoders.encode_base64(part)
    filename: str | tuple[str, str, str] = (
        item.filename if item.filename.isascii() else ("utf-8", "", item.filename))
    part.add_header("Content-Disposition", "attachment", filename=filename)
    return part


def compose(
    message: OutboundMessage,
    *,
    from_address: str,
    from_name: str | None,
    domain: str,
    templates: EmailTemplates,
    attachments: list[MailAttachment] | None = None,
) -> Message:
    """The MIME message for ``message`` (multipart text + HTML, attachments).

    Built with the ``compat32`` classes rather than ``EmailMessage``: the header
    registry of the newer API parsed and re-folded every header of every campaign
    mail and was 70 % of the dispatcher's CPU (``bench/campaign_fanout.py``).
    """
    meta = message.metadata
    to_address = message.to.email
    if not to_address:
        raise ValueError("the recipient has no e-mail address")
    ticket_number = meta.get("ticket_number")
    values = {
        "body": message.text or "",
        # Markup: already safe HTML (sanitized, or our own escaping of the text), so the
        # auto-escaping template must not escape it a second time.
        "body_html": Markup(sanitize_html(message.html) if message.html
                            else _text_to_html(message.text or "")),
        "ticket_number": ticket_number,
        "customer_name": message.to.display_name or "",
    }
    text, markup = templates.render(meta.get("language"), **values)
    body = MIMEMultipart("alternative", _subparts=[_text_part(text, "plain"),
                                                  _text_part(markup, "html")])
    mail: Message = body
    if attachments:
        mail = MIMEMultipart("mixed", _subparts=[body, *map(_attachment_part, attachments)])
    for part in mail.walk():
        if part is not mail:
            del part["MIME-Version"]  # the MIME classes put one on every part
    mail["From"] = _address(from_name, from_address)
    mail["To"] = _address(message.to.display_name, to_address)
    mail["Subject"] = _header("Subject", subject_with_ticket(message.subject, ticket_number))
    created = (message.created_at or utcnow()).isoformat()
    mail["Message-ID"] = message_id_for(message.outbox_id, created, domain)
    mail["Date"] = format_datetime(utcnow())
    thread = message.thread
    if thread.in_reply_to:
        mail["In-Reply-To"] = thread.in_reply_to
    references = list(dict.fromkeys([*thread.references, *filter(None, [thread.in_reply_to])]))
    if references:
        mail["References"] = " ".join(references[-MAX_REFERENCES:])
    if meta.get("automated"):
        mail["Auto-Submitted"] = "auto-replied"
        mail["X-Auto-Response-Suppress"] = "All"
    if ticket_number:
        mail["X-Ticket"] = str(ticket_number)
    if meta.get("language"):
        mail["Content-Language"] = str(meta["language"])
    return mail


def as_smtp_bytes(mail: Message) -> bytes:
    """The message as SMTP wants it: CRLF line ends, headers folded at 78 columns."""
    out = BytesIO()
    BytesGenerator(out, mangle_from_=False, maxheaderlen=78,
                   policy=compat32.clone(linesep="\r\n")).flatten(mail)
    return out.getvalue()
