"""Benchmark: scale-out on PostgreSQL + Redis with real processes.

Workers: ``--messages`` Telegram envelopes published on Redis Streams and routed by one,
then two ``contact-center worker`` processes (each started and ready before the clock
starts); throughput is first publish → last interaction committed. Latency (``p99_ms``)
is envelope received → interaction written, with two workers under a paced load at half
their measured throughput.

Inbox: one ``contact-center serve`` process answers ``/console/inbox.json`` (an admin's
"all" view, 50 rows, with the view counts) to ``--clients`` concurrent clients for
``--seconds``, twice: back to back (``inbox_requests_per_s``, the most it serves, and
``inbox_saturated_p99_ms``, which is bound by clients ÷ throughput) and as consoles do,
each client asking again one second after its answer (``inbox_p50_ms``,
``inbox_p99_ms``). A bare aiohttp process answering the same JSON body back to back in
the same run is the ceiling (``ceiling_requests_per_s``).

    python bench/scale_out.py
    python bench/scale_out.py --messages 1000 --seconds 5      # a quick run

Targets: two workers ≥ 1.3 × one worker; inbox p99 ≤ 100 ms; inbox ≥ 0.2 × the ceiling.
PostgreSQL comes from ``CC_BENCH_POSTGRES_URL`` (a private database is created and
dropped); Redis is a private ``redis-server`` on a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import PROJECT_ROOT, environment, print_table, rate, write_results

if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

import aiohttp
from sqlalchemy import text

from crm_core import schema
from crm_core.db import Database, create_engine
from crm_core.models import AgentRole, Channel
from crm_core.services.agents import create_agent
from routing.envelope import InboundMessage, SenderHandles, ThreadHints
from routing.redis_bus import RedisStreamBus

POSTGRES_ADMIN_URL = os.environ.get(
    "CC_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TARGETS = {"worker_scaling": 1.3, "inbox_p99_ms": 100.0, "inbox_ratio": 0.2}
PASSWORD = "bench-password-1"
CEILING_APP = """
import sys
from aiohttp import web
body = open(sys.argv[2], "rb").read()
async def handle(request):
    return web.Response(body=body, content_type="application/json")
app = web.Application()
app.router.add_get("/data.json", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_ceiling(port: int, body: Path) -> subprocess.Popen[bytes]:
    """The bare aiohttp process answering ``body`` as JSON."""
    return subprocess.Popen([sys.executable, "-c", CEILING_APP, str(port), str(body)])


def start_redis(port: int, folder: Path) -> subprocess.Popen[bytes]:
    """A private Redis without persistence (nothing is restarted here)."""
    return subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port),
         "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL)


async def _admin(statement: str) -> None:
    engine = create_engine(POSTGRES_ADMIN_URL)
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def wait_http(url: str, within: float = 60) -> None:
    """Wait until ``url`` answers 200."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} did not answer")


def envelope(run: str, number: int) -> InboundMessage:
    """A Telegram message from one of 500 users."""
    sender = str(700_000 + number % 500)
    return InboundMessage(
        channel=Channel.TELEGRAM, idempotency_key=f"bench:{run}:{number}",
        received_at=datetime.now(UTC),
        sender=SenderHandles(telegram_id=sender, display_name=f"Bench {sender}"),
        thread=ThreadHints(chat_id=sender), text=f"订单 {number} 什么时候发货？",
    )


class Stack:
    """The private Redis, the benchmark's database and the processes started on them."""

    def __init__(self, database_url: str, redis_url: str, logs: Path) -> None:
        self.database_url = database_url
        self.redis_url = redis_url
        self.logs = logs
        self.processes: list[subprocess.Popen[bytes]] = []

    def env(self, **extra: str) -> dict[str, str]:
        """A child's environment."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("CC_") and k not in {"DATABASE_URL", "REDIS_URL"}}
        env.update(DATABASE_URL=self.database_url, REDIS_URL=self.redis_url,
                   CC_LOG__LEVEL="WARNING", CC_ROUTING__EMBEDDED_WORKER="false",
                   CC_EMAIL__FETCH_IN_SERVE="false", PYTHONPATH=str(PROJECT_ROOT), **extra)
        return env

    def start(self, *args: str, **extra: str) -> subprocess.Popen[bytes]:
        """Start ``contact-center ARGS``."""
        log = open(self.logs / f"{args[0]}-{len(self.processes)}.log", "ab")  # noqa: SIM115
        process = subprocess.Popen([sys.executable, "-m", "contact_center", *args],
                                   env=self.env(**extra), cwd=PROJECT_ROOT,
                                   stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.processes.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        """Stop one process."""
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def stop_all(self) -> None:
        """Stop every process still running."""
        for process in self.processes:
            if process.poll() is None:
                self.stop(process)


async def count_run(database: Database, run: str) -> int:
    """Interactions of one run."""
    async with database.sessions() as session:
        return int(await session.scalar(
            text("SELECT count(*) FROM interactions WHERE external_id LIKE :p"),
            {"p": f"bench:{run}:%"}) or 0)


async def latencies_ms(database: Database, run: str) -> list[float]:
    """Received → written, per interaction of a run."""
    async with database.sessions() as session:
        rows = (await session.execute(
            text("SELECT EXTRACT(EPOCH FROM (created_at - occurred_at)) * 1000 "
                 "FROM interactions WHERE external_id LIKE :p"), {"p": f"bench:{run}:%"})).all()
    return sorted(float(value) for (value,) in rows)


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of the sorted ``values`` lie."""
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(fraction * len(values)))]


