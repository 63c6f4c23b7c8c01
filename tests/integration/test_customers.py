"""Customer records on SQLite and PostgreSQL: create, update, lifecycle, delete, restore."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from crm_core.db import Database
from crm_core.errors import ConflictError, NotFoundError, StateError, ValidationError
from crm_core.models import (
    Agent,
    AuditLog,
    Customer,
    CustomerCategory,
    CustomerIdentity,
    CustomerTier,
    IdentityKind,
    LifecycleStage,
    Organization,
)
from crm_core.services import audit
from crm_core.services.customers import (
    change_lifecycle,
    create_customer,
    delete_customer,
    find_identity_owners,
    get_customer,
    lifecycle_history,
    restore_customer,
    update_customer,
)

ACTOR = "tester"
REGION = "CN"


async def new(db: Database, **data: Any) -> int:
    async with db.transaction() as session:
        customer = await create_customer(session, data, actor=ACTOR, region=REGION)
        return customer.id


async def load(db: Database, customer_id: int, *, include_deleted: bool = False) -> Customer:
    async with db.sessions() as session:
        return await get_customer(session, customer_id, include_deleted=include_deleted)


async def update(db: Database, customer_id: int, reason: str | None = None, **data: Any) -> None:
    async with db.transaction() as session:
        await update_customer(session, customer_id, data, actor=ACTOR, region=REGION, reason=reason)


async def history(db: Database, customer_id: int) -> list[AuditLog]:
    async with db.sessions() as session:
        return await audit.history(session, "customer", customer_id)


async def count(db: Database, model: type[Any]) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def add_classes(db: Database) -> int:
    """A tier ``gold``, a category ``retail`` and an agent; returns the agent's id."""
    async with db.transaction() as session:
        session.add(CustomerTier(code="gold", name="Gold", rank=2))
        session.add(CustomerCategory(code="retail", name="Retail"))
        # written directly: argon2 hashing (services.agents) would slow the tests down
        agent = Agent(login="li.na", display_name="李娜", password_hash="!")
        session.add(agent)
        await session.flush()
        return agent.id


# --- create -----------------------------------------------------------------------------


async def test_create_chinese_name(db: Database) -> None:
    cid = await new(db, family_name="张", given_name="伟")
    customer = await load(db, cid)
    assert customer.display_name == "张伟"
    assert customer.family_name == "张"
    assert customer.given_name == "伟"
    assert "zhang wei" in customer.name_key
    assert customer.lifecycle_stage == LifecycleStage.LEAD
    assert customer.deleted_at is None
    assert customer.lifetime_value == Decimal("0")


async def test_create_latin_name(db: Database) -> None:
    cid = await new(db, given_name="John", family_name="Smith")
    assert (await load(db, cid)).display_name == "John Smith"


async def test_create_with_every_field(db: Database) -> None:
    agent_id = await add_classes(db)
    cid = await new(
        db,
        display_name="王芳",
        emails=["Wang.Fang@Example.COM"],
        phones=["138 0013 8000", "+1 (415) 555-2671"],
        identities=[{"kind": "telegram", "value": "987654", "label": "tg"}],
        organization_name="北京科技有限公司",
        job_title="采购经理",
        city="北京",
        country="中国",
        language="中文",
        timezone="Asia/Shanghai",
        birthday="1990-05-17",
        lifecycle_stage="active",
        tier_code="gold",
        category_code="retail",
        lifetime_value="1234.5",
        owner_agent_id=agent_id,
        marketing_opt_in={"email": True, "phone": False},
        custom_attributes={"会员号": "A-001", "points": 12},
        preferred_channel="telegram",
        tags=["VIP", "大客户", "VIP"],
        source="web",
    )
    customer = await load(db, cid)
    assert customer.emails == ["wang.fang@example.com"]
    assert customer.phones == ["+8613800138000", "+14155552671"]
    assert customer.identity_values(IdentityKind.TELEGRAM) == ["987654"]
    assert customer.organization is not None
    assert customer.organization.name == "北京科技有限公司"
    assert customer.country == "CN"
    assert customer.language == "zh-CN"
    assert customer.timezone == "Asia/Shanghai"
    assert customer.birthday == date(1990, 5, 17)
    assert customer.lifecycle_stage == LifecycleStage.ACTIVE
    assert customer.tier_code == "gold"
    assert customer.category_code == "retail"
    assert customer.lifetime_value == Decimal("1234.50")
    assert customer.owner_agent_id == agent_id
    assert customer.marketing_opt_in == {"email": True, "phone": False}
    assert customer.custom_attributes == {"会员号": "A-001", "points": 12}
    assert customer.preferred_channel is not None
    assert customer.preferred_channel.value == "telegram"
    assert sorted(customer.tags) == sorted(["VIP", "大客户"])
    assert customer.source == "web"


