"""Customer-facing campaign links: unsubscribe, the feedback page, tracked redirects.

No login: each link carries a signed token (``contact_center.campaign_links``). A token
that was altered or made for another purpose gets HTTP 400 with a JSON error; a survey
link past its window gets a page saying the survey is closed.

``GET /unsubscribe/{token}`` asks for confirmation (mail scanners open links; a GET
changes nothing); ``POST`` stops automated messages on that channel, or everywhere when
the customer ticks the box (do-not-contact). A ``List-Unsubscribe=One-Click`` POST
(RFC 8058) works as well.

``GET /feedback/{token}`` shows the scale (1–5 or 0–10; ``?score=N`` preselects the
score the customer clicked in the e-mail); ``POST`` records the score and an optional
comment. A comment classified as a complaint is published on the bus as an inbound
message, so routing opens a high-priority complaint ticket for it.

``GET /r/{token}`` counts a click on a tracked link and redirects (http/https only).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import structlog
from aiohttp import web
from jinja2 import DictLoader, Environment, select_autoescape
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from contact_center.campaign_links import FEEDBACK, REDIRECT, UNSUBSCRIBE, BadToken, safe_target
from contact_center.campaign_links import verify as verify_token
from contact_center.settings import Settings
from crm_core.db import Database
from crm_core.errors import CrmError
from crm_core.models import (
    Campaign,
    CampaignSend,
    Channel,
    Customer,
    FeedbackResponse,
    IdentityKind,
    Ticket,
    utcnow,
)
from crm_core.services import campaigns as campaign_service
from crm_core.services import feedback as feedback_service
from crm_core.services.campaign_config import SURVEY_KINDS, FeedbackSpec
from routing.envelope import InboundMessage, SenderHandles, ThreadHints

log = structlog.get_logger(__name__)

Publish = Callable[[InboundMessage], Awaitable[bool]]
LINKS = web.AppKey("campaign_links_state", dict)
CSP = ("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
MAX_COMMENT = 2000

TEXTS: dict[str, dict[str, str]] = {
    "zh": {
        "unsubscribe_title": "退订", "unsubscribe_question":
            "确定不再通过{channel}接收我们的自动消息（关怀、提醒、调查）吗？",
        "unsubscribe_all": "同时停止通过所有渠道联系我", "unsubscribe_button": "确认退订",
        "unsubscribed": "已为您退订。您不会再通过{channel}收到我们的自动消息。",
        "unsubscribed_all": "已为您退订。我们不会再主动联系您。",
        "feedback_title": "满意度评价", "csat_question": "您对本次服务满意吗？",
        "csat_low": "1 = 非常不满意", "csat_high": "5 = 非常满意",
        "nps_question": "您有多大可能把我们推荐给朋友或同事？",
        "nps_low": "0 = 完全不可能", "nps_high": "10 = 非常可能",
        "comment": "您的意见（选填）", "submit": "提交", "ticket": "工单 {number}",
        "thanks": "感谢您的评价！", "thanks_complaint":
            "感谢您的反馈。我们已为您创建工单，专人会尽快与您联系。",
        "answered": "您已评分：{score}。可以重新选择后再次提交。",
        "closed": "此调查已结束，感谢您的关注。", "choose": "请选择一个分数。",
        "email": "邮件", "telegram": "Telegram", "webchat": "在线客服", "phone": "电话",
        "complaint_subject": "满意度反馈：投诉", "complaint_about": "关于工单 {number} 的反馈",
    },
    "en": {
        "unsubscribe_title": "Unsubscribe", "unsubscribe_question":
            "Stop our automated messages (care, reminders, surveys) by {channel}?",
        "unsubscribe_all": "Also stop contacting me on every channel",
        "unsubscribe_button": "Unsubscribe",
        "unsubscribed": "Done. You will get no more automated messages from us by {channel}.",
        "unsubscribed_all": "Done. We will not contact you again.",
        "feedback_title": "Your feedback",
        "csat_question": "How satisfied are you with our service?",
        "csat_low": "1 = very dissatisfied", "csat_high": "5 = very satisfied",
        "nps_question": "How likely are you to recommend us to a friend or colleague?",
        "nps_low": "0 = not at all likely", "nps_high": "10 = extremely likely",
        "comment": "Anything you would like to tell us? (optional)", "submit": "Send",
        "ticket": "Ticket {number}", "thanks": "Thank you for your feedback!",
        "thanks_complaint": "Thank you for telling us. We opened a ticket and will get back to "
                            "you soon.",
        "answered": "Your score: {score}. You can change it and send again.",
        "closed": "This survey is closed. Thank you.", "choose": "Please choose a score.",
        "email": "e-mail", "telegram": "Telegram", "webchat": "web chat", "phone": "phone",
        "complaint_subject": "Feedback: complaint",
        "complaint_about": "Feedback on ticket {number}",
    },
}

_PAGES = {
    "base.html": """<!doctype html>
