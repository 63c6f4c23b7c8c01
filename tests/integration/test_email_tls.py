"""The e-mail channel over TLS: IMAP with STARTTLS and implicit TLS against Dovecot, SMTP
with STARTTLS and implicit TLS (and AUTH) against the sink, all with a throwaway
self-signed certificate. Certificate verification is on by default, so the same servers
are refused unless ``verify_tls=False`` or the certificate is trusted."""

from __future__ import annotations

import email.policy
import re
import ssl
from collections.abc import AsyncIterator
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import aioimaplib
import aiosmtplib
import pytest

from channels.email.imap import ImapMailbox, MailboxConfig
from channels.email.inbound import MailIntake
from channels.email.smtp import SmtpAdapter, SmtpConfig
from crm_core.db import Database
from crm_core.models import Channel
from routing.blobs import FileBlobStore
from routing.envelope import InboundMessage, OutboundMessage, SenderHandles
from tests.conftest import TlsCert, TlsMailbox
from tests.mailservers import SmtpSink

IMAP_SECURITY = ["starttls", "tls"]


def customer_mail(subject: str) -> bytes:
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = "Li Lei <li.lei@example.cn>"
    message["To"] = "support@shop.example"
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain="example.cn")
    message.set_content("Hello over TLS")
    return message.as_bytes()


def caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``exc`` or anything in its cause/context chain is a ``kind``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


# -- IMAP ---------------------------------------------------------------------------------


@pytest.fixture
def published() -> list[InboundMessage]:
    """The envelopes the intake handed to the (fake) bus."""
    return []