async def route_with(stack: Stack, database: Database, bus: RedisStreamBus, workers: int,
                     count: int, per_second: float | None = None) -> tuple[float, str]:
    """Start ``workers`` workers, publish ``count`` envelopes (paced at ``per_second``
    when given) and wait until all are written; returns messages/s and the run id."""
    ports = [free_port() for _ in range(workers)]
    started = [stack.start("worker", "--metrics-port", str(port)) for port in ports]
    try:
        for port in ports:
            await wait_http(f"http://127.0.0.1:{port}/healthz")
        run = uuid.uuid4().hex[:8]
        clock = time.perf_counter()
        for number in range(count):
            item = envelope(run, number)
            await bus.publish("inbound", item.idempotency_key, item.to_json())
            if per_second:
                await asyncio.sleep(max(0.0, clock + (number + 1) / per_second
                                        - time.perf_counter()))
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if await count_run(database, run) >= count:
                break
            await asyncio.sleep(0.1)
        seconds = time.perf_counter() - clock
        return rate(count, seconds), run
    finally:
        for process in started:
            stack.stop(process)


async def hammer(url: str, clients: int, seconds: float,
                 cookies: dict[str, str] | None = None, think: float = 0.0) -> dict[str, float]:
    """``clients`` concurrent clients requesting ``url`` for ``seconds``: back to back, or
    each waiting ``think`` seconds after an answer (an agent's console refreshing)."""
    timings: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=clients)
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(connector=connector, cookies=cookies,
                                     cookie_jar=jar) as http:
        for _warm in range(3):
            async with http.get(url) as response:
                await response.read()
        stop_at = time.perf_counter() + seconds

        async def client() -> None:
            nonlocal errors
            if think:  # spread the clients' first requests over one think time
                await asyncio.sleep(think * random.random())
            while time.perf_counter() < stop_at:
                begun = time.perf_counter()
                try:
                    async with http.get(url, allow_redirects=False) as response:
                        await response.read()
                        ok = response.status == 200
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    timings.append((time.perf_counter() - begun) * 1000)
                else:
                    errors += 1
                if think:
                    await asyncio.sleep(think)

        begun = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - begun
    timings.sort()
    return {"requests_per_s": rate(len(timings), elapsed),
            "p50_ms": round(percentile(timings, 0.5), 1),
            "p99_ms": round(percentile(timings, 0.99), 1), "errors": errors}