async def test_timestamps_are_utc_aware(db: Database) -> None:
    before = datetime.now(UTC)
    cid = await new(db, display_name="x")
    customer = await load(db, cid)
    assert customer.created_at.tzinfo is not None
    assert customer.created_at.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=5) <= customer.created_at <= datetime.now(UTC)
    assert customer.updated_at.tzinfo is not None


INVALID_INPUTS: list[tuple[dict[str, Any], str, str]] = [
    ({"emails": ["ok@example.com", "not-an-email"]}, "email", "not-an-email"),
    ({"phones": ["12345"]}, "phone", "12345"),
    ({"identities": [{"kind": "phone", "value": "999"}]}, "phone", "999"),
    ({"country": "XX"}, "country", "XX"),
    ({"language": "??"}, "language", "??"),
    ({"timezone": "Moon/Base"}, "timezone", "Moon/Base"),
    ({"birthday": "2999-01-01"}, "birthday", "2999-01-01"),
    ({"lifetime_value": "-10"}, "lifetime_value", "-10"),
    ({"lifetime_value": "1e15"}, "lifetime_value", "1E+15"),
    ({"tier_code": "platinum"}, "tier_code", "platinum"),
    ({"category_code": "martian"}, "category_code", "martian"),
    ({"owner_agent_id": 4242}, "owner_agent_id", "4242"),
    ({"organization_id": 4242}, "organization_id", "4242"),
    ({"preferred_channel": "pigeon"}, "preferred_channel", "pigeon"),
]


async def test_create_validation_names_field_and_value(db: Database) -> None:
    for data, field, value in INVALID_INPUTS:
        with pytest.raises(ValidationError) as info:
            await new(db, display_name="x", organization_name="Acme", **data)
        assert info.value.field == field, data
        assert value in str(info.value.value), data
        assert field in str(info.value), data
        assert value in str(info.value), data
    assert await count(db, Customer) == 0
    assert await count(db, Organization) == 0


async def test_create_without_a_name(db: Database) -> None:
    with pytest.raises(ValidationError) as info:
        await new(db, emails=["a@example.com"])
    assert info.value.field == "display_name"


async def test_duplicate_email_names_the_holder(db: Database) -> None:
    first = await new(db, display_name="张伟", emails=["zhang.wei@example.com"])
    with pytest.raises(ConflictError) as info:
        await new(db, display_name="Other", emails=["Zhang.Wei@EXAMPLE.com"])
    assert info.value.customer_id == first
    assert info.value.customer_name == "张伟"
    assert info.value.kind == "email"
    assert info.value.value == "zhang.wei@example.com"
    assert f"#{first}" in str(info.value)
    assert "张伟" in str(info.value)
    assert await count(db, Customer) == 1


async def test_duplicate_phone_in_another_format(db: Database) -> None:
    first = await new(db, display_name="John Smith", phones=["13800138000"])
    for typed in ("+86 138 0013 8000", "0086-138-0013-8000", "138.0013.8000"):
        with pytest.raises(ConflictError) as info:
            await new(db, display_name="Someone", phones=["13900139000", typed])
        assert info.value.customer_id == first
        assert info.value.value == "+8613800138000"
        assert "John Smith" in str(info.value)
        assert f"#{first}" in str(info.value)
    assert await count(db, Customer) == 1


async def test_duplicate_identity_of_other_kind(db: Database) -> None:
    first = await new(db, display_name="A", identities=[{"kind": "telegram", "value": "555"}])
    with pytest.raises(ConflictError) as info:
        await new(db, display_name="B", identities=[{"kind": "telegram", "value": "555"}])
    assert info.value.customer_id == first


async def test_same_value_different_kind_is_not_a_conflict(db: Database) -> None:
    await new(db, display_name="A", identities=[{"kind": "telegram", "value": "13800138000"}])
    cid = await new(db, display_name="B", identities=[{"kind": "webchat", "value": "13800138000"}])
    assert (await load(db, cid)).identity_values(IdentityKind.WEBCHAT) == ["13800138000"]


