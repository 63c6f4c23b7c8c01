"""Customer search on SQLite and PostgreSQL: names in any script, phones, e-mails, filters."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from crm_core.db import Database
from crm_core.errors import ValidationError
from crm_core.models import Agent, Customer, CustomerCategory, CustomerTier
from crm_core.services.customer_query import CustomerPage, CustomerQuery, search_customers
from crm_core.services.customers import create_customer, delete_customer

ACTOR = "tester"
REGION = "CN"


async def new(db: Database, **data: Any) -> int:
    async with db.transaction() as session:
        customer = await create_customer(session, data, actor=ACTOR, region=REGION)
        return customer.id


async def search(db: Database, **query: Any) -> CustomerPage:
    async with db.sessions() as session:
        return await search_customers(session, query, region=REGION)


async def names(db: Database, **query: Any) -> list[str]:
    return [c.display_name for c in (await search(db, **query)).items]


async def found(db: Database, **query: Any) -> set[str]:
    return set(await names(db, **query))


async def expect(db: Database, cases: dict[str, set[str]], **criteria: Any) -> None:
    """Search with ``criteria`` plus each case's key as ``name=`` (or the given field)."""
    field = criteria.pop("field", "name")
    for typed, who in cases.items():
        got = await found(db, **{field: typed}, **criteria)
        assert got == who, f"{field}={typed!r}: found {got}, expected {who}"


async def set_created(db: Database, customer_id: int, moment: datetime) -> None:
    async with db.transaction() as session:
        customer = await session.get(Customer, customer_id)
        assert customer is not None
        customer.created_at = moment


@pytest.fixture
async def people(db: Database) -> dict[str, int]:
    """A small, varied customer base."""
    async with db.transaction() as session:
        session.add_all(
            [
                CustomerTier(code="gold", name="Gold", rank=2),
                CustomerTier(code="std", name="Standard", rank=1),
                CustomerCategory(code="retail", name="Retail"),
                CustomerCategory(code="gov", name="Government"),
            ]
        )
        # rows written directly: hashing passwords with argon2 would slow every test
        agent = Agent(login="agent1", display_name="Agent", password_hash="!")
        other = Agent(login="agent2", display_name="Other", password_hash="!")
        session.add_all([agent, other])
        await session.flush()
    ids = {
        "张伟": await new(
            db,
            family_name="张",
            given_name="伟",
            phones=["138 0013 8000"],
            emails=["zhang.wei@example.com"],
            tier_code="gold",
            category_code="retail",
            tags=["vip"],
            owner_agent_id=agent.id,
            organization_name="北京科技有限公司",
            lifetime_value="500",
        ),
        "张伟明": await new(
            db,
            family_name="张",
            given_name="伟明",
            phones=["13900139000"],
            emails=["wm@corp.cn"],
            tier_code="std",
            category_code="gov",
            lifecycle_stage="active",
            lifetime_value="50",
        ),
        "李娜": await new(
            db,
            display_name="李娜",
            phones=["+86 186 1234 5678"],
            emails=["li_na@example.com"],
            tags=["vip", "回头客"],
            owner_agent_id=other.id,
            lifetime_value="5000",
        ),
        "John Smith": await new(
            db,
            given_name="John",
            family_name="Smith",
            phones=["+1 415 555 2671"],
            emails=["John.Smith@Acme.com"],
            organization_name="Acme Corp",
            category_code="retail",
            lifetime_value="1200",
        ),
        "Mary Johnson": await new(
            db,
            given_name="Mary",
            family_name="Johnson",
            emails=["mary@acme.com"],
            organization_name="Acme Corp",
            lifecycle_stage="prospect",
        ),
    }
    base = datetime(2024, 1, 10, 12, 0, tzinfo=UTC)
    for offset, name in enumerate(ids):
        await set_created(db, ids[name], base + timedelta(days=offset))
    ids["agent"] = agent.id
    ids["other_agent"] = other.id
    return ids


# --- names ------------------------------------------------------------------------------


async def test_no_criteria_lists_everyone_newest_first(
    db: Database, people: dict[str, int]
) -> None:
    page = await search(db)
    assert page.total == 5
    assert not page.fuzzy
    assert [c.display_name for c in page.items] == [
        "Mary Johnson", "John Smith", "李娜", "张伟明", "张伟",
    ]


async def test_chinese_substring(db: Database, people: dict[str, int]) -> None:
    assert await found(db, name="张") == {"张伟", "张伟明"}
    assert await found(db, name="伟明") == {"张伟明"}
    assert await found(db, name="娜") == {"李娜"}


