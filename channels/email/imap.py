"""IMAP intake: one task per mailbox, IDLE when the server offers it, polling otherwise.

Progress is a cursor of UIDVALIDITY and the last UID handed to the bus, saved after each
batch. A batch is fetched with one ``UID FETCH``; every mail is stored and published
(or quarantined) before the batch is marked ``\\Seen`` or moved to the processed folder
and the cursor advances. A crash in between fetches the batch again, and the envelopes'
idempotency keys (the Message-ID) make the second pass a no-op. When UIDVALIDITY changes
the folder is read again from the start, with the same protection.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from dataclasses import dataclass
from typing import Any, Literal

import aioimaplib
import structlog

from channels.email.inbound import MailIntake, MailSource
from crm_core.db import Database
from crm_core.models import Channel
from routing.intake import load_cursor, save_cursor

log = structlog.get_logger(__name__)

Security = Literal["plain", "starttls", "tls"]
_UIDVALIDITY = re.compile(rb"UIDVALIDITY (\d+)")
_FETCH_UID = re.compile(rb"UID (\d+)")
_LITERAL = re.compile(rb"\{(\d+)\}\s*$")


class ImapError(RuntimeError):
    """The server refused a command we cannot go on without."""


@dataclass(frozen=True)
class MailboxConfig:
    """One mailbox we read: where it is, how to log in, and where its mail is routed."""

    name: str
    host: str
    username: str
    password: str
    address: str | None = None
    """The address customers write to; replies leave from it."""
    port: int = 993
    security: Security = "tls"
    folder: str = "INBOX"
    processed_folder: str | None = None
    """Move handled mail here; unset: mark it ``\\Seen`` and leave it."""
    team: str | None = None
    idle: bool = True
    poll_seconds: float = 60.0
    idle_seconds: float = 300.0
    """Re-issue IDLE this often (servers drop it after 30 minutes)."""
    fetch_batch: int = 25
    verify_tls: bool = True
    timeout: float = 30.0

    @property
    def source(self) -> str:
        """The cursor and quarantine name of this mailbox's folder."""
        return f"{self.name}:{self.folder}"


def _ok(response: Any, what: str) -> Any:
    if response.result != "OK":
        raise ImapError(f"{what}: {response.result} {response.lines!r}"[:500])
    return response


