"""Header mapping, cell splitting, dates and encodings of the customer CSV import."""

from __future__ import annotations

import codecs
from datetime import date
from pathlib import Path

import pytest

from crm_core.errors import ValidationError
from crm_core.services.csv_columns import (
    ATTRIBUTE,
    EXPORT_COLUMNS,
    IGNORE,
    export_headers,
    map_columns,
    normalize_header,
    parse_mapping_option,
    resolve_target,
    split_list,
    split_phones,
    split_tags,
)
from crm_core.services.csv_import import (
    CsvFileError,
    RowConverter,
    detect_encoding,
    guess_delimiter,
    parse_birthday,
    preview_columns,
)


def targets(headers: list[str], overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Header → target of a mapping."""
    return {c.header: c.target for c in map_columns(headers, overrides)}


def test_normalize_header_ignores_case_spaces_and_punctuation() -> None:
    assert normalize_header(" E-Mail_Address ") == "emailaddress"
    assert normalize_header("Date of Birth") == "dateofbirth"
    assert normalize_header("客户 名称：") == "客户名称"
    assert normalize_header("ＰＨＯＮＥ") == "phone"  # full-width letters


def test_chinese_headers_map_to_customer_fields() -> None:
    mapping = targets(
        ["姓名", "手机号", "联系电话", "电子邮件", "公司名称", "地址", "城市", "省份", "邮编",
         "国家", "行业", "出生日期", "备注", "标签", "客户等级", "客户类别", "职位", "语言",
         "姓", "名", "性别"]
    )
    assert mapping == {
        "姓名": "display_name", "手机号": "phone", "联系电话": "phone", "电子邮件": "email",
        "公司名称": "organization_name", "地址": "street", "城市": "city",
        "省份": "province", "邮编": "postcode", "国家": "country", "行业": "industry",
        "出生日期": "birthday", "备注": "notes", "标签": "tags", "客户等级": "tier_code",
        "客户类别": "category_code", "职位": "job_title", "语言": "language",
        "姓": "family_name", "名": "given_name", "性别": ATTRIBUTE,
    }


@pytest.mark.parametrize(
    ("header", "target"),
    [
        ("Name", "display_name"), ("Full Name", "display_name"), ("first_name", "given_name"),
        ("Given Name", "given_name"), ("Last-Name", "family_name"), ("SURNAME", "family_name"),
        ("Family name", "family_name"), ("Phone", "phone"), ("Mobile", "phone"),
        ("Tel", "phone"), ("E-mail", "email"), ("EMAIL", "email"), ("Company", "organization_name"),
        ("Organization", "organization_name"), ("Street", "street"), ("Address", "street"),
        ("City", "city"), ("State", "province"), ("Province", "province"), ("ZIP", "postcode"),
        ("Postcode", "postcode"), ("Country", "country"), ("Industry", "industry"),
        ("Birthday", "birthday"), ("Date of Birth", "birthday"), ("Notes", "notes"),
        ("Tags", "tags"), ("Tier", "tier_code"), ("Category", "category_code"),
        ("Title", "job_title"), ("Job Title", "job_title"), ("Language", "language"),
        ("display_name", "display_name"), ("lifetime value", "lifetime_value"),
        ("等级", "tier_code"), ("分类", "category_code"), ("电话", "phone"),
        ("手机", "phone"), ("邮箱", "email"), ("单位", "organization_name"),
        ("生日", "birthday"), ("名字", "display_name"), ("客户名称", "display_name"),
    ],
)
def test_english_and_chinese_aliases(header: str, target: str) -> None:
    assert targets([header]) == {header: target}


def test_unknown_columns_become_custom_attributes() -> None:
    columns = map_columns(["Name", "WeChat", "Favourite colour", ""])
    assert [c.target for c in columns] == ["display_name", ATTRIBUTE, ATTRIBUTE, IGNORE]
    assert columns[1].describe() == 'WeChat → custom attribute "WeChat"'


def test_second_column_of_a_single_field_is_kept_as_an_attribute() -> None:
    mapping = targets(["Name", "姓名", "Phone", "Mobile"])
    assert mapping == {"Name": "display_name", "姓名": ATTRIBUTE, "Phone": "phone",
                       "Mobile": "phone"}


def test_map_option_overrides_the_automatic_mapping() -> None:
    overrides = parse_mapping_option("surname=family_name, suburb=city,Company=ignore")
    assert overrides == {"surname": "family_name", "suburb": "city", "Company": IGNORE}
    mapping = targets(["First name", "Surname", "Suburb", "Company", "Name"], overrides)
    assert mapping == {"First name": "given_name", "Surname": "family_name", "Suburb": "city",
                       "Company": IGNORE, "Name": "display_name"}
    explicit = map_columns(["Suburb"], {"suburb": "city"})[0]
    assert explicit.explicit and explicit.target == "city"


def test_map_option_accepts_aliases_and_attribute() -> None:
    assert parse_mapping_option("Kontakt=name,Handy=手机,Gender=attribute") == {
        "Kontakt": "display_name", "Handy": "phone", "Gender": ATTRIBUTE,
    }
    assert targets(["Phone"], {"phone": "attribute"}) == {"Phone": ATTRIBUTE}


def test_map_option_rejects_unknown_fields_and_headers() -> None:
    with pytest.raises(ValidationError) as excinfo:
        parse_mapping_option("suburb=suburbia")
    assert excinfo.value.field == "map"
    with pytest.raises(ValidationError):
        parse_mapping_option("no-equals-sign")
    with pytest.raises(ValidationError) as excinfo:
        map_columns(["Name", "City"], {"Suburb": "city"})
    assert "Suburb" in str(excinfo.value)
    with pytest.raises(ValidationError):
        resolve_target("")


def test_cells_split_into_several_values() -> None:
    assert split_list("a@x.cn; b@x.cn，c@x.cn；d@x.cn、e@x.cn,") == [
        "a@x.cn", "b@x.cn", "c@x.cn", "d@x.cn", "e@x.cn",
    ]
    assert split_phones("138 0013 8000 / 010-6234 5678；+86 139") == [
        "138 0013 8000", "010-6234 5678", "+86 139",
    ]
    assert split_tags("VIP | 老客户、重要;  ,wholesale") == ["VIP", "老客户", "重要", "wholesale"]


@pytest.mark.parametrize(
    "text", ["1985-03-12", "1985/3/12", "1985.03.12", "1985年3月12日", "1985年03月12日",
             "1985-03-12 00:00:00"],
)
def test_birthday_formats(text: str) -> None:
    assert parse_birthday(text) == date(1985, 3, 12)


@pytest.mark.parametrize("text", ["12/03/1985", "1985-13-01", "1985-02-30", "next week", "1985"])
def test_bad_birthdays_are_validation_errors(text: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        parse_birthday(text)
    assert excinfo.value.field == "birthday"


def test_export_headers_map_back_to_fields() -> None:
    for language in ("en", "zh"):
        mapping = [c.target for c in map_columns(export_headers(language))]
        assert mapping == [
            IGNORE, "display_name", "given_name", "family_name", "organization_name", "email",
            "phone", "tags", "tier_code", "category_code", "lifecycle_stage", "city",
            "province", "country", "postcode", "street", "birthday", "language", IGNORE,
        ]
    assert len(export_headers("zh")) == len(EXPORT_COLUMNS)
    with pytest.raises(ValidationError):
        export_headers("fr")


def test_guess_delimiter() -> None:
    assert guess_delimiter("name,phone,email\r\n") == ","
    assert guess_delimiter("name\tphone\temail\n") == "\t"
    assert guess_delimiter("name;phone;email\n") == ";"
    assert guess_delimiter("name\n") == ","


def test_detect_encoding_streams_utf8_bom_and_gbk(tmp_path: Path) -> None:
    text = "姓名,手机\n张伟,13800138000\n"
    plain, bom, gbk = tmp_path / "plain.csv", tmp_path / "bom.csv", tmp_path / "gbk.csv"
    plain.write_bytes(text.encode("utf-8"))
    bom.write_bytes(codecs.BOM_UTF8 + text.encode("utf-8"))
    gbk.write_bytes(text.encode("gbk"))
    assert detect_encoding(plain) == "utf-8"
    assert detect_encoding(bom) == "utf-8-sig"
    assert detect_encoding(gbk) == "gb18030"
    assert detect_encoding(gbk, "gbk") == "gbk"
    with pytest.raises(CsvFileError, match="not valid utf-8"):
        detect_encoding(gbk, "utf-8")
    with pytest.raises(CsvFileError, match="unknown encoding"):
        detect_encoding(plain, "klingon")


def test_utf8_error_far_into_a_file_is_found(tmp_path: Path) -> None:
    # Past the first chunk of the pre-pass, and a multi-byte character split across chunks.
    body = ("名" * 700_000 + "\n").encode("utf-8") + "张伟\n".encode("gbk")
    path = tmp_path / "late.csv"
    path.write_bytes(body)
    assert detect_encoding(path) == "gb18030"


def test_preview_reports_mapping_and_refuses_files_without_a_name(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text("Full Name;Mobile;WeChat\nAda;13800138000;ada\n", encoding="utf-8")
    plan = preview_columns(good)
    assert plan.delimiter == ";"
    assert [c.target for c in plan.columns] == ["display_name", "phone", ATTRIBUTE]
    nameless = tmp_path / "nameless.csv"
    nameless.write_text("Mobile,Email\n13800138000,a@example.com\n", encoding="utf-8")
    with pytest.raises(CsvFileError, match="holds a name"):
        preview_columns(nameless)
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(CsvFileError, match="no header"):
        preview_columns(empty)
    with pytest.raises(CsvFileError, match="no such file"):
        preview_columns(tmp_path / "missing.csv")


def test_row_converter_builds_fields_and_attributes() -> None:
    columns = map_columns(["姓名", "手机", "邮箱", "标签", "等级", "性别", "生日", "编号"])
    converter = RowConverter(
        columns, region="CN", source="import:x.csv", tiers={"gold": "gold", "金卡": "gold"},
        categories={},
    )
    fields = converter.fields_of(
        ["张伟", "13800138000；13900139000", "a@example.com", "VIP、老客户", "金卡", "男",
         "1985年3月12日", "17"]
    )
    assert fields == {
        "source": "import:x.csv", "display_name": "张伟",
        "phones": ["13800138000", "13900139000"], "emails": ["a@example.com"],
        "tags": ["VIP", "老客户"], "tier_code": "gold", "birthday": date(1985, 3, 12),
        "custom_attributes": {"性别": "男"},
    }
    with pytest.raises(ValidationError) as excinfo:
        converter.fields_of(["张伟", "", "", "", "platinum", "", "", ""])
    assert (excinfo.value.field, excinfo.value.reason) == ("tier_code", "no such tier")
    error = converter.error(7, excinfo.value)
    assert (error.line, error.column, error.value) == (7, "等级", "platinum")
    with pytest.raises(ValidationError) as excinfo:
        converter.fields_of(["张伟", "", "", "", "", "", "", "", "surplus"])
    assert excinfo.value.field == "row"
    good, bad = converter.validate(
        [(2, ["张伟", "138 0013 8000", "", "", "", "", "", ""]),
         (3, ["李娜", "12345", "", "", "", "", "", ""])]
    )
    assert [p.line for p in good] == [2]
    assert good[0].identities[0][1] == "+8613800138000"
    assert good[0].row["name_key"] == "张伟 | zhang wei | zhangwei"
    assert [(e.line, e.field, e.column) for e in bad] == [(3, "phone", "手机")]
