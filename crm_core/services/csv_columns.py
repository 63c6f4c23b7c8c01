"""Which customer field each column of a CSV file holds, from its header in English or Chinese.

Headers are compared after normalization (case, spaces, underscores, hyphens and
punctuation ignored), so ``E-mail``, ``email`` and ``E_MAIL`` are one header. A column
whose header is unknown keeps its values as a custom attribute named by the header.
An explicit mapping (``surname=family_name,suburb=city``) overrides the automatic one.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from crm_core.errors import ValidationError

ATTRIBUTE: Final = "attribute"
"""Target of a column kept in ``custom_attributes`` under its header."""
IGNORE: Final = "ignore"
"""Target of a column that is read past (e.g. the ``id`` of an export)."""

SINGLE_FIELDS: Final = (
    "display_name", "given_name", "family_name", "organization_name", "job_title", "industry",
    "street", "city", "postcode", "province", "country", "language", "timezone", "birthday",
    "tier_code", "category_code", "lifecycle_stage", "notes", "lifetime_value",
)
"""Targets that take one value per row (``CustomerFields`` names)."""
MULTI_FIELDS: Final = ("email", "phone", "tags")
"""Targets whose cells may hold several values; several columns may map to each."""
TARGETS: Final = frozenset((*SINGLE_FIELDS, *MULTI_FIELDS))
NAME_FIELDS: Final = frozenset({"display_name", "given_name", "family_name"})

_ALIASES: dict[str, tuple[str, ...]] = {
    "display_name": (
        "name", "full name", "fullname", "display name", "customer name", "customer",
        "contact", "contact name", "client name", "姓名", "客户名称", "客户姓名", "名字",
        "名称", "客户", "联系人", "联系人姓名", "全名",
    ),
    "given_name": ("first name", "given name", "forename", "名"),
    "family_name": ("last name", "family name", "surname", "姓", "姓氏"),
    "organization_name": (
        "company", "company name", "organization", "organisation", "organization name",
        "org", "employer", "account", "account name", "公司", "单位", "公司名称",
        "单位名称", "企业", "企业名称", "所属公司", "工作单位",
    ),
    "job_title": ("title", "job title", "position", "role", "职位", "职务", "头衔", "岗位"),
    "industry": ("industry", "sector", "行业", "所属行业"),
    "street": (
        "address", "street", "street address", "address line", "address 1", "address line 1",
        "地址", "详细地址", "联系地址", "街道", "通讯地址",
    ),
    "city": ("city", "town", "城市", "所在城市", "市"),
    "postcode": (
        "zip", "zip code", "zipcode", "postcode", "post code", "postal code", "邮编", "邮政编码",
    ),
    "province": ("state", "province", "region", "county", "省份", "省", "所在省份", "省市"),
    "country": ("country", "country code", "nation", "国家", "国家地区", "国籍"),
    "language": ("language", "lang", "locale", "语言", "首选语言"),
    "timezone": ("timezone", "time zone", "tz", "时区"),
    "birthday": (
        "birthday", "birth date", "date of birth", "dob", "birthdate", "生日", "出生日期",
        "出生年月日",
    ),
    "tier_code": (
        "tier", "tier code", "level", "customer tier", "vip level", "等级", "客户等级",
        "级别", "会员等级", "客户级别",
    ),
    "category_code": (
        "category", "category code", "customer category", "type", "customer type", "分类",
        "客户类别", "类别", "客户分类", "客户类型",
    ),
    "lifecycle_stage": ("lifecycle", "lifecycle stage", "stage", "生命周期", "客户阶段", "阶段"),
    "notes": ("notes", "note", "remarks", "remark", "comments", "comment", "备注", "说明"),
    "lifetime_value": (
        "lifetime value", "ltv", "customer value", "客户价值", "累计消费", "消费总额",
    ),
    "email": (
        "email", "emails", "e-mail", "e-mails", "email address", "e-mail address", "mail",
        "邮箱", "电子邮件", "电子邮箱", "邮件", "邮箱地址", "email地址",
    ),
    "phone": (
        "phone", "phones", "mobile", "mobile phone", "mobile number", "cell", "cellphone",
        "cell phone", "tel", "telephone", "phone number", "telephone number", "电话",
        "手机", "手机号", "手机号码", "联系电话", "电话号码", "移动电话", "座机",
    ),
    "tags": ("tags", "tag", "labels", "label", "标签", "客户标签"),
    IGNORE: (
        "id", "customer id", "编号", "客户编号", "created at", "created", "创建时间",
        "录入时间",
    ),
}

_SPLIT_LIST = re.compile(r"[;,，；、]")
_SPLIT_PHONES = re.compile(r"[;,，；、/／]")
_SPLIT_TAGS = re.compile(r"[;,，；、|｜]")


def normalize_header(text: str) -> str:
    """A header reduced for comparison: NFKC, case-folded, without spaces or punctuation.

    ``E-Mail Address`` gives ``emailaddress``; ``客户 名称：`` gives ``客户名称``.
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in folded if unicodedata.category(ch)[0] in "LN")


HEADER_ALIASES: Final[Mapping[str, str]] = {
    **{normalize_header(name): name for name in TARGETS},
    **{
        normalize_header(alias): target
        for target, aliases in _ALIASES.items()
        for alias in aliases
    },
}
"""Normalized header → target field (or ``ignore``)."""


