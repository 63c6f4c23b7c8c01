"""Benchmark: 2,000 realistic mails in a Dovecot mailbox, all turned into committed tickets.

The mailbox (a private Dovecot on 127.0.0.1, started here) holds a seeded mix: a third
Chinese (UTF-8, GBK and GB2312, some as raw 8-bit), English the rest; about 15 % are
replies quoting an earlier mail (In-Reply-To / References), 10 % HTML only, 10 % carry
a PDF or image attachment, 2 % are out-of-office answers.

- ``ceiling_emails_per_s``: the same mailbox fetched with bare batched ``UID FETCH`` and
  each message parsed with ``email.message_from_bytes(raw, policy=policy.default)`` and
  nothing else;
- ``emails_per_s``: the contact center in embedded mode (SQLite, database bus) reading
  the mailbox with its IMAP reader while its routing engine runs in the same process,
  from the first FETCH until every mail is a committed interaction on a ticket
  (automated mail: a committed interaction without one);
- ``intake_emails_per_s`` (IMAP → blob store → bus) and ``routing_messages_per_s``
  (bus → committed tickets), each alone on a second fresh database, say which half
  bounds it;
  ``parse_ms_ours`` / ``parse_ms_policy_default`` compare our parser with the modern
  policy's full decoding (headers, body, attachments) per mail.

    python bench/email_ingest.py                 # 2,000 mails
    python bench/email_ingest.py --messages 300  # a quick run

Targets: ≥ 250 emails/s and ≥ 0.5 of the ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import logging
import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

from _common import PROJECT_ROOT, environment, peak_rss_mb, print_table, rate, write_results

if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

import aioimaplib
import structlog
from sqlalchemy import func, select

from channels.email.imap import ImapMailbox, MailboxConfig, parse_fetch
from channels.email.inbound import MailIntake
from channels.email.parse import parse_email
from crm_core import schema
from crm_core.db import Database, create_engine
from crm_core.models import Direction, Interaction
from routing.blobs import FileBlobStore
from routing.bus import DatabaseBus, RetryPolicy
from routing.context import RoutingConfig
from routing.engine import RoutingEngine
from routing.rules import load_rules
from tests.mailservers import DovecotServer

TARGETS = {"emails_per_s": 250.0, "ratio": 0.5}
USER = "support"
FETCH_BATCH = 50
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰"
LATIN = ["James Smith", "Mary Johnson", "Robert Brown", "Linda Davis", "Michael Miller",
         "Sarah Wilson", "David Moore", "Emma Taylor", "Daniel Anderson", "Olivia Thomas"]
ZH_SUBJECTS = ["发票抬头错了", "订单还没发货", "退款申请", "产品质量问题", "修改收货地址",
               "会员积分查询", "预约上门安装", "投诉快递员态度"]
ZH_BODIES = [
    "你好，我的订单{n}已经下单三天了，还没有发货，请帮忙查一下。",
    "您好，发票抬头应该是上海某某贸易有限公司，请重新开具，谢谢。",
    "收到的商品有破损，外包装也压坏了，附件是照片，请尽快处理。",
    "请问积分什么时候到账？我上周消费了{n}元。",
]
EN_SUBJECTS = ["Where is my order", "Invoice request", "Refund for order", "Damaged item",
               "Change delivery address", "Question about warranty"]
EN_BODIES = [
    "Hello,\n\nI ordered item {n} last week and it has not arrived yet. Could you check?\n",
    "Hi team,\n\nPlease send me the invoice for order {n}. Our VAT number is GB{n}.\n",
    "Dear support,\n\nThe package arrived damaged. Photos attached. Please advise.\n",
]


def _customers(rng: random.Random, count: int) -> list[tuple[str, str, bool]]:
    people = []
    for index in range(count):
        chinese = index % 3 == 0
        if chinese:
            given = "".join(rng.choice(GIVEN) for _ in range(rng.randint(1, 2)))
            name = rng.choice(SURNAMES) + given
            address = f"cust{index}@example.cn"
        else:
            name = rng.choice(LATIN)
            address = f"cust{index}@example.com"
        people.append((name, address, chinese))
    return people


def build_corpus(count: int, seed: int = 7) -> list[bytes]:
    """``count`` realistic mails as CRLF bytes (seeded, so every run reads the same)."""
    rng = random.Random(seed)
    people = _customers(rng, max(30, count // 6))
    start = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)
    sent: list[tuple[str, str, str, str]] = []  # message id, subject, address, body
    corpus = []
    pdf = b"%PDF-1.4\n" + bytes(rng.randrange(256) for _ in range(30_000))
    for n in range(count):
        name, address, chinese = rng.choice(people)
        message = EmailMessage(policy=email.policy.SMTP)
        message_id = f"<bench.{n}.{seed}@{address.split('@')[1]}>"
        reply_to = rng.choice(sent) if sent and rng.random() < 0.15 else None
        if reply_to is not None:
            _, subject, address, quoted = reply_to
            subject = f"Re: {subject}" if not chinese else f"回复：{subject}"
            body = ("好的，谢谢，请尽快处理。" if chinese else "Thanks, any news on this?")
            body += "\n\n> " + quoted.replace("\n", "\n> ")
        elif chinese:
            subject = rng.choice(ZH_SUBJECTS)
            body = rng.choice(ZH_BODIES).format(n=n)
        else:
            subject = rng.choice(EN_SUBJECTS)
            body = rng.choice(EN_BODIES).format(n=n)
        automated = rng.random() < 0.02
        if automated:
            subject = ("自动回复：" if chinese else "Automatic reply: ") + subject
            message["Auto-Submitted"] = "auto-replied"
        message["From"] = f"{name} <{address}>"
        message["To"] = "support@shop.example"
        message["Subject"] = subject
        message["Message-ID"] = message_id
        message["Date"] = format_datetime(start + timedelta(seconds=n))
        if reply_to is not None:
            message["In-Reply-To"] = reply_to[0]
            message["References"] = reply_to[0]
        charset = "utf-8"
        if chinese:
            charset = rng.choice(["utf-8", "gbk", "gb2312"])
        html_only = rng.random() < 0.10
        if html_only:
            markup = "<html><body><p>" + body.replace("\n", "<br>") + "</p></body></html>"
            message.set_content(markup, subtype="html", charset=charset)
        else:
            message.set_content(body, charset=charset,
                                cte="8bit" if chinese and rng.random() < 0.5 else None)
        if rng.random() < 0.10:
            message.add_attachment(pdf, maintype="application", subtype="pdf",
                                   filename="发票.pdf" if chinese else "invoice.pdf")
        corpus.append(message.as_bytes())
        sent.append((message_id, subject, address, body))
    return corpus


async def ceiling(server: DovecotServer) -> tuple[float, int]:
    """Seconds to fetch everything with batched UID FETCH and parse with policy.default."""
    client = aioimaplib.IMAP4(server.host, server.port, timeout=60)
    await client.wait_hello_from_server()
    await client.login(USER, server.password)
    started = time.perf_counter()
    await client.select("INBOX")
    response = await client.uid_search("ALL", charset=None)
    uids = [int(word) for word in bytes(response.lines[0]).split() if word.isdigit()]
    parsed = 0
    for start in range(0, len(uids), FETCH_BATCH):
        batch = uids[start : start + FETCH_BATCH]
        fetched = await client.uid("fetch", ",".join(map(str, batch)), "(UID BODY.PEEK[])")
        for raw in parse_fetch(fetched.lines).values():
            email.message_from_bytes(raw, policy=email.policy.default)
            parsed += 1
    seconds = time.perf_counter() - started
    await client.logout()
    return seconds, parsed


def parse_costs(corpus: list[bytes]) -> tuple[float, float]:
    """Milliseconds per mail: our parser, and policy.default with every part decoded."""
    sample = corpus[:300]
    started = time.perf_counter()
    for raw in sample:
        parse_email(raw)
    ours = (time.perf_counter() - started) * 1000 / len(sample)
    started = time.perf_counter()
    for raw in sample:
        message = email.message_from_bytes(raw, policy=email.policy.default)
        for name in ("From", "To", "Subject", "Message-ID", "Date"):
            _ = message[name]
        for part in message.walk():
            if not part.is_multipart():
                part.get_content()
    modern = (time.perf_counter() - started) * 1000 / len(sample)
    return ours, modern


async def _fresh_contact_center(
    server: DovecotServer, workdir: Path
) -> tuple[Database, RoutingEngine, ImapMailbox]:
    """A migrated SQLite database, the routing engine on its bus and a mailbox reader."""
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    url = f"sqlite:///{workdir / 'cc.db'}"
    migrator = create_engine(url)
    await schema.upgrade(migrator)
    await migrator.dispose()
    database = Database(url)
    policy = RetryPolicy(max_attempts=5, base_delay=timedelta(seconds=1),
                         lease=timedelta(seconds=120))
    rules = load_rules(PROJECT_ROOT / "config" / "rules.toml")
    engine = RoutingEngine(database, DatabaseBus(database, policy),
                           RoutingConfig(region="CN", rules=rules))
    intake = MailIntake(database, FileBlobStore(workdir / "blobs"), engine.publish)
    reader = ImapMailbox(MailboxConfig(
        name="support", host=server.host, port=server.port, security="plain",
        username=USER, password=server.password, fetch_batch=FETCH_BATCH,
    ), intake, database)
    return database, engine, reader


async def _committed(database: Database) -> int:
    async with database.sessions() as session:
        return int(await session.scalar(
            select(func.count()).select_from(Interaction)
            .where(Interaction.direction == Direction.INBOUND)))


async def contact_center(server: DovecotServer, workdir: Path, expected: int) -> float:
    """Seconds for our reader and routing engine, in one process, to commit every mail."""
    database, engine, reader = await _fresh_contact_center(server, workdir)
    stop = asyncio.Event()

    async def route() -> None:
        while not stop.is_set():
            if not await engine.run_once("bench"):
                await asyncio.sleep(0.05)

    started = time.perf_counter()
    routing_task = asyncio.create_task(route())
    await reader.sync_once()
    await reader.close()
    while await _committed(database) < expected:  # noqa: ASYNC110 - polling the database
        await asyncio.sleep(0.05)
    total = time.perf_counter() - started
    stop.set()
    await routing_task
    await database.dispose()
    return total


async def halves(server: DovecotServer, workdir: Path, expected: int) -> tuple[float, float]:
    """Seconds of intake alone, then of routing alone, on a fresh database."""
    database, engine, reader = await _fresh_contact_center(server, workdir)
    started = time.perf_counter()
    await reader.sync_once()
    await reader.close()
    intake = time.perf_counter() - started
    started = time.perf_counter()
    while await engine.run_once("bench"):
        pass
    routing = time.perf_counter() - started
    assert await _committed(database) == expected
    await database.dispose()
    return intake, routing


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    corpus = build_corpus(args.messages)
    root = Path(tempfile.mkdtemp(prefix="cc-bench-dovecot-"))
    workdir = Path(tempfile.mkdtemp(prefix="cc-bench-email-"))
    server = DovecotServer()
    server.start(root)
    try:
        for raw in corpus:
            server.deliver(USER, raw)
        ceiling_seconds, parsed = await ceiling(server)
        ours, modern = parse_costs(corpus)
        total = await contact_center(server, workdir / "together", len(corpus))
        intake, routing = await halves(server, workdir / "halves", len(corpus))
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
    emails_per_s = rate(len(corpus), total)
    ceiling_per_s = rate(parsed, ceiling_seconds)
    return {
        "messages": len(corpus),
        "emails_per_s": emails_per_s,
        "ceiling_emails_per_s": ceiling_per_s,
        "ratio_to_ceiling": round(emails_per_s / ceiling_per_s, 3) if ceiling_per_s else 0.0,
        "intake_emails_per_s": rate(len(corpus), intake),
        "routing_messages_per_s": rate(len(corpus), routing),
        "parse_ms_ours": round(ours, 3),
        "parse_ms_policy_default": round(modern, 3),
        "peak_rss_mb": peak_rss_mb(),
        "meets_targets": emails_per_s >= TARGETS["emails_per_s"]
        and ceiling_per_s > 0 and emails_per_s / ceiling_per_s >= TARGETS["ratio"],
        **environment(),
    }


def main() -> None:
    """Run the benchmark, print the table and write ``bench/results/email_ingest.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    print_table(results)
    print(f"written to {write_results('email_ingest', results)}")


if __name__ == "__main__":
    main()
