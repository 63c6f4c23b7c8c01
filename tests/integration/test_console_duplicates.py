"""The review queue of possible duplicate customers (``/console/customers/duplicates``)."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import select

from crm_core.db import Database
from crm_core.identity import MatchCandidate, record_suggestion
from crm_core.models import AgentRole, DuplicateSuggestion
from crm_core.services.customers import create_customer, delete_customer
from tests.integration.console_support import add_agent, login, start_client

ROW = re.compile(r'data-suggestion-id="(\d+)"')


async def _customer(db: Database, name: str, phone: str) -> int:
    async with db.transaction() as session:
        return (await create_customer(session, {"display_name": name, "phones": [phone]},
                                      actor="test", region="CN")).id


async def _suggest(db: Database, first: int, second: int, score: float, source: str,
                   **reasons: float) -> int:
    async with db.transaction() as session:
        suggestion = await record_suggestion(
            session, first, MatchCandidate(second, score, {"name": 100.0, **reasons}),
            source=source)
        assert suggestion is not None
        return suggestion.id


async def test_supervisors_work_through_the_pairs(db: Database, tmp_path: Path) -> None:
    await add_agent(db, "lead", role=AgentRole.SUPERVISOR, language="zh-CN")
    wang = [await _customer(db, "王小明", f"1380013800{i}") for i in range(2)]
    li = [await _customer(db, "李娜", f"1390013900{i}") for i in range(2)]
    gone = [await _customer(db, "赵六", f"1370013700{i}") for i in range(2)]
    weak = await _suggest(db, *wang, 80.0, "routing", birthday=0.0)  # birthdays differ
    strong = await _suggest(db, *li, 97.0, "scan", phone=100.0)
    await _suggest(db, *gone, 99.0, "scan")
    async with db.transaction() as session:
        await delete_customer(session, gone[1], actor="test")
    client = await start_client(db, tmp_path)
    try:
        await login(client, "lead")
        response = await client.get("/console/customers/duplicates")
        text = await response.text()
        assert response.status == 200
        # strongest first; a pair with a deleted record is not offered
        assert [int(i) for i in ROW.findall(text)] == [strong, weak]
        assert "电话" in text and "重复扫描" in text  # what agrees, the source, in Chinese
        assert "生日" not in text  # a birthday that differs does not agree
        merge_link = (f'href="/console/customers/{li[0]}/merge?other={li[1]}'
                      f'&amp;next=/console/customers/duplicates"')
        assert merge_link in text
        scanned = await (await client.get("/console/customers/duplicates?source=scan")).text()
        assert [int(i) for i in ROW.findall(scanned)] == [strong]

        page = await client.get("/console/customers/duplicates")
        token = re.search(r'name="_csrf" value="([^"]+)"', await page.text())
        assert token is not None
        dismissed = await client.post(
            f"/console/customers/duplicates/{weak}/dismiss",
            data={"_csrf": token.group(1), "next": "/console/customers/duplicates"})
        assert dismissed.status == 200 and "已标记为不是同一人" in await dismissed.text()
        assert [int(i) for i in ROW.findall(await dismissed.text())] == [strong]
        again = await client.post(f"/console/customers/duplicates/{weak}/dismiss",
                                  data={"_csrf": token.group(1)})
        assert again.status == 404
        # Compare and merge from the queue comes back to the queue, the pair gone.
        compare = await client.get(f"/console/customers/{li[0]}/merge",
                                   params={"other": str(li[1]),
                                           "next": "/console/customers/duplicates"})
        assert 'name="next" value="/console/customers/duplicates"' in await compare.text()
        merged = await client.post(f"/console/customers/{li[0]}/merge", data={
            "_csrf": token.group(1), "other_id": str(li[1]),
            "next": "/console/customers/duplicates"})
        assert merged.status == 200 and str(merged.url).endswith("duplicates?notice=merged")
        assert ROW.findall(await merged.text()) == []
    finally:
        await client.close()
    async with db.sessions() as session:
        row = await session.get(DuplicateSuggestion, weak)
        assert row is not None and row.status == "dismissed" and row.resolved_by == "agent:lead"
        assert (await session.scalar(select(DuplicateSuggestion.status).where(
            DuplicateSuggestion.id == strong))) == "merged"
