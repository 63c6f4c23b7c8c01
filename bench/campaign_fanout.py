"""Benchmark: a 100,000-customer campaign audience selected, enqueued and delivered by e-mail.

Embedded mode (SQLite, the file a fresh installation uses; ``--postgres ADMIN_URL`` runs the
same on a private PostgreSQL database), with a local aiosmtpd server
(``tests.mailservers.SmtpSink``, in a process of its own as a real relay would be):

- ``select_customers_per_s``: the campaign's audience (a segment filter: active customers)
  read as ids;
- ``enqueue_messages_per_s``: the fan-out — one ``campaign_sends`` row per customer, bulk
  inserted with the unique send key (``scheduler.plan()``, audience query included);
- ``materialize_messages_per_s``: due sends checked (opt-out, consent, caps, quiet hours)
  and each turned into an outbound interaction + outbox message through
  ``enqueue_reply``, a batch per transaction (``scheduler.deliver()``);
- ``smtp_messages_per_s``: the outbox sent through the real SMTP adapter by
  ``--processes`` dispatching processes (like ``contact-center worker``) with
  ``--connections`` outbox dispatchers each (one reused SMTP connection per dispatcher),
  until the server accepted every message;
- ``duplicates``: messages the server got beyond one per customer, customers with more
  than one outbox row, and sends a second planning pass added (must be 0).

    python bench/campaign_fanout.py                      # 100,000 customers
    python bench/campaign_fanout.py --customers 5000     # a quick run

Targets: enqueue ≥ 5,000 messages/s, SMTP ≥ 300 messages/s, no duplicates.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from _common import PROJECT_ROOT, environment, peak_rss_mb, print_table, rate, write_results

if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

import structlog
from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import make_url

from channels.email.smtp import SmtpAdapter, SmtpConfig
from contact_center.campaign_links import CampaignLinks
from contact_center.scheduler import CampaignScheduler
from crm_core import schema
from crm_core.db import Database, create_engine, normalize_database_url
from crm_core.models import CampaignSend, Customer, CustomerIdentity, OutboxMessage
from crm_core.services.campaign_config import parse_campaigns
from crm_core.services.campaigns import audience_of
from routing.adapters import ChannelRegistry
from routing.blobs import FileBlobStore
from routing.bus import RetryPolicy
from routing.outbox import OutboxDispatcher
from tests.mailservers import SmtpSink

TARGETS = {"enqueue_messages_per_s": 5000.0, "smtp_messages_per_s": 300.0}
SEND_AT = datetime(2026, 5, 4, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰"
CAMPAIGN = {
    "defaults": {"timezone": "Asia/Shanghai", "language": "zh-CN"},
    "campaigns": [{
        "key": "spring-care", "name": "春季关怀 Spring care", "purpose": "marketing",
        "audience": {"lifecycle": "active"},
        "trigger": {"kind": "once", "at": SEND_AT},
        "channels": ["email"],
        "templates": {"email": {
            "zh-CN": {"subject": "{{ customer.greeting }}，春季关怀",
                      "text": "{{ customer.greeting }}，您好！感谢您一直以来的支持。\n"
                              "会员专享：{{ track('https://www.example.cn/spring') }}"},
            "en": {"subject": "Spring greetings, {{ customer.greeting }}",
                   "text": "Dear {{ customer.greeting }}, thank you for being with us.\n"
                           "Member offers: {{ track('https://www.example.cn/en/spring') }}"},
        }},
    }],
}


async def _admin(url: str, statement: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def fresh_database(workdir: Path, postgres_admin: str | None = None) -> Database:
    """A migrated SQLite file, or a private PostgreSQL database made with the admin URL."""
    url = f"sqlite:///{workdir / 'cc.db'}"
    if postgres_admin:
        name = f"cc_bench_{workdir.name.rsplit('-', 1)[-1].lower()}"
        name = "".join(c for c in name if c.isalnum() or c == "_")
        await _admin(postgres_admin, f'CREATE DATABASE "{name}"')
        url = make_url(normalize_database_url(postgres_admin)).set(database=name) \
            .render_as_string(hide_password=False)
    migrator = create_engine(url)
    await schema.upgrade(migrator)
    await migrator.dispose()
    return Database(url)


async def seed(database: Database, count: int) -> None:
    """``count`` active customers with an e-mail address and consent (bulk, not measured);
    one in ten is a lead (outside the audience) and every 47th opted out."""
    now = datetime.now(UTC)
    chunk = 5000
    async with database.transaction() as session:
        for start in range(1, count + 1, chunk):
            ids = range(start, min(start + chunk, count + 1))
            customers = []
            for i in ids:
                name = f"{SURNAMES[i % len(SURNAMES)]}{GIVEN[i % len(GIVEN)]}{i}"
                customers.append({
                    "id": i, "display_name": name, "name_key": name,
                    "lifecycle_stage": "lead" if i % 10 == 0 else "active",
                    "lifetime_value": 0, "custom_attributes": {},
                    "marketing_opt_in": {"email": i % 47 != 0},
                    "do_not_contact": False, "language": "en" if i % 3 == 0 else "zh-CN",
                    "created_at": now, "updated_at": now,
                })
            await session.execute(insert(Customer.__table__), customers)
            await session.execute(insert(CustomerIdentity.__table__), [
                {"customer_id": i, "kind": "email", "value": f"c{i}@bench.example",
                 "verified": False, "created_at": now} for i in ids])


async def scalar(database: Database, query: Any) -> int:
    async with database.sessions() as session:
        return int(await session.scalar(query) or 0)


def sink_process(pipe: Connection) -> None:
    """The SMTP server in a process of its own (as a real relay would be): counts what it
    accepts per recipient; answers ``count`` and ``stop`` on the pipe."""
    lock = threading.Lock()
    received: Counter[str] = Counter()

    def keep(mail: Any) -> None:
        with lock:
            received.update(mail.rcpt_tos)

    sink = SmtpSink()
    sink._add = keep  # type: ignore[method-assign]  # count, don't keep 100,000 mails
    sink.start()
    pipe.send(sink.port)
    while True:
        command = pipe.recv()
        with lock:
            total, distinct = sum(received.values()), len(received)
        if command == "stop":
            sink.stop()
            pipe.send((total, distinct))
            return
        pipe.send(total)


def dispatch_process(url: str, port: int, connections: int, blob_dir: str) -> None:
    """Outbox dispatchers (one SMTP connection each) in one process, until nothing is due."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    async def run() -> None:
        database = Database(url)
        blobs = FileBlobStore(Path(blob_dir))
        policy = RetryPolicy(max_attempts=5, base_delay=timedelta(seconds=1),
                             lease=timedelta(seconds=300))

        async def work() -> None:
            adapter = SmtpAdapter(SmtpConfig(host="127.0.0.1", port=port, security="plain",
                                             from_address="care@shop.example",
                                             from_name="客服中心 Customer Service"), blobs)
            registry = ChannelRegistry()
            registry.register(adapter)
            dispatcher = OutboxDispatcher(database, registry, policy)
            while await dispatcher.dispatch_once(limit=50):
                pass
            await adapter.close()

        await asyncio.gather(*(work() for _ in range(connections)))
        await database.dispose()

    asyncio.run(run())


