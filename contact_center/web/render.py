"""Server-rendered console pages: Jinja2 with autoescaping, the agent's language, CSRF."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, select_autoescape

from contact_center.web.i18n import LANGUAGE_NAMES, translator

TEMPLATES = Path(__file__).resolve().parent / "templates"


@cache
def environment() -> Environment:
    """The template environment (autoescaped: user data is never markup)."""
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(enabled_extensions=("html",), default=True),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def page(request: web.Request, template: str, *, status: int = 200, **values: Any,
         ) -> web.Response:
    """Render ``template`` for this request (agent, language, CSRF token come along)."""
    from contact_center.web.auth import CONTEXT_KEY, RequestContext

    context: RequestContext | None = request.get(CONTEXT_KEY)
    language = context.language if context else request.get("language", "zh-CN")
    gettext = translator(language)
    body = environment().get_template(template).render(
        request=request,
        agent=context.agent if context else None,
        csrf_token=context.csrf_token if context else "",
        language=language,
        language_names=LANGUAGE_NAMES,
        _=gettext,
        gettext=gettext,
        **values,
    )
    response = web.Response(text=body, content_type="text/html", status=status)
    response.headers["Cache-Control"] = "no-store"
    return response
