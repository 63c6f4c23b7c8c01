"""Raw mail → envelope on the bus, or → quarantine. Shared by IMAP intake and import.

Order matters for "never lose a message": the raw bytes go to the blob store first, then
the envelope goes to the bus (or the quarantine table); only after that may the caller
mark the source item as done. The idempotency key is the Message-ID (with the sender),
so the same mail seen again — a restored mailbox, a copy in another folder, one mail
sent to two of our addresses — is one interaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

import structlog

from channels.email.parse import BOUNCE, ParsedAttachment, ParsedEmail, parse_email
from crm_core.db import Database
from crm_core.models import Channel, utcnow
from routing.blobs import BlobStore
from routing.envelope import AttachmentRef, InboundMessage, SenderHandles, ThreadHints
from routing.intake import quarantine

log = structlog.get_logger(__name__)

Publish = Callable[[InboundMessage], Awaitable[bool]]

QUEUED = "queued"
DUPLICATE = "duplicate"
QUARANTINED = "quarantined"

DEFAULT_BLOCKED_EXTENSIONS = frozenset(
    {".exe", ".bat", ".cmd", ".com", ".scr", ".pif", ".vbs", ".vbe", ".js", ".jse", ".wsf",
     ".wsh", ".msi", ".msp", ".hta", ".cpl", ".jar", ".ps1", ".lnk", ".reg"}
)


@dataclass(frozen=True)
class AttachmentPolicy:
    """Which attachments are stored; refused ones are listed on the interaction."""

    max_bytes: int = 25 * 1024 * 1024
    blocked_extensions: frozenset[str] = DEFAULT_BLOCKED_EXTENSIONS

    def refusal(self, attachment: ParsedAttachment) -> str | None:
        """Why an attachment is not stored, or None when it is."""
        if len(attachment.data) > self.max_bytes:
            return f"larger than {self.max_bytes} bytes"
        suffix = PurePosixPath(attachment.filename.lower()).suffix
        if suffix in self.blocked_extensions:
            return f"file type {suffix} is not accepted"
        return None


@dataclass(frozen=True)
class IntakeResult:
    """What became of one raw mail."""

    status: str
    """``queued``, ``duplicate`` (already on the bus or routed) or ``quarantined``."""
    idempotency_key: str | None = None
    raw_ref: str | None = None
    message_id: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class MailSource:
    """Where a raw mail came from, for the envelope and the quarantine record."""

    source: str
    """Mailbox and folder (``support:INBOX``) or ``import``."""
    source_ref: str | None = None
    mailbox: str | None = None
    team: str | None = None
    use_date_header: bool = False
    """Imports keep the mail's own date; live intake uses the time of arrival."""
    extra: dict[str, Any] = field(default_factory=dict)


def idempotency_key(parsed: ParsedEmail, raw_ref: str) -> str:
    """``email:<Message-ID>|sender`` — or the raw content key when there is no Message-ID."""
    if not parsed.message_id:
        return f"email:{raw_ref}"
    key = f"email:{parsed.message_id}|{parsed.sender_email or ''}"
    if len(key) > 480:
        key = "email:sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return key


def _sender(parsed: ParsedEmail) -> SenderHandles:
    if parsed.automated == BOUNCE and parsed.bounced_recipients:
        # A bounce is about the customer whose address failed, not about the mail server.
        return SenderHandles(email=parsed.bounced_recipients[0])
    return SenderHandles(email=parsed.sender_email, display_name=parsed.sender_name)


