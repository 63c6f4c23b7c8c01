"""The customers area of the console on SQLite and PostgreSQL: search, create, edit, delete,
merge, CSV import and export, code tables, segments, communication records."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select, update

from contact_center.webhooks import PUBLIC_EVENTS
from crm_core.db import Database
from crm_core.models import (
    Agent,
    AuditLog,
    Customer,
    CustomerCategory,
    Interaction,
    Segment,
    WebhookDelivery,
)
from crm_core.services import webhooks as webhook_service
from crm_core.services.customers import create_customer, get_customer
from tests.integration.areas_support import World, actor, app_client, ids_in, seed_world


@pytest.fixture
async def world(db: Database) -> World:
    """The seeded teams, people and records."""
    return await seed_world(db)


@pytest.fixture
async def client(db: Database, tmp_path: Path) -> AsyncIterator[TestClient]:
    """The app on the test database."""
    async with app_client(db, tmp_path) as test_client:
        yield test_client


async def listed(client: TestClient, world: World, role: str, query: str = "") -> list[int]:
    """The customer ids the list shows to ``role`` for a query string."""
    response = await actor(client, world, role).get(f"/console/customers?{query}")
    assert response.status == 200, await response.text()
    return ids_in(await response.text())


async def audit_rows(db: Database, **where: Any) -> list[AuditLog]:
    """Audit entries with these column values, oldest first."""
    async with db.sessions() as session:
        conditions = [getattr(AuditLog, k) == v for k, v in where.items()]
        return list(await session.scalars(select(AuditLog).where(*conditions)
                                          .order_by(AuditLog.id)))


async def test_search_by_characters_pinyin_phone_and_email(
    client: TestClient, world: World,
) -> None:
    """张伟 is found as 张, zhangwei, Zhang Wei, by the phone as typed and by e-mail."""
    zhang = world.ids["customer_a"]
    for text in ("张", "zhangwei", "Zhang%20Wei", "138%200013%208000", "%2B86-138-0013-8000",
                 "zhang.wei%40example.cn", "0013 8000".replace(" ", "%20")):
        assert await listed(client, world, "supervisor", f"q={text}") == [zhang], text
    assert await listed(client, world, "supervisor", "q=%E6%9D%8E") == [world.ids["customer_q"]]
    assert await listed(client, world, "supervisor", "q=nobody-like-this") == []


async def test_filters_and_pages(client: TestClient, world: World, db: Database) -> None:
    """Category, tier, lifecycle, tag and owner narrow the list; pages keep the filters."""
    ids = world.ids
    assert await listed(client, world, "admin", "category=retail") == sorted(
        [ids["customer_a"], ids["customer_q"]], reverse=True)
    assert await listed(client, world, "admin", "tier=vip") == [ids["customer_a"]]
    assert await listed(client, world, "admin", "tag=%E5%9B%9E%E5%A4%B4%E5%AE%A2") == [
        ids["customer_a"]]
    assert await listed(client, world, "admin", f"owner={ids['agent_a_id']}") == [
        ids["customer_a"]]
    assert await listed(client, world, "admin", "lifecycle=active") == []
    async with db.transaction() as session:
        for n in range(30):
            await create_customer(session, {"display_name": f"批量 {n:02d}",
                                            "category_code": "wholesale"},
                                  actor="test", region="CN")
    first = await listed(client, world, "admin", "category=wholesale&size=25&sort=name")
    response = await actor(client, world, "admin").get(
        "/console/customers?category=wholesale&size=25&sort=name&page=2")
    html = await response.text()
    second = ids_in(html)
    assert len(first) == 25 and len(second) == 6 and not set(first) & set(second)
    assert "31 customers" in html and "page=1" in html  # the link back keeps the filters
    assert "category=wholesale" in html.split('rel="prev"')[0].rsplit("href=", 1)[1]
    bad = await actor(client, world, "admin").get("/console/customers?lifecycle=nonsense")
    assert bad.status == 200 and "Please check" in await bad.text()


async def test_agents_see_their_own_and_their_conversations_customers(
    client: TestClient, world: World,
) -> None:
    """Agent A: own customer and team A's queue; agent B: team B's queue; supervisors all."""
    ids = world.ids
    assert set(await listed(client, world, "agent_a")) == {ids["customer_a"], ids["customer_q"]}
    assert set(await listed(client, world, "agent_b")) == {ids["customer_b"]}
    assert len(await listed(client, world, "supervisor", "size=100")) == 19
    assert await listed(client, world, "agent_b", "q=%E5%BC%A0") == []  # 张 is not B's
    assert await listed(client, world, "agent_a", "q=zhang%20wie") == [ids["customer_a"]]
    forbidden = await actor(client, world, "agent_b").get(
        f"/console/customers/{ids['customer_a']}/edit")
    assert forbidden.status == 403


async def test_create_and_edit_are_audited(client: TestClient, world: World,
                                           db: Database) -> None:
    """An agent creates a customer (and owns it); edits record before and after."""
    agent_a = actor(client, world, "agent_a")
    created = await agent_a.post("/console/customers/new", {
        "display_name": "陈静", "phones": "139 0000 1111", "emails": "chen@example.cn",
        "tags": "新客户，线上", "lifecycle_stage": "lead", "owner_agent_id": "1"})
    assert created.status == 303, await created.text()
    customer_id = int(created.headers["Location"].split("/")[3])
    async with db.sessions() as session:
        customer = await get_customer(session, customer_id)
    assert customer.owner_agent_id == world.ids["agent_a_id"]  # agents cannot choose
    assert customer.phones == ["+8613900001111"] and customer.tags == ["新客户", "线上"]
    page = await agent_a.get(created.headers["Location"])
    assert "Customer created." in await page.text()

    saved = await agent_a.post(f"/console/customers/{customer_id}/edit", {
        "display_name": "陈静", "phones": "139 0000 1111", "emails": "chen@example.cn",
        "tags": "新客户", "lifecycle_stage": "prospect", "city": "杭州",
        "reason": "asked for a quote"})
    assert saved.status == 303
    entry = (await audit_rows(db, entity_type="customer", entity_id=str(customer_id),
                              action="update"))[-1]
    assert entry.actor == "agent:agent-a"
    assert entry.before == {"city": None, "lifecycle_stage": "lead", "tags": ["新客户", "线上"]}
    assert entry.after == {"city": "杭州", "lifecycle_stage": "prospect", "tags": ["新客户"]}
    history = await (await agent_a.get(f"/console/customers/{customer_id}/edit")).text()
    assert "agent:agent-a" in history and "lifecycle_stage" in history

    clash = await agent_a.post("/console/customers/new", {
        "display_name": "Someone", "phones": "+86 138-0013-8000"})
    text = await clash.text()
    assert clash.status == 400 and f"#{world.ids['customer_a']}" in text
    assert 'value="Someone"' in text  # the form keeps what was typed
    nameless = await agent_a.post("/console/customers/new", {"display_name": ""})
    assert nameless.status == 400 and "display_name" in await nameless.text()


async def test_delete_restore_and_who_may(client: TestClient, world: World,
                                          db: Database) -> None:
    """Only supervisors and admins delete (soft) and restore."""
    target = world.ids["customer_other"]
    refused = await actor(client, world, "agent_a").post(f"/console/customers/{target}/delete")
    assert refused.status == 403
    supervisor = actor(client, world, "supervisor")
    confirm = await supervisor.get(f"/console/customers/{target}/delete")
    assert confirm.status == 200 and "王芳" in await confirm.text()
    done = await supervisor.post(f"/console/customers/{target}/delete")
    assert done.status == 303
    assert target not in await listed(client, world, "supervisor", "size=100")
    assert target in await listed(client, world, "supervisor", "size=100&deleted=1")
    async with db.sessions() as session:
        row = await session.get(Customer, target)
        assert row is not None and row.deleted_at is not None
    assert [e.action for e in await audit_rows(db, entity_id=str(target),
                                               entity_type="customer")] == ["create", "delete"]
    restored = await supervisor.post(f"/console/customers/{target}/restore")
    assert restored.status == 303
    assert target in await listed(client, world, "supervisor", "size=100")


async def test_merge_picks_the_survivor(client: TestClient, world: World, db: Database) -> None:
    """The chosen record stays; the other's identities and history move; both audited."""
    keep, gone = world.ids["customer_q"], world.ids["customer_a"]
    supervisor = actor(client, world, "supervisor")
    page = await supervisor.get(f"/console/customers/{gone}/merge?q=%E6%9D%8E")
    html = await page.text()
    assert page.status == 200 and f"other={keep}" in html
    compare = await supervisor.get(f"/console/customers/{gone}/merge?other={keep}")
    assert "Merge the two records" in await compare.text()
    refused = await actor(client, world, "agent_a").post(
        f"/console/customers/{gone}/merge", {"other_id": str(keep), "survivor": "other"})
    assert refused.status == 403
    merged = await supervisor.post(f"/console/customers/{gone}/merge", {
        "other_id": str(keep), "survivor": "other", "reason": "same person"})
    assert merged.status == 303 and merged.headers["Location"].startswith(
        f"/console/customers/{keep}/edit")
    async with db.sessions() as session:
        survivor = await get_customer(session, keep)
        loser = await session.get(Customer, gone)
        moved = await session.scalar(select(func.count()).select_from(Interaction).where(
            Interaction.customer_id == keep))
    assert loser is not None and loser.merged_into_id == keep and loser.deleted_at is not None
    assert "+8613800138000" in survivor.phones and moved == 3
    assert (await audit_rows(db, action="merge", entity_id=str(keep)))[0].actor == \
        "agent:supervisor"
    assert await audit_rows(db, action="merged_into", entity_id=str(gone))
    again = await supervisor.post(f"/console/customers/{keep}/merge", {"other_id": str(keep)})
    assert again.status == 400


