"""The fuzzy matcher against a real database: key upkeep, lookups, suggestions, the scan."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import structlog
from click.testing import CliRunner
from sqlalchemy import func, insert, select

from crm_core.db import Database
from crm_core.identity import (
    MatchCandidate,
    MatchThresholds,
    customers_without_keys,
    dismiss_suggestion,
    find_candidates,
    rebuild_match_keys,
    record_suggestion,
    scan_duplicates,
    settle_merge,
)
from crm_core.models import Customer, CustomerMatchKey, DuplicateSuggestion, utcnow
from crm_core.services.customers import (
    create_customer,
    delete_customer,
    restore_customer,
    update_customer,
)
from crm_core.services.merge import erase_customer, merge_customers

THRESHOLDS = MatchThresholds()
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华建国红玉兰文辉力萍鹏飞宇浩"
FIRST = ["James", "Mary", "Robert", "Linda", "David", "Susan", "Thomas", "Karen", "Daniel"]
LAST = ["Brown", "Miller", "Wilson", "Taylor", "Clark", "Lewis", "Walker", "Young", "Hill"]


async def new(database: Database, name: str, **fields: Any) -> int:
    async with database.transaction() as session:
        customer = await create_customer(
            session, {"display_name": name, **fields}, actor="test", region="CN"
        )
        return customer.id


async def keys_of(database: Database, customer_id: int) -> set[str]:
    async with database.sessions() as session:
        rows = await session.scalars(
            select(CustomerMatchKey.key).where(CustomerMatchKey.customer_id == customer_id)
        )
        return set(rows)


async def crowd(database: Database, count: int = 300, seed: int = 5) -> list[int]:
    """Many customers with names from a small pool (so that names repeat), like real data."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        if rng.random() < 0.7:
            name = rng.choice(SURNAMES) + "".join(rng.choices(GIVEN, k=rng.choice((1, 2))))
        else:
            name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        rows.append({"display_name": name, "birthday": date(1960, 1, 1).replace(
            year=rng.randrange(1950, 2005), month=rng.randrange(1, 13), day=rng.randrange(1, 28))})
    ids = []
    async with database.transaction() as session:
        for row in rows:
            customer = await create_customer(session, row, actor="test", region="CN")
            ids.append(customer.id)
    return ids


# --------------------------------------------------------------------------- key upkeep


async def test_keys_follow_create_update_delete_restore_and_erase(db: Database) -> None:
    cid = await new(db, "张伟明", phones=["13800138000"], emails=["wm.zhang@example.cn"],
                    birthday="1990-01-02")
    assert {"n:weiming zhang", "c:张伟", "c:张明", "g:伟明", "b:19900102", "p:0138000",
            "e:wm.zhang"} <= await keys_of(db, cid)

    async with db.transaction() as session:
        await update_customer(session, cid, {"display_name": "李娜", "phones": []},
                              actor="test", region="CN")
    keys = await keys_of(db, cid)
    assert "n:li na" in keys and "c:李娜" in keys
    assert not any(k.startswith(("p:", "n:weiming")) for k in keys)
    assert "e:wm.zhang" in keys and "b:19900102" in keys

    async with db.transaction() as session:
        await delete_customer(session, cid, actor="test")
    assert await keys_of(db, cid) == set()  # deleted customers are no candidates
    async with db.transaction() as session:
        await restore_customer(session, cid, actor="test")
    assert "n:li na" in await keys_of(db, cid)

    async with db.transaction() as session:
        await erase_customer(session, cid, actor="test")
    assert await keys_of(db, cid) == set()


async def test_an_identity_added_alone_updates_the_keys(db: Database) -> None:
    from crm_core.models import CustomerIdentity, IdentityKind

    cid = await new(db, "王芳")
    async with db.transaction() as session:
        session.add(CustomerIdentity(customer_id=cid, kind=IdentityKind.PHONE,
                                     value="+8613912345678"))
    assert "p:2345678" in await keys_of(db, cid)


async def test_keys_follow_a_merge(db: Database) -> None:
    survivor = await new(db, "张伟明", phones=["13800138000"])
    merged = await new(db, "张伟名", birthday="1990-01-02", phones=["13900139000"])
    async with db.transaction() as session:
        await merge_customers(session, survivor, merged, actor="test")
    assert await keys_of(db, merged) == set()
    keys = await keys_of(db, survivor)
    assert {"p:0138000", "p:0139000", "b:19900102", "n:weiming zhang"} <= keys