async def build_envelope(
    parsed: ParsedEmail,
    *,
    raw_ref: str,
    source: MailSource,
    blobs: BlobStore,
    policy: AttachmentPolicy,
    received_at: datetime | None = None,
) -> InboundMessage:
    """The envelope of a parsed mail; attachments are stored in the blob store first."""
    stored: list[AttachmentRef] = []
    refused: list[dict[str, Any]] = []
    for attachment in parsed.attachments:
        reason = policy.refusal(attachment)
        if reason is not None:
            refused.append({"filename": attachment.filename, "size": len(attachment.data),
                            "reason": reason})
            continue
        key = await blobs.put(attachment.data)
        stored.append(AttachmentRef(
            blob_key=key, filename=attachment.filename[:255],
            content_type=attachment.content_type, size=len(attachment.data),
        ))
    when = received_at or utcnow()
    if source.use_date_header and parsed.date is not None:
        when = parsed.date
    metadata: dict[str, Any] = {
        "mailbox": source.mailbox,
        "team": source.team,
        "from": parsed.sender_email,
        "to": list(parsed.to),
        "cc": list(parsed.cc),
        "date": parsed.date.isoformat() if parsed.date else None,
        "quoted_text_removed": parsed.reply_text != parsed.text,
        **source.extra,
    }
    inline = [a.content_id for a in parsed.attachments if a.inline and a.content_id]
    if inline:
        metadata["inline_content_ids"] = inline
    if refused:
        metadata["attachments_refused"] = refused
    if parsed.defects:
        metadata["mime_defects"] = list(parsed.defects)
    return InboundMessage(
        channel=Channel.EMAIL,
        idempotency_key=idempotency_key(parsed, raw_ref),
        received_at=when,
        sender=_sender(parsed),
        thread=ThreadHints(
            message_id=parsed.message_id,
            in_reply_to=parsed.in_reply_to,
            references=parsed.references,
            recipients=(*parsed.to, *parsed.cc),
        ),
        subject=parsed.subject or None,
        text=parsed.reply_text,
        html=parsed.html,
        attachments=tuple(stored),
        metadata={k: v for k, v in metadata.items() if v is not None},
        raw_ref=raw_ref,
        automated=parsed.automated,
        bounced_addresses=parsed.bounced_recipients,
    )


class MailIntake:
    """Turns raw mail into envelopes on the bus; what cannot be read is quarantined."""

    def __init__(
        self,
        database: Database,
        blobs: BlobStore,
        publish: Publish,
        policy: AttachmentPolicy | None = None,
    ) -> None:
        self.database = database
        self.blobs = blobs
        self.publish = publish
        self.policy = policy or AttachmentPolicy()

    async def ingest(self, raw: bytes, source: MailSource) -> IntakeResult:
        """Store, parse and publish one mail. Raises only when nothing durable was written
        (the blob store or the database is down), so the caller retries the item later."""
        raw_ref = await self.blobs.put(raw)
        bound = log.bind(channel="email", source=source.source, source_ref=source.source_ref,
                         raw_ref=raw_ref)
        try:
            parsed = parse_email(raw)
            if not parsed.sender_email:
                raise ValueError("no sender address in From, Sender or Return-Path")
            envelope = await build_envelope(
                parsed, raw_ref=raw_ref, source=source, blobs=self.blobs, policy=self.policy
            )
        except Exception as exc:  # any reading failure: set aside, never drop
            reason = f"{type(exc).__name__}: {exc}"
            item = await quarantine(
                self.database, channel=Channel.EMAIL, source=source.source,
                source_ref=source.source_ref, raw_ref=raw_ref, size=len(raw), reason=reason,
            )
            bound.warning("email.quarantined", reason=reason, quarantine_id=item)
            return IntakeResult(QUARANTINED, raw_ref=raw_ref, detail=reason)
        fresh = await self.publish(envelope)
        bound.info(
            "email.received" if fresh else "email.duplicate",
            message_id=envelope.idempotency_key, automated=envelope.automated,
            attachments=len(envelope.attachments),
        )
        return IntakeResult(
            QUEUED if fresh else DUPLICATE,
            idempotency_key=envelope.idempotency_key,
            raw_ref=raw_ref,
            message_id=parsed.message_id,
        )


__all__ = [
    "DUPLICATE",
    "QUARANTINED",
    "QUEUED",
    "AttachmentPolicy",
    "IntakeResult",
    "MailIntake",
    "MailSource",
    "build_envelope",
    "idempotency_key",
]