CSV_WITH_ERRORS = (
    "姓名,手机,邮箱,等级,标签\n"
    "赵敏,13700000001,zhao@example.cn,vip,老客户\n"
    "钱坤,12345,qian@example.cn,,\n"
    "孙丽,13800138000,sun@example.cn,,\n"
    "周杰,13700000002,zhou@example.cn,platinum,\n"
    "吴刚,13700000003,wu@example.cn,standard,\n"
)


def upload(text: str, charset: str = "utf-8", name: str = "客户.csv",
           **fields: str) -> FormData:
    """A multipart form with a CSV file written in ``charset``."""
    form = FormData()
    for key, value in fields.items():
        form.add_field(key, value)
    form.add_field("file", text.encode(charset), filename=name, content_type="text/csv")
    return form


async def test_import_reports_row_errors(client: TestClient, world: World,
                                         db: Database) -> None:
    """Good rows are imported; bad ones are listed with line, field and reason."""
    supervisor = actor(client, world, "supervisor")
    refused = await actor(client, world, "agent_a").post(
        "/console/customers/import", upload(CSV_WITH_ERRORS))
    assert refused.status == 403
    response = await supervisor.post("/console/customers/import",
                                     upload(CSV_WITH_ERRORS, "gbk", encoding="gbk"))
    html = await response.text()
    assert response.status == 200, html
    assert "Rows read: 5, imported: 2, skipped: 0, with errors: 3." in html
    table = html.split('data-testid="import-errors"')[1]
    assert "<td>3</td>" in table and "12345" in table  # line 3: the bad phone
    assert "<td>4</td>" in table and f"#{world.ids['customer_a']}" in table  # phone on file
    assert "<td>5</td>" in table and "platinum" in table
    async with db.sessions() as session:
        names = set(await session.scalars(select(Customer.display_name).where(
            Customer.display_name.in_(["赵敏", "吴刚", "钱坤", "孙丽", "周杰"]))))
    assert names == {"赵敏", "吴刚"}
    entry = (await audit_rows(db, action="import"))[-1]
    assert entry.actor == "agent:supervisor" and entry.after["imported"] == 2
    skipped = await supervisor.post("/console/customers/import",
                                    upload(CSV_WITH_ERRORS, on_conflict="skip"))
    assert "skipped: 3" in await skipped.text()  # 赵敏, 吴刚 and 孙丽 are on file now
    empty = await supervisor.post("/console/customers/import", FormData({"encoding": ""}))
    assert empty.status == 400
    headless = await supervisor.post("/console/customers/import", upload(""))
    assert headless.status == 400