async def test_suggestions_follow_a_merge(db: Database) -> None:
    survivor = await new(db, "张伟明")
    merged = await new(db, "张伟名")
    third = await new(db, "张伟民")
    async with db.transaction() as session:
        await record_suggestion(session, merged, MatchCandidate(survivor, 81, {}), source="t")
        await record_suggestion(session, merged, MatchCandidate(third, 77, {}), source="t")
    async with db.transaction() as session:
        await merge_customers(session, survivor, merged, actor="test")
    async with db.sessions() as session:
        rows = (await session.execute(select(
            DuplicateSuggestion.customer_id, DuplicateSuggestion.candidate_id,
            DuplicateSuggestion.status,
        ).order_by(DuplicateSuggestion.id))).all()
    assert [tuple(r) for r in rows] == [
        (survivor, merged, "merged"), (survivor, third, "open"),
    ]


async def test_settle_merge_moves_suggestions_without_clashes(db: Database) -> None:
    a, b, c = [await new(db, n) for n in ("张伟明", "张伟名", "张伟民")]
    async with db.transaction() as session:
        for one, other in ((a, b), (b, c), (a, c)):
            await record_suggestion(session, one, MatchCandidate(other, 80, {}), source="t")
        await settle_merge(session, a, b, actor="test")
    async with db.sessions() as session:
        rows = (await session.execute(select(
            DuplicateSuggestion.customer_id, DuplicateSuggestion.candidate_id,
            DuplicateSuggestion.status,
        ).order_by(DuplicateSuggestion.id))).all()
    assert [tuple(r) for r in rows] == [(a, b, "merged"), (a, c, "open")]
    assert await keys_of(db, b) == set()


async def test_bulk_inserted_customers_get_keys_from_rebuild(db: Database) -> None:
    now = utcnow()
    async with db.transaction() as session:
        await session.execute(insert(Customer), [
            {"display_name": name, "name_key": name, "created_at": now, "updated_at": now}
            for name in ("陈静", "Mary Brown")
        ])
    async with db.sessions() as session:
        missing = await customers_without_keys(session)
    assert len(missing) == 2
    async with db.transaction() as session:
        assert await rebuild_match_keys(session, missing) == 2
    async with db.sessions() as session:
        assert await customers_without_keys(session) == []
        assert (await find_candidates(session, name="陈晶"))[0].customer_id == missing[0]
    async with db.transaction() as session:
        session.add(CustomerMatchKey(key="n:ghost", customer_id=999_999))  # no such customer
    async with db.transaction() as session:
        assert await rebuild_match_keys(session) == 2  # everything, idempotent
    assert "n:brown mary" in await keys_of(db, missing[1])
    assert await keys_of(db, 999_999) == set()


# --------------------------------------------------------------------------- lookups


@pytest.mark.parametrize(
    ("stored", "typed"),
    [
        ("张伟明", "张伟名"),  # homophone from the input method
        ("张伟明", "zhang weiming"),  # pinyin in Latin letters
        ("欧阳晓东", "欧阳小东"),
        ("Jonathan Smith", "Jonathon Smith"),
        ("Jonathan Smith", "Smith Jonathan"),
    ],
)
async def test_a_typo_finds_the_customer_among_many(db: Database, stored: str, typed: str) -> None:
    await crowd(db)
    target = await new(db, stored)
    async with db.sessions() as session:
        candidates = await find_candidates(session, name=typed)
    assert candidates[0].customer_id == target
    assert THRESHOLDS.suggest <= candidates[0].score < THRESHOLDS.link
    assert candidates == sorted(candidates, key=lambda c: -c.score)


async def test_same_name_and_birthday_links_same_name_alone_only_suggests(db: Database) -> None:
    await crowd(db)
    target = await new(db, "周杰明", birthday="1985-03-04", city="上海")
    async with db.sessions() as session:
        alone = await find_candidates(session, name="周杰明")
        with_birthday = await find_candidates(
            session, name="周杰明", birthday=date(1985, 3, 4)
        )
        other_birthday = await find_candidates(
            session, name="周杰明", birthday=date(1970, 11, 20)
        )
        with_city = await find_candidates(session, name="周杰明", city="上海市")
    assert alone[0].customer_id == target
    assert THRESHOLDS.suggest <= alone[0].score < THRESHOLDS.link
    assert with_birthday[0].customer_id == target
    assert with_birthday[0].score >= THRESHOLDS.link
    assert with_birthday[0].reasons["birthday"] == 100.0
    assert all(c.customer_id != target or c.score < THRESHOLDS.suggest for c in other_birthday)
    assert THRESHOLDS.suggest <= with_city[0].score < THRESHOLDS.link


