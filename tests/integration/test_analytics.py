"""Every report figure against the hand-computed world of ``tests.analytics_support``
(the arithmetic is in the comments), on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io

import pytest
from openpyxl import load_workbook

from crm_core.db import Database
from crm_core.models import Channel
from crm_core.services.analytics import agents, customers, dashboard, sales
from crm_core.services.analytics.base import Period, percentile
from crm_core.services.analytics.export import to_csv, to_xlsx
from crm_core.services.analytics.registry import ALL, Filters, build
from tests.analytics_support import APRIL_MAY, DAY, MAY, NEXT_30, NOW, TODAY, World, seed


@pytest.fixture
async def world(db: Database) -> World:
    return await seed(db)


def test_percentile_interpolates_like_percentile_cont() -> None:
    assert percentile([10, 30, 50], 0.5) == 30
    assert percentile([10, 30, 50], 0.9) == pytest.approx(46)  # 30 + 0.8 × 20
    assert percentile([7], 0.9) == 7
    assert percentile([], 0.5) is None


def test_period_in_business_zone() -> None:
    assert DAY.start.isoformat() == "2026-05-19T16:00:00+00:00"
    assert DAY.end.isoformat() == "2026-05-20T16:00:00+00:00"
    assert MAY.previous() == Period(MAY.first.replace(month=3, day=31),
                                    MAY.first.replace(month=4, day=30), MAY.zone)
    assert APRIL_MAY.months() == ["2026-04", "2026-05"]


async def test_dashboard_figures(db: Database, world: World) -> None:
    async with db.sessions() as session:
        report = await dashboard.dashboard(session, DAY, now=NOW)
    figure = report.figure
    # Inbound today: e-mail 3 (c1 ×2, c2), Telegram 2, web chat 1; 23:30 yesterday is out.
    assert dict(report.tables["volume"].rows) == {"email": 3, "telegram": 2, "webchat": 1}
    assert figure("summary", "inbound_total") == 6
    assert figure("summary", "open_tickets") == 3          # t2 open, t3 new, t5 pending
    assert figure("summary", "overdue_tickets") == 2       # t2 resolution due 12:00, t3 unanswered
    # First responses of today's tickets: 10, 30, 50 min → p50 30, p90 30 + 0.8 × 20 = 46.
    assert figure("summary", "first_response_p50_min") == 30.0
    assert figure("summary", "first_response_p90_min") == 46.0
    # Resolved today: t1 after 120 min, t4 after 1440 → p50 780, p90 120 + 0.9 × 1320.
    assert figure("summary", "resolution_p50_min") == 780.0
    assert figure("summary", "resolution_p90_min") == 1308.0
    assert figure("summary", "sla_first_response") == 0.3333   # t1 met; t2 late; t3 late
    assert figure("summary", "sla_resolution") == 0.5           # t1 met; t4 late
    assert figure("summary", "sla_attainment") == 0.4           # 2 of 5
    assert figure("summary", "csat_average") == 4.0             # 5, 3, 4
    assert figure("summary", "csat_satisfied") == 0.6667
    assert figure("summary", "csat_responses") == 3
    assert figure("summary", "agents_online") == 1              # A3 is online but inactive
    assert figure("summary", "agents_active") == 2


async def test_dashboard_channel_filter(db: Database, world: World) -> None:
    async with db.sessions() as session:
        report = await dashboard.dashboard(session, DAY, now=NOW, channel=Channel.TELEGRAM)
    assert report.tables["volume"].rows == [["telegram", 2]]


async def test_agent_performance(db: Database, world: World) -> None:
    async with db.sessions() as session:
        report = await agents.agent_performance(session, MAY)
    rows = {row["agent"]: row for row in report.tables["agents"].as_dicts()}
    assert set(rows) == {"Alice", "Bob"}
    alice, bob = rows["Alice"], rows["Bob"]
    # Alice replied 3× today in v1, v2 and once on 5 May in v1: 2 conversations, 4 replies.
    assert (alice["conversations"], alice["replies"]) == (2, 4)
    assert (bob["conversations"], bob["replies"]) == (1, 1)
    assert alice["first_response_p50_min"] == 25.0   # 10, 20, 30, 50
    assert bob["first_response_p50_min"] == 20.0     # t4
    assert (alice["resolution_p50_min"], alice["resolved"]) == (780.0, 2)  # 120, 1440
    assert (bob["resolution_p50_min"], bob["resolved"]) == (1440.0, 1)
    assert (alice["csat_average"], alice["csat_responses"]) == (3.5, 2)    # t1 5, t6 2
    assert (bob["csat_average"], bob["csat_responses"]) == (3.0, 1)
    assert (alice["care_tasks_done"], bob["care_tasks_done"]) == (1, 0)
    assert (alice["follow_ups"], bob["follow_ups"]) == (2, 1)
    # Owned customers' confirmed CNY orders in May: c1 500 + 1200, c2 2000; c3 300, c5 800.
    assert (alice["revenue"], bob["revenue"]) == (3700.0, 1100.0)


async def test_agent_performance_for_one_agent(db: Database, world: World) -> None:
    async with db.sessions() as session:
        report = await agents.agent_performance(session, MAY, agent_id=world.agents["A2"])
    assert report.tables["agents"].column("agent") == ["Bob"]


async def test_composition(db: Database, world: World) -> None:
    async with db.sessions() as session:
        report = await customers.composition(session, MAY)
    as_dict = {key: dict(table.rows) for key, table in report.tables.items()}
    assert as_dict["category"] == {"retail": 3, "wholesale": 1, "(none)": 1}
    assert as_dict["industry"] == {"tech": 3, "finance": 1, "(none)": 1}
    assert as_dict["region"] == {"广东": 2, "北京": 1, "上海": 1, "(none)": 1}
    assert as_dict["tier"] == {"gold": 2, "silver": 1, "(none)": 2}
    assert as_dict["level"] == {"(none)": 4}  # members without a level (no levels defined)


async def test_rfm_segments(db: Database, world: World) -> None:
    async with db.sessions() as session:
        report = await customers.rfm(session, MAY)
    segments = {s: (n, v) for s, n, v in report.tables["segments"].rows}
    # Quintiles of 4 buyers: R c2 1, c3 2, c5 3, c1 4; F c2 1, c3 2, c5 3, c1 4;
    # M c3 1, c5 2, c1 3, c2 4 → c1 (4, 4+3) loyal; c2 (1, 5) and c3 (2, 3) hibernating;
    # c5 (3, 5) needs attention.
    assert segments["loyal"] == (1, 1700.0)
    assert segments["hibernating"] == (2, 2300.0)
    assert segments["need_attention"] == (1, 800.0)
    assert segments["champions"] == segments["new"] == segments["at_risk"] == (0, 0.0)


async def test_satisfaction_trend(db: Database, world: World) -> None:
    async with db.sessions() as session:
        report = await customers.satisfaction(session, APRIL_MAY)
    assert report.tables["trend"].rows == [
        ["2026-04", 4.0, 1, 1.0],
        ["2026-05", 3.5, 4, 0.5],   # 5, 3, 4, 2
    ]


async def test_churn(db: Database, world: World) -> None:
    async with db.sessions() as session:
        report = await customers.churn(session, APRIL_MAY)
    # April: c1, c2 at the start, none new, c2 churned → 0.5. May: c1 only (c2 churned in
    # April, won back on 3 May), c3–c5 new, c4 and c3 churned → 2 / 4.
    assert report.tables["monthly"].rows == [["2026-04", 2, 0, 1, 0.5],
                                             ["2026-05", 1, 3, 2, 0.5]]
    assert dict(report.tables["reasons"].rows) == {"service": 1, "price": 1, "(none)": 1}
    assert report.tables["cohorts"].rows == [["2026-05", 3, 2, 0.6667]]


async def test_value_ranking(db: Database, world: World) -> None:
    async with db.sessions() as session:
        report = await customers.value_ranking(session, MAY)
    top = report.tables["top"].as_dicts()
    assert [(r["customer"], r["revenue"]) for r in top] == [
        ("李娜", 2000.0), ("张伟", 1700.0), ("陈静", 800.0), ("王芳", 300.0)]
    # Lifetime value: c2 2500 + 2000, c1 1000 + 500 + 1200, c5 800 (700 cancelled), c3 300.
    assert [r["lifetime_value"] for r in top] == [4500.0, 2700.0, 800.0, 300.0]
    rising = report.tables["rising"].as_dicts()
    assert [(r["customer"], r["previous"], r["growth"]) for r in rising] == [
        ("陈静", 0.0, 800.0), ("张伟", 1000.0, 700.0), ("王芳", 0.0, 300.0)]


async def test_channel_mix(db: Database, world: World) -> None:
    async with db.sessions() as session:
        report = await customers.channel_mix(session, MAY)
    assert report.tables["channels"].rows == [["email", 4, 4, 0.5714],
                                              ["telegram", 2, 1, 0.2857],
                                              ["webchat", 1, 0, 0.1429]]


async def test_sales_report(db: Database, world: World) -> None:
    async with db.sessions() as session:
        report = await sales.sales_report(session, MAY, today=TODAY)
    assert report.tables["pipeline"].rows == [
        ["lead", 1, 10000.0, 1000.0],
        ["proposal", 1, 4000.0, 1000.0],             # its own 25 %
        ["negotiation", 2, 14999.0, 11999.2],        # 5000 × 0.8 + 9999 × 0.8
    ]
    assert report.tables["monthly"].rows == [["2026-05", 5, 4800.0]]
    figure = report.figure
    assert figure("summary", "revenue") == 4800.0    # o2 500, o3 2000, o4 300, o5 800, o9 1200
    assert figure("summary", "payments") == 900.0    # o4 100, o5 800 (April payments out)
    assert figure("summary", "receivables") == 3900.0  # o2 500, o3 2000, o4 200, o9 1200
    assert figure("summary", "receivables_overdue") == 200.0  # o4 was due 18 May
    assert (figure("summary", "deals_won"), figure("summary", "deals_lost")) == (1, 1)
    assert figure("summary", "win_rate") == 0.5


async def test_forecast(db: Database, world: World) -> None:
    async with db.sessions() as session:
        report = await sales.forecast(session, NEXT_30)
    assert report.tables["forecast"].rows == [
        ["stage:lead", 1, 10000.0, 1000.0],
        ["stage:proposal", 1, 4000.0, 1000.0],
        ["stage:negotiation", 1, 5000.0, 4000.0],     # the July deal is outside
        ["renewals", 2, 8000.0, 5333.6],             # 6000 + 2000 × 2 renewed of 3 ended
    ]
    assert report.figure("summary", "renewal_rate") == 0.6667
    assert report.figure("summary", "total_expected") == 11333.6


@pytest.mark.parametrize("name", sorted(ALL))
async def test_exports_parse_back(db: Database, world: World, name: str) -> None:
    period = NEXT_30 if name == "forecast" else (DAY if name == "dashboard" else MAY)
    async with db.sessions() as session:
        report = await build(name, session, period, Filters(now=NOW))
    blocks = [b for b in to_csv(report).split("\r\n\r\n") if b.strip()]
    assert len(blocks) == len(report.tables)
    book = load_workbook(io.BytesIO(to_xlsx(report)))
    for block, table in zip(blocks, report.tables.values(), strict=True):
        rows = list(csv.reader(io.StringIO(block)))
        assert rows[0] == [table.key] and rows[1] == table.columns
        assert rows[2:] == [["" if v is None else str(v) for v in row] for row in table.rows]
        sheet = list(book[table.key].iter_rows(values_only=True))
        assert list(sheet[0]) == table.columns
        assert [list(r) for r in sheet[1:]] == table.rows