def read_csv(body: bytes, encoding: str) -> list[dict[str, str]]:
    """The rows of a downloaded CSV."""
    return list(csv.DictReader(io.StringIO(body.decode(encoding))))


async def test_export_follows_the_filters_and_round_trips_in_gbk(
    client: TestClient, world: World, db: Database,
) -> None:
    """An export holds the filtered customers; its GBK/Chinese-header form imports back."""
    admin = actor(client, world, "admin")
    refused = await actor(client, world, "agent_a").get("/console/customers/export")
    assert refused.status == 403
    vip = await admin.get("/console/customers/export?tier=vip")
    assert vip.status == 200 and vip.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in vip.headers["Content-Disposition"]
    rows = read_csv(await vip.read(), "utf-8-sig")
    assert [r["display_name"] for r in rows] == ["张伟"]
    assert rows[0]["phones"] == "+8613800138000" and rows[0]["tags"] == "回头客"

    async with db.transaction() as session:
        await create_customer(session, {"display_name": "赵六", "tier_code": "vip",
                                        "category_code": "retail", "city": "苏州",
                                        "tags": ["批发商"]}, actor="test", region="CN")
    gbk = await admin.get("/console/customers/export?q=%E8%B5%B5%E5%85%AD&encoding=gbk"
                          "&headers=zh")
    body = await gbk.read()
    rows = read_csv(body, "gbk")
    assert len(rows) == 1 and rows[0]["姓名"] == "赵六" and rows[0]["城市"] == "苏州"
    back = await admin.post("/console/customers/import", upload(body.decode("gbk"), "gbk"))
    assert "imported: 1" in await back.text()
    async with db.sessions() as session:
        copies = list(await session.scalars(select(Customer).where(
            Customer.display_name == "赵六").order_by(Customer.id)))
        copy = await get_customer(session, copies[-1].id)
    assert len(copies) == 2
    assert (copy.tier_code, copy.category_code, copy.city, copy.tags) == (
        "vip", "retail", "苏州", ["批发商"])
    bad = await admin.get("/console/customers/export?encoding=latin-1")
    assert bad.status == 400
    refused = await admin.get("/console/customers/export?phone=12")
    assert refused.status == 400 and "phone" in await refused.text()


