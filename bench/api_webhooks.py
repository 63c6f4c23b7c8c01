"""REST API and webhook throughput on SQLite: authenticated, rate-limited reads over HTTP,
and signed webhook deliveries to a local receiver.

* ``api_requests_per_s``, ``api_p50_ms``, ``api_p99_ms``, ``api_cpu_ms_per_request``
  (CPU time of the whole process, server and clients, per call: steadier than the rate
  on a shared machine): ``--requests`` calls (half
  ``GET /api/v1/customers?limit=50``, half ``GET /api/v1/customers/{id}``) from
  ``--concurrency`` clients against ``--customers`` customers, token checked and counted
  on every call.
* ``webhook_deliveries_per_s``: ``--deliveries`` queued events posted, signed and logged
  (rows claimed, HTTP POST to an aiohttp receiver on 127.0.0.1, result recorded).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import PROJECT_ROOT, environment, peak_rss_mb, print_table, rate, write_results

if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

import aiohttp
import structlog
from aiohttp import web

from contact_center.app import create_app
from contact_center.settings import Settings
from contact_center.webhooks import PUBLIC_EVENTS, WebhookSender
from crm_core import schema
from crm_core.db import Database
from crm_core.models import Customer, CustomerIdentity, IdentityKind
from crm_core.services import webhooks as svc
from crm_core.services.api_tokens import SCOPES, create_token
from tests.integration.console_support import make_engine

TARGETS = {"api_requests_per_s": 100.0, "webhook_deliveries_per_s": 100.0}
"""On 2 shared cores; one empty SQLite session alone costs several ms there."""


async def seed(database: Database, customers: int) -> str:
    """Customers with an e-mail each, and a token with every scope."""
    async with database.transaction() as session:
        for n in range(customers):
            session.add(Customer(display_name=f"客户{n}", name_key=f"kehu{n}",
                                 identities=[CustomerIdentity(kind=IdentityKind.EMAIL,
                                                              value=f"c{n}@example.com")]))
        issued = await create_token(session, name="bench", scopes=sorted(SCOPES),
                                    actor="bench", rate_limit_per_minute=1_000_000)
        return issued.token


async def bench_api(base: str, token: str, requests: int, concurrency: int,
                    customers: int) -> dict[str, float]:
    """Fire the API calls and time each one."""
    latencies: list[float] = []
    queue: asyncio.Queue[str] = asyncio.Queue()
    for n in range(requests):
        queue.put_nowait("/api/v1/customers?limit=50" if n % 2 else
                         f"/api/v1/customers/{n % customers + 1}")
    headers = {"Authorization": f"Bearer {token}"}

    async def client(http: aiohttp.ClientSession) -> None:
        while not queue.empty():
            path = queue.get_nowait()
            start = time.perf_counter()
            async with http.get(base + path, headers=headers) as response:
                await response.read()
                assert response.status == 200, response.status
            latencies.append((time.perf_counter() - start) * 1000)

    started, cpu_started = time.perf_counter(), time.process_time()
    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    latencies.sort()
    return {"api_requests_per_s": rate(requests, seconds),
            "api_cpu_ms_per_request": round(cpu * 1000 / requests, 2),
            "api_p50_ms": round(statistics.median(latencies), 2),
            "api_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 2)}


async def bench_webhooks(database: Database, deliveries: int) -> dict[str, float]:
    """Queue events for one subscription and drain them to a local receiver."""
    received = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal received
        await request.read()
        received += 1
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with database.transaction() as session:
        await svc.create_subscription(session, name="bench", url=f"http://127.0.0.1:{port}/hook",
                                      events=["*"], known_events=PUBLIC_EVENTS, actor="bench")
        for n in range(deliveries):
            await svc.enqueue_event(session, "ticket.created", {"ticket_id": n})
    sender = WebhookSender(database, concurrency=16)
    started = time.perf_counter()
    try:
        while await sender.send_once():
            pass
    finally:
        await sender.close()
        await runner.cleanup()
    seconds = time.perf_counter() - started
    assert received == deliveries, (received, deliveries)
    return {"webhook_deliveries_per_s": rate(deliveries, seconds)}


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    """Set up a migrated SQLite file, run both parts, collect the figures."""
    logging.disable(logging.INFO)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory() as tmp:
        database = Database(f"sqlite:///{tmp}/bench.db")
        await schema.upgrade(database.engine)
        token = await seed(database, args.customers)
        app = create_app(Settings(data_dir=Path(tmp)), database, engine=make_engine(database))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            results: dict[str, object] = dict(await bench_api(
                base, token, args.requests, args.concurrency, args.customers))
        finally:
            await runner.cleanup()
        results.update(await bench_webhooks(database, args.deliveries))
        await database.dispose()
    results.update({"customers": args.customers, "requests": args.requests,
                    "deliveries": args.deliveries, "concurrency": args.concurrency,
                    "peak_rss_mb": peak_rss_mb(),
                    "load_average_1m": round(os.getloadavg()[0], 2),
                    "cpus": os.cpu_count() or 0, **environment()})
    results["meets_targets"] = all(float(results[k]) >= v  # type: ignore[arg-type]
                                   for k, v in TARGETS.items())
    return results


def main() -> None:
    """Run the benchmark, print the table and write ``bench/results/api_webhooks.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=2_000)
    parser.add_argument("--requests", type=int, default=4_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--deliveries", type=int, default=2_000)
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    print_table(results)
    print(f"written to {write_results('api_webhooks', results)}")


if __name__ == "__main__":
    main()
