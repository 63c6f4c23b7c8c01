"""Customer CSV import and export on SQLite and PostgreSQL, and their CLI commands."""

from __future__ import annotations

import asyncio
import codecs
import csv
import io
import os
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import structlog
from click.testing import CliRunner, Result
from sqlalchemy import delete, func, select

from contact_center.cli import main
from crm_core import schema
from crm_core.db import Database
from crm_core.models import (
    AuditLog,
    Customer,
    CustomerCategory,
    CustomerIdentity,
    CustomerTag,
    CustomerTier,
    LifecycleStage,
    LifecycleTransition,
    Organization,
)
from crm_core.services.csv_export import export_customers
from crm_core.services.csv_import import (
    CsvFileError,
    ImportProgress,
    ImportReport,
    RowError,
    import_customers,
)
from crm_core.services.customer_query import search_customers
from crm_core.services.customers import create_customer, delete_customer, get_customer

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "customers"
ACTOR = "importer"
REGION = "CN"


async def seed_classes(db: Database) -> None:
    async with db.transaction() as session:
        session.add_all([
            CustomerTier(code="gold", name="Gold", name_zh="金卡", rank=2),
            CustomerTier(code="standard", name="Standard", name_zh="普通", rank=1),
            CustomerCategory(code="retail", name="Retail", name_zh="零售"),
            CustomerCategory(code="wholesale", name="Wholesale", name_zh="批发"),
        ])


async def run_import(db: Database, path: Path, **options: Any) -> ImportReport:
    return await import_customers(db, path, actor=ACTOR, region=REGION, **options)


async def count(db: Database, model: Any, *where: Any) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)))


async def customer_named(db: Database, name: str) -> Customer:
    async with db.sessions() as session:
        customer_id = await session.scalar(select(Customer.id).where(Customer.display_name == name))
        assert customer_id is not None, f"no customer named {name}"
        return await get_customer(session, customer_id)


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


# --- import -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "encoding"), [("zh_utf8_bom.csv", "utf-8-sig"), ("zh_gbk.csv", "gb18030")]
)
async def test_import_chinese_file_in_utf8_or_gbk(
    db: Database, fixture: str, encoding: str
) -> None:
    await seed_classes(db)
    progress: list[ImportProgress] = []
    report = await run_import(db, FIXTURES / fixture, progress=progress.append)

    assert report.plan.encoding == encoding
    assert (report.rows_read, report.imported, report.failed) == (4, 4, 0)
    assert report.organizations_created == 2
    assert progress[-1].bytes_read == (FIXTURES / fixture).stat().st_size
    assert await count(db, Customer) == 4

    zhang = await customer_named(db, "张伟")
    assert zhang.phones == ["+8613800138000"]
    assert zhang.emails == ["zhang.wei@example.com"]
    assert zhang.tags == ["老客户", "重要"]
    assert zhang.birthday == date(1985, 3, 12)
    assert zhang.tier_code == "gold"
    assert zhang.custom_attributes == {"性别": "男"}
    assert zhang.notes == "喜欢靠窗的位置"
    assert (zhang.city, zhang.province) == ("北京", "北京")
    assert zhang.source == f"import:{fixture}"
    assert zhang.lifecycle_stage == LifecycleStage.LEAD
    assert zhang.organization is not None and zhang.organization.name == "北京华夏贸易有限公司"
    assert zhang.name_key == "张伟 | zhang wei | zhangwei"
    assert zhang.created_at.tzinfo is not None

    li = await customer_named(db, "李娜")
    assert sorted(li.emails) == ["li.na@example.cn", "lina@work.example.cn"]
    assert sorted(li.phones) == ["+8613912345678", "+862162345678"]
    assert li.birthday == date(1990, 7, 8)
    wang = await customer_named(db, "王芳")
    assert wang.organization_id == zhang.organization_id
    assert wang.notes == "备注, 带逗号"
    assert wang.birthday == date(1978, 11, 30)
    assert wang.emails == []
    chen = await customer_named(db, "陈静")
    assert chen.tags == ["vip", "回访"]
    assert chen.organization_id is None

    async with db.sessions() as session:
        page = await search_customers(session, {"name": "zhang"}, region=REGION)
        assert [c.display_name for c in page.items] == ["张伟"]
        page = await search_customers(session, {"phone": "13912345678"}, region=REGION)
        assert [c.display_name for c in page.items] == ["李娜"]
        transitions = list(await session.scalars(select(LifecycleTransition)))
        assert len(transitions) == 4
        assert {(t.from_stage, t.to_stage, t.reason, t.actor) for t in transitions} == {
            (None, LifecycleStage.LEAD, "imported", ACTOR)
        }
        entries = list(await session.scalars(
            select(AuditLog).where(AuditLog.entity_type == "customer_import")
        ))
        org_entries = await session.scalar(
            select(func.count()).select_from(AuditLog).where(AuditLog.entity_type == "organization")
        )
        customer_entries = await session.scalar(
            select(func.count()).select_from(AuditLog).where(AuditLog.entity_type == "customer")
        )
    assert len(entries) == 1
    entry = entries[0]
    assert (entry.action, entry.entity_id, entry.actor) == ("import", fixture, ACTOR)
    assert entry.after is not None
    assert entry.after["imported"] == 4 and entry.after["failed"] == 0
    assert {"column": 10, "header": "性别", "target": "attribute"} in entry.after["mapping"]
    assert org_entries == 2
    assert customer_entries == 0  # one entry for the import, not one per row


