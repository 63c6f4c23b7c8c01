"""The demo data give every report and chart something to show (``make run``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from contact_center.demo import load_demo
from crm_core.db import Database
from crm_core.services.analytics.base import Period
from crm_core.services.analytics.registry import ALL, FORWARD, Filters, build
from crm_core.services.analytics.rollups import refresh_rollups

NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


async def test_every_chart_of_the_demo_has_data(sqlite_db: Database) -> None:
    summary = await load_demo(sqlite_db, now=NOW)
    assert summary.orders > 100 and summary.opportunities == 45
    async with sqlite_db.transaction() as session:   # as `contact-center demo` does
        built = await refresh_rollups(session, now=NOW, zone="Asia/Shanghai")
    assert built.full and built.days > 100
    today = NOW.date()
    for name in ALL:
        if name == "dashboard":
            period = Period(today - timedelta(days=1), today)
        elif name in FORWARD:
            period = Period(today + timedelta(days=1), today + timedelta(days=60))
        else:
            period = Period.ending(today, 180, "Asia/Shanghai")
        async with sqlite_db.sessions() as session:
            report = await build(name, session, period, Filters(now=NOW))
        for chart in report.charts:
            values = [v for column in chart.values
                      for v in report.tables[chart.table].column(column)]
            assert any(v for v in values), f"{name}: chart of {chart.table} is empty"