async def test_same_identity_twice_in_one_input_is_stored_once(db: Database) -> None:
    cid = await new(
        db,
        display_name="x",
        emails=["a@example.com", "A@Example.com"],
        phones=["13800138000", "+86 138 0013 8000"],
        identities=[{"kind": "phone", "value": "138-0013-8000"}],
    )
    customer = await load(db, cid)
    assert customer.emails == ["a@example.com"]
    assert customer.phones == ["+8613800138000"]
    assert await count(db, CustomerIdentity) == 2


async def test_organization_is_created_then_reused(db: Database) -> None:
    a = await new(db, display_name="A", organization_name="Acme Corp")
    b = await new(db, display_name="B", organization_name="  acme corp ")
    c = await new(db, display_name="C", organization_name="Other Ltd")
    ca, cb, cc = await load(db, a), await load(db, b), await load(db, c)
    assert ca.organization_id is not None
    assert ca.organization_id == cb.organization_id
    assert cc.organization_id != ca.organization_id
    assert await count(db, Organization) == 2
    async with db.sessions() as session:
        entries = await audit.history(session, "organization", ca.organization_id)
    assert [e.action for e in entries] == ["create"]


async def test_tags_are_stored(db: Database) -> None:
    cid = await new(db, display_name="x", tags=[" vip ", "vip", "回头客"])
    assert sorted((await load(db, cid)).tags) == sorted(["vip", "回头客"])


async def test_create_records_lifecycle_from_none(db: Database) -> None:
    cid = await new(db, display_name="x", lifecycle_stage="prospect")
    async with db.sessions() as session:
        moves = await lifecycle_history(session, cid)
    assert len(moves) == 1
    assert moves[0].from_stage is None
    assert moves[0].to_stage == LifecycleStage.PROSPECT
    assert moves[0].actor == ACTOR
    assert moves[0].reason


async def test_create_is_audited_with_a_snapshot(db: Database) -> None:
    cid = await new(
        db,
        display_name="张伟",
        emails=["z@example.com"],
        phones=["13800138000"],
        tags=["vip"],
        lifetime_value="99.9",
        birthday="1980-01-02",
    )
    entries = await history(db, cid)
    assert [e.action for e in entries] == ["create"]
    entry = entries[0]
    assert entry.actor == ACTOR
    assert entry.entity_id == str(cid)
    assert entry.before is None
    assert entry.after is not None
    assert entry.after["id"] == cid
    assert entry.after["display_name"] == "张伟"
    assert entry.after["identities"] == ["email:z@example.com", "phone:+8613800138000"]
    assert entry.after["tags"] == ["vip"]
    assert entry.after["lifecycle_stage"] == "lead"
    assert entry.after["birthday"] == "1980-01-02"
    assert Decimal(entry.after["lifetime_value"]) == Decimal("99.9")


# --- update -----------------------------------------------------------------------------


async def test_update_changes_only_given_fields(db: Database) -> None:
    cid = await new(
        db, display_name="张伟", city="上海", job_title="工程师", emails=["z@example.com"],
        tags=["vip"],
    )
    await update(db, cid, city="北京")
    customer = await load(db, cid)
    assert customer.city == "北京"
    assert customer.display_name == "张伟"
    assert customer.job_title == "工程师"
    assert customer.emails == ["z@example.com"]
    assert customer.tags == ["vip"]


async def test_update_audit_holds_only_changed_fields(db: Database) -> None:
    cid = await new(db, display_name="张伟", city="上海", job_title="工程师")
    await update(db, cid, city="北京", job_title="工程师")
    entries = await history(db, cid)
    assert [e.action for e in entries] == ["update", "create"]
    assert entries[0].before == {"city": "上海"}
    assert entries[0].after == {"city": "北京"}
    assert entries[0].actor == ACTOR


async def test_update_without_changes_writes_no_audit(db: Database) -> None:
    cid = await new(
        db,
        display_name="张伟",
        city="上海",
        emails=["z@example.com"],
        phones=["13800138000"],
        tags=["b", "a"],
        lifetime_value="100",
        birthday="1990-01-01",
        country="CN",
    )
    await update(
        db,
        cid,
        display_name="张伟",
        city="上海",
        emails=["Z@EXAMPLE.COM"],
        phones=["+86 138 0013 8000"],
        tags=["a", "b"],
        lifetime_value="100.00",
        birthday="1990-01-01",
        country="中国",
    )
    assert [e.action for e in await history(db, cid)] == ["create"]


async def test_update_lifetime_value_to_same_amount_writes_no_audit(db: Database) -> None:
    cid = await new(db, display_name="x", lifetime_value="100")
    await update(db, cid, lifetime_value="100")
    assert [e.action for e in await history(db, cid)] == ["create"]