async def test_gbk_file_with_explicit_encoding(db: Database, tmp_path: Path) -> None:
    path = write(tmp_path, "客户.csv", "客户名称,手机号码,城市\n欧阳娜娜,13800000111,深圳\n", "gbk")
    report = await run_import(db, path, encoding="gbk")
    assert (report.plan.encoding, report.imported) == ("gbk", 1)
    customer = await customer_named(db, "欧阳娜娜")
    assert customer.city == "深圳"
    assert customer.phones == ["+8613800000111"]


async def test_english_headers_unknown_columns_and_map_override(
    db: Database, tmp_path: Path
) -> None:
    report = await run_import(db, FIXTURES / "en_contacts.csv", mapping={"suburb": "city"})
    assert (report.imported, report.failed) == (3, 0)
    targets = {c.header: c.target for c in report.plan.columns}
    assert targets["Suburb"] == "city"
    assert targets["Favourite Colour"] == "attribute"

    john = await customer_named(db, "John Smith")
    assert (john.given_name, john.family_name) == ("John", "Smith")
    assert john.city == "San Francisco"
    assert (john.province, john.postcode, john.country) == ("CA", "94105", "US")
    assert john.job_title == "Buyer"
    assert john.phones == ["+14155552671"]
    assert john.tags == ["west", "wholesale"]
    assert john.custom_attributes == {"Favourite Colour": "blue"}
    mary = await customer_named(db, "Mary Jones")
    assert mary.emails == ["mary.jones@example.com"]
    assert mary.country == "GB"
    assert mary.custom_attributes == {}
    assert mary.organization_id == john.organization_id
    wei = await customer_named(db, "Wei Zhang")
    assert wei.phones == ["+8613800138001"]
    assert await count(db, Organization) == 2


@pytest.mark.parametrize("batch_size", [1000, 2])
async def test_row_errors_are_reported_and_bad_rows_write_nothing(
    db: Database, batch_size: int
) -> None:
    await seed_classes(db)
    async with db.transaction() as session:
        owner = await create_customer(
            session, {"display_name": "老王", "phones": ["13900000000"]},
            actor=ACTOR, region=REGION,
        )
    streamed: list[RowError] = []
    report = await run_import(
        db, FIXTURES / "row_errors.csv", batch_size=batch_size, on_error=streamed.append
    )

    assert (report.rows_read, report.imported, report.skipped, report.failed) == (10, 3, 0, 7)
    errors = {e.line: e for e in report.errors}
    assert sorted(errors) == [3, 4, 6, 7, 8, 9, 10]
    assert streamed == report.errors
    assert (errors[3].field, errors[3].value) == ("email", "not-an-email")
    assert (errors[4].field, errors[4].value) == ("phone", "12345")
    assert "valid phone" in errors[4].reason
    assert errors[6].field == "phone"
    assert "line 2" in errors[6].reason
    assert errors[7].customer_id == owner.id
    assert errors[7].reason == f"already belongs to customer #{owner.id} (老王)"
    assert (errors[8].field, errors[8].value, errors[8].reason) == (
        "tier_code", "platinum", "no such tier"
    )
    assert errors[8].column == "tier"
    assert (errors[9].field, errors[9].value) == ("birthday", "1990-13-01")
    assert errors[10].field == "display_name"

    async with db.sessions() as session:
        names = set(await session.scalars(select(Customer.display_name)))
        values = set(await session.scalars(select(CustomerIdentity.value)))
    assert names == {"老王", "Good One", "Good Two", "Good Three"}
    assert "bad.phone@example.com" not in values
    assert "dup@example.com" not in values
    assert "other@example.com" not in values
    assert await count(db, CustomerIdentity) == 1 + 6
    assert await count(db, LifecycleTransition) == 1 + 3
    good_two = await customer_named(db, "Good Two")
    assert good_two.tier_code == "gold"
    good_three = await customer_named(db, "Good Three")
    assert good_three.birthday == date(2000, 1, 2)


