"""Classification on SQLite and PostgreSQL: categories, tiers, rules, re-classify, CLI."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from contact_center.cli import main
from crm_core import schema
from crm_core.db import Database, create_engine
from crm_core.errors import NotFoundError, StateError, ValidationError
from crm_core.models import AuditLog, ClassificationRule, Customer, CustomerCategory
from crm_core.services import classification as cls
from crm_core.services.customer_query import search_customers
from crm_core.services.customers import create_customer, delete_customer, get_customer

EXAMPLE = Path(__file__).parents[2] / "config" / "classification.example.toml"


async def add_customer(db: Database, name: str, **fields: Any) -> int:
    async with db.transaction() as session:
        customer = await create_customer(
            session, {"display_name": name, **fields}, actor="test", region="CN"
        )
        return customer.id


async def classes_of(db: Database) -> dict[int, tuple[str | None, str | None]]:
    async with db.sessions() as session:
        rows = await session.execute(
            select(Customer.id, Customer.tier_code, Customer.category_code)
        )
        return {cid: (tier, category) for cid, tier, category in rows}


async def audit_entries(
    db: Database, *, entity_type: str | None = None, action: str | None = None
) -> list[AuditLog]:
    stmt = select(AuditLog).order_by(AuditLog.id)
    if entity_type is not None:
        stmt = stmt.where(AuditLog.entity_type == entity_type)
    if action is not None:
        stmt = stmt.where(AuditLog.action == action)
    async with db.sessions() as session:
        return list(await session.scalars(stmt))


async def setup_classes(db: Database) -> None:
    """Tiers vip/gold/standard, categories manufacturing/retail, the example rules."""
    async with db.transaction() as session:
        await cls.create_tier(session, "vip", "VIP", rank=30, name_zh="贵宾", actor="admin")
        await cls.create_tier(session, "gold", "Gold", rank=20, actor="admin")
        await cls.create_tier(session, "standard", "Standard", rank=10, actor="admin")
        await cls.create_category(session, "manufacturing", "Manufacturing", name_zh="制造业",
                                  actor="admin")
        await cls.create_category(session, "retail", "Retail", actor="admin")
        await cls.create_rule(session, target="tier", value="vip",
                              conditions=["lifetime_value>=100000"], name="vip", actor="admin")
        await cls.create_rule(session, target="tier", value="gold",
                              conditions=["lifetime_value>=20000"], name="gold", actor="admin")
        await cls.create_rule(session, target="category", value="manufacturing",
                              conditions=["industry in 制造业,manufacturing"],
                              name="manufacturing", actor="admin")


# ----------------------------------------------------------------- categories and tiers


async def test_category_and_tier_crud_is_audited(db: Database) -> None:
    async with db.transaction() as session:
        await cls.create_category(session, "retail", "Retail", name_zh="零售", actor="admin")
        await cls.create_tier(session, "gold", "Gold", rank=20, actor="admin")
        await cls.create_tier(session, "vip", "VIP", rank=30, actor="admin")
    async with db.transaction() as session:
        await cls.update_category(session, "retail", name="Retail shops", actor="admin")
        await cls.update_tier(session, "gold", rank=25, name_zh="金卡", actor="admin")
        await cls.update_tier(session, "vip", name="VIP", actor="admin")  # no change
    async with db.sessions() as session:
        categories = await cls.list_categories(session)
        tiers = await cls.list_tiers(session)
    assert [(c.code, c.name, c.name_zh) for c in categories] == [
        ("retail", "Retail shops", "零售")
    ]
    assert [(t.code, t.rank, t.name_zh) for t in tiers] == [("vip", 30, None),
                                                            ("gold", 25, "金卡")]

    category_log = await audit_entries(db, entity_type="customer_category")
    assert [(e.action, e.entity_id) for e in category_log] == [("create", "retail"),
                                                               ("update", "retail")]
    assert category_log[1].before == {"name": "Retail"}
    assert category_log[1].after == {"name": "Retail shops"}
    tier_log = await audit_entries(db, entity_type="customer_tier")
    assert [(e.action, e.entity_id) for e in tier_log] == [
        ("create", "gold"), ("create", "vip"), ("update", "gold")
    ]
    assert tier_log[2].after == {"rank": 25, "name_zh": "金卡"}
    assert tier_log[0].actor == "admin"


async def test_duplicate_and_malformed_codes_are_refused(db: Database) -> None:
    async with db.transaction() as session:
        await cls.create_category(session, "retail", "Retail", actor="admin")
    async with db.transaction() as session:
        with pytest.raises(cls.DuplicateError, match="category 'retail' already exists"):
            await cls.create_category(session, "retail", "Again", actor="admin")
        with pytest.raises(ValidationError) as info:
            await cls.create_tier(session, "Gold Card", "Gold", rank=1, actor="admin")
        assert info.value.field == "code"
        with pytest.raises(ValidationError) as info:
            await cls.create_tier(session, "gold", " ", rank=1, actor="admin")
        assert info.value.field == "name"
        with pytest.raises(NotFoundError):
            await cls.update_tier(session, "nope", name="x", actor="admin")
    assert [e.action for e in await audit_entries(db, entity_type="customer_category")] == [
        "create"
    ]


async def test_delete_class_refused_while_a_rule_uses_it(db: Database) -> None:
    await setup_classes(db)
    async with db.transaction() as session:
        with pytest.raises(StateError, match=r"rules #\d+ 'vip'"):
            await cls.delete_tier(session, "vip", actor="admin")
    async with db.sessions() as session:
        assert await session.get(cls.CustomerTier, "vip") is not None


async def test_delete_category_unclassifies_its_customers(db: Database) -> None:
    await setup_classes(db)
    kept = await add_customer(db, "王芳", category_code="retail", tier_code="gold")
    async with db.transaction() as session:
        assert await cls.delete_category(session, "retail", actor="admin") == 1
    async with db.sessions() as session:
        customer = await get_customer(session, kept)
        assert customer.category_code is None
        assert customer.tier_code == "gold"
        assert await session.get(CustomerCategory, "retail") is None
    [entry] = await audit_entries(db, entity_type="customer_category", action="delete")
    assert entry.entity_id == "retail"
    assert entry.after == {"customers_unclassified": 1}
    assert entry.before is not None and entry.before["name"] == "Retail"


# ----------------------------------------------------------------- rules


async def test_rule_creation_validates_and_audits(db: Database) -> None:
    await setup_classes(db)
    async with db.transaction() as session:
        with pytest.raises(ValidationError) as info:
            await cls.create_rule(session, target="tier", value="platinum",
                                  conditions=["lifetime_value>1"], actor="admin")
        assert (info.value.field, info.value.reason) == ("value", "no such tier")
        with pytest.raises(ValidationError) as info:
            await cls.create_rule(session, target="category", value="vip",
                                  conditions=["lifetime_value>1"], actor="admin")
        assert info.value.reason == "no such category"
        with pytest.raises(ValidationError) as info:
            await cls.create_rule(session, target="segment", value="vip",
                                  conditions=["lifetime_value>1"], actor="admin")
        assert info.value.field == "target"
        with pytest.raises(ValidationError) as info:
            await cls.create_rule(
                session, target="tier", value="vip",
                conditions=["city=上海", {"field": "city", "op": "between", "value": 1}],
                actor="admin",
            )
        assert info.value.field == "conditions[1].op"
        with pytest.raises(ValidationError) as info:
            await cls.create_rule(session, target="tier", value="vip",
                                  conditions=["lifetime_value >= a lot"], actor="admin")
        assert info.value.field == "conditions[0].value"
        with pytest.raises(ValidationError) as info:
            await cls.create_rule(session, target="tier", value="vip",
                                  conditions=["what is this"], actor="admin")
        assert info.value.field == "conditions[0]"
        with pytest.raises(cls.DuplicateError):
            await cls.create_rule(session, target="tier", value="vip",
                                  conditions=["lifetime_value>1"], name="vip", actor="admin")
    async with db.transaction() as session:
        rule = await cls.create_rule(session, target="tier", value="standard",
                                     conditions=[], actor="admin")
        assert rule.position == 30  # after vip (10) and gold (20)
        assert rule.name == "tier standard when always"
        assert cls.describe_rule(rule).startswith(f"#{rule.id} [30] tier=standard when always")
    async with db.sessions() as session:
        rules = await cls.list_rules(session, target="tier")
    assert [r.name for r in rules] == ["vip", "gold", "tier standard when always"]
    assert rules[0].conditions == [{"field": "lifetime_value", "op": "gte", "value": 100000}]
    created = await audit_entries(db, entity_type="classification_rule", action="create")
    assert len(created) == 4
    assert created[0].after is not None and created[0].after["value_code"] == "vip"


async def test_update_and_delete_rule(db: Database) -> None:
    await setup_classes(db)
    async with db.sessions() as session:
        gold = next(r for r in await cls.list_rules(session) if r.name == "gold")
    async with db.transaction() as session:
        await cls.update_rule(session, gold.id, enabled=False, position=5,
                              conditions=["lifetime_value>=50000"], actor="admin")
        with pytest.raises(cls.DuplicateError):
            await cls.update_rule(session, gold.id, name="vip", actor="admin")
    async with db.transaction() as session:
        rule = await cls.get_rule(session, gold.id)
        assert (rule.enabled, rule.position) == (False, 5)
        assert rule.conditions[0]["value"] == 50000
        await cls.delete_rule(session, gold.id, actor="admin")
    async with db.sessions() as session:
        assert await session.get(ClassificationRule, gold.id) is None
    log = await audit_entries(db, entity_type="classification_rule")
    assert [e.action for e in log][-2:] == ["update", "delete"]
    assert log[-2].before == {"conditions": [{"field": "lifetime_value", "op": "gte",
                                              "value": 20000}],
                              "position": 20, "enabled": True}


# ----------------------------------------------------------------- reclassify


async def make_customers(db: Database) -> dict[str, int]:
    ids = {
        "vip": await add_customer(db, "张伟", lifetime_value="150000", industry="制造业"),
        "gold": await add_customer(db, "李娜", lifetime_value="25000", industry="零售"),
        "org_mfg": await add_customer(db, "王强", lifetime_value="10",
                                      organization_name="Acme"),
        "none": await add_customer(db, "赵敏", lifetime_value="5"),
        "manual": await add_customer(db, "陈静", lifetime_value="5", tier_code="gold",
                                     category_code="retail"),
        "deleted": await add_customer(db, "刘洋", lifetime_value="999999"),
        "mfg_en": await add_customer(db, "John Smith", lifetime_value="100000",
                                     industry="Manufacturing", tier_code="vip"),
    }
    async with db.transaction() as session:
        org_id = (await get_customer(session, ids["org_mfg"])).organization_id
        org = await session.get(cls.Organization, org_id)
        assert org is not None
        org.industry = "manufacturing"
        await delete_customer(session, ids["deleted"], actor="test")
    return ids


async def test_dry_run_changes_nothing(db: Database) -> None:
    await setup_classes(db)
    ids = await make_customers(db)
    before = await classes_of(db)
    audits_before = len(await audit_entries(db))
    report = await cls.reclassify(db, "test", dry_run=True, batch_size=2)
    assert report.dry_run
    assert report.examined == 6  # the deleted customer is not examined
    assert report.changed == {"tier": 2, "category": 3}
    assert report.customers_changed == 4
    assert report.batches == 3
    assert {(s["customer_id"], s["target"], s["to"]) for s in report.sample} == {
        (ids["vip"], "tier", "vip"), (ids["vip"], "category", "manufacturing"),
        (ids["gold"], "tier", "gold"), (ids["org_mfg"], "category", "manufacturing"),
        (ids["mfg_en"], "category", "manufacturing"),
    }
    assert await classes_of(db) == before
    assert len(await audit_entries(db)) == audits_before


async def test_reclassify_updates_audits_and_is_queryable(db: Database) -> None:
    await setup_classes(db)
    ids = await make_customers(db)
    report = await cls.reclassify(db, "test", batch_size=2)

    assert report.examined == 6
    assert report.changed == {"tier": 2, "category": 3}
    assert report.changed_to == {"tier": {"gold": 1, "vip": 1},
                                 "category": {"manufacturing": 3}}
    assert report.totals["tier"] == {"(none)": 2, "gold": 2, "vip": 2}
    assert report.totals["category"] == {"(none)": 2, "manufacturing": 3, "retail": 1}
    assert report.unmatched == {"tier": 3, "category": 3}
    assert report.customers_changed == 4

    now = await classes_of(db)
    assert now[ids["vip"]] == ("vip", "manufacturing")
    assert now[ids["gold"]] == ("gold", None)
    assert now[ids["org_mfg"]] == (None, "manufacturing")  # via the organization's industry
    assert now[ids["none"]] == (None, None)
    assert now[ids["manual"]] == ("gold", "retail")  # no rule matched: the manual class stays
    assert now[ids["deleted"]] == (None, None)  # deleted customers are not touched
    assert now[ids["mfg_en"]] == ("vip", "manufacturing")

    classified = await audit_entries(db, entity_type="customer", action="classify")
    by_customer = {int(e.entity_id): e for e in classified}
    assert set(by_customer) == {ids["vip"], ids["gold"], ids["org_mfg"], ids["mfg_en"]}
    vip_entry = by_customer[ids["vip"]]
    assert vip_entry.actor == "test"
    assert vip_entry.before == {"tier_code": None, "category_code": None}
    assert vip_entry.after is not None
    assert vip_entry.after["tier_code"] == "vip"
    assert vip_entry.after["category_code"] == "manufacturing"
    assert "'vip'" in vip_entry.after["reason"]
    assert by_customer[ids["mfg_en"]].before == {"category_code": None}
    [summary] = await audit_entries(db, entity_type="classification_rule", action="reclassify")
    assert summary.after is not None and summary.after["changed"] == {"tier": 2, "category": 3}

    async with db.sessions() as session:
        vips = await search_customers(session, {"tier": "vip"}, region="CN")
        makers = await search_customers(session, {"category": "manufacturing"}, region="CN")
        both = await search_customers(
            session, {"tier": "vip", "category": "manufacturing", "sort": "id"}, region="CN"
        )
    assert {c.id for c in vips.items} == {ids["vip"], ids["mfg_en"]}
    assert {c.id for c in makers.items} == {ids["vip"], ids["org_mfg"], ids["mfg_en"]}
    assert [c.id for c in both.items] == [ids["vip"], ids["mfg_en"]]

    again = await cls.reclassify(db, "test")
    assert again.changed == {"tier": 0, "category": 0}
    assert len(await audit_entries(db, entity_type="customer", action="classify")) == 4


async def test_reclassify_reset_and_only_targets(db: Database) -> None:
    await setup_classes(db)
    ids = await make_customers(db)
    report = await cls.reclassify(db, "test", only_targets=["tier"], reset=True)
    assert report.targets == ("tier",)
    assert set(report.changed) == {"tier"}
    now = await classes_of(db)
    assert now[ids["manual"]] == (None, "retail")  # tier reset, category untouched
    assert now[ids["vip"]] == ("vip", None)  # categories were not run
    entry = next(e for e in await audit_entries(db, action="classify")
                 if e.entity_id == str(ids["manual"]))
    assert entry.before == {"tier_code": "gold"}
    assert entry.after == {"tier_code": None, "reason": "reset: no rule matches"}
    with pytest.raises(ValidationError):
        await cls.reclassify(db, "test", only_targets=["segment"])
    with pytest.raises(ValidationError):
        await cls.reclassify(db, "test", batch_size=0)


async def test_rule_order_and_catch_all(db: Database) -> None:
    await setup_classes(db)
    low = await add_customer(db, "A", lifetime_value="1")
    high = await add_customer(db, "B", lifetime_value="200000", tags=["key-account"])
    async with db.transaction() as session:
        await cls.create_rule(session, target="tier", value="standard", conditions=[],
                              name="default", position=1000, actor="admin")
        await cls.create_rule(session, target="tier", value="gold",
                              conditions=["tag=key-account"], name="key accounts",
                              position=1, actor="admin")
    await cls.reclassify(db, "test")
    now = await classes_of(db)
    assert now[low][0] == "standard"
    assert now[high][0] == "gold"  # position 1 is tried before vip (10)


async def test_apply_changes_skips_rows_changed_meanwhile(db: Database) -> None:
    await setup_classes(db)
    cid = await add_customer(db, "A", tier_code="gold")
    stale = cls._Change(cid, "tier", None, "vip", "test")  # believes the tier is empty
    async with db.transaction() as session:
        assert await cls._apply_changes(session, [stale], actor="test") == []
    assert (await classes_of(db))[cid] == ("gold", None)
    assert await audit_entries(db, action="classify") == []


# ----------------------------------------------------------------- manual set


async def test_set_class_by_hand(db: Database) -> None:
    await setup_classes(db)
    a = await add_customer(db, "A")
    b = await add_customer(db, "B", tier_code="vip")
    async with db.transaction() as session:
        report = await cls.set_class(session, [a, b, a], tier="vip", category="retail",
                                     actor="agent:7")
    assert (report.requested, report.changed) == (2, 2)
    assert (await classes_of(db))[a] == ("vip", "retail")
    assert (await classes_of(db))[b] == ("vip", "retail")
    log = {int(e.entity_id): e for e in await audit_entries(db, action="classify")}
    assert log[a].before == {"tier_code": None, "category_code": None}
    assert log[b].before == {"category_code": None}  # the tier did not change
    assert log[b].after == {"category_code": "retail", "reason": "manual"}
    assert log[a].actor == "agent:7"

    async with db.transaction() as session:
        report = await cls.set_class(session, [a], category=None, actor="agent:7")
    assert report.changed == 1
    assert (await classes_of(db))[a] == ("vip", None)


async def test_set_class_refuses_bad_input_and_changes_nothing(db: Database) -> None:
    await setup_classes(db)
    a = await add_customer(db, "A")
    gone = await add_customer(db, "B")
    async with db.transaction() as session:
        await delete_customer(session, gone, actor="test")
    with pytest.raises(NotFoundError, match=f"#{gone}"):
        async with db.transaction() as session:
            await cls.set_class(session, [a, gone, 99999], tier="vip", actor="test")
    with pytest.raises(ValidationError, match="no such tier"):
        async with db.transaction() as session:
            await cls.set_class(session, [a], tier="platinum", actor="test")
    with pytest.raises(ValidationError, match="give a tier, a category"):
        async with db.transaction() as session:
            await cls.set_class(session, [a], actor="test")
    assert (await classes_of(db))[a] == (None, None)
    assert await audit_entries(db, action="classify") == []


# ----------------------------------------------------------------- TOML file


async def test_load_example_file_then_reload(db: Database, tmp_path: Path) -> None:
    async with db.transaction() as session:
        report = await cls.apply_classification_file(session, EXAMPLE, "admin")
    assert report.categories == {"created": 3}
    assert report.tiers == {"created": 3}
    assert report.rules == {"created": 7}
    async with db.sessions() as session:
        rules = {r.name: r for r in await cls.list_rules(session)}
    assert rules["VIP by lifetime value"].conditions == [
        {"field": "lifetime_value", "op": "gte", "value": 100000}
    ]
    assert rules["Retail members"].enabled is False

    async with db.transaction() as session:
        again = await cls.apply_classification_file(session, EXAMPLE, "admin")
    assert again.rules == {"unchanged": 7}
    assert again.tiers == {"unchanged": 3}

    changed = tmp_path / "classes.toml"
    changed.write_text(
        EXAMPLE.read_text(encoding="utf-8").replace(
            '"lifetime_value >= 100000"', '"lifetime_value >= 200000"'
        ).replace('name_zh = "贵宾"', 'name_zh = "贵宾客户"'),
        encoding="utf-8",
    )
    async with db.transaction() as session:
        third = await cls.apply_classification_file(session, changed, "admin")
    assert third.rules == {"updated": 1, "unchanged": 6}
    assert third.tiers == {"updated": 1, "unchanged": 2}
    async with db.sessions() as session:
        vip_rule = await cls.find_rule(session, "VIP by lifetime value")
        assert vip_rule is not None and vip_rule.conditions[0]["value"] == 200000

    big = await add_customer(db, "A", lifetime_value="300000", industry="工业")
    small = await add_customer(db, "B", lifetime_value="30")
    await cls.reclassify(db, "test")
    now = await classes_of(db)
    assert now[big] == ("vip", "manufacturing")
    assert now[small] == ("standard", None)


async def test_bad_file_writes_nothing(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "classes.toml"
    path.write_text(
        '[[tiers]]\ncode = "vip"\nname = "VIP"\nrank = 3\n\n'
        '[[rules]]\nname = "platinum"\ntarget = "tier"\nvalue = "platinum"\n'
        'when = ["lifetime_value > 1"]\n',
        encoding="utf-8",
    )
    with pytest.raises(ValidationError) as info:
        async with db.transaction() as session:
            await cls.apply_classification_file(session, path, "admin")
    assert info.value.field == f"{path} rules[0] (platinum).value"
    assert "no such tier" in str(info.value)
    async with db.sessions() as session:
        assert await cls.list_tiers(session) == []
        assert await session.scalar(select(func.count()).select_from(AuditLog)) == 0


# ----------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "template.db"

    async def migrate() -> None:
        engine = create_engine(f"sqlite:///{path}")
        try:
            await schema.upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(migrate())
    return path


def test_cli(migrated_sqlite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cc.db"
    shutil.copyfile(migrated_sqlite, path)
    url = f"sqlite:///{path}"
    monkeypatch.delenv("CC_CONFIG", raising=False)
    runner = CliRunner()
    env = {"DATABASE_URL": url, "CC_LOG__FORMAT": "console"}

    def cli(*args: str, ok: bool = True) -> str:
        result = runner.invoke(main, ["classes", *args], env=env)
        assert (result.exit_code == 0) is ok, result.output
        return result.output

    async def add(**fields: Any) -> int:
        database = Database(url)
        try:
            return await add_customer(database, "客户", **fields)
        finally:
            await database.dispose()

    assert "created" in cli("add-tier", "vip", "VIP", "--rank", "30", "--zh", "贵宾")
    cli("add-tier", "standard", "Standard", "--rank", "10")
    cli("add-category", "manufacturing", "Manufacturing", "--zh", "制造业")
    cli("add-category", "retail", "Retail")
    assert "already exists" in cli("add-category", "retail", "Again", ok=False)
    assert "lowercase" in cli("add-category", "Retail Shops", "Retail", ok=False)
    out = cli("add-rule", "--target", "tier", "--value", "vip", "--when",
              "lifetime_value>=100000", "--name", "vip")
    assert "tier=vip when lifetime_value >= 100000" in out
    cli("add-rule", "--target", "category", "--value", "manufacturing",
        "--when", "industry in 制造业,manufacturing", "--when", "lifetime_value>0")
    bad = cli("add-rule", "--target", "tier", "--value", "vip", "--when", "colour=red",
              ok=False)
    assert "conditions[0].field" in bad and "unknown field" in bad
    assert "--always" in cli("add-rule", "--target", "tier", "--value", "vip", ok=False)
    assert "no such tier" in cli("add-rule", "--target", "tier", "--value", "gold",
                                 "--when", "city=上海", ok=False)

    big = asyncio.run(add(lifetime_value="120000", industry="制造业"))
    small = asyncio.run(add(lifetime_value="10"))

    dry = cli("reclassify", "--dry-run")
    assert "would change 1" in dry and "dry run" in dry
    out = cli("reclassify")
    assert "examined 2 customers; changed 1" in out
    assert "tier: changed 1 (vip: 1)" in out

    search = runner.invoke(main, ["customers", "search", "--tier", "vip"], env=env)
    assert search.exit_code == 0, search.output
    assert f"#{big}" in search.output and f"#{small}" not in search.output

    out = cli("set", str(small), "--tier", "standard", "--category", "retail")
    assert "1 of 1 customers changed" in out
    assert "not found" in cli("set", "424242", "--tier", "vip", ok=False)
    listing = cli("list")
    assert "vip  rank 30  VIP / 贵宾  (1 customers)" in listing
    assert "retail  Retail  (1 customers)" in listing
    assert "is assigned by classification rules" in cli("delete-tier", "vip", ok=False)
    assert "1 customers left without a category" in cli("delete-category", "retail")

    file = tmp_path / "classes.toml"
    file.write_text('[[tiers]]\ncode = "gold"\nname = "Gold"\nrank = 20\n', encoding="utf-8")
    assert "tiers: 1 created, 0 updated, 0 unchanged" in cli("load", str(file))
    file.write_text('[[tiers]]\ncode = "gold"\nname = "Gold"\nrank = "x"\n', encoding="utf-8")
    assert "tiers[0] (gold).rank" in cli("load", str(file), ok=False)