async def test_phone_suffix_and_email_local_part_count_as_evidence(db: Database) -> None:
    target = await new(db, "Robert Clark", phones=["+1 415 555 0100"],
                       emails=["rclark@example.com"])
    async with db.sessions() as session:
        by_phone = await find_candidates(session, name="Robert Clark", phone="+14085550100")
        by_email = await find_candidates(session, name="Rob Clark", email="rclark@gmail.com")
        no_name = await find_candidates(session, name=None, phone="+14085550100")
    assert by_phone[0].customer_id == target and by_phone[0].score >= THRESHOLDS.link
    assert by_email[0].reasons.get("email") == 100.0
    assert no_name[0].customer_id == target and no_name[0].score < THRESHOLDS.suggest


async def test_deleted_excluded_and_unrelated_names_score_low(db: Database) -> None:
    gone = await new(db, "张伟明")
    me = await new(db, "张伟明")
    async with db.transaction() as session:
        await delete_customer(session, gone, actor="test")
    async with db.sessions() as session:
        found = await find_candidates(session, name="张伟明", exclude_id=me)
        unrelated = await find_candidates(session, name="Margaret Thatcher")
        nothing = await find_candidates(session, name="王")
    assert found == []
    assert all(c.score < THRESHOLDS.suggest for c in unrelated)
    assert nothing == []


# --------------------------------------------------------------------------- suggestions


async def test_record_suggestion_is_idempotent_per_pair(db: Database) -> None:
    a = await new(db, "张伟明")
    b = await new(db, "张伟名")
    async with db.transaction() as session:
        first = await record_suggestion(session, b, MatchCandidate(a, 80.8, {"name": 95}),
                                        source="routing")
        again = await record_suggestion(session, a, MatchCandidate(b, 90.0, {"name": 95,
                                        "city": 100}), source="scan")
        weaker = await record_suggestion(session, b, MatchCandidate(a, 76.0, {}), source="scan")
        assert await record_suggestion(session, a, MatchCandidate(a, 99, {}), source="x") is None
    assert first is not None and again is not None and weaker is not None
    assert first.id == again.id == weaker.id
    assert (again.customer_id, again.candidate_id) == (a, b)  # lower id first
    assert again.score == 90.0 and again.reasons == {"name": 95.0, "city": 100.0}
    assert again.source == "routing" and again.status == "open"
    async with db.transaction() as session:
        await dismiss_suggestion(session, first.id, actor="agent")
    async with db.transaction() as session:
        assert await record_suggestion(session, a, MatchCandidate(b, 99, {}), source="x") is None
    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(DuplicateSuggestion)) == 1


# --------------------------------------------------------------------------- batch scan


async def plant(database: Database) -> dict[str, tuple[int, int]]:
    """Duplicates hidden in a crowd, and look-alikes that are different people."""
    pairs = {}
    pairs["homophone+birthday"] = (
        await new(database, "赵丽华", birthday="1988-08-08"),
        await new(database, "赵丽桦", birthday="1988-08-08"),
    )
    pairs["latin typo, same address"] = (
        await new(database, "Christopher Wilson", city="Boston", street="12 Beacon St."),
        await new(database, "Christopher Willson", city="boston", street="12 beacon st"),
    )
    pairs["phone suffix"] = (
        await new(database, "李秀英", phones=["+8613800001111"]),
        await new(database, "李秀瑛", phones=["+85261381111"]),
    )
    pairs["email local"] = (
        await new(database, "Patricia Moore", emails=["pmoore77@example.com"]),
        await new(database, "Pat Moore", emails=["pmoore77@gmail.com"]),
    )
    pairs["rare same name"] = (
        await new(database, "司马懿"),
        await new(database, "司马懿"),
    )
    return pairs