@pytest.fixture
def imap_wire(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """Every IMAP command the client sends: (command name, sent over TLS?)."""
    sent: list[tuple[str, bool]] = []
    protocol_class = aioimaplib.aioimaplib.IMAP4ClientProtocol
    original = protocol_class.send

    def send(self: Any, line: str, scrub: str | None = None) -> None:
        words = line.split()
        name = words[1].upper() if len(words) > 1 else line.upper()
        encrypted = self.transport.get_extra_info("ssl_object") is not None
        sent.append((name, encrypted))
        original(self, line, scrub)

    monkeypatch.setattr(protocol_class, "send", send)
    return sent


@pytest.fixture
async def imap_readers() -> AsyncIterator[list[ImapMailbox]]:
    """Readers made by a test; each is logged out afterwards."""
    readers: list[ImapMailbox] = []
    yield readers
    for reader in readers:
        await reader.close()


def make_reader(
    box: TlsMailbox,
    db: Database,
    tmp_path: Path,
    published: list[InboundMessage],
    readers: list[ImapMailbox],
    *,
    security: str,
    verify_tls: bool = False,
) -> ImapMailbox:
    async def publish(envelope: InboundMessage) -> bool:
        published.append(envelope)
        return True

    config = MailboxConfig(
        name="support",
        host=box.host,
        username=box.user,
        password=box.password,
        address="support@shop.example",
        port=box.tls_port if security == "tls" else box.port,
        security=security,  # type: ignore[arg-type]
        verify_tls=verify_tls,
        timeout=10.0,
    )
    reader = ImapMailbox(config, MailIntake(db, FileBlobStore(tmp_path / "blobs"), publish), db)
    readers.append(reader)
    return reader


def login_log_line(box: TlsMailbox) -> str:
    lines = [
        line
        for line in box.server.read_log().splitlines()
        if "imap-login: Info: Login:" in line and f"user=<{box.user}>" in line
    ]
    assert len(lines) == 1, box.server.read_log()[-3000:]
    return lines[0]


@pytest.mark.parametrize("security", IMAP_SECURITY)
async def test_imap_over_tls_reads_a_delivered_mail(
    security: str,
    tls_mailbox: TlsMailbox,
    sqlite_db: Database,
    tmp_path: Path,
    published: list[InboundMessage],
    imap_wire: list[tuple[str, bool]],
    imap_readers: list[ImapMailbox],
) -> None:
    tls_mailbox.deliver(customer_mail(f"Invoice via {security}"))
    reader = make_reader(
        tls_mailbox, sqlite_db, tmp_path, published, imap_readers, security=security
    )

    assert await reader.sync_once() == 1

    [envelope] = published
    assert envelope.channel == Channel.EMAIL
    assert envelope.subject == f"Invoice via {security}"
    assert envelope.sender.email == "li.lei@example.cn"
    assert envelope.text is not None and "Hello over TLS" in envelope.text

    assert reader.client is not None
    transport = reader.client.protocol.transport
    ssl_object = transport.get_extra_info("ssl_object")
    assert ssl_object is not None, "the connection is not encrypted"
    assert ssl_object.version() in {"TLSv1.2", "TLSv1.3"}

    names = [name for name, _ in imap_wire]
    assert "LOGIN" in names
    if security == "starttls":
        upgrade = names.index("STARTTLS")
        # Only the greeting's CAPABILITY and STARTTLS itself go in clear text ...
        assert all(not encrypted for _, encrypted in imap_wire[: upgrade + 1]), imap_wire
        assert set(names[:upgrade]) <= {"CAPABILITY"}, imap_wire
        # ... LOGIN and everything after it are encrypted.
        assert names.index("LOGIN") > upgrade
        assert all(encrypted for _, encrypted in imap_wire[upgrade + 1 :]), imap_wire
    else:
        assert "STARTTLS" not in names
        assert all(encrypted for _, encrypted in imap_wire), imap_wire

    # Dovecot agrees: the login happened on a TLS connection.
    assert re.search(r"\bTLS\b", login_log_line(tls_mailbox)), login_log_line(tls_mailbox)

    assert await reader.sync_once() == 0  # the cursor moved on; nothing is read twice
    assert len(published) == 1


@pytest.mark.parametrize("security", IMAP_SECURITY)
async def test_imap_refuses_the_self_signed_certificate_when_verifying(
    security: str,
    tls_mailbox: TlsMailbox,
    sqlite_db: Database,
    tmp_path: Path,
    published: list[InboundMessage],
    imap_wire: list[tuple[str, bool]],
    imap_readers: list[ImapMailbox],
) -> None:
    tls_mailbox.deliver(customer_mail("never read"))
    reader = make_reader(
        tls_mailbox,
        sqlite_db,
        tmp_path,
        published,
        imap_readers,
        security=security,
        verify_tls=True,
    )

    with pytest.raises(ssl.SSLCertVerificationError) as refused:
        await reader.connect()

    assert "self-signed" in str(refused.value) or "self signed" in str(refused.value)
    assert reader.client is None
    assert "LOGIN" not in [name for name, _ in imap_wire], imap_wire
    assert published == []


@pytest.mark.parametrize("security", IMAP_SECURITY)
async def test_imap_verifies_a_trusted_certificate(
    security: str,
    tls_mailbox: TlsMailbox,
    tls_cert: TlsCert,
    sqlite_db: Database,
    tmp_path: Path,
    published: list[InboundMessage],
    imap_readers: list[ImapMailbox],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The refusal above is about trust: with the certificate trusted (as the system
    store would, via SSL_CERT_FILE) the very same check passes, host name included."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_cert.cert))
    tls_mailbox.deliver(customer_mail("trusted"))
    reader = make_reader(
        tls_mailbox,
        sqlite_db,
        tmp_path,
        published,
        imap_readers,
        security=security,
        verify_tls=True,
    )

    assert await reader.sync_once() == 1
    assert [envelope.subject for envelope in published] == ["trusted"]


# -- SMTP ---------------------------------------------------------------------------------


def outbound() -> OutboundMessage:
    return OutboundMessage(
        outbox_id=1,
        channel=Channel.EMAIL,
        to=SenderHandles(email="a@example.com"),
        text="hi",
        subject="s",
    )


def make_adapter(
    sink: SmtpSink,
    tmp_path: Path,
    *,
    security: str,
    verify_tls: bool = False,
    password: str | None = None,
) -> SmtpAdapter:
    config = SmtpConfig(
        host=sink.host,
        port=sink.tls_port if security == "tls" else sink.port,
        from_address="support@shop.example",
        security=security,  # type: ignore[arg-type]
        username=sink.username,
        password=sink.password if password is None else password,
        verify_tls=verify_tls,
        timeout=10.0,
    )
    return SmtpAdapter(config, FileBlobStore(tmp_path / "blobs"))


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_smtp_over_tls_with_auth_delivers(
    security: str, smtp_tls_sink: SmtpSink, tmp_path: Path
) -> None:
    adapter = make_adapter(smtp_tls_sink, tmp_path, security=security)
    try:
        message_id = await adapter.send(outbound())
        client = adapter._client
        assert client is not None and client.is_connected
        assert client.transport is not None
        assert client.transport.get_extra_info("ssl_object") is not None
    finally:
        await adapter.close()

    [mail] = await smtp_tls_sink.wait_for(1)
    assert mail.tls, "the message came over a clear-text connection"
    assert mail.auth_user == smtp_tls_sink.username
    assert mail.mail_from == "support@shop.example"
    assert mail.rcpt_tos == ["a@example.com"]
    assert b"Subject: s" in mail.content
    assert message_id.encode() in mail.content


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_smtp_refuses_the_self_signed_certificate_when_verifying(
    security: str, smtp_tls_sink: SmtpSink, tmp_path: Path
) -> None:
    """aiosmtplib raises the ssl error itself from STARTTLS, and wraps it in an
    ``SMTPConnectError`` on an implicit-TLS connect: either way it is the verification."""
    adapter = make_adapter(smtp_tls_sink, tmp_path, security=security, verify_tls=True)
    try:
        with pytest.raises((aiosmtplib.SMTPException, ssl.SSLError)) as refused:
            await adapter.send(outbound())
    finally:
        await adapter.close()
    assert caused_by(refused.value, ssl.SSLCertVerificationError), repr(refused.value)
    assert adapter._client is None
    assert smtp_tls_sink.messages == []


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_smtp_verifies_a_trusted_certificate(
    security: str,
    smtp_tls_sink: SmtpSink,
    tls_cert: TlsCert,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_cert.cert))
    adapter = make_adapter(smtp_tls_sink, tmp_path, security=security, verify_tls=True)
    try:
        await adapter.send(outbound())
    finally:
        await adapter.close()
    [mail] = await smtp_tls_sink.wait_for(1)
    assert mail.tls and mail.auth_user == smtp_tls_sink.username


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_smtp_over_tls_with_a_wrong_password_is_refused(
    security: str, smtp_tls_sink: SmtpSink, tmp_path: Path
) -> None:
    adapter = make_adapter(smtp_tls_sink, tmp_path, security=security, password="wrong")
    try:
        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            await adapter.send(outbound())
    finally:
        await adapter.close()
    assert smtp_tls_sink.messages == []


async def test_smtp_credentials_never_go_out_before_starttls(
    smtp_tls_sink: SmtpSink, tmp_path: Path
) -> None:
    """In clear text the sink offers no AUTH (and takes no mail): a client configured for
    ``plain`` cannot log in, so the STARTTLS test above logged in after the upgrade."""
    adapter = make_adapter(smtp_tls_sink, tmp_path, security="plain")
    try:
        with pytest.raises(aiosmtplib.SMTPException, match="AUTH"):
            await adapter.send(outbound())
    finally:
        await adapter.close()
    assert smtp_tls_sink.messages == []

    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        await aiosmtplib.send(
            customer_mail("clear text"),
            sender="support@shop.example",
            recipients=["a@example.com"],
            hostname=smtp_tls_sink.host,
            port=smtp_tls_sink.port,
            start_tls=False,
            timeout=10,
        )
    assert refused.value.code == 530
    assert smtp_tls_sink.messages == []