async def test_update_replaces_emails_and_frees_the_old_one(db: Database) -> None:
    cid = await new(db, display_name="A", emails=["old@example.com"], phones=["13800138000"])
    await update(db, cid, emails=["new@example.com"])
    customer = await load(db, cid)
    assert customer.emails == ["new@example.com"]
    assert customer.phones == ["+8613800138000"]  # another kind, untouched
    entry = (await history(db, cid))[0]
    assert entry.before == {"identities": ["email:old@example.com", "phone:+8613800138000"]}
    assert entry.after == {"identities": ["email:new@example.com", "phone:+8613800138000"]}
    # the old address belongs to nobody now
    other = await new(db, display_name="B", emails=["old@example.com"])
    assert (await load(db, other)).emails == ["old@example.com"]


async def test_update_with_empty_list_removes_all_of_that_kind(db: Database) -> None:
    cid = await new(db, display_name="A", emails=["a@example.com"], phones=["13800138000"])
    await update(db, cid, phones=[])
    customer = await load(db, cid)
    assert customer.phones == []
    assert customer.emails == ["a@example.com"]


async def test_update_identities_replace_only_their_kind(db: Database) -> None:
    cid = await new(
        db,
        display_name="A",
        emails=["a@example.com"],
        identities=[{"kind": "telegram", "value": "111"}, {"kind": "webchat", "value": "w1"}],
    )
    await update(db, cid, identities=[{"kind": "telegram", "value": "222"}])
    customer = await load(db, cid)
    assert customer.identity_values(IdentityKind.TELEGRAM) == ["222"]
    assert customer.identity_values(IdentityKind.WEBCHAT) == ["w1"]
    assert customer.emails == ["a@example.com"]


async def test_update_keeps_own_identity_without_conflict(db: Database) -> None:
    cid = await new(db, display_name="A", phones=["13800138000"])
    await update(db, cid, phones=["+86 138 0013 8000", "13900139000"])
    assert (await load(db, cid)).phones == ["+8613800138000", "+8613900139000"]


async def test_update_conflicts_with_another_customers_phone(db: Database) -> None:
    holder = await new(db, display_name="Holder", phones=["13800138000"])
    cid = await new(db, display_name="Other", phones=["13900139000"])
    with pytest.raises(ConflictError) as info:
        await update(db, cid, phones=["138 0013 8000"])
    assert info.value.customer_id == holder
    assert "Holder" in str(info.value)
    assert (await load(db, cid)).phones == ["+8613900139000"]


async def test_update_name_changes_search_key(db: Database) -> None:
    cid = await new(db, display_name="张伟")
    await update(db, cid, display_name="李娜")
    customer = await load(db, cid)
    assert customer.display_name == "李娜"
    assert "li na" in customer.name_key
    assert "zhang" not in customer.name_key


async def test_update_cannot_blank_the_name(db: Database) -> None:
    cid = await new(db, display_name="张伟")
    with pytest.raises(ValidationError) as info:
        await update(db, cid, display_name="")
    assert info.value.field == "display_name"


async def test_update_validation_error_changes_nothing(db: Database) -> None:
    cid = await new(db, display_name="张伟", city="上海")
    with pytest.raises(ValidationError):
        await update(db, cid, city="北京", timezone="Nowhere/Land")
    assert (await load(db, cid)).city == "上海"


async def test_update_unknown_references(db: Database) -> None:
    cid = await new(db, display_name="x")
    for data, field in (
        ({"tier_code": "nope"}, "tier_code"),
        ({"category_code": "nope"}, "category_code"),
        ({"owner_agent_id": 999}, "owner_agent_id"),
        ({"organization_id": 999}, "organization_id"),
    ):
        with pytest.raises(ValidationError) as info:
            await update(db, cid, **data)
        assert info.value.field == field


async def test_update_class_and_owner(db: Database) -> None:
    agent_id = await add_classes(db)
    cid = await new(db, display_name="x")
    await update(db, cid, tier_code="gold", category_code="retail", owner_agent_id=agent_id)
    customer = await load(db, cid)
    assert (customer.tier_code, customer.category_code) == ("gold", "retail")
    assert customer.owner_agent_id == agent_id
    await update(db, cid, tier_code="", category_code=None, owner_agent_id=None)
    customer = await load(db, cid)
    assert (customer.tier_code, customer.category_code, customer.owner_agent_id) == (
        None, None, None,
    )