async def test_code_tables(client: TestClient, world: World, db: Database) -> None:
    """Supervisors add, rename and delete categories and tiers; agents only read them."""
    agent = actor(client, world, "agent_a")
    page = await agent.get("/console/customers/classes")
    assert page.status == 200 and "零售" in await page.text()
    assert (await agent.post("/console/customers/classes/categories",
                             {"code": "gov", "name": "Government"})).status == 403
    supervisor = actor(client, world, "supervisor")
    added = await supervisor.post("/console/customers/classes/categories", {
        "code": "gov", "name": "Government", "name_zh": "政府"})
    assert added.status == 303
    duplicate = await supervisor.post("/console/customers/classes/categories", {
        "code": "gov", "name": "Again"})
    assert duplicate.status == 400 and "gov" in await duplicate.text()
    renamed = await supervisor.post("/console/customers/classes/categories/gov", {
        "name": "Public sector", "name_zh": "公共部门"})
    assert renamed.status == 303
    async with db.sessions() as session:
        row = await session.get(CustomerCategory, "gov")
        assert row is not None and row.name_zh == "公共部门"
    assert (await supervisor.post("/console/customers/classes/tiers", {
        "code": "gold", "name": "Gold", "rank": "2"})).status == 303
    assert (await supervisor.post("/console/customers/classes/tiers/gold", {
        "name": "Gold", "rank": "x"})).status == 400
    assert (await supervisor.post("/console/customers/classes/categories/gov/delete")).status \
        == 303
    assert (await supervisor.post("/console/customers/classes/categories/nope/delete")).status \
        == 404
    actions = [(e.entity_type, e.action) for e in await audit_rows(db, actor="agent:supervisor")]
    assert actions == [("customer_category", "create"), ("customer_category", "update"),
                       ("customer_tier", "create"), ("customer_category", "delete")]


async def test_segments(client: TestClient, world: World, db: Database) -> None:
    """A saved filter lists whoever matches it now; JSON or fields; audited."""
    supervisor = actor(client, world, "supervisor")
    assert (await actor(client, world, "agent_a").get("/console/customers/segments")).status \
        == 403
    created = await supervisor.post("/console/customers/segments", {
        "segment_name": "零售客户", "filter_json": '{"category": "retail"}'})
    assert created.status == 303
    location = created.headers["Location"]
    page = await supervisor.get(location)
    html = await page.text()
    assert "Segment saved." in html
    assert set(ids_in(html)) == {world.ids["customer_a"], world.ids["customer_q"]}
    segment_id = int(location.split("/")[4].split("?")[0])
    changed = await supervisor.post(f"/console/customers/segments/{segment_id}", {
        "segment_name": "零售贵宾", "category": "retail", "tier": "vip"})
    assert changed.status == 303
    async with db.sessions() as session:
        segment = await session.get(Segment, segment_id)
    assert segment is not None and segment.filter == {"category": "retail", "tier": "vip"}
    html = await (await supervisor.get(f"/console/customers/segments/{segment_id}")).text()
    assert ids_in(html) == [world.ids["customer_a"]]
    bad = await supervisor.post("/console/customers/segments", {
        "segment_name": "Broken", "filter_json": '{"colour": "red"}'})
    assert bad.status == 400 and "colour" in await bad.text()
    taken = await supervisor.post("/console/customers/segments", {
        "segment_name": "零售贵宾", "filter_json": "{}"})
    assert taken.status == 400
    from_list = await supervisor.post("/console/customers/segments", {
        "segment_name": "From the list", "filter_json": '{"text": "zhang"}'})
    assert from_list.status == 303
    deleted = await supervisor.post(f"/console/customers/segments/{segment_id}/delete")
    assert deleted.status == 303
    assert [e.action for e in await audit_rows(db, entity_type="segment",
                                               entity_id=str(segment_id))] == [
        "create", "update", "delete"]