async def test_pinyin(db: Database, people: dict[str, int]) -> None:
    both = {"张伟", "张伟明"}
    await expect(
        db,
        {
            "zhang": both,
            "ZHANG": both,
            "zhang wei": both,
            "zhangwei": both,
            "Zhang Wei": both,
            "wei zhang": both,
            "zhang wei ming": {"张伟明"},
            "zhangweiming": {"张伟明"},
            "weiming": {"张伟明"},
            "li na": {"李娜"},
            "lina": {"李娜"},
            "Li Na": {"李娜"},
        },
    )


async def test_latin_name_any_case_and_order(db: Database, people: dict[str, int]) -> None:
    cases = ["john smith", "Smith John", "SMITH", "smith  john", "johnsmith", "JoHn SmItH"]
    await expect(db, {typed: {"John Smith"} for typed in cases})


async def test_latin_prefix_matches_several(db: Database, people: dict[str, int]) -> None:
    assert await found(db, name="john") == {"John Smith", "Mary Johnson"}
    assert await found(db, name="johnso") == {"Mary Johnson"}
    assert await found(db, name="mary") == {"Mary Johnson"}


async def test_free_text_name(db: Database, people: dict[str, int]) -> None:
    assert await found(db, text="zhang wei") == {"张伟", "张伟明"}
    assert await found(db, text="李娜") == {"李娜"}


async def test_name_and_free_text_combine(db: Database, people: dict[str, int]) -> None:
    assert await found(db, name="zhang", text="ming") == {"张伟明"}


async def test_like_wildcards_are_literal(db: Database, people: dict[str, int]) -> None:
    assert await found(db, name="j_hn") == set()
    assert await found(db, name="%") == set()
    assert await found(db, name="z%g") == set()


async def test_short_query_without_match_is_an_empty_page(
    db: Database, people: dict[str, int]
) -> None:
    for typed in ("q", "%", "_", "x"):
        page = await search(db, name=typed)
        assert (page.items, page.total) == ([], 0), typed


# --- fuzzy ------------------------------------------------------------------------------


async def test_fuzzy_on_latin_typo(db: Database, people: dict[str, int]) -> None:
    page = await search(db, name="Jonh Smith")
    assert page.fuzzy
    assert [c.display_name for c in page.items][:1] == ["John Smith"]
    assert page.total >= 1


async def test_fuzzy_on_chinese_homophone(db: Database, people: dict[str, int]) -> None:
    page = await search(db, name="张伟名")
    assert page.fuzzy
    assert page.items
    assert page.items[0].display_name == "张伟明"


async def test_exact_match_is_not_fuzzy(db: Database, people: dict[str, int]) -> None:
    page = await search(db, name="张伟明")
    assert not page.fuzzy
    assert [c.display_name for c in page.items] == ["张伟明"]


async def test_no_fuzzy_junk(db: Database, people: dict[str, int]) -> None:
    for typed in ("Bartholomew", "王小二", "smart", "xyz qwerty", "Mark Smithers"):
        page = await search(db, name=typed)
        assert [c.display_name for c in page.items] == [], typed
        assert page.total == 0, typed


async def test_fuzzy_respects_filters(db: Database, people: dict[str, int]) -> None:
    page = await search(db, name="Jonh Smith", category="gov")
    assert page.items == []


async def test_fuzzy_skips_deleted(db: Database, people: dict[str, int]) -> None:
    async with db.transaction() as session:
        await delete_customer(session, people["John Smith"], actor=ACTOR)
    page = await search(db, name="Jonh Smith")
    assert "John Smith" not in [c.display_name for c in page.items]


async def test_relevance_sort_ranks_closest_first(db: Database, people: dict[str, int]) -> None:
    page = await search(db, name="张伟", sort="relevance")
    assert [c.display_name for c in page.items] == ["张伟", "张伟明"]
    assert page.total == 2


# --- phones and e-mails -----------------------------------------------------------------


async def test_phone_in_any_format(db: Database, people: dict[str, int]) -> None:
    typed = ["13800138000", "138 0013 8000", "+86 138-0013-8000", "0086 13800138000",
             "+8613800138000", "(+86) 138.0013.8000"]
    await expect(db, {t: {"张伟"} for t in typed}, field="phone")
    await expect(db, {t: {"张伟"} for t in typed}, field="text")


