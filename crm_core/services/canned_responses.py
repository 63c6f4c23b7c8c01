"""Canned responses: reusable replies per language, with ``{{customer.name}}`` variables.

An agent types ``/shortcut`` in the reply box to insert one; the variables are filled
from the conversation (:func:`render`). A shortcut is unique per language, so ``/hello``
can exist once in Chinese and once in English. Every change is audited (entity type
``canned_response``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.errors import NotFoundError, ValidationError
from crm_core.models import CannedResponse, utcnow
from crm_core.services import audit

ENTITY = "canned_response"
LANGUAGES: tuple[str, ...] = ("zh-CN", "en")
VARIABLES: tuple[str, ...] = (
    "customer.name", "customer.given_name", "customer.family_name", "customer.email",
    "customer.phone", "agent.name", "ticket.number", "ticket.subject",
)
"""The variables a body may use, written ``{{customer.name}}``."""
MAX_BODY = 10_000
_SHORTCUT = re.compile(r"^[\w-]{1,50}$")
_VARIABLE = re.compile(r"{{\s*([^{}]*?)\s*}}")


def check_shortcut(value: str) -> str:
    """A shortcut without the leading slash: letters (any script), digits, ``_`` and ``-``."""
    cleaned = (value or "").strip().removeprefix("/")
    if not _SHORTCUT.match(cleaned):
        raise ValidationError("shortcut", value,
                              "1 to 50 letters, digits, _ or -, without spaces")
    return cleaned


def check_language(value: str) -> str:
    """``zh-CN`` or ``en``."""
    if value not in LANGUAGES:
        raise ValidationError("language", value, "expected zh-CN or en")
    return value


def check_body(value: str) -> str:
    """A body of at most ``MAX_BODY`` characters using only known variables."""
    body = (value or "").replace("\r\n", "\n").strip()
    if not body:
        raise ValidationError("body", value, "a canned response needs a text")
    if len(body) > MAX_BODY:
        raise ValidationError("body", value[:50], f"longer than {MAX_BODY} characters")
    for name in _VARIABLE.findall(body):
        if name not in VARIABLES:
            raise ValidationError("body", f"{{{{{name}}}}}",
                                  "unknown variable; use one of " + ", ".join(VARIABLES))
    return body


def _check_title(value: str) -> str:
    title = (value or "").strip()
    if not title or len(title) > 200:
        raise ValidationError("title", value, "1 to 200 characters")
    return title


def variables_in(body: str) -> list[str]:
    """The variables a body uses, in order of first use."""
    seen: list[str] = []
    for name in _VARIABLE.findall(body):
        if name not in seen:
            seen.append(name)
    return seen


def render(body: str, values: Mapping[str, Any]) -> str:
    """Fill ``{{name}}`` variables from ``values`` (missing ones render empty)."""
    return _VARIABLE.sub(lambda m: "" if values.get(m.group(1)) is None
                         else str(values[m.group(1)]), body)


def _snapshot(row: CannedResponse) -> dict[str, Any]:
    return {"shortcut": row.shortcut, "language": row.language, "title": row.title,
            "body": row.body}


async def _taken(session: AsyncSession, shortcut: str, language: str, own_id: int | None) -> None:
    found = await session.scalar(select(CannedResponse.id).where(
        CannedResponse.shortcut == shortcut, CannedResponse.language == language))
    if found is not None and found != own_id:
        raise ValidationError("shortcut", shortcut,
                              f"already used by another {language} canned response")


async def list_canned_responses(
    session: AsyncSession, *, language: str | None = None, text: str | None = None
) -> list[CannedResponse]:
    """Canned responses by shortcut, optionally of one language or containing ``text``."""
    stmt = select(CannedResponse).order_by(CannedResponse.shortcut, CannedResponse.language)
    if language:
        stmt = stmt.where(CannedResponse.language == language)
    if text:
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        stmt = stmt.where(or_(*(column.like(pattern, escape="\\") for column in (
            CannedResponse.shortcut, CannedResponse.title, CannedResponse.body))))
    return list(await session.scalars(stmt))


async def get_canned_response(session: AsyncSession, response_id: int) -> CannedResponse:
    """One canned response; NotFoundError otherwise."""
    row = await session.get(CannedResponse, response_id)
    if row is None:
        raise NotFoundError("canned response", response_id)
    return row


async def create_canned_response(
    session: AsyncSession, *, shortcut: str, language: str, title: str, body: str, actor: str
) -> CannedResponse:
    """Add a canned response (the shortcut must be free in its language)."""
    row = CannedResponse(shortcut=check_shortcut(shortcut), language=check_language(language),
                         title=_check_title(title), body=check_body(body))
    await _taken(session, row.shortcut, row.language, None)
    session.add(row)
    await session.flush()
    audit.record(session, actor=actor, action="create", entity_type=ENTITY, entity_id=row.id,
                 after=_snapshot(row))
    return row


async def update_canned_response(
    session: AsyncSession, response_id: int, *, shortcut: str, language: str, title: str,
    body: str, actor: str,
) -> CannedResponse:
    """Change a canned response; audited with the changed values."""
    row = await get_canned_response(session, response_id)
    before = _snapshot(row)
    new_shortcut, new_language = check_shortcut(shortcut), check_language(language)
    new_title, new_body = _check_title(title), check_body(body)
    await _taken(session, new_shortcut, new_language, row.id)
    row.shortcut, row.language, row.title, row.body = (
        new_shortcut, new_language, new_title, new_body)
    old, new = audit.diff(before, _snapshot(row))
    if new:
        row.updated_at = utcnow()
        await session.flush()
        audit.record(session, actor=actor, action="update", entity_type=ENTITY,
                     entity_id=row.id, before=old, after=new)
    return row


async def delete_canned_response(session: AsyncSession, response_id: int, *, actor: str) -> None:
    """Remove a canned response."""
    row = await get_canned_response(session, response_id)
    before = _snapshot(row)
    await session.delete(row)
    await session.flush()
    audit.record(session, actor=actor, action="delete", entity_type=ENTITY,
                 entity_id=response_id, before=before)