async def test_update_tags_replaced(db: Database) -> None:
    cid = await new(db, display_name="x", tags=["a", "b"])
    await update(db, cid, tags=["b", "c"])
    assert sorted((await load(db, cid)).tags) == ["b", "c"]
    entry = (await history(db, cid))[0]
    assert entry.before == {"tags": ["a", "b"]}
    assert entry.after == {"tags": ["b", "c"]}


async def test_update_organization_by_name_and_clear_it(db: Database) -> None:
    cid = await new(db, display_name="x", organization_name="Acme")
    await update(db, cid, organization_name="Globex")
    customer = await load(db, cid)
    assert customer.organization is not None
    assert customer.organization.name == "Globex"
    await update(db, cid, organization_name="")
    assert (await load(db, cid)).organization_id is None


async def test_update_of_missing_customer(db: Database) -> None:
    with pytest.raises(NotFoundError):
        await update(db, 12345, city="x")


# --- lifecycle --------------------------------------------------------------------------


async def test_lifecycle_allowed_move_keeps_reason(db: Database) -> None:
    cid = await new(db, display_name="x")
    async with db.transaction() as session:
        await change_lifecycle(
            session, cid, LifecycleStage.PROSPECT, actor=ACTOR, reason="asked for a quote"
        )
    async with db.transaction() as session:
        await change_lifecycle(session, cid, LifecycleStage.ACTIVE, actor="bob", reason="paid")
    assert (await load(db, cid)).lifecycle_stage == LifecycleStage.ACTIVE
    async with db.sessions() as session:
        moves = await lifecycle_history(session, cid)
    assert [(m.from_stage, m.to_stage, m.reason) for m in moves][1:] == [
        (LifecycleStage.LEAD, LifecycleStage.PROSPECT, "asked for a quote"),
        (LifecycleStage.PROSPECT, LifecycleStage.ACTIVE, "paid"),
    ]
    assert moves[2].actor == "bob"
    entries = await history(db, cid)
    assert entries[0].action == "lifecycle"
    assert entries[0].before == {"lifecycle_stage": "prospect"}
    assert entries[0].after == {"lifecycle_stage": "active", "reason": "paid"}


async def test_lifecycle_forbidden_move(db: Database) -> None:
    cid = await new(db, display_name="x")
    with pytest.raises(StateError) as info:
        async with db.transaction() as session:
            await change_lifecycle(session, cid, LifecycleStage.DORMANT, actor=ACTOR)
    assert "lead" in str(info.value)
    assert "dormant" in str(info.value)
    assert (await load(db, cid)).lifecycle_stage == LifecycleStage.LEAD
    async with db.sessions() as session:
        assert len(await lifecycle_history(session, cid)) == 1


async def test_lifecycle_to_same_stage_is_a_no_op(db: Database) -> None:
    cid = await new(db, display_name="x")
    async with db.transaction() as session:
        await change_lifecycle(session, cid, LifecycleStage.LEAD, actor=ACTOR)
    async with db.sessions() as session:
        assert len(await lifecycle_history(session, cid)) == 1
    assert [e.action for e in await history(db, cid)] == ["create"]


async def test_lifecycle_through_update_with_reason(db: Database) -> None:
    cid = await new(db, display_name="x", lifecycle_stage="active")
    await update(db, cid, reason="no orders for a year", lifecycle_stage="dormant")
    assert (await load(db, cid)).lifecycle_stage == LifecycleStage.DORMANT
    async with db.sessions() as session:
        moves = await lifecycle_history(session, cid)
    assert moves[-1].from_stage == LifecycleStage.ACTIVE
    assert moves[-1].to_stage == LifecycleStage.DORMANT
    assert moves[-1].reason == "no orders for a year"
    entry = (await history(db, cid))[0]
    assert entry.before == {"lifecycle_stage": "active"}
    assert entry.after == {"lifecycle_stage": "dormant"}


async def test_forbidden_lifecycle_through_update_changes_nothing(db: Database) -> None:
    cid = await new(db, display_name="x", lifecycle_stage="active", city="上海")
    with pytest.raises(StateError):
        await update(db, cid, lifecycle_stage="lead", city="北京")
    customer = await load(db, cid)
    assert customer.lifecycle_stage == LifecycleStage.ACTIVE
    assert customer.city == "上海"


async def test_lifecycle_of_missing_customer(db: Database) -> None:
    with pytest.raises(NotFoundError):
        async with db.transaction() as session:
            await change_lifecycle(session, 999, LifecycleStage.ACTIVE, actor=ACTOR)


