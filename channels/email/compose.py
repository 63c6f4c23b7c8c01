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
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr
from pathlib import Path

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PackageLoader, select_autoescape
from markupsafe import Markup

from channels.email.html import sanitize_html
from crm_core.models import utcnow
from routing.envelope import OutboundMessage

_TICKET_TAG = re.compile(r"\[\s*T-\d{6,}\s*\]", re.IGNORECASE)
MAX_REFERENCES = 20


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


def compose(
    message: OutboundMessage,
    *,
    from_address: str,
    from_name: str | None,
    domain: str,
    templates: EmailTemplates,
    attachments: list[MailAttachment] | None = None,
) -> EmailMessage:
    """The MIME message for ``message`` (multipart text + HTML, attachments)."""
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
    mail = EmailMessage(policy=SMTP)
    mail["From"] = formataddr((from_name or "", from_address)) if from_name else from_address
    mail["To"] = formataddr((message.to.display_name or "", to_address))
    mail["Subject"] = subject_with_ticket(message.subject, ticket_number)
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
    mail.set_content(text, charset="utf-8")
    mail.add_alternative(markup, subtype="html", charset="utf-8")
    if meta.get("language"):  # after the body: set_content drops Content-* headers
        mail["Content-Language"] = str(meta["language"])
    for item in attachments or []:
        maintype, _, subtype = item.content_type.partition("/")
        mail.add_attachment(
            item.data, maintype=maintype or "application", subtype=subtype or "octet-stream",
            filename=item.filename,
        )
    return mail