@dataclass(frozen=True)
class ColumnMapping:
    """Where one column of the file goes."""

    index: int
    header: str
    target: str
    """A field name, ``attribute`` (custom attribute named by the header) or ``ignore``."""
    explicit: bool = False
    """Whether the mapping came from the user rather than the header."""

    def describe(self) -> str:
        """``手机 → phone``, ``性别 → custom attribute "性别"``, ``id → ignored``."""
        if self.target == ATTRIBUTE:
            where = f'custom attribute "{self.header}"'
        elif self.target == IGNORE:
            where = "ignored"
        else:
            where = self.target
        return f"{self.header or f'(column {self.index + 1})'} → {where}"


def resolve_target(text: str) -> str:
    """A target named by a user: a field name, a header alias, ``attribute`` or ``ignore``."""
    cleaned = text.strip()
    if cleaned in TARGETS or cleaned in (ATTRIBUTE, IGNORE):
        return cleaned
    key = normalize_header(cleaned)
    if key in {"attribute", "attr", "custom", "customattribute", "customattributes"}:
        return ATTRIBUTE
    if key in {"ignore", "skip", "none"} or cleaned == "-":
        return IGNORE
    target = HEADER_ALIASES.get(key)
    if target is None:
        raise ValidationError(
            "map", text, "not a customer field (" + ", ".join(sorted(TARGETS)) + ")"
        )
    return target


def parse_mapping_option(text: str | None) -> dict[str, str]:
    """Parse ``"surname=family_name,suburb=city"`` into header → target (targets checked)."""
    result: dict[str, str] = {}
    if not text:
        return result
    for item in text.split(","):
        if not item.strip():
            continue
        header, sep, target = item.rpartition("=")
        if not sep or not header.strip():
            raise ValidationError("map", item, "expected header=field")
        result[header.strip()] = resolve_target(target)
    return result


def map_columns(
    headers: Sequence[str], overrides: Mapping[str, str] | None = None
) -> list[ColumnMapping]:
    """The target of each column: the override if one names it, else its header's alias.

    A second column for a single-valued field becomes a custom attribute; several
    columns may feed ``email``, ``phone`` and ``tags``. An override naming no header
    of the file is an error, so a typo does not pass unnoticed.
    """
    wanted = {normalize_header(k): resolve_target(v) for k, v in (overrides or {}).items()}
    exact = {k.strip(): resolve_target(v) for k, v in (overrides or {}).items()}
    used_overrides: set[str] = set()
    taken: set[str] = set()
    mapping: list[ColumnMapping] = []
    for index, raw in enumerate(headers):
        header = raw.strip().lstrip("\ufeff").strip()
        key = normalize_header(header)
        explicit = True
        if header in exact:
            target = exact[header]
            used_overrides.add(key)
        elif key and key in wanted:
            target = wanted[key]
            used_overrides.add(key)
        else:
            explicit = False
            target = HEADER_ALIASES.get(key, ATTRIBUTE) if key else IGNORE
        if target in SINGLE_FIELDS and target in taken:
            target = ATTRIBUTE
        if target in TARGETS:
            taken.add(target)
        mapping.append(ColumnMapping(index, header, target, explicit))
    unknown = [k for k in (overrides or {}) if normalize_header(k) not in used_overrides]
    if unknown:
        raise ValidationError(
            "map", ", ".join(unknown), "no column of the file has this header"
        )
    return mapping


def split_list(value: str) -> list[str]:
    """E-mail addresses of one cell: split on ``;`` ``,`` ``，`` ``；`` ``、``."""
    return [part.strip() for part in _SPLIT_LIST.split(value) if part.strip()]


def split_phones(value: str) -> list[str]:
    """Phone numbers of one cell: split like e-mails, and on ``/`` too."""
    return [part.strip() for part in _SPLIT_PHONES.split(value) if part.strip()]


def split_tags(value: str) -> list[str]:
    """Tags of one cell: split on ``;`` ``,`` ``，`` ``；`` ``、`` ``|``."""
    return [part.strip() for part in _SPLIT_TAGS.split(value) if part.strip()]


EXPORT_COLUMNS: Final = (
    "id", "display_name", "given_name", "family_name", "organization", "emails", "phones",
    "tags", "tier", "category", "lifecycle", "city", "province", "country", "postcode",
    "street", "birthday", "language", "created_at",
)
"""The columns of an export, in order, by their English header."""
EXPORT_HEADERS_ZH: Final[Mapping[str, str]] = {
    "id": "编号", "display_name": "姓名", "given_name": "名", "family_name": "姓",
    "organization": "公司", "emails": "邮箱", "phones": "电话", "tags": "标签",
    "tier": "等级", "category": "分类", "lifecycle": "生命周期", "city": "城市",
    "province": "省份", "country": "国家", "postcode": "邮编", "street": "地址",
    "birthday": "生日", "language": "语言", "created_at": "创建时间",
}
"""Chinese headers of an export; each maps back to its field on import."""


def export_headers(language: str) -> list[str]:
    """The header row of an export in ``en`` or ``zh``."""
    if language == "zh":
        return [EXPORT_HEADERS_ZH[c] for c in EXPORT_COLUMNS]
    if language == "en":
        return list(EXPORT_COLUMNS)
    raise ValidationError("headers", language, "expected en or zh")