# --- delete and restore -----------------------------------------------------------------


async def test_delete_hides_and_restore_brings_back(db: Database) -> None:
    cid = await new(db, display_name="张伟", emails=["z@example.com"])
    async with db.transaction() as session:
        await delete_customer(session, cid, actor=ACTOR)
    with pytest.raises(NotFoundError) as info:
        await load(db, cid)
    assert str(cid) in str(info.value)
    deleted = await load(db, cid, include_deleted=True)
    assert deleted.deleted_at is not None
    assert deleted.emails == ["z@example.com"]

    async with db.transaction() as session:
        await restore_customer(session, cid, actor=ACTOR)
    customer = await load(db, cid)
    assert customer.deleted_at is None
    assert customer.emails == ["z@example.com"]
    assert [e.action for e in await history(db, cid)] == ["restore", "delete", "create"]


async def test_deleted_customer_cannot_be_updated_or_deleted_again(db: Database) -> None:
    cid = await new(db, display_name="x")
    async with db.transaction() as session:
        await delete_customer(session, cid, actor=ACTOR)
    with pytest.raises(NotFoundError):
        await update(db, cid, city="x")
    with pytest.raises(NotFoundError):
        async with db.transaction() as session:
            await delete_customer(session, cid, actor=ACTOR)


async def test_identity_of_deleted_customer_still_conflicts(db: Database) -> None:
    cid = await new(db, display_name="张伟", phones=["13800138000"])
    async with db.transaction() as session:
        await delete_customer(session, cid, actor=ACTOR)
    with pytest.raises(ConflictError) as info:
        await new(db, display_name="李娜", phones=["+86 138 0013 8000"])
    assert info.value.customer_id == cid
    assert "deleted" in str(info.value)
    assert "张伟" in str(info.value)


async def test_restore_of_live_customer_is_a_no_op(db: Database) -> None:
    cid = await new(db, display_name="x")
    async with db.transaction() as session:
        customer = await restore_customer(session, cid, actor=ACTOR)
        assert customer.deleted_at is None
    assert [e.action for e in await history(db, cid)] == ["create"]


async def test_restore_refuses_erased_and_merged(db: Database) -> None:
    erased = await new(db, display_name="erased")
    merged = await new(db, display_name="merged")
    survivor = await new(db, display_name="survivor")
    now = datetime.now(UTC)
    async with db.transaction() as session:
        e = await session.get(Customer, erased)
        m = await session.get(Customer, merged)
        assert e is not None and m is not None
        e.deleted_at = e.erased_at = now
        m.deleted_at = now
        m.merged_into_id = survivor
    for cid, words in ((erased, "erased"), (merged, f"#{survivor}")):
        with pytest.raises(StateError) as info:
            async with db.transaction() as session:
                await restore_customer(session, cid, actor=ACTOR)
        assert words in str(info.value)


async def test_restore_of_missing_customer(db: Database) -> None:
    with pytest.raises(NotFoundError):
        async with db.transaction() as session:
            await restore_customer(session, 4040, actor=ACTOR)


async def test_find_identity_owners(db: Database) -> None:
    a = await new(db, display_name="A", emails=["a@example.com"], phones=["13800138000"])
    b = await new(db, display_name="B", emails=["b@example.com"])
    async with db.transaction() as session:
        await delete_customer(session, b, actor=ACTOR)
    async with db.sessions() as session:
        owners = await find_identity_owners(
            session,
            [
                (IdentityKind.EMAIL, "a@example.com"),
                (IdentityKind.PHONE, "+8613800138000"),
                (IdentityKind.EMAIL, "b@example.com"),
                (IdentityKind.EMAIL, "nobody@example.com"),
                (IdentityKind.TELEGRAM, "a@example.com"),
            ],
        )
        assert await find_identity_owners(session, []) == {}
    assert owners == {
        (IdentityKind.EMAIL, "a@example.com"): (a, "A", False),
        (IdentityKind.PHONE, "+8613800138000"): (a, "A", False),
        (IdentityKind.EMAIL, "b@example.com"): (b, "B", True),
    }


async def test_rollback_leaves_nothing_behind(db: Database) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with db.transaction() as session:
            await create_customer(
                session,
                {"display_name": "x", "emails": ["x@example.com"], "organization_name": "Acme"},
                actor=ACTOR,
                region=REGION,
            )
            raise Boom
    assert await count(db, Customer) == 0
    assert await count(db, CustomerIdentity) == 0
    assert await count(db, Organization) == 0
    assert await count(db, AuditLog) == 0
