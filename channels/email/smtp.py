"""SMTP out: the e-mail channel's outbound adapter, one reused connection per process.

Called by the outbox dispatcher, which owns retries: a 4xx answer or a dropped
connection raises (retried with backoff); a 5xx answer for the recipient raises
``PermanentSendError`` (the message is failed for good, visible to the agent).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Literal

import aiosmtplib
import structlog

from channels.email.compose import EmailTemplates, MailAttachment, as_smtp_bytes, compose
from crm_core.models import Channel
from routing.adapters import PermanentSendError
from routing.blobs import BlobStore
from routing.envelope import OutboundMessage

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class SmtpConfig:
    """Where and how replies leave."""

    host: str
    from_address: str
    port: int = 587
    security: Literal["plain", "starttls", "tls"] = "starttls"
    username: str | None = None
    password: str | None = None
    from_name: str | None = None
    message_id_domain: str | None = None
    """Domain of our Message-IDs; default: the from address's domain."""
    verify_tls: bool = True
    timeout: float = 30.0

    @property
    def domain(self) -> str:
        """The Message-ID domain."""
        return self.message_id_domain or self.from_address.rsplit("@", 1)[-1]


class SmtpAdapter:
    """Sends outbound e-mail through one SMTP server, reusing the connection."""

    channel = Channel.EMAIL

    def __init__(
        self,
        config: SmtpConfig,
        blobs: BlobStore,
        templates: EmailTemplates | None = None,
        mailbox_addresses: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.blobs = blobs
        self.templates = templates or EmailTemplates()
        self.mailbox_addresses = mailbox_addresses or {}
        self._client: aiosmtplib.SMTP | None = None
        self._lock = asyncio.Lock()

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if not self.config.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    async def _connected(self) -> aiosmtplib.SMTP:
        if self._client is not None and self._client.is_connected:
            return self._client
        config = self.config
        client = aiosmtplib.SMTP(
            hostname=config.host,
            port=config.port,
            use_tls=config.security == "tls",
            start_tls=config.security == "starttls",
            tls_context=self._tls_context() if config.security != "plain" else None,
            timeout=config.timeout,
        )
        await client.connect()
        if config.username:
            await client.login(config.username, config.password or "")
        self._client = client
        return client

    async def _attachments(self, message: OutboundMessage) -> list[MailAttachment]:
        return [
            MailAttachment(ref.filename, ref.content_type, await self.blobs.get(ref.blob_key))
            for ref in message.attachments
        ]

    def _from_address(self, message: OutboundMessage) -> str:
        mailbox = message.metadata.get("mailbox")
        return self.mailbox_addresses.get(str(mailbox), self.config.from_address)

    async def send(self, message: OutboundMessage) -> str:
        """Send one message; returns our Message-ID (stored as the interaction's ref)."""
        try:
            mail = compose(
                message,
                from_address=self._from_address(message),
                from_name=self.config.from_name,
                domain=self.config.domain,
                templates=self.templates,
                attachments=await self._attachments(message),
            )
        except ValueError as exc:
            raise PermanentSendError(str(exc)) from exc
        sender, recipient = self._from_address(message), str(message.to.email)
        raw = as_smtp_bytes(mail)
        async with self._lock:
            for attempt in (1, 2):
                client = await self._connected()
                try:
                    await client.sendmail(sender, [recipient], raw)
                    break
                except aiosmtplib.SMTPRecipientsRefused as exc:
                    codes = [r.code for r in exc.recipients]
                    if all(code >= 500 for code in codes):
                        raise PermanentSendError(f"recipient refused: {exc}") from exc
                    raise
                except aiosmtplib.SMTPResponseException as exc:
                    if exc.code >= 500:
                        raise PermanentSendError(f"{exc.code} {exc.message}") from exc
                    raise
                except (aiosmtplib.SMTPServerDisconnected, ConnectionError):
                    await self.close()  # a reused connection went stale: one fresh try
                    if attempt == 2:
                        raise
        message_id = str(mail["Message-ID"])
        log.info("email.sent", outbox_id=message.outbox_id, message_id=message_id,
                 channel="email")
        return message_id

    async def close(self) -> None:
        """Say QUIT, or just drop a connection that is already broken."""
        client, self._client = self._client, None
        if client is None:
            return
        try:
            await client.quit()
        except Exception:
            client.close()