async def inbox_load(stack: Stack, database: Database, clients: int, seconds: float,
                     folder: Path) -> dict[str, Any]:
    """The inbox JSON under load, and the bare aiohttp ceiling with the same body."""
    async with database.transaction() as session:
        await create_agent(session, login="bench-admin", display_name="Bench", password=PASSWORD,
                           actor="bench", role=AgentRole.ADMIN)
    port = free_port()
    serve = stack.start("serve", "--port", str(port), CC_HTTP__HOST="127.0.0.1")
    results: dict[str, Any] = {}
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_http(f"{base}/healthz")
        # unsafe: the jar keeps cookies of an IP address host (127.0.0.1)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.post(f"{base}/console/login", allow_redirects=False,
                                 data={"login": "bench-admin", "password": PASSWORD}) as answer:
                assert answer.status == 302, await answer.text()
            cookies = {c.key: c.value for c in http.cookie_jar}
            async with http.get(f"{base}/console/inbox.json?view=all") as answer:
                assert answer.status == 200, await answer.text()
                body = await answer.read()
        if not body.startswith(b"{"):
            raise RuntimeError(f"not JSON: {body[:1500]!r}")
        data = json.loads(body)
        url = f"{base}/console/inbox.json?view=all"
        saturated = await hammer(url, clients, seconds, cookies)
        paced = await hammer(url, clients, seconds, cookies, think=1.0)
        results.update({
            "inbox_requests_per_s": saturated["requests_per_s"],
            "inbox_saturated_p99_ms": saturated["p99_ms"],
            "inbox_p50_ms": paced["p50_ms"], "inbox_p99_ms": paced["p99_ms"],
            "inbox_paced_requests_per_s": paced["requests_per_s"],
            "inbox_errors": saturated["errors"] + paced["errors"],
            "inbox_rows": len(data["rows"]), "inbox_conversations": data["counts"]["all"],
        })
    finally:
        stack.stop(serve)
    body_path = folder / "inbox.json"
    body_path.write_bytes(body)
    ceiling_port = free_port()
    ceiling = start_ceiling(ceiling_port, body_path)
    try:
        await wait_http(f"http://127.0.0.1:{ceiling_port}/data.json")
        bare = await hammer(f"http://127.0.0.1:{ceiling_port}/data.json", clients, seconds)
    finally:
        ceiling.terminate()
        ceiling.wait(10)
    results.update({"ceiling_requests_per_s": bare["requests_per_s"],
                    "ceiling_saturated_p99_ms": bare["p99_ms"]})
    return results


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    """Run both parts on a fresh database and a private Redis."""
    name = f"cc_bench_scale_{uuid.uuid4().hex[:8]}"
    await _admin(f'CREATE DATABASE "{name}"')
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    folder = Path(tempfile.mkdtemp(prefix="cc-bench-scale-"))
    redis_port = free_port()
    redis_server = start_redis(redis_port, folder)
    stack = Stack(url, f"redis://127.0.0.1:{redis_port}/0", folder)
    database = Database(url)
    from redis.asyncio import Redis

    redis = Redis.from_url(stack.redis_url)
    try:
        await schema.upgrade(database.engine)
        for _try in range(100):
            try:
                await redis.ping()
                break
            except Exception:
                await asyncio.sleep(0.1)
        bus = RedisStreamBus(redis)
        # a first run creates the customers and conversations, so that both measured
        # runs route onto existing ones alike
        await route_with(stack, database, bus, 2, min(args.messages, 1000))
        if args.only_inbox:
            results = await inbox_load(stack, database, args.clients, args.seconds, folder)
            results["inbox_ratio_to_ceiling"] = round(
                results["inbox_requests_per_s"] / results["ceiling_requests_per_s"], 3)
            return results
        one, _ = await route_with(stack, database, bus, 1, args.messages)
        two, _ = await route_with(stack, database, bus, 2, args.messages)
        paced_count = max(200, int(two / 2 * args.paced_seconds))
        _rate, paced_run = await route_with(stack, database, bus, 2, paced_count,
                                            per_second=two / 2)
        latency = await latencies_ms(database, paced_run)
        results: dict[str, Any] = {
            "messages": args.messages,
            "one_worker_messages_per_s": one,
            "two_workers_messages_per_s": two,
            "worker_scaling": round(two / one, 2) if one else 0.0,
            "p50_ms": round(percentile(latency, 0.5), 1),
            "p99_ms": round(percentile(latency, 0.99), 1),
            "paced_messages_per_s": round(two / 2, 1),
            "clients": args.clients,
        }
        results.update(await inbox_load(stack, database, args.clients, args.seconds, folder))
        ceiling = results["ceiling_requests_per_s"]
        results["inbox_ratio_to_ceiling"] = (
            round(results["inbox_requests_per_s"] / ceiling, 3) if ceiling else 0.0)
        results["cpus"] = os.cpu_count() or 0
        results.update(environment())
        return results
    finally:
        stack.stop_all()
        await redis.aclose()
        await database.dispose()
        redis_server.terminate()
        redis_server.wait(10)
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    """Run the benchmark, print the table and write ``bench/results/scale_out.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--paced-seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--only-inbox", action="store_true",
                        help="Route a warm-up batch, then measure the inbox only.")
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    print_table(results)
    if args.only_inbox:
        return
    checks = {
        "two workers ≥ 1.3 × one": results["worker_scaling"] >= TARGETS["worker_scaling"],
        "inbox p99 ≤ 100 ms": results["inbox_p99_ms"] <= TARGETS["inbox_p99_ms"],
        "inbox ≥ 0.2 × ceiling": results["inbox_ratio_to_ceiling"] >= TARGETS["inbox_ratio"],
    }
    for check, met in checks.items():
        print(f"{'met' if met else 'MISSED'}: {check}")
    print(f"written to {write_results('scale_out', results)}")


if __name__ == "__main__":
    main()