async def test_on_conflict_skip_counts_existing_customers_as_skipped(db: Database) -> None:
    await seed_classes(db)
    first = await run_import(db, FIXTURES / "zh_utf8_bom.csv")
    assert first.imported == 4
    again = await run_import(db, FIXTURES / "zh_utf8_bom.csv", on_conflict="skip")
    assert (again.imported, again.skipped, again.failed) == (0, 4, 0)
    reported = await run_import(db, FIXTURES / "zh_utf8_bom.csv")
    assert (reported.imported, reported.skipped, reported.failed) == (0, 0, 4)
    zhang = await customer_named(db, "张伟")
    assert any(
        e.line == 2 and e.customer_id == zhang.id and "张伟" in e.reason for e in reported.errors
    )
    assert await count(db, Customer) == 4


async def test_duplicates_within_the_file_stay_errors_when_skipping(
    db: Database, tmp_path: Path
) -> None:
    path = write(
        tmp_path, "dups.csv",
        "name,email\nA,a@example.com\nB,b@example.com\nA again,A@Example.com\n",
    )
    report = await run_import(db, path, on_conflict="skip", batch_size=1)
    assert (report.imported, report.skipped, report.failed) == (2, 0, 1)
    error = report.errors[0]
    assert (error.line, error.field, error.value) == (4, "email", "a@example.com")
    assert "line 2" in error.reason


async def test_deleted_customer_still_holds_its_identity(db: Database, tmp_path: Path) -> None:
    async with db.transaction() as session:
        gone = await create_customer(
            session, {"display_name": "Gone", "emails": ["gone@example.com"]},
            actor=ACTOR, region=REGION,
        )
        await delete_customer(session, gone.id, actor=ACTOR)
    path = write(tmp_path, "c.csv", "name,email\nBack,gone@example.com\n")
    report = await run_import(db, path)
    assert report.failed == 1
    assert report.errors[0].reason == f"already belongs to customer #{gone.id} (Gone, deleted)"


async def test_multi_line_cells_blank_rows_and_line_numbers(db: Database, tmp_path: Path) -> None:
    path = write(
        tmp_path, "lines.csv",
        'name,notes,email\n"Ann","two\nlines",ann@example.com\n\nBob,,bob@\n',
    )
    report = await run_import(db, path)
    assert (report.rows_read, report.imported, report.failed) == (2, 1, 1)
    assert report.errors[0].line == 5  # the row of Ann spans lines 2 and 3; line 4 is blank
    ann = await customer_named(db, "Ann")
    assert ann.notes == "two\nlines"


async def test_files_that_cannot_be_read_write_nothing(db: Database, tmp_path: Path) -> None:
    with pytest.raises(CsvFileError, match="no such file"):
        await run_import(db, tmp_path / "missing.csv")
    with pytest.raises(CsvFileError, match="no header"):
        await run_import(db, write(tmp_path, "empty.csv", "\n\n"))
    with pytest.raises(CsvFileError, match="holds a name"):
        await run_import(db, write(tmp_path, "nameless.csv", "phone\n13800138000\n"))
    assert await count(db, Customer) == 0
    assert await count(db, AuditLog) == 0


async def test_validation_in_worker_processes(db: Database, tmp_path: Path) -> None:
    lines = ["姓名,手机,邮箱,公司"]
    lines += [f"客户{i},138{i:08d},c{i}@example.com,公司{i % 7}" for i in range(1, 251)]
    lines.append("坏行,123,bad@,")
    path = write(tmp_path, "many.csv", "\n".join(lines) + "\n")
    report = await run_import(db, path, workers=2, batch_size=50)
    assert (report.imported, report.failed, report.organizations_created) == (250, 1, 7)
    assert report.errors[0].line == 252
    assert await count(db, Customer) == 250
    assert await count(db, CustomerIdentity) == 500
    customer = await customer_named(db, "客户250")
    assert customer.phones == ["+8613800000250"]


# --- export -------------------------------------------------------------------------------


async def export_text(db: Database, **options: Any) -> str:
    sink = io.BytesIO()
    await export_customers(db, sink, region=REGION, **options)
    encoding = options.get("encoding", "utf-8-sig")
    return sink.getvalue().decode("utf-8-sig" if encoding == "utf-8-sig" else encoding)


