"""Benchmark: the dashboard and every report on PostgreSQL with 100,000 customers and
1,000,000 interactions.

A private database is created with the admin URL (dropped afterwards unless ``--keep``)
and filled in SQL with ``INSERT … SELECT generate_series`` (seconds, not an ORM loop):
customers over two years with categories, industries, regions and tiers; conversations,
interactions over the last year on four channels; tickets with SLA targets, CSAT answers,
lifecycle transitions (churn with reasons), orders with payments, opportunities in
stages, contracts, care tasks, follow-ups and memberships. Then ``ANALYZE``, and the
daily roll-ups are built as ``contact-center analytics rollup`` builds them
(``rollup_build_s``), then refreshed once more as the scheduler does
(``rollup_refresh_s``: nothing changed since). ``--live`` measures without roll-ups.

Each report is computed as the console computes it (``crm_core.services.analytics``,
the console's default period: today for the dashboard, the next 30 days for the
forecast, the last 30 days otherwise; month-based reports also over the last year),
once to warm up and ``--runs`` times measured. Written: ``dashboard_p50_ms`` and
``<report>_p50_ms`` per report (``<report>_365d_p50_ms`` for the year runs).

    python bench/analytics.py                          # 100,000 customers, 1,000,000 interactions
    python bench/analytics.py --interactions 100000    # a quick run

Target: every p50 ≤ 300 ms at the console's default periods (``target_met``); the year
runs are reported beside it (``target_met_365d``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from _common import PROJECT_ROOT, environment, print_table, write_results

if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

import structlog
from sqlalchemy import text
from sqlalchemy.engine import make_url

from crm_core import schema
from crm_core.db import Database, create_engine, normalize_database_url
from crm_core.services.analytics.base import Period
from crm_core.services.analytics.registry import ALL, FORWARD, Filters, build
from crm_core.services.analytics.rollups import refresh_rollups

TARGET_MS = 300.0
ZONE = "Asia/Shanghai"
YEAR_REPORTS = ("satisfaction", "churn", "sales", "rfm", "channels", "agents")

SEED = [
    "SELECT setseed(0.42)",
    """INSERT INTO customer_tiers (code, name, rank, created_at) VALUES
       ('standard', 'Standard', 1, now()), ('gold', 'Gold', 2, now()), ('vip', 'VIP', 3, now())""",
    """INSERT INTO customer_categories (code, name, created_at) VALUES
       ('retail', 'Retail', now()), ('wholesale', 'Wholesale', now()),
       ('government', 'Government', now()), ('partner', 'Partner', now())""",
    """INSERT INTO agents (login, display_name, password_hash, role, skills, languages, capacity,
         availability, active, created_at, updated_at, ui_language, failed_logins)
       SELECT 'agent' || g, '坐席' || g, '!', 'agent', '[]', '[]', 10,
              CASE WHEN g % 5 = 0 THEN 'online' ELSE 'offline' END, true, now(), now(), 'zh-CN', 0
       FROM generate_series(1, 50) g""",
    """INSERT INTO customers (display_name, name_key, industry, province, lifecycle_stage,
         tier_code, category_code, lifetime_value, custom_attributes, owner_agent_id,
         marketing_opt_in, do_not_contact, created_at, updated_at)
       SELECT '客户' || g, 'kehu' || g,
              (ARRAY['tech','finance','retail','manufacturing','education','health',
                     'logistics','media'])[1 + g % 8],
              (ARRAY['广东','北京','上海','浙江','江苏','四川','湖北','山东','福建',
                     '河南'])[1 + g % 10],
              CASE WHEN g % 13 = 0 THEN 'churned' WHEN g % 7 = 0 THEN 'lead' ELSE 'active' END,
              (ARRAY['standard','gold','vip', NULL])[1 + g % 4],
              (ARRAY['retail','wholesale','government','partner', NULL])[1 + g % 5],
              0, '{}', 1 + g % 50, '{}', false,
              now() - (random() * interval '730 days'), now()
       FROM generate_series(1, :customers) g""",
    """INSERT INTO conversations (customer_id, channel, status, assignee_id, participants,
         created_at, updated_at)
       SELECT 1 + g % :customers, (ARRAY['email','telegram','webchat','phone'])[1 + g % 4],
              'closed', 1 + g % 50, '[]', now() - (random() * interval '365 days'), now()
       FROM generate_series(1, :conversations) g""",
    """INSERT INTO interactions (conversation_id, customer_id, channel, direction, kind, text,
         attachments, agent_id, meta, occurred_at, created_at)
       SELECT c, 1 + c % :customers, (ARRAY['email','telegram','webchat','phone'])[1 + c % 4],
              CASE WHEN g % 2 = 0 THEN 'inbound' ELSE 'outbound' END, 'message', '你好',
              '[]', CASE WHEN g % 2 = 1 THEN 1 + c % 50 END, '{}', t, t
       FROM (SELECT g, 1 + g % :conversations AS c,
                    now() - (random() * interval '365 days') AS t
             FROM generate_series(1, :interactions) g) s""",
    """INSERT INTO tickets (number, subject, category, priority, status, customer_id,
         conversation_id, assignee_id, tags, reopen_count, first_response_due_at,
         resolution_due_at, first_responded_at, resolved_at, created_at, updated_at)
       SELECT 'T-' || lpad(g::text, 7, '0'), '工单', 'inquiry', 'normal',
              CASE WHEN g % 10 < 8 THEN 'resolved' WHEN g % 10 = 8 THEN 'open' ELSE 'new' END,
              1 + g % :customers, 1 + g % :conversations, 1 + g % 50, '[]', 0,
              t + interval '1 hour', t + interval '24 hours',
              CASE WHEN g % 10 <> 9 THEN t + random() * interval '3 hours' END,
              CASE WHEN g % 10 < 8 THEN t + random() * interval '48 hours' END, t, t
       FROM (SELECT g, now() - (random() * interval '365 days') AS t
             FROM generate_series(1, :tickets) g) s""",
    """INSERT INTO feedback (customer_id, ticket_id, kind, score, classification_hits,
         channel, created_at, updated_at)
       SELECT 1 + g % :customers, 1 + g % :tickets, 'csat', 1 + (random() * 4)::int, '[]',
              'email', t, t
       FROM (SELECT g, now() - (random() * interval '365 days') AS t
             FROM generate_series(1, :feedback) g) s""",
    """INSERT INTO lifecycle_transitions (customer_id, from_stage, to_stage, reason, actor, at)
       SELECT g * 13, 'active', 'churned',
              (ARRAY['price','service','competitor', NULL])[1 + g % 4], 'bench',
              now() - (random() * interval '365 days')
       FROM generate_series(1, :customers / 13) g""",
    """INSERT INTO pipeline_stages (code, name, position, probability, outcome, created_at)
       VALUES ('lead', 'Lead', 1, 0.1, 'open', now()),
              ('proposal', 'Proposal', 2, 0.4, 'open', now()),
              ('negotiation', 'Negotiation', 3, 0.7, 'open', now()),
              ('won', 'Won', 4, 1, 'won', now()), ('lost', 'Lost', 5, 0, 'lost', now())""",
    """INSERT INTO opportunities (customer_id, title, stage_code, amount, currency, owner_id,
         expected_close_on, status, closed_at, created_at, updated_at)
       SELECT 1 + g * 5 % :customers, '商机', s, (1000 + random() * 50000)::numeric(14, 2),
              'CNY', 1 + g % 50, (now() + (random() * interval '120 days'))::date,
              CASE s WHEN 'won' THEN 'won' WHEN 'lost' THEN 'lost' ELSE 'open' END,
              CASE WHEN s IN ('won', 'lost') THEN now() - random() * interval '60 days' END,
              now(), now()
       FROM (SELECT g, (ARRAY['lead','proposal','negotiation','won','lost'])[1 + g % 5] AS s
             FROM generate_series(1, :opportunities) g) x""",
    """INSERT INTO orders (number, customer_id, agent_id, status, currency, amount, paid_amount,
         ordered_at, due_on, created_at, updated_at)
       SELECT 'SO-' || g, 1 + (g * 7919) % :customers, 1 + g % 50,
              CASE WHEN g % 20 = 0 THEN 'cancelled' ELSE 'confirmed' END, 'CNY', a,
              CASE WHEN g % 5 = 0 THEN 0 ELSE a END, t, (t + interval '30 days')::date, t, t
       FROM (SELECT g, (50 + random() * 5000)::numeric(14, 2) AS a,
                    now() - (random() * interval '730 days') AS t
             FROM generate_series(1, :orders) g) s""",
    """INSERT INTO payments (order_id, customer_id, amount, currency, paid_at)
       SELECT id, customer_id, paid_amount, 'CNY', ordered_at + interval '2 days'
       FROM orders WHERE paid_amount > 0""",
    """UPDATE customers c SET lifetime_value = s.total
       FROM (SELECT customer_id, sum(amount) AS total FROM orders
             WHERE status = 'confirmed' GROUP BY customer_id) s
       WHERE s.customer_id = c.id""",
    """INSERT INTO contracts (customer_id, kind, title, start_on, end_on, amount, currency,
         auto_renew, status, created_at, updated_at)
       SELECT 1 + g * 3 % :customers, 'contract', '年度合同', e - 365, e,
              (1000 + random() * 20000)::numeric(14, 2), 'CNY', false,
              CASE WHEN e < current_date THEN (ARRAY['renewed','ended'])[1 + g % 2]
                   ELSE 'active' END, now(), now()
       FROM (SELECT g, (current_date + (random() * 730)::int - 365) AS e
             FROM generate_series(1, :contracts) g) s""",
    """INSERT INTO care_tasks (customer_id, assignee_id, kind, title, due_at, status,
         completed_at, created_at, updated_at)
       SELECT 1 + g % :customers, 1 + g % 50, 'call', '回访', t,
              CASE WHEN g % 3 = 0 THEN 'open' ELSE 'done' END,
              CASE WHEN g % 3 <> 0 THEN t END, t, t
       FROM (SELECT g, now() - (random() * interval '365 days') AS t
             FROM generate_series(1, :tasks) g) s""",
    """INSERT INTO follow_ups (customer_id, agent_id, attitude, next_contact_on, at)
       SELECT 1 + g % :customers, 1 + g % 50, 'neutral',
              CASE WHEN g % 4 = 0 THEN current_date + g % 30 END,
              now() - (random() * interval '365 days')
       FROM generate_series(1, :tasks) g""",
    """INSERT INTO member_levels (code, name, rank, min_spend, earn_rate, created_at) VALUES
       ('silver', 'Silver', 1, 1000, 1, now()), ('gold', 'Gold', 2, 10000, 1.5, now())""",
    """INSERT INTO memberships (customer_id, level_code, points_balance, points_earned,
         total_spend, joined_at, updated_at)
       SELECT id, CASE WHEN lifetime_value >= 10000 THEN 'gold'
                       WHEN lifetime_value >= 1000 THEN 'silver' END,
              (lifetime_value / 2)::int, lifetime_value::int, lifetime_value, now(), now()
       FROM customers WHERE lifetime_value > 0""",
]


async def _admin(url: str, statement: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def seed(database: Database, sizes: dict[str, int]) -> float:
    """Fill the database; returns the seconds it took."""
    started = time.perf_counter()
    async with database.engine.begin() as conn:
        for statement in SEED:
            names = {k: v for k, v in sizes.items() if f":{k}" in statement}
            await conn.execute(text(statement), names)
    async with database.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE"))
    return time.perf_counter() - started


async def build_rollups(database: Database) -> tuple[float, float]:
    """Build the roll-ups from scratch, then refresh them; the seconds of each."""
    timings = []
    for rebuild in (True, False):
        started = time.perf_counter()
        async with database.transaction() as session:
            await refresh_rollups(session, now=datetime.now(UTC), zone=ZONE, rebuild=rebuild)
        timings.append(time.perf_counter() - started)
    async with database.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE"))
    return timings[0], timings[1]


def periods(now: datetime) -> dict[str, Period]:
    """The console's default period of each report."""
    today = now.astimezone(ZoneInfo(ZONE)).date()
    found = {}
    for name in ALL:
        if name == "dashboard":
            found[name] = Period(today, today, ZONE)
        elif name in FORWARD:
            found[name] = Period(today + timedelta(days=1), today + timedelta(days=30), ZONE)
        else:
            found[name] = Period.ending(today, 30, ZONE)
    for name in YEAR_REPORTS:
        found[f"{name}_365d"] = Period.ending(today, 365, ZONE)
    return found