async def test_scan_finds_planted_duplicates_and_not_strangers(db: Database) -> None:
    await crowd(db, 300)
    planted = await plant(db)
    strangers = (
        await new(db, "孙悟空", birthday="1970-01-01"),
        await new(db, "孙悟空", birthday="1999-12-31"),  # same name, other birthday
    )
    family = (  # one address, one surname, different people
        await new(db, "Emily Wilson", city="Boston", street="12 Beacon St."),
        await new(db, "Thomas Wilson", city="Boston", street="12 Beacon St."),
    )
    typo_alone = (  # near-identical names and nothing else: not enough for the scan
        await new(db, "Maximilian Oberhuber"),
        await new(db, "Maximillian Oberhuber"),
    )
    # Records made before the index existed get their keys during the scan.
    now = utcnow()
    async with db.transaction() as session:
        late = (await session.execute(insert(Customer).returning(Customer.id), [
            {"display_name": n, "name_key": n, "created_at": now, "updated_at": now,
             "birthday": date(1977, 7, 7)} for n in ("钱学森", "钱学森")
        ])).scalars().all()
    calls: list[tuple[int, int]] = []
    report = await scan_duplicates(db, progress=lambda done, total: calls.append((done, total)))
    assert report.keys_rebuilt == 2
    assert report.customers == 300 + 2 * len(planted) + 8
    assert calls and calls[-1][0] == calls[-1][1] == report.blocks

    async with db.sessions() as session:
        rows = (await session.execute(select(
            DuplicateSuggestion.customer_id, DuplicateSuggestion.candidate_id,
            DuplicateSuggestion.score, DuplicateSuggestion.source,
        ))).all()
    found = {(a, b): score for a, b, score, _ in rows}
    for label, pair in planted.items():
        assert pair in found, label
        assert found[pair] >= THRESHOLDS.suggest
    assert tuple(sorted(late)) in found
    assert strangers not in found
    assert family not in found
    assert typo_alone not in found
    assert all(source == "scan" for *_, source in rows)
    assert report.suggestions_created == len(rows)
    assert report.pairs_found >= len(planted) + 1
    assert report.top[0].score == max(found.values())

    again = await scan_duplicates(db)
    assert again.suggestions_created == 0
    assert again.suggestions_known == again.pairs_found


# --------------------------------------------------------------------------- CLI


def test_cli_find_duplicates_suggestions_and_dismiss(
    sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import contact_center.commands.duplicates  # noqa: F401  (registers the commands)
    from contact_center.cli import main

    for name in list(os.environ):
        if name.upper().startswith("CC_") or name.upper() in {"DATABASE_URL", "REDIS_URL"}:
            monkeypatch.delenv(name, raising=False)
    path = tmp_path / "cli.db"
    shutil.copyfile(sqlite_template, path)
    url = f"sqlite:///{path}"

    async def setup() -> None:
        database = Database(url)
        try:
            await new(database, "张伟明", birthday="1990-01-02")
            await new(database, "张伟名", birthday="1990-01-02")
            await new(database, "Mary Brown")
        finally:
            await database.dispose()

    asyncio.run(setup())
    runner = CliRunner()
    env = {"DATABASE_URL": url}
    try:
        result = runner.invoke(main, ["customers", "find-duplicates", "--limit-report", "5"],
                               env=env)
        assert result.exit_code == 0, result.output
        assert "1 likely duplicates" in result.output
        assert "1 new suggestions" in result.output
        assert "张伟明" in result.output and "张伟名" in result.output

        listed = runner.invoke(main, ["customers", "suggestions"], env=env)
        assert listed.exit_code == 0, listed.output
        assert "#1 " in listed.output and "scan, open" in listed.output

        dismissed = runner.invoke(main, ["customers", "dismiss-suggestion", "1"], env=env)
        assert dismissed.exit_code == 0, dismissed.output
        assert "dismissed" in dismissed.output
        again = runner.invoke(main, ["customers", "dismiss-suggestion", "1"], env=env)
        assert again.exit_code != 0 and "already dismissed" in again.output
        missing = runner.invoke(main, ["customers", "dismiss-suggestion", "99"], env=env)
        assert missing.exit_code != 0

        rescan = runner.invoke(main, ["customers", "find-duplicates", "--min-score", "60"],
                               env=env)
        assert rescan.exit_code == 0, rescan.output
        assert "0 new suggestions" in rescan.output  # a dismissed pair stays dismissed

        rebuilt = runner.invoke(main, ["customers", "rebuild-match-keys"], env=env)
        assert rebuilt.exit_code == 0 and "3 customers" in rebuilt.output
    finally:
        structlog.reset_defaults()
