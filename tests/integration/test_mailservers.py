"""The real mail servers the e-mail channel tests talk to: Dovecot (IMAP) and an SMTP sink."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosmtplib
import pytest
from aioimaplib import IMAP4, Response

from tests.conftest import Mailbox
from tests.mailservers import DovecotServer, SmtpSink, free_port, imap_utf7

GBK_BODY = "您好，这是一封测试邮件。退订请回复“TD”。".encode("gbk")
GBK_MESSAGE = (
    b"From: =?utf-8?B?5byg5LiJ?= <zhang@example.com>\r\n"
    b"To: support@example.com\r\n"
    b"Subject: =?gbk?B?suLK1NPKvP4=?=\r\n"
    b"Message-ID: <gbk-1@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=gbk\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n" + GBK_BODY + b"\r\n"
)


def plain_message(n: int) -> bytes:
    return (
        f"From: a@example.com\r\nTo: b@example.com\r\nSubject: test {n}\r\n"
        f"Message-ID: <m{n}@example.com>\r\n\r\nbody {n}\r\n"
    ).encode()


@asynccontextmanager
async def imap_session(box: Mailbox) -> AsyncIterator[IMAP4]:
    """A logged-in aioimaplib client (created inside the running loop), logged out after."""
    client = IMAP4(box.host, box.port, timeout=10)
    await client.wait_hello_from_server()
    response = await client.login(box.user, box.password)
    assert response.result == "OK", response
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):  # the server may have closed the session
            await asyncio.wait_for(client.logout(), 5)


def select_info(response: Response) -> tuple[int, int]:
    """(UIDVALIDITY, EXISTS) from a SELECT response."""
    assert response.result == "OK", response
    text = b"\n".join(bytes(line) for line in response.lines)
    uidvalidity = re.search(rb"\[UIDVALIDITY (\d+)\]", text)
    exists = re.search(rb"^(\d+) EXISTS", text, re.MULTILINE)
    assert uidvalidity and exists, text
    return int(uidvalidity.group(1)), int(exists.group(1))


def literals(response: Response) -> list[bytes]:
    """The message literals of a FETCH response (the bytearray lines)."""
    assert response.result == "OK", response
    return [bytes(line) for line in response.lines if isinstance(line, bytearray)]


# -- Dovecot ----------------------------------------------------------------------------


async def test_fetch_returns_the_exact_bytes_delivered(mailbox: Mailbox) -> None:
    mailbox.deliver(GBK_MESSAGE)
    mailbox.deliver(plain_message(2), flags="S")
    async with imap_session(mailbox) as client:
        _, exists = select_info(await client.select("INBOX"))
        assert exists == 2
        fetched = await client.uid("fetch", "1:*", "(UID FLAGS BODY.PEEK[])")
        assert literals(fetched) == [GBK_MESSAGE, plain_message(2)]
        flags = b"\n".join(bytes(line) for line in fetched.lines)
        assert rb"UID 2 FLAGS (\Seen" in flags


async def test_wrong_password_is_refused(mailbox: Mailbox) -> None:
    client = IMAP4(mailbox.host, mailbox.port, timeout=10)
    await client.wait_hello_from_server()
    response = await client.login(mailbox.user, "wrong-" + mailbox.password)
    assert response.result == "NO"
    await client.logout()


async def test_idle_sees_a_delivery(mailbox: Mailbox) -> None:
    async with imap_session(mailbox) as client:
        select_info(await client.select("INBOX"))
        idle = await client.idle_start(timeout=20)
        try:
            mailbox.deliver(plain_message(1))
            pushed: list[bytes] = []
            async with asyncio.timeout(10):
                while not any(re.match(rb"1 EXISTS", bytes(line)) for line in pushed):
                    pushed.extend(await client.wait_server_push(timeout=10))
        finally:
            client.idle_done()
            await asyncio.wait_for(idle, 5)


async def test_reset_uidvalidity_keeps_messages_and_flags(mailbox: Mailbox) -> None:
    mailbox.deliver(plain_message(1))
    mailbox.deliver(plain_message(2), flags="S")
    async with imap_session(mailbox) as client:
        before, exists = select_info(await client.select("INBOX"))
        assert exists == 2
    mailbox.reset_uidvalidity()
    async with imap_session(mailbox) as client:
        after, exists = select_info(await client.select("INBOX"))
        assert exists == 2
        assert after != before
        fetched = await client.uid("fetch", "1:*", "(UID FLAGS BODY.PEEK[])")
        assert sorted(literals(fetched)) == [plain_message(1), plain_message(2)]
        assert b"\\Seen" in b"\n".join(bytes(line) for line in fetched.lines)


async def test_reset_uidvalidity_in_a_folder_without_flags(mailbox: Mailbox) -> None:
    mailbox.deliver(plain_message(1), folder="Archive", flags="S")
    async with imap_session(mailbox) as client:
        before, _ = select_info(await client.select("Archive"))
    mailbox.server.reset_uidvalidity(mailbox.user, "Archive", keep_flags=False)
    async with imap_session(mailbox) as client:
        after, exists = select_info(await client.select("Archive"))
        fetched = await client.uid("fetch", "1:*", "(FLAGS)")
    assert (after != before, exists) == (True, 1)
    assert b"\\Seen" not in b"\n".join(bytes(line) for line in fetched.lines)


async def test_reset_uidvalidity_disconnects_a_session_that_has_the_folder_open(
    mailbox: Mailbox,
) -> None:
    # Raw protocol: what Dovecot says, independent of any client library.
    mailbox.deliver(plain_message(1))
    reader, writer = await asyncio.open_connection(mailbox.host, mailbox.port)
    try:

        async def command(tag: bytes, line: bytes) -> list[bytes]:
            writer.write(tag + b" " + line + b"\r\n")
            await writer.drain()
            lines: list[bytes] = []
            async with asyncio.timeout(10):
                while True:
                    received = await reader.readline()
                    lines.append(received)
                    if not received or received.startswith(tag + b" "):
                        return lines

        assert (await reader.readline()).startswith(b"* OK")
        await command(b"a1", f"LOGIN {mailbox.user} {mailbox.password}".encode())
        await command(b"a2", b"SELECT INBOX")
        mailbox.reset_uidvalidity()
        answer = await command(b"a3", b"NOOP")
        assert answer[0].startswith(b"* BYE"), answer
        assert answer[-1] == b""  # connection closed
    finally:
        writer.close()


async def test_created_folders_are_listed_and_selectable(mailbox: Mailbox) -> None:
    mailbox.create_folder("Archive")
    mailbox.create_folder("已发送")
    mailbox.deliver(plain_message(1), folder="Archive.2024")
    async with imap_session(mailbox) as client:
        listing = await client.list('""', "*")
        assert listing.result == "OK"
        names = b"\n".join(bytes(line) for line in listing.lines)
        for name in (b"INBOX", b"Archive", b"Archive.2024", imap_utf7("已发送").encode()):
            assert b'"." ' + name + b"\n" in names + b"\n", names
        assert imap_utf7("已发送") == "&XfJT0ZAB-"
        _, exists = select_info(await client.select("Archive.2024"))
        assert exists == 1
        _, exists = select_info(await client.select('"&XfJT0ZAB-"'))
        assert exists == 0


async def test_delete_all_empties_the_folder(mailbox: Mailbox) -> None:
    mailbox.deliver(plain_message(1))
    mailbox.deliver(plain_message(2))
    assert mailbox.delete_all() == 2
    async with imap_session(mailbox) as client:
        _, exists = select_info(await client.select("INBOX"))
    assert exists == 0


def test_a_second_server_starts_and_stops_cleanly(dovecot: DovecotServer) -> None:
    root = Path(tempfile.mkdtemp(prefix="cc-dovecot-"))
    server = DovecotServer()
    try:
        server.start(root, password="other")
        assert server.port != dovecot.port
        pid = server.pid
        assert pid is not None and server.running
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    assert not server.running
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


# -- SMTP sink --------------------------------------------------------------------------


async def test_sent_mail_arrives_with_envelope_and_content(smtp_sink: SmtpSink) -> None:
    await aiosmtplib.send(
        GBK_MESSAGE,
        sender="support@example.com",
        recipients=["zhang@example.com", "li@example.com"],
        hostname=smtp_sink.host,
        port=smtp_sink.port,
        timeout=10,
    )
    [mail] = await smtp_sink.wait_for(1)
    assert mail.mail_from == "support@example.com"
    assert mail.rcpt_tos == ["zhang@example.com", "li@example.com"]
    assert mail.content == GBK_MESSAGE
    assert mail.auth_user is None


async def test_wait_for_times_out(smtp_sink: SmtpSink) -> None:
    with pytest.raises(TimeoutError):
        await smtp_sink.wait_for(1, timeout=0.2)


async def test_fail_next_gives_one_451_then_accepts(smtp_sink: SmtpSink) -> None:
    smtp_sink.fail_next(1)
    send = {
        "sender": "support@example.com",
        "recipients": ["zhang@example.com"],
        "hostname": smtp_sink.host,
        "port": smtp_sink.port,
        "timeout": 10,
    }
    with pytest.raises(aiosmtplib.SMTPResponseException) as failure:
        await aiosmtplib.send(plain_message(1), **send)
    assert failure.value.code == 451
    assert smtp_sink.messages == []
    await aiosmtplib.send(plain_message(2), **send)
    [mail] = await smtp_sink.wait_for(1)
    assert b"Subject: test 2" in mail.content


async def test_auth_is_required_when_enabled() -> None:
    sink = SmtpSink(auth_required=True, username="mailer", password="pa55")
    sink.start()
    send = {
        "sender": "support@example.com",
        "recipients": ["zhang@example.com"],
        "hostname": sink.host,
        "port": sink.port,
        "timeout": 10,
    }
    try:
        with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
            await aiosmtplib.send(plain_message(1), **send)
        assert refused.value.code == 530
        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            await aiosmtplib.send(plain_message(2), username="mailer", password="nope", **send)
        await aiosmtplib.send(plain_message(3), username="mailer", password="pa55", **send)
        [mail] = await sink.wait_for(1)
        assert mail.auth_user == "mailer"
        assert b"Subject: test 3" in mail.content
    finally:
        sink.stop()


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