async def dispatch_all(url: str, port: int, pipe: Connection, expected: int, processes: int,
                       connections: int, blob_dir: Path) -> tuple[float, float]:
    """Seconds until the SMTP server accepted ``expected`` messages from ``processes``
    dispatching processes with ``connections`` SMTP connections each, and the CPU seconds
    those processes used."""
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=dispatch_process,
                               args=(url, port, connections, str(blob_dir)))
               for _ in range(processes)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    while True:
        pipe.send("count")
        if pipe.recv() >= expected or not any(w.is_alive() for w in workers):
            break
        await asyncio.sleep(0.05)
    seconds = time.perf_counter() - started
    for worker in workers:
        await asyncio.to_thread(worker.join)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    workdir = Path(tempfile.mkdtemp(prefix="cc-bench-campaign-"))
    pipe, child_end = multiprocessing.Pipe()
    sink = multiprocessing.get_context("spawn").Process(target=sink_process, args=(child_end,))
    sink.start()
    port = pipe.recv()
    database = await fresh_database(workdir, args.postgres)
    try:
        await seed(database, args.customers)
        config = parse_campaigns(CAMPAIGN, source="bench")
        spec = config.campaigns[0]
        runner = CampaignScheduler(
            database, config, links=CampaignLinks("https://cc.example.cn", b"bench-secret"),
            now=lambda: SEND_AT, batch_size=args.batch_size, name="bench")
        await runner.sync()

        started = time.perf_counter()
        async with database.sessions() as session:
            audience = await audience_of(session, spec, region="CN", timezone="Asia/Shanghai")
            selected = len(list(await session.scalars(
                select(Customer.id).where(*audience.conditions))))
        select_seconds = time.perf_counter() - started

        started = time.perf_counter()
        planned = await runner.plan()
        enqueue_seconds = time.perf_counter() - started

        started = time.perf_counter()
        report = await runner.deliver(max_batches=10**9)
        materialize_seconds = time.perf_counter() - started
        queued = report.queued

        smtp_seconds, dispatch_cpu = await dispatch_all(
            database.url, port, pipe, queued, args.processes, args.connections,
            workdir / "blobs")
        rows_per_customer = await scalar(database, select(func.count()).select_from(
            select(OutboxMessage.customer_id).group_by(OutboxMessage.customer_id)
            .having(func.count() > 1).subquery()))
        replanned = await runner.plan()
        sends = await scalar(database, select(func.count()).select_from(CampaignSend))
        pipe.send("stop")
        received, distinct = pipe.recv()
    finally:
        if sink.is_alive():
            sink.terminate()
        await database.dispose()
        if args.postgres:
            name = make_url(database.url).database
            await _admin(args.postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    duplicates = (received - distinct) + rows_per_customer + replanned
    results: dict[str, object] = {
        "customers": args.customers,
        "audience": selected,
        "planned": planned,
        "campaign_sends": sends,
        "queued": queued,
        "skipped": dict(report.skipped),
        "smtp_received": received,
        "select_customers_per_s": rate(selected, select_seconds),
        "enqueue_messages_per_s": rate(planned, enqueue_seconds),
        "materialize_messages_per_s": rate(queued, materialize_seconds),
        "smtp_messages_per_s": rate(received, smtp_seconds),
        "dispatch_cpu_ms_per_message": round(1000 * dispatch_cpu / max(received, 1), 2),
        "end_to_end_messages_per_s": rate(
            received, enqueue_seconds + materialize_seconds + smtp_seconds),
        "duplicates": duplicates,
        "dispatch_processes": args.processes,
        "smtp_connections": args.processes * args.connections,
        "batch_size": args.batch_size,
        "database": "postgresql" if args.postgres else "sqlite",
        "seconds_total": round(select_seconds + enqueue_seconds + materialize_seconds
                               + smtp_seconds, 1),
        "peak_rss_mb": peak_rss_mb(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count() or 0,
        **environment(),
    }
    results["meets_targets"] = (
        float(results["enqueue_messages_per_s"]) >= TARGETS["enqueue_messages_per_s"]  # type: ignore[arg-type]
        and float(results["smtp_messages_per_s"]) >= TARGETS["smtp_messages_per_s"]  # type: ignore[arg-type]
        and duplicates == 0)
    return results


def main() -> None:
    """Run the benchmark, print the table and write ``bench/results/campaign_fanout.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--processes", type=int, default=1,
                        help="Dispatching processes (like `contact-center worker`).")
    parser.add_argument("--connections", type=int, default=2,
                        help="Outbox dispatchers per process, one SMTP connection each.")
    parser.add_argument("--batch-size", type=int, default=500,
                        help="Sends per scheduler transaction.")
    parser.add_argument("--keep", action="store_true", help="Keep the database file.")
    parser.add_argument("--postgres", metavar="ADMIN_URL", default=None,
                        help="Run on a private PostgreSQL database created (and dropped) "
                             "with this admin URL, e.g. postgresql://postgres@127.0.0.1/postgres")
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    print_table(results)
    print(f"written to {write_results('campaign_fanout', results)}")


if __name__ == "__main__":
    main()