async def test_foreign_phone(db: Database, people: dict[str, int]) -> None:
    assert await found(db, phone="+1 (415) 555-2671") == {"John Smith"}


async def test_partial_phone_digits(db: Database, people: dict[str, int]) -> None:
    await expect(
        db,
        {
            "0013800": {"张伟"},
            "139 0013": {"张伟明"},
            "0013": {"张伟", "张伟明"},
            "138": {"张伟"},
            "000": {"张伟", "张伟明"},
            "186-1234": {"李娜"},
            "4155": {"John Smith"},
            "99999": set(),
        },
        field="phone",
    )


async def test_partial_phone_in_free_text(db: Database, people: dict[str, int]) -> None:
    assert await found(db, text="555-2671") == {"John Smith"}
    assert await found(db, text="555 2671") == {"John Smith"}
    assert await found(db, text="1234 5678") == {"李娜"}


async def test_too_short_phone_is_refused(db: Database, people: dict[str, int]) -> None:
    with pytest.raises(ValidationError) as info:
        await search(db, phone="12")
    assert info.value.field == "phone"


async def test_email(db: Database, people: dict[str, int]) -> None:
    cases = {
        "zhang.wei@example.com": {"张伟"},
        "ZHANG.WEI@EXAMPLE.COM": {"张伟"},
        "John.Smith@acme.com": {"John Smith"},
    }
    await expect(db, cases, field="email")
    await expect(db, cases, field="text")


async def test_email_domain(db: Database, people: dict[str, int]) -> None:
    assert await found(db, email="@acme.com") == {"John Smith", "Mary Johnson"}
    assert await found(db, text="@Example.com") == {"张伟", "李娜"}
    assert await found(db, email="corp.cn") == {"张伟明"}


async def test_email_underscore_is_literal(db: Database, people: dict[str, int]) -> None:
    assert await found(db, email="li_na") == {"李娜"}
    assert await found(db, email="g_wei") == set()  # "_" is no wildcard


async def test_free_text_is_routed_by_shape(db: Database, people: dict[str, int]) -> None:
    # an address is not a name: it must not be matched against names
    assert await found(db, text="mary@acme.com") == {"Mary Johnson"}
    assert (await search(db, text="mary@acme.com")).fuzzy is False
    # a number is not a name either
    assert await found(db, text="186 1234 5678") == {"李娜"}
    assert (await search(db, text="99999999")).items == []


# --- filters ----------------------------------------------------------------------------


async def test_category_and_tier(db: Database, people: dict[str, int]) -> None:
    assert await found(db, category="retail") == {"张伟", "John Smith"}
    assert await found(db, tier="gold") == {"张伟"}
    assert await found(db, category="retail", tier="gold") == {"张伟"}
    assert await found(db, category="nope") == set()


async def test_tag(db: Database, people: dict[str, int]) -> None:
    assert await found(db, tag="vip") == {"张伟", "李娜"}
    assert await found(db, tag="回头客") == {"李娜"}
    assert await found(db, tag="VIP") == set()


async def test_owner(db: Database, people: dict[str, int]) -> None:
    assert await found(db, owner_id=people["agent"]) == {"张伟"}
    assert await found(db, owner_id=people["other_agent"]) == {"李娜"}


async def test_lifecycle(db: Database, people: dict[str, int]) -> None:
    assert await found(db, lifecycle="active") == {"张伟明"}
    assert await found(db, lifecycle="prospect") == {"Mary Johnson"}
    assert await found(db, lifecycle="lead") == {"张伟", "李娜", "John Smith"}


async def test_organization(db: Database, people: dict[str, int]) -> None:
    assert await found(db, organization="acme") == {"John Smith", "Mary Johnson"}
    assert await found(db, organization="ACME CORP") == {"John Smith", "Mary Johnson"}
    assert await found(db, organization="科技") == {"张伟"}
    assert await found(db, organization="Globex") == set()


async def test_created_date_range(db: Database, people: dict[str, int]) -> None:
    # created on 2024-01-10 … 2024-01-14, at noon UTC
    assert await found(db, created_from="2024-01-11", created_to="2024-01-12") == {
        "张伟明", "李娜",
    }
    assert await found(db, created_from="2024-01-14") == {"Mary Johnson"}
    assert await found(db, created_to="2024-01-10") == {"张伟"}
    assert await found(db, created_from=date(2024, 2, 1)) == set()