async def measure(database: Database, runs: int) -> dict[str, float]:
    """p50 milliseconds of each report."""
    now = datetime.now(UTC)
    results = {}
    for key, period in periods(now).items():
        name = key.removesuffix("_365d")
        timings = []
        for attempt in range(runs + 1):
            async with database.sessions() as session:
                started = time.perf_counter()
                await build(name, session, period, Filters(now=now))
                elapsed = (time.perf_counter() - started) * 1000
            if attempt:  # the first run warms caches and the connection
                timings.append(elapsed)
        results[f"{key}_p50_ms"] = round(statistics.median(timings), 1)
    return results


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    """Create, fill, measure, drop."""
    name = args.reuse or f"cc_bench_analytics_{os.getpid()}"
    url = make_url(normalize_database_url(args.postgres)).set(database=name) \
        .render_as_string(hide_password=False)
    if not args.reuse:
        await _admin(args.postgres, f'CREATE DATABASE "{name}"')
    migrator = create_engine(url)
    await schema.upgrade(migrator)
    await migrator.dispose()
    database = Database(url)
    customers = args.customers
    sizes = {"customers": customers, "interactions": args.interactions,
             "conversations": max(args.interactions // 5, 1),
             "tickets": max(args.interactions * 3 // 20, 1),
             "feedback": max(args.interactions // 20, 1), "orders": customers * 2,
             "opportunities": customers // 5, "contracts": customers * 3 // 10,
             "tasks": customers // 2}
    try:
        seconds = 0.0 if args.reuse else await seed(database, sizes)
        print(f"seeded in {seconds:.1f} s: {sizes}")
        build_s = refresh_s = 0.0
        if args.live:
            async with database.transaction() as session:
                await session.execute(text("DELETE FROM rollup_state"))
        else:
            build_s, refresh_s = await build_rollups(database)
            print(f"roll-ups built in {build_s:.1f} s, refreshed in {refresh_s:.2f} s")
        timings = await measure(database, args.runs)
    finally:
        await database.dispose()
        if not args.keep and not args.reuse:
            await _admin(args.postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    worst = max(v for k, v in timings.items() if "_365d_" not in k)
    worst_year = max(v for k, v in timings.items() if "_365d_" in k)
    return {
        **timings, "customers": customers, "interactions": args.interactions,
        "tickets": sizes["tickets"], "orders": sizes["orders"],
        "seed_seconds": round(seconds, 1), "rollup_build_s": round(build_s, 1),
        "rollup_refresh_s": round(refresh_s, 2), "rollups": not args.live, "runs": args.runs,
        "worst_p50_ms": worst,
        "worst_365d_p50_ms": worst_year, "target_ms": TARGET_MS,
        "target_met": worst <= TARGET_MS, "target_met_365d": worst_year <= TARGET_MS,
        "database": "postgresql", **environment(),
    }


def main() -> None:
    """Parse arguments, run, print and write ``bench/results/analytics.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7, help="measured runs per report")
    parser.add_argument("--postgres", metavar="ADMIN_URL",
                        default=os.environ.get("CC_BENCH_POSTGRES",
                                               "postgresql://postgres@127.0.0.1:5432/postgres"),
                        help="admin URL used to create (and drop) the benchmark database")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--reuse", metavar="NAME", default=None,
                        help="measure a database kept by an earlier --keep run (no seeding)")
    parser.add_argument("--live", action="store_true",
                        help="measure without the roll-ups (every figure from the source tables)")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    results = asyncio.run(main_async(args))
    print_table(results)
    print(f"written to {write_results('analytics', results)}")


if __name__ == "__main__":
    main()
