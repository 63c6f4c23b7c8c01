"""Which channels are configured, from settings: outbound adapters and intake tasks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from telegram import Bot

from channels.email.compose import EmailTemplates
from channels.email.imap import ImapMailbox, MailboxConfig
from channels.email.inbound import AttachmentPolicy, MailIntake
from channels.email.smtp import SmtpAdapter, SmtpConfig
from channels.telegram.inbound import TelegramIntakeConfig
from channels.telegram.intake import TelegramIntake, TelegramPoller
from channels.telegram.outbound import TelegramAdapter
from contact_center.settings import MailboxSettings, Settings
from crm_core.db import Database
from routing.adapters import ChannelRegistry
from routing.blobs import FileBlobStore
from routing.envelope import InboundMessage

Publish = Callable[[InboundMessage], Awaitable[bool]]


def blob_store(settings: Settings) -> FileBlobStore:
    """The blob store for raw originals and attachments."""
    return FileBlobStore(settings.blob_dir)


def attachment_policy(settings: Settings) -> AttachmentPolicy:
    """Attachment limits from the e-mail settings."""
    email = settings.email
    return AttachmentPolicy(
        max_bytes=int(email.max_attachment_mb * 1024 * 1024),
        blocked_extensions=frozenset(e.lower() for e in email.blocked_extensions),
    )


def smtp_adapter(settings: Settings) -> SmtpAdapter | None:
    """The e-mail outbound adapter, when ``[email.smtp]`` is configured."""
    smtp = settings.email.smtp
    if smtp is None:
        return None
    config = SmtpConfig(
        host=smtp.host, port=smtp.effective_port, security=smtp.security,
        username=smtp.username, password=smtp.resolved_password(),
        from_address=smtp.from_address, from_name=smtp.from_name,
        message_id_domain=smtp.message_id_domain, verify_tls=smtp.verify_tls,
    )
    addresses = {m.name: m.address for m in settings.email.mailboxes if m.address}
    return SmtpAdapter(config, blob_store(settings), EmailTemplates(settings.email.templates_dir),
                       addresses)


def build_registry(
    settings: Settings, bot: Bot | None = None, redis: Any | None = None
) -> ChannelRegistry:
    """Outbound adapters of every configured channel.

    Web chat replies need the visitors' sockets: ``serve`` registers its own hub's
    adapter; a separate worker can send them only through Redis (``redis``), which
    every web node's hub listens to.
    """
    registry = ChannelRegistry()
    if redis is not None and settings.webchat.enabled:
        from channels.webchat.adapter import WebchatAdapter
        from channels.webchat.hub import WebchatHub

        registry.register(WebchatAdapter(WebchatHub(redis)))
    adapter = smtp_adapter(settings)
    if adapter is not None:
        registry.register(adapter)
    bot = bot or telegram_bot(settings)
    if bot is not None:
        registry.register(TelegramAdapter(bot, blob_store(settings)))
    return registry


def mailbox_config(mailbox: MailboxSettings) -> MailboxConfig:
    """The IMAP reader's configuration of one configured mailbox."""
    return MailboxConfig(
        name=mailbox.name, host=mailbox.host, port=mailbox.effective_port,
        security=mailbox.security, username=mailbox.username,
        password=mailbox.resolved_password(), address=mailbox.address,
        folder=mailbox.folder, processed_folder=mailbox.processed_folder, team=mailbox.team,
        idle=mailbox.idle, poll_seconds=mailbox.poll_seconds, fetch_batch=mailbox.fetch_batch,
        verify_tls=mailbox.verify_tls,
    )


def mail_intake(settings: Settings, database: Database, publish: Publish) -> MailIntake:
    """Raw mail → envelopes on the bus, with the configured limits."""
    return MailIntake(database, blob_store(settings), publish, attachment_policy(settings))


def imap_readers(settings: Settings, database: Database, publish: Publish) -> list[ImapMailbox]:
    """One reader per configured mailbox."""
    intake = mail_intake(settings, database, publish)
    return [ImapMailbox(mailbox_config(m), intake, database) for m in settings.email.mailboxes]


async def run_intake(readers: list[ImapMailbox], stop: asyncio.Event) -> None:
    """Run every mailbox reader until ``stop`` is set."""
    if readers:
        await asyncio.gather(*(reader.run(stop) for reader in readers))


def telegram_bot(settings: Settings) -> Bot | None:
    """The Telegram Bot API client, when ``[telegram]`` is configured."""
    telegram = settings.telegram
    if telegram is None:
        return None
    return Bot(telegram.resolved_token(), base_url=telegram.api_base_url,
               base_file_url=telegram.api_file_url)


def telegram_intake(
    settings: Settings, database: Database, publish: Publish, bot: Bot
) -> TelegramIntake:
    """Raw Telegram updates → envelopes on the bus."""
    telegram = settings.telegram
    assert telegram is not None
    config = TelegramIntakeConfig(
        bot_id=int(telegram.resolved_token().split(":", 1)[0]),
        max_file_bytes=int(telegram.max_file_mb * 1024 * 1024),
        allow_groups=telegram.allow_groups,
        team=telegram.team,
    )
    return TelegramIntake(bot, config, database, blob_store(settings), publish)


def telegram_poller(settings: Settings, intake: TelegramIntake) -> TelegramPoller:
    """The long-polling loop of the bot."""
    assert settings.telegram is not None
    return TelegramPoller(intake, timeout=settings.telegram.poll_timeout)