def quote_mailbox(name: str) -> str:
    """A mailbox name as an IMAP quoted string."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_fetch(lines: list[Any]) -> dict[int, bytes]:
    """Message bytes by UID from the lines of a ``UID FETCH … BODY.PEEK[]`` response."""
    found: dict[int, bytes] = {}
    pending_uid: int | None = None
    literal: bytes | None = None
    expect_literal = False
    for line in lines:
        if isinstance(line, bytearray) and expect_literal:
            literal = bytes(line)
            expect_literal = False
            continue
        if not isinstance(line, bytes | bytearray):
            continue
        line = bytes(line)
        uid = _FETCH_UID.search(line)
        if b"FETCH" in line:
            pending_uid, literal = None, None
        if uid:
            pending_uid = int(uid.group(1))
        if _LITERAL.search(line):
            expect_literal = True
        if pending_uid is not None and literal is not None:
            found[pending_uid] = literal
            pending_uid, literal = None, None
    return found


class ImapMailbox:
    """Reads one mailbox folder into the bus, forever, until ``stop`` is set."""

    def __init__(self, config: MailboxConfig, intake: MailIntake, database: Database) -> None:
        self.config = config
        self.intake = intake
        self.database = database
        self.client: aioimaplib.IMAP4 | None = None
        self.capabilities: set[str] = set()
        self._lost = asyncio.Event()
        """Set when the server closes the connection (a restart, a killed session)."""
        self._log = log.bind(channel="email", mailbox=config.name, folder=config.folder)

    # -- connection ------------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if not self.config.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    async def connect(self) -> aioimaplib.IMAP4:
        """Connect, secure the connection as configured, log in and select the folder."""
        config = self.config
        lost = self._lost = asyncio.Event()

        def connection_lost(_exc: Exception | None) -> None:
            lost.set()

        # IMAP4 with an SSL context is IMAP4_SSL, which does not pass on conn_lost_cb.
        client = aioimaplib.IMAP4(
            config.host, config.port, timeout=config.timeout, conn_lost_cb=connection_lost,
            ssl_context=self._tls_context() if config.security == "tls" else None,
        )
        try:
            await client.wait_hello_from_server()
            if config.security == "starttls":
                await self._starttls(client)
            _ok(await client.login(config.username, config.password), "LOGIN")
            await self._read_capabilities(client)
        except BaseException:
            transport = getattr(client.protocol, "transport", None)
            if transport is not None:  # no half-open socket left behind for the retry
                transport.close()
            raise
        self.client = client
        return client

    async def _starttls(self, client: aioimaplib.IMAP4) -> None:
        protocol = client.protocol
        response = await asyncio.wait_for(
            protocol.execute(aioimaplib.Command("STARTTLS", protocol.new_tag())),
            self.config.timeout,
        )
        _ok(response, "STARTTLS")
        loop = asyncio.get_running_loop()
        protocol.transport = await loop.start_tls(
            protocol.transport, protocol, self._tls_context(), server_hostname=self.config.host
        )

    async def _read_capabilities(self, client: aioimaplib.IMAP4) -> None:
        response = await client.protocol.execute(
            aioimaplib.Command("CAPABILITY", client.protocol.new_tag())
        )
        words: set[str] = set()
        for line in response.lines:
            if isinstance(line, bytes | bytearray):
                words.update(bytes(line).decode("ascii", "replace").upper().split())
        self.capabilities = words

    async def close(self) -> None:
        """Log out, ignoring a connection that is already gone."""
        client, self.client = self.client, None
        if client is None:
            return
        with contextlib.suppress(Exception):
            if client.has_pending_idle():
                client.idle_done()
            await asyncio.wait_for(client.logout(), 5)

    # -- one pass ---------------------------------------------------------------------

    async def _select(self, client: aioimaplib.IMAP4) -> int:
        response = _ok(await client.select(quote_mailbox(self.config.folder)), "SELECT")
        for line in response.lines:
            if isinstance(line, bytes | bytearray):
                match = _UIDVALIDITY.search(bytes(line))
                if match:
                    return int(match.group(1))
        raise ImapError("SELECT returned no UIDVALIDITY")

    async def _new_uids(self, client: aioimaplib.IMAP4, after: int) -> list[int]:
        response = _ok(await client.uid_search(f"UID {after + 1}:*", charset=None), "SEARCH")
        uids: set[int] = set()
        for line in response.lines:
            if not isinstance(line, bytes | bytearray):
                continue
            words = bytes(line).decode("ascii", "replace").split()
            if words and words[0].upper() == "SEARCH":
                words = words[1:]
            if words and all(word.isdigit() for word in words):
                uids.update(int(word) for word in words)
        # "n:*" always matches the highest UID, even when it is below n.
        return sorted(uid for uid in uids if uid > after)

    async def _mark_done(self, client: aioimaplib.IMAP4, uids: list[int]) -> None:
        uid_set = ",".join(str(uid) for uid in uids)
        target = self.config.processed_folder
        if target:
            if "MOVE" in self.capabilities:
                _ok(await client.uid("move", uid_set, quote_mailbox(target)), "MOVE")
                return
            _ok(await client.uid("copy", uid_set, quote_mailbox(target)), "COPY")
            _ok(await client.uid("store", uid_set, "+FLAGS.SILENT", r"(\Deleted \Seen)"), "STORE")
            _ok(await client.uid("expunge", uid_set), "EXPUNGE")
            return
        _ok(await client.uid("store", uid_set, "+FLAGS.SILENT", r"(\Seen)"), "STORE")

    async def sync_once(self) -> int:
        """Hand every mail newer than the cursor to the bus; returns how many were read."""
        client = self.client or await self.connect()
        config = self.config
        uidvalidity = await self._select(client)
        state = await load_cursor(self.database, Channel.EMAIL, config.source)
        last_uid = int(state.get("last_uid", 0))
        if state.get("uidvalidity") not in (None, uidvalidity):
            self._log.warning("imap.uidvalidity_changed", old=state.get("uidvalidity"),
                              new=uidvalidity)
            last_uid = 0
        uids = await self._new_uids(client, last_uid)
        handled = 0
        for start in range(0, len(uids), config.fetch_batch):
            batch = uids[start : start + config.fetch_batch]
            response = _ok(
                await client.uid("fetch", ",".join(map(str, batch)), "(UID BODY.PEEK[])"),
                "FETCH",
            )
            messages = parse_fetch(response.lines)
            for uid in batch:
                raw = messages.get(uid)
                if raw is None:  # expunged by someone else since the search
                    continue
                await self.intake.ingest(raw, MailSource(
                    source=config.source, source_ref=f"{uidvalidity}/{uid}",
                    mailbox=config.name, team=config.team,
                    extra={"mailbox_address": config.address} if config.address else {},
                ))
                handled += 1
            await self._mark_done(client, batch)
            await save_cursor(self.database, Channel.EMAIL, config.source,
                              {"uidvalidity": uidvalidity, "last_uid": batch[-1]})
        if not uids and state.get("uidvalidity") != uidvalidity:
            await save_cursor(self.database, Channel.EMAIL, config.source,
                              {"uidvalidity": uidvalidity, "last_uid": last_uid})
        if handled:
            self._log.info("imap.synced", messages=handled, last_uid=uids[-1])
        return handled

    # -- forever ----------------------------------------------------------------------

    async def _wait_for_news(self, stop: asyncio.Event) -> None:
        client = self.client
        assert client is not None
        stopper = asyncio.ensure_future(stop.wait())
        try:
            if self.config.idle and "IDLE" in self.capabilities:
                idle = await client.idle_start(timeout=self.config.idle_seconds)
                push = asyncio.ensure_future(
                    client.wait_server_push(timeout=self.config.idle_seconds + 30)
                )
                # A dropped connection wakes no IDLE push: wait for its loss as well.
                lost = asyncio.ensure_future(self._lost.wait())
                await asyncio.wait({push, stopper, lost}, return_when=asyncio.FIRST_COMPLETED)
                push.cancel()
                lost.cancel()
                if self._lost.is_set():
                    raise ConnectionError("the IMAP server closed the connection")
                client.idle_done()
                await asyncio.wait_for(idle, self.config.timeout)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(stopper), self.config.poll_seconds)
        finally:
            stopper.cancel()

    async def run(self, stop: asyncio.Event) -> None:
        """Sync, then wait for news (IDLE or a poll interval); reconnect with backoff."""
        backoff = 1.0
        self._log.info("imap.started", host=self.config.host, security=self.config.security)
        while not stop.is_set():
            try:
                await self.sync_once()
                backoff = 1.0
                await self._wait_for_news(stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._log.warning("imap.connection_problem", error=f"{type(exc).__name__}: {exc}",
                                  retry_in=backoff)
                await self.close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, 60.0)
        await self.close()
        self._log.info("imap.stopped")