async def test_created_datetime_range(db: Database, people: dict[str, int]) -> None:
    assert await found(
        db,
        created_from=datetime(2024, 1, 12, 11, 0, tzinfo=UTC),
        created_to=datetime(2024, 1, 12, 13, 0, tzinfo=UTC),
    ) == {"李娜"}


async def test_filters_combine_with_names(db: Database, people: dict[str, int]) -> None:
    assert await found(db, name="zhang", tier="std") == {"张伟明"}
    assert await found(db, name="zhang", tag="vip") == {"张伟"}


async def test_deleted_hidden_unless_asked(db: Database, people: dict[str, int]) -> None:
    async with db.transaction() as session:
        await delete_customer(session, people["张伟"], actor=ACTOR)
    assert await found(db, name="张") == {"张伟明"}
    assert await found(db, phone="13800138000") == set()
    assert (await search(db)).total == 4
    assert await found(db, name="张", include_deleted=True) == {"张伟", "张伟明"}
    assert (await search(db, include_deleted=True)).total == 5


# --- sorting and pages ------------------------------------------------------------------


async def test_pagination(db: Database, people: dict[str, int]) -> None:
    first = await search(db, sort="id", page_size=2)
    second = await search(db, sort="id", page_size=2, page=2)
    third = await search(db, sort="id", page_size=2, page=3)
    beyond = await search(db, sort="id", page_size=2, page=4)
    assert (first.total, second.total, third.total) == (5, 5, 5)
    assert (second.page, second.page_size) == (2, 2)
    assert [c.display_name for c in first.items] == ["张伟", "张伟明"]
    assert [c.display_name for c in second.items] == ["李娜", "John Smith"]
    assert [c.display_name for c in third.items] == ["Mary Johnson"]
    assert beyond.items == []
    assert beyond.total == 5


async def test_pagination_of_a_name_search(db: Database, people: dict[str, int]) -> None:
    page = await search(db, name="zhang", page_size=1, page=2, sort="id")
    assert page.total == 2
    assert [c.display_name for c in page.items] == ["张伟明"]


async def test_sort_by_name(db: Database, people: dict[str, int]) -> None:
    latin = await names(db, sort="name", organization="acme")
    assert latin == ["John Smith", "Mary Johnson"]
    assert await names(db, sort="-name", organization="acme") == ["Mary Johnson", "John Smith"]


async def test_sort_by_created_at(db: Database, people: dict[str, int]) -> None:
    assert await names(db, sort="-created_at") == [
        "Mary Johnson", "John Smith", "李娜", "张伟明", "张伟",
    ]
    assert await names(db, sort="created_at") == [
        "张伟", "张伟明", "李娜", "John Smith", "Mary Johnson",
    ]


async def test_sort_by_lifetime_value(db: Database, people: dict[str, int]) -> None:
    assert await names(db, sort="lifetime_value") == [
        "Mary Johnson", "张伟明", "张伟", "John Smith", "李娜",
    ]
    assert await names(db, sort="-lifetime_value") == [
        "李娜", "John Smith", "张伟", "张伟明", "Mary Johnson",
    ]


async def test_query_validation() -> None:
    with pytest.raises(ValueError):
        CustomerQuery(page=0)
    with pytest.raises(ValueError):
        CustomerQuery(page_size=501)
    with pytest.raises(ValueError):
        CustomerQuery.model_validate({"sort": "shoe_size"})
    with pytest.raises(ValueError):
        CustomerQuery.model_validate({"colour": "red"})
    assert CustomerQuery(text="  zhang  ").text == "zhang"


async def test_date_filters_are_whole_days_in_the_business_time_zone(db: Database) -> None:
    """00:30 on 2 Dec in Shanghai is 16:30 on 1 Dec in UTC: a 2 Dec filter finds it there."""
    from sqlalchemy import update

    async with db.transaction() as session:
        customer = await create_customer(
            session, {"display_name": "夜猫子"}, actor="t", region="CN"
        )
        await session.execute(
            update(Customer)
            .where(Customer.id == customer.id)
            .values(created_at=datetime(2026, 12, 1, 16, 30, tzinfo=UTC))
        )
    query = {"created_from": "2026-12-02", "created_to": "2026-12-02"}
    async with db.sessions() as session:
        shanghai = await search_customers(
            session, query, region="CN", timezone="Asia/Shanghai"
        )
        utc = await search_customers(session, query, region="CN", timezone="UTC")
    assert [c.id for c in shanghai.items] == [customer.id]
    assert utc.items == []
