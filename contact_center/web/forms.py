"""What the agent screens' forms share: refusals, answers for plain and script-sent forms,
and the audit actor of console changes."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from contact_center.web.auth import PREFIX, context
from contact_center.web.render import page
from crm_core.models import Agent


class FormProblem(Exception):
    """A form that cannot be accepted; the message is already translated."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def actor_of(agent: Agent) -> str:
    """How console changes name their author in the audit log."""
    return f"agent:{agent.login}"


def parse_int(value: object) -> int | None:
    """An id from a form or URL (``None`` for empty or malformed)."""
    try:
        return int(str(value)) if value not in (None, "") else None
    except ValueError:
        return None


def is_ajax(request: web.Request) -> bool:
    """A form sent by agent.js (``X-Requested-With: fetch``) gets JSON, not a redirect."""
    return request.headers.get("X-Requested-With") == "fetch"


def safe_next(value: object, default: str) -> str:
    """A console path to go back to (never another site)."""
    target = str(value or "")
    if target.startswith(f"{PREFIX}/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


def with_notice(path: str, notice: str) -> str:
    """``path`` with ``notice=…`` added to its query (the short confirmation a page shows)."""
    return f"{path}{'&' if '?' in path else '?'}notice={notice}"


def done(request: web.Request, target: str, **data: Any) -> web.StreamResponse:
    """Success: JSON for agent.js, else a redirect (303) back to ``target``."""
    if is_ajax(request):
        return web.json_response({"ok": True, **data})
    raise web.HTTPSeeOther(target)


def problem(request: web.Request, refusal: FormProblem) -> web.StreamResponse:
    """A refused form: JSON for agent.js, else the error page, with the reason."""
    if is_ajax(request):
        return web.json_response({"error": str(refusal)}, status=refusal.status)
    ctx = context(request)
    return page(request, "error.html", status=refusal.status,
                title=ctx.gettext("That did not work"), message=str(refusal))