<html lang="{{ lang }}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{{ title }}</title>
<style>body{font-family:system-ui,"PingFang SC","Microsoft YaHei","WenQuanYi Micro Hei",sans-serif;
max-width:36rem;margin:2rem auto;padding:0 1rem;color:#222;line-height:1.6}
.scale{display:flex;flex-wrap:wrap;gap:.4rem;margin:1rem 0}.scale label{border:1px solid #999;
border-radius:.4rem;padding:.4rem .8rem;cursor:pointer}.scale input{margin-right:.3rem}
textarea{width:100%;min-height:6rem}button{font-size:1rem;padding:.5rem 1.2rem}
.small{color:#666;font-size:.9rem}.error{color:#b00}</style></head>
<body><main>{% block body %}{% endblock %}</main></body></html>""",
    "unsubscribe.html": """{% extends "base.html" %}{% block body %}
<h1>{{ t.unsubscribe_title }}</h1>
{% if done %}<p role="status">{{ done }}</p>{% else %}
<form method="post">
<p>{{ question }}</p>
<p><label><input type="checkbox" name="all" value="1"> {{ t.unsubscribe_all }}</label></p>
<button type="submit">{{ t.unsubscribe_button }}</button>
</form>{% endif %}{% endblock %}""",
    "feedback.html": """{% extends "base.html" %}{% block body %}
<h1>{{ t.feedback_title }}</h1>
{% if ticket_number %}<p class="small">{{ ticket_number }}</p>{% endif %}
{% if done %}<p role="status">{{ done }}</p>{% elif closed %}<p>{{ t.closed }}</p>{% else %}
{% if answered is not none %}<p class="small">{{ answered }}</p>{% endif %}
{% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
<form method="post">
<p>{{ question }}</p>
<div class="scale" role="radiogroup">{% for n in scale %}
<label><input type="radio" name="score" value="{{ n }}"
{%- if n == selected %} checked{% endif %}>{{ n }}</label>
{% endfor %}</div>
<p class="small">{{ low }} · {{ high }}</p>
<p><label>{{ t.comment }}<br>
<textarea name="comment" maxlength="2000">{{ comment }}</textarea></label></p>
<button type="submit">{{ t.submit }}</button>
</form>{% endif %}{% endblock %}""",
}


def _environment() -> Environment:
    return Environment(loader=DictLoader(_PAGES), autoescape=select_autoescape(default=True))


_ENV = _environment()


def _texts(language: str | None) -> dict[str, str]:
    return TEXTS["zh" if (language or "zh").lower().startswith("zh") else "en"]


def _language(request: web.Request, customer: Customer | None, default: str) -> str:
    if customer is not None and customer.language:
        return customer.language
    header = request.headers.get("Accept-Language", "")
    first = header.split(",")[0].strip().lower()
    if first.startswith("en"):
        return "en"
    if first.startswith("zh"):
        return "zh-CN"
    return default


def _page(name: str, *, status: int = 200, **values: Any) -> web.Response:
    body = _ENV.get_template(name).render(**values)
    response = web.Response(text=body, content_type="text/html", status=status)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _bad_link(reason: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": f"invalid link: {reason}"}),
                              content_type="application/json")


def _state(request: web.Request) -> dict[str, Any]:
    return request.app[LINKS]


def _payload(request: web.Request, purpose: str, *, check_expiry: bool = False,
             ) -> dict[str, Any]:
    state = _state(request)
    try:
        payload = verify_token(state["secret"], purpose, request.match_info["token"],
                               now=state["now"]() if check_expiry else None)
    except BadToken as exc:
        if exc.expired:
            raise
        log.warning("campaign_link.refused", purpose=purpose, reason=str(exc))
        raise _bad_link(str(exc)) from None
    if not isinstance(payload.get("c", 0), int) or not isinstance(payload.get("s", 0), int):
        raise _bad_link("malformed token")
    return payload


# --- unsubscribe ------------------------------------------------------------------------------


async def unsubscribe_page(request: web.Request) -> web.StreamResponse:
    """Ask for confirmation (nothing changes on GET)."""
    payload = _payload(request, UNSUBSCRIBE)
    state = _state(request)
    async with state["database"].sessions() as session:
        customer = await session.get(Customer, payload["c"])
    language = _language(request, customer, state["language"])
    t = _texts(language)
    channel = t.get(str(payload.get("ch")), str(payload.get("ch")))
    return _page("unsubscribe.html", lang=language, title=t["unsubscribe_title"], t=t,
                 question=t["unsubscribe_question"].format(channel=channel), done=None)


async def unsubscribe(request: web.Request) -> web.StreamResponse:
    """Stop automated messages on the link's channel (or everywhere)."""
    payload = _payload(request, UNSUBSCRIBE)
    state = _state(request)
    form = await request.post()
    everything = form.get("all") == "1"
    try:
        channel = Channel(str(payload.get("ch")))
    except ValueError:
        raise _bad_link("unknown channel") from None
    now = state["now"]()
    async with state["database"].transaction() as session:
        customer = await session.get(Customer, payload["c"])
        if customer is None:
            raise web.HTTPNotFound(text='{"error": "no such customer"}',
                                   content_type="application/json")
        await feedback_service.opt_out(session, customer, channel, now=now,
                                       actor="customer:unsubscribe-link",
                                       send_id=payload.get("s"), everything=everything)
        language = _language(request, customer, state["language"])
    log.info("campaign.unsubscribed", customer_id=payload["c"], send_id=payload.get("s"),
             channel=channel.value, everything=everything)
    if form.get("List-Unsubscribe") == "One-Click":
        return web.json_response({"status": "unsubscribed"})
    t = _texts(language)
    done = t["unsubscribed_all"] if everything else t["unsubscribed"].format(
        channel=t.get(channel.value, channel.value))
    return _page("unsubscribe.html", lang=language, title=t["unsubscribe_title"], t=t,
                 question="", done=done)


# --- feedback ---------------------------------------------------------------------------------


async def _survey(session: Any, payload: dict[str, Any],
                  ) -> tuple[CampaignSend, Campaign, Customer, Ticket | None]:
    found = await feedback_service.survey_of_send(session, payload["s"], payload["c"])
    customer = await session.get(Customer, payload["c"])
    if found is None or customer is None:
        raise web.HTTPNotFound(text='{"error": "no such survey"}', content_type="application/json")
    send, campaign = found
    ticket = await session.get(Ticket, send.ticket_id) if send.ticket_id else None
    return send, campaign, customer, ticket


def _feedback_values(request: web.Request, kind: str, language: str, ticket: Ticket | None,
                     ) -> dict[str, Any]:
    t = _texts(language)
    low, high = SURVEY_KINDS[kind]
    return {"lang": language, "title": t["feedback_title"], "t": t,
            "question": t[f"{kind}_question"], "low": t[f"{kind}_low"],
            "high": t[f"{kind}_high"], "scale": list(range(low, high + 1)),
            "ticket_number": t["ticket"].format(number=ticket.number) if ticket and ticket.number
            else None}


def _closed(request: web.Request) -> web.Response:
    language = _language(request, None, _state(request)["language"])
    t = _texts(language)
    return _page("feedback.html", status=410, lang=language, title=t["feedback_title"], t=t,
                 closed=True, done=None, ticket_number=None)


async def feedback_page(request: web.Request) -> web.StreamResponse:
    """The scale, with the clicked score preselected and the earlier answer shown."""
    try:
        payload = _payload(request, FEEDBACK, check_expiry=True)
    except BadToken:
        return _closed(request)
    state = _state(request)
    kind = str(payload.get("k", "csat"))
    if kind not in SURVEY_KINDS:
        raise _bad_link("unknown survey kind")
    async with state["database"].sessions() as session:
        send, _campaign, customer, ticket = await _survey(session, payload)
        earlier = await session.scalar(select(FeedbackResponse.score).where(
            FeedbackResponse.send_id == send.id, FeedbackResponse.kind == kind))
    language = _language(request, customer, state["language"])
    values = _feedback_values(request, kind, language, ticket)
    selected = request.query.get("score", "")
    chosen = int(selected) if selected.isdigit() else earlier
    answered = values["t"]["answered"].format(score=earlier) if earlier is not None else None
    return _page("feedback.html", selected=chosen, answered=answered, comment="", done=None,
                 closed=False, error=None, **values)


async def submit_feedback(request: web.Request) -> web.StreamResponse:
    """Record the score and comment; a complaint goes on the bus to become a ticket."""
    try:
        payload = _payload(request, FEEDBACK, check_expiry=True)
    except BadToken:
        return _closed(request)
    state = _state(request)
    kind = str(payload.get("k", "csat"))
    if kind not in SURVEY_KINDS:
        raise _bad_link("unknown survey kind")
    form = await request.post()
    raw_score = str(form.get("score", "")).strip()
    comment = str(form.get("comment", "")).strip()[:MAX_COMMENT]
    now = state["now"]()
    spec: FeedbackSpec = state["feedback"]()
    complaint: InboundMessage | None = None
    async with state["database"].transaction() as session:
        send, _campaign, customer, ticket = await _survey(session, payload)
        language = _language(request, customer, state["language"])
        values = _feedback_values(request, kind, language, ticket)
        low, high = SURVEY_KINDS[kind]
        if not raw_score.isdigit() or not low <= int(raw_score) <= high:
            return _page("feedback.html", status=400, selected=None, answered=None,
                         comment=comment, done=None, closed=False,
                         error=values["t"]["choose"], **values)
        channel = send.channel or Channel.EMAIL
        try:
            answer = await feedback_service.record_answer(
                session, customer_id=customer.id, kind=kind, score=int(raw_score),
                channel=channel, now=now, send=send)
            if comment:
                answer = await feedback_service.record_comment(
                    session, spec, customer_id=customer.id, text=comment, channel=channel,
                    now=now, answer=answer)
        except CrmError as exc:
            raise web.HTTPBadRequest(text=f'{{"error": "{exc.code}"}}',
                                     content_type="application/json") from None
        if answer.classification == "complaint":
            complaint = await complaint_envelope(session, answer, customer, ticket, language,
                                                 now)
    done = values["t"]["thanks"]
    if complaint is not None:
        try:
            await state["publish"](complaint)
            done = values["t"]["thanks_complaint"]
        except Exception as exc:
            log.error("feedback.complaint_not_published", feedback_id=answer.id,
                      customer_id=customer.id, error=f"{type(exc).__name__}: {exc}")
    log.info("feedback.page_answer", customer_id=customer.id, send_id=send.id, kind=kind,
             classification=answer.classification)
    return _page("feedback.html", done=done, closed=False, **values)


async def complaint_envelope(session: Any, answer: FeedbackResponse, customer: Customer,
                             ticket: Ticket | None, language: str, now: datetime,
                             ) -> InboundMessage:
    """The inbound message routing turns into a high-priority complaint ticket: on the
    survey's channel, from the customer's handle there, tagged ``feedback``/``complaint``."""
    loaded = await session.scalar(select(Customer).where(Customer.id == customer.id)
                                  .options(selectinload(Customer.identities)))
    identities = {i.kind: i.value for i in reversed(loaded.identities)} if loaded else {}
    channel = answer.channel if answer.channel in (Channel.EMAIL, Channel.TELEGRAM,
                                                   Channel.WEBCHAT) else Channel.EMAIL
    kind_of = {Channel.EMAIL: IdentityKind.EMAIL, Channel.TELEGRAM: IdentityKind.TELEGRAM,
               Channel.WEBCHAT: IdentityKind.WEBCHAT}
    if kind_of[channel] not in identities:
        channel = next((c for c, k in kind_of.items() if k in identities), Channel.EMAIL)
    handle = identities.get(kind_of[channel])
    sender = SenderHandles(
        email=handle if channel == Channel.EMAIL else identities.get(IdentityKind.EMAIL),
        telegram_id=handle if channel == Channel.TELEGRAM else None,
        visitor_id=handle if channel == Channel.WEBCHAT else None,
        phone=identities.get(IdentityKind.PHONE),
        display_name=customer.display_name)
    t = _texts(language)
    about = t["complaint_about"].format(number=ticket.number) if ticket and ticket.number else ""
    score = f" ({answer.kind.upper()} {answer.score})" if answer.score is not None else ""
    return InboundMessage(
        channel=channel, idempotency_key=f"feedback:{answer.id}", received_at=now,
        sender=sender,
        thread=ThreadHints(chat_id=handle) if channel != Channel.EMAIL else ThreadHints(),
        subject=f"{t['complaint_subject']}{score}",
        text="\n".join(p for p in (about, answer.comment or "") if p),
        metadata={"feedback_id": answer.id, "feedback_class": "complaint",
                  "ticket_tags": ["feedback", "complaint"]})


# --- tracked links ------------------------------------------------------------------------------


async def tracked_redirect(request: web.Request) -> web.StreamResponse:
    """Count the click, then send the browser on."""
    payload = _payload(request, REDIRECT)
    target = str(payload.get("u", ""))
    if not safe_target(target):
        raise _bad_link("not an http(s) link")
    state = _state(request)
    async with state["database"].transaction() as session:
        counted = await campaign_service.record_click(session, int(payload.get("s", 0)),
                                                      now=state["now"]())
    log.info("campaign.clicked", send_id=payload.get("s"), counted=counted)
    raise web.HTTPFound(target, headers={"Referrer-Policy": "no-referrer",
                                         "Cache-Control": "no-store"})


def setup_campaign_links(
    app: web.Application, settings: Settings, database: Database, engine: Any, *,
    now: Callable[[], datetime] = utcnow,
) -> None:
    """Register the public campaign routes on ``app``."""

    loaded: list[FeedbackSpec] = []

    def feedback_spec() -> FeedbackSpec:
        if not loaded:
            from crm_core.services.campaign_config import load_campaigns

            loaded.append(load_campaigns(settings.campaigns.file).feedback)
        return loaded[0]

    app[LINKS] = {
        "database": database,
        "secret": settings.secret_key.get_secret_value().encode(),
        "publish": engine.publish,
        "now": now,
        "language": settings.locale.default_language,
        "feedback": feedback_spec,
    }
    app.router.add_get("/unsubscribe/{token}", unsubscribe_page)
    app.router.add_post("/unsubscribe/{token}", unsubscribe)
    app.router.add_get("/feedback/{token}", feedback_page)
    app.router.add_post("/feedback/{token}", submit_feedback)
    app.router.add_get("/r/{token}", tracked_redirect)