def rows_of(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


async def seed_mixed(db: Database) -> None:
    await seed_classes(db)
    await run_import(db, FIXTURES / "zh_utf8_bom.csv")
    await run_import(db, FIXTURES / "en_contacts.csv")
    async with db.transaction() as session:
        await create_customer(
            session,
            {
                "given_name": "Yu", "family_name": "Lan", "display_name": "余兰",
                "emails": ["yu.lan@example.com"], "phones": ["+852 9123 4567"],
                "organization_name": "Harbour Foods", "street": "1 Queen's Road",
                "city": "Hong Kong", "country": "HK", "language": "zh-HK",
                "category_code": "retail", "tier_code": "standard",
                "lifecycle_stage": "active", "birthday": "1970-01-31",
                "tags": ["vip", "dim sum"], "postcode": "000000",
            },
            actor=ACTOR, region=REGION,
        )


async def test_export_writes_every_column_in_id_order(db: Database) -> None:
    await seed_mixed(db)
    text = await export_text(db, batch_size=3)
    rows = rows_of(text)
    assert list(rows[0]) == [
        "id", "display_name", "given_name", "family_name", "organization", "emails", "phones",
        "tags", "tier", "category", "lifecycle", "city", "province", "country", "postcode",
        "street", "birthday", "language", "created_at",
    ]
    assert [int(r["id"]) for r in rows] == sorted(int(r["id"]) for r in rows)
    assert len(rows) == 8
    li = next(r for r in rows if r["display_name"] == "李娜")
    assert li["emails"] == "li.na@example.cn;lina@work.example.cn"
    assert li["phones"] == "+8613912345678;+862162345678"
    yu = next(r for r in rows if r["display_name"] == "余兰")
    assert yu == {
        **yu, "given_name": "Yu", "family_name": "Lan", "organization": "Harbour Foods",
        "tags": "dim sum;vip", "tier": "standard", "category": "retail", "lifecycle": "active",
        "city": "Hong Kong", "country": "HK", "postcode": "000000", "street": "1 Queen's Road",
        "birthday": "1970-01-31", "language": "zh-HK", "phones": "+85291234567",
    }


async def test_export_applies_search_filters_and_skips_deleted(db: Database) -> None:
    await seed_mixed(db)
    names = {r["display_name"] for r in rows_of(await export_text(db, query={"tier": "gold"}))}
    assert names == {"张伟"}
    names = {r["display_name"] for r in rows_of(await export_text(db, query={"tag": "vip"}))}
    assert names == {"陈静", "余兰"}
    names = {r["display_name"] for r in rows_of(await export_text(db, query={"text": "zhang"}))}
    assert names == {"张伟", "Wei Zhang"}
    rows = rows_of(await export_text(db, query={"organization": "华夏"}))
    assert {r["display_name"] for r in rows} == {"张伟", "王芳"}
    zhang = await customer_named(db, "张伟")
    async with db.transaction() as session:
        await delete_customer(session, zhang.id, actor=ACTOR)
    names = {r["display_name"] for r in rows_of(await export_text(db))}
    assert "张伟" not in names and len(names) == 7
    rows = rows_of(await export_text(db, query={"include_deleted": True}))
    assert "张伟" in {r["display_name"] for r in rows}


async def test_export_in_gbk_replaces_what_gbk_cannot_hold(db: Database) -> None:
    async with db.transaction() as session:
        await create_customer(session, {"display_name": "张伟"}, actor=ACTOR, region=REGION)
        await create_customer(session, {"display_name": "Smile 😀"}, actor=ACTOR, region=REGION)
    sink = io.BytesIO()
    report = await export_customers(db, sink, region=REGION, headers="zh", encoding="gbk")
    assert (report.rows, report.lossy_rows) == (2, 1)
    data = sink.getvalue()
    assert not data.startswith(codecs.BOM_UTF8)
    rows = rows_of(data.decode("gbk"))
    assert [r["姓名"] for r in rows] == ["张伟", "Smile ?"]


async def wipe_customers(db: Database) -> None:
    async with db.transaction() as session:
        for model in (LifecycleTransition, CustomerTag, CustomerIdentity, Customer):
            await session.execute(delete(model))


@pytest.mark.parametrize("headers", ["en", "zh"])
async def test_export_then_import_round_trip(
    db: Database, tmp_path: Path, headers: str
) -> None:
    await seed_mixed(db)
    first = await export_text(db, headers=headers)
    path = tmp_path / f"export-{headers}.csv"
    path.write_bytes(first.encode("utf-8-sig"))
    await wipe_customers(db)

    report = await run_import(db, path)
    assert (report.imported, report.failed) == (8, 0)
    assert not [c for c in report.plan.columns if c.target == "attribute"]
    second = await export_text(db, headers=headers)

    def comparable(text: str) -> list[list[str]]:
        rows = list(csv.reader(io.StringIO(text)))
        return sorted(row[1:-1] for row in rows[1:])  # without id and created_at

    assert comparable(second) == comparable(first)
    yu = await customer_named(db, "余兰")
    assert yu.lifecycle_stage == LifecycleStage.ACTIVE
    assert yu.custom_attributes == {}


# --- command line ------------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """A migrated SQLite file named by DATABASE_URL, and no settings from the shell."""
    for name in list(os.environ):
        if name.upper().startswith("CC_") or name.upper() in {"DATABASE_URL", "REDIS_URL"}:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/cli.db"

    async def migrate() -> None:
        database = Database(url)
        try:
            await schema.upgrade(database.engine)
        finally:
            await database.dispose()

    asyncio.run(migrate())
    yield url
    structlog.reset_defaults()


def invoke(url: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["customers", *args], env={"DATABASE_URL": url})


def test_cli_import_and_export(cli_env: str, tmp_path: Path) -> None:
    errors_file = tmp_path / "errors.csv"
    result = invoke(cli_env, "import", str(FIXTURES / "row_errors.csv"), "--errors",
                    str(errors_file))
    assert result.exit_code == 0, result.output
    assert "name → display_name" in result.output
    # no tiers exist in this database, so "gold" (line 5) is refused too
    assert "rows read: 10, imported: 3, skipped: 0, failed: 7" in result.output
    assert "line 3: email 'not-an-email'" in result.output
    assert "the file was processed" in result.output
    with errors_file.open(encoding="utf-8-sig", newline="") as handle:
        reported = list(csv.DictReader(handle))
    assert [r["line"] for r in reported] == ["3", "4", "5", "6", "8", "9", "10"]
    assert reported[4] == {
        "line": "8", "column": "tier", "field": "tier_code", "value": "platinum",
        "reason": "no such tier", "customer_id": "",
    }

    again = invoke(cli_env, "import", str(FIXTURES / "row_errors.csv"), "--on-conflict", "skip")
    assert again.exit_code == 0, again.output
    assert "imported: 0, skipped: 4, failed: 6" in again.output

    mapped = invoke(cli_env, "import", str(FIXTURES / "en_contacts.csv"), "--map",
                    "Suburb=city,Favourite Colour=ignore")
    assert mapped.exit_code == 0, mapped.output
    assert "Suburb → city (--map)" in mapped.output
    assert "imported: 3" in mapped.output

    out = tmp_path / "out.csv"
    exported = invoke(cli_env, "export", str(out), "--headers", "zh")
    assert exported.exit_code == 0, exported.output
    assert "exported 6 customers" in exported.output
    data = out.read_bytes()
    assert data.startswith(codecs.BOM_UTF8)
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    assert len(rows) == 6
    john = next(r for r in rows if r["姓名"] == "John Smith")
    assert john["城市"] == "San Francisco"

    stdout = invoke(cli_env, "export", "-", "--tag", "retail", "--encoding", "utf-8")
    assert stdout.exit_code == 0, stdout.output
    lines = stdout.stdout.splitlines()
    assert lines[0].startswith("id,display_name")
    assert len(lines) == 2 and "Wei Zhang" in lines[1]


def test_cli_refuses_unreadable_files_with_a_clear_message(
    cli_env: str, tmp_path: Path
) -> None:
    missing = invoke(cli_env, "import", str(tmp_path / "nope.csv"))
    assert missing.exit_code != 0
    assert "no such file" in missing.output
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    result = invoke(cli_env, "import", str(empty))
    assert result.exit_code != 0
    assert "no header" in result.output
    bad_map = invoke(cli_env, "import", str(FIXTURES / "en_contacts.csv"), "--map", "x=nothing")
    assert bad_map.exit_code == 2
    assert "--map" in bad_map.output


async def test_imported_customers_are_found_by_the_fuzzy_matcher(
    db: Database, tmp_path: Path
) -> None:
    """The bulk import keeps the match keys that routing's identify step relies on."""
    from crm_core.identity import find_candidates

    path = write(tmp_path, "客户.csv", "姓名,手机,生日\n欧阳娜娜,13800000111,1990-03-04\n")
    await import_customers(db, path, actor="t", region="CN")
    async with db.sessions() as session:
        candidates = await find_candidates(session, name="欧阳娜那", birthday=None)
    assert candidates and candidates[0].score >= 75