async def test_communication_records(client: TestClient, world: World) -> None:
    """By keyword (Chinese, short or long), date, channel, agent and customer; agents see
    only their conversations; supervisors export CSV."""
    supervisor = actor(client, world, "supervisor")

    async def records(role: str, query: str) -> list[int]:
        response = await actor(client, world, role).get(f"/console/customers/records?{query}")
        assert response.status == 200
        return ids_in(await response.text(), "data-interaction-id")

    first = world.ids["interaction_a"]
    assert await records("supervisor", "keyword=增值税") == [first]  # FTS (3+ characters)
    assert len(await records("supervisor", "keyword=发票")) == 2  # short: LIKE
    assert len(await records("supervisor", "keyword=退款")) == 1
    assert len(await records("supervisor", "keyword=REFUND%20kettle")) == 1
    assert await records("supervisor", "keyword=增值税%20寄出") == []
    assert len(await records("supervisor", "date_from=2026-05-07&date_to=2026-05-07")) == 1
    assert len(await records("supervisor", "channel=telegram")) == 1
    assert len(await records("supervisor", f"agent={world.ids['agent_a_id']}")) == 1
    assert len(await records("supervisor", "customer=zhangwei")) == 2
    assert len(await records("supervisor", f"customer_id={world.ids['customer_b']}")) == 1
    assert len(await records("agent_b", "")) == 1
    assert len(await records("agent_a", "")) == 3
    bad = await supervisor.get("/console/customers/records?date_from=2026-05-09"
                               "&date_to=2026-05-01")
    assert "Please check" in await bad.text()
    assert (await actor(client, world, "agent_a").get(
        "/console/customers/records/export")).status == 403
    export = await supervisor.get("/console/customers/records/export?keyword=发票"
                                  "&encoding=gbk&headers=zh")
    rows = read_csv(await export.read(), "gbk")
    assert [r["客户"] for r in rows] == ["张伟", "张伟"]
    assert {r["内容"] for r in rows} == {"你好，我需要开具增值税发票，谢谢", "您好，发票已经寄出"}


async def test_chinese_console(client: TestClient, world: World, db: Database) -> None:
    """The area speaks Chinese to a Chinese-speaking agent."""
    async with db.transaction() as session:
        await session.execute(update(Agent).where(Agent.id == world.ids["supervisor_id"])
                              .values(ui_language="zh-CN"))
    response = await client.get("/console/customers/records", headers={
        "Cookie": f"cc_session={world.people['supervisor'].cookie}"}, allow_redirects=False)
    html = await response.text()
    assert "沟通记录" in html and "关键词" in html and "Keyword" not in html


async def test_console_changes_to_customers_become_webhook_deliveries(
    client: TestClient, world: World, db: Database,
) -> None:
    """Create, edit, delete, restore and merge in the console reach webhook subscribers
    like the same changes through the API (rows written with the change)."""
    async with db.transaction() as session:
        await webhook_service.create_subscription(
            session, name="shop", url="https://shop.example.com/hook", events=["*"],
            known_events=PUBLIC_EVENTS, actor="test", secret="s" * 32)
    supervisor = actor(client, world, "supervisor")
    created = await supervisor.post("/console/customers/new", {
        "display_name": "陈静", "phones": "139 0000 2222", "lifecycle_stage": "lead"})
    assert created.status == 303, await created.text()
    customer_id = int(created.headers["Location"].split("/")[3])
    await supervisor.post(f"/console/customers/{customer_id}/edit", {
        "display_name": "陈静", "phones": "139 0000 2222", "city": "杭州"})
    await supervisor.post(f"/console/customers/{customer_id}/delete", {})
    await supervisor.post(f"/console/customers/{customer_id}/restore", {})
    keep = world.ids["customer_q"]
    merged = await supervisor.post(f"/console/customers/{customer_id}/merge", {
        "other_id": str(keep), "survivor": "other"})
    assert merged.status == 303
    async with db.sessions() as session:
        rows = list(await session.scalars(select(WebhookDelivery)
                                          .order_by(WebhookDelivery.id)))
    assert [(row.event, row.payload["data"]["customer_id"]) for row in rows] == [
        ("customer.created", customer_id), ("customer.updated", customer_id),
        ("customer.deleted", customer_id), ("customer.updated", customer_id),
        ("customer.merged", keep)]
    assert rows[-1].payload["data"]["merged_id"] == customer_id
