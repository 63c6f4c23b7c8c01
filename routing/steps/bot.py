"""bot: the self-service bot answers chat messages before a ticket is opened.

On a channel with a bot flow (``[bot] channels``), a new conversation starts the flow;
the customer's next messages answer it (buttons send the option's digit or label). The
bot's words go out through the outbox like any reply, with the menu's options as
buttons (Telegram inline keyboard, web chat quick replies) or as a numbered list
(e-mail). While the bot answers, no ticket is opened and nobody is assigned. A handoff
(or an ``agent`` action) lets this message through to the ticket and assign steps with
the handoff's team; a ``create_ticket``/``callback`` action opens a ticket too. Once an
agent has replied the bot is silent; a handoff nobody answered in time comes back to the
bot (:func:`expire_handoffs`) with an apology and the flow's ``on_timeout`` node.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.db import Database
from crm_core.models import BotSession, Channel, Conversation, Customer, utcnow
from crm_core.services.feedback import record_flow_rating
from routing.bot import (
    BotRuntime,
    agent_replied_since,
    apply_turn,
    buttons,
    chat_facts,
    chat_text,
    note,
    numbered_menu,
    record_knowledge,
    state_of,
)
from routing.context import RoutingContext
from routing.envelope import SenderHandles
from routing.flows import CallFacts, FlowEngine, FlowError, FlowState, Turn
from routing.outbox import enqueue_reply

log = structlog.get_logger(__name__)

MAX_CHAINED_ACTIONS = 16


@dataclass
class Effects:
    """What a bot walk asks of the rest of the pipeline."""

    texts: list[str] = field(default_factory=list)
    last: Turn | None = None
    handoff_team: str | None = None
    handed_off: bool = False
    open_ticket: bool = False
    tags: list[str] = field(default_factory=list)


def session_key(conversation_id: int) -> str:
    """The bot session key of a chat conversation."""
    return f"conversation:{conversation_id}"


async def run_turns(
    session: AsyncSession, engine: FlowEngine, row: BotSession, turn: Turn, facts: CallFacts,
    customer: Customer | None, now: datetime,
) -> Effects:
    """Apply ``turn`` and perform its actions (chaining on to their ``goto``) until the
    flow waits for input, ends or hands over."""
    effects = Effects()
    for _ in range(MAX_CHAINED_ACTIONS):
        apply_turn(row, turn)
        await record_knowledge(session, row, turn)
        effects.texts.append(chat_text(turn))
        effects.last = turn
        action = turn.action
        if action is None:
            row.status = "bot"
            return effects
        kind = action.kind
        if kind in ("end", "hangup"):
            row.status = "ended"
            row.outcome = row.outcome or "ended"
            return effects
        if kind in ("handoff", "agent"):
            team = str(action.params.get("team") or action.params.get("queue") or "") or None
            wait = int(action.params.get("timeout_seconds")
                       or action.params.get("max_wait_seconds") or 300)
            row.status = "handoff"
            row.outcome = "handoff"
            row.handoff_team = team
            row.handoff_at = now
            row.handoff_deadline = now + timedelta(seconds=wait)
            if kind == "agent" and turn.after is not None:
                # an IVR-style agent node: its on_no_agent is where a timeout goes
                row.node = turn.after.node
                row.attempt = 0
            effects.handed_off = True
            effects.handoff_team = team
            return effects
        if kind in ("create_ticket", "callback", "voicemail"):
            effects.open_ticket = True
            effects.tags.extend(str(t) for t in action.params.get("tags", []))
            if kind == "callback":
                effects.tags.append("callback")
            row.outcome = "callback" if kind == "callback" else "ticket"
        elif kind in ("subscribe", "unsubscribe") and customer is not None:
            channel = row.channel
            customer.marketing_opt_in = {**(customer.marketing_opt_in or {}),
                                         channel: kind == "subscribe"}
            row.outcome = f"{kind}d"
        elif kind == "survey":
            row.outcome = "survey"
            await _record_rating(session, row, action.params, customer, now)
        elif kind == "ticket_status":
            row.outcome = row.outcome or "ticket_status"
        if turn.after is None:
            row.status = "ended"
            return effects
        facts = replace(facts, fields=dict(row.fields or {}))
        turn = engine.resume(turn.after, facts)
    raise FlowError(engine.flows.source, row.flow, "too many actions in a row")


async def _record_rating(session: AsyncSession, row: BotSession, params: dict[str, object],
                         customer: Customer | None, now: datetime) -> None:
    """A ``survey`` action: the rating the flow collected becomes the customer's CSAT
    (answering their open survey when there is one)."""
    answer = (row.fields or {}).get(str(params.get("field") or "rating"))
    if customer is None or answer is None:
        return
    kind = "nps" if params.get("scale") == "nps" else "csat"
    recorded = await record_flow_rating(
        session, customer_id=customer.id, answer=str(answer), channel=Channel(row.channel),
        source_ref=f"bot:{row.session_key}", now=now, kind=kind)
    log.info("bot.survey_rating", customer_id=customer.id, channel=row.channel,
             recorded=recorded is not None)


async def send(
    session: AsyncSession, effects: Effects, *, conversation: Conversation, customer: Customer,
    channel: Channel, to: SenderHandles, language: str,
) -> None:
    """The bot's words of one walk as one message, with the menu as buttons."""
    text = "\n".join(t for t in effects.texts if t).strip()
    gather = effects.last.gather if effects.last is not None else None
    extra: dict[str, object] = {"bot": True}
    if gather is not None and gather.choices:
        if channel == Channel.EMAIL:
            text = f"{text}\n\n{numbered_menu(gather.choices, language)}".strip()
        else:
            extra["buttons"] = buttons(gather.choices)
    if not text:
        return
    await enqueue_reply(session, conversation=conversation, customer=customer,
                        channel=channel, to=to, text=text, automated=True, extra=extra)


async def bot(ctx: RoutingContext) -> None:
    """Let the bot answer the message when its channel has a flow (see the module doc)."""
    runtime: BotRuntime | None = ctx.config.bot
    envelope = ctx.envelope
    if runtime is None or envelope.automated or envelope.metadata.get("log_only"):
        return
    flow = runtime.flow_for(envelope.channel.value)
    if flow is None:
        return
    session = ctx.session
    conversation = ctx.require_conversation()
    customer = ctx.require_customer()
    key = session_key(conversation.id)
    row = await session.scalar(select(BotSession).where(
        BotSession.channel == envelope.channel.value, BotSession.session_key == key))
    text = (envelope.text or "").strip()
    now = utcnow()
    business_hours = ctx.config.rules.calendar.is_open(now)
    if row is None and not ctx.conversation_created:
        return  # a conversation that began without the bot stays with the agents
    if row is not None and row.status == "bot" and await agent_replied_since(
        session, conversation.id, row.created_at
    ):
        # an agent stepped in before any handoff: the conversation is theirs now
        row.status = "agent"
        row.agent_joined_at = now
    if row is not None and row.status in ("handoff", "agent"):
        note(row, "customer", text)
        row.updated_at = now
        if row.status == "handoff" and await agent_replied_since(
            session, conversation.id, row.handoff_at
        ):
            row.status = "agent"
            row.agent_joined_at = now
        ctx.hit(f"bot:{row.status}")
        return
    engine = await runtime.engine(session)
    if row is None:
        row = BotSession(channel=envelope.channel.value, session_key=key,
                         conversation_id=conversation.id, customer_id=customer.id, flow=flow,
                         node="", language="", status="bot", fields={}, path=[], transcript=[])
        session.add(row)
        await session.flush()
    note(row, "customer", text)
    facts = await chat_facts(session, customer, row, business_hours=business_hours,
                             first_text="" if text.startswith("/") else text)
    turn: Turn
    if row.status == "bot" and row.node:
        try:
            turn = engine.answer(state_of(row), facts, speech=text,
                                 knowledge=await runtime.knowledge(session))
        except (FlowError, KeyError):  # the flows changed under the session: start over
            turn = engine.start(flow, facts)
    else:
        row.status = "bot"
        turn = engine.start(flow, facts)
    effects = await run_turns(session, engine, row, turn, facts, customer, now)
    await send(session, effects, conversation=conversation, customer=customer,
               channel=envelope.channel, to=envelope.sender, language=row.language)
    ctx.bot_active = True
    ctx.bot_handled = not (effects.handed_off or effects.open_ticket)
    ctx.bot_team = effects.handoff_team if effects.handed_off else None
    ctx.bot_tags = effects.tags
    if effects.handed_off or effects.open_ticket:
        ctx.bot_subject = ticket_subject(row, effects)
    ctx.hit(f"bot:{row.flow}:{row.node}:{row.status}")


def ticket_subject(row: BotSession, effects: Effects) -> str:
    """A ticket subject saying what the bot handed over: why, and the fields it collected."""
    what = ("机器人转人工 Bot handoff" if effects.handed_off
            else f"自助服务 Self-service: {', '.join(effects.tags) or row.node}")
    fields = ", ".join(f"{k} {v}" for k, v in (row.fields or {}).items() if k != "message")
    return f"{what} · {fields}" if fields else what


def _recipient(conversation: Conversation, customer: Customer) -> SenderHandles:
    key = conversation.thread_key or ""
    if conversation.channel == Channel.WEBCHAT:
        return SenderHandles(visitor_id=key)
    if conversation.channel == Channel.TELEGRAM:
        return SenderHandles(telegram_id=key)
    return SenderHandles(display_name=customer.display_name or "customer")


async def expire_handoffs(database: Database, runtime: BotRuntime,
                          now: datetime | None = None) -> int:
    """Give handoffs nobody answered in time back to the bot (apology, ``on_timeout``).

    Returns how many sessions went back to the bot. A handoff an agent answered in the
    meantime is marked as joined instead.
    """
    now = now or utcnow()
    returned = 0
    async with database.transaction() as session:
        rows = (await session.scalars(
            select(BotSession).where(BotSession.status == "handoff",
                                     BotSession.handoff_deadline <= now)
            .order_by(BotSession.id).limit(200)
        )).all()
        for row in rows:
            if await agent_replied_since(session, row.conversation_id, row.handoff_at):
                row.status = "agent"
                row.agent_joined_at = now
                continue
            conversation = (await session.get(Conversation, row.conversation_id)
                            if row.conversation_id else None)
            customer = await session.get(Customer, row.customer_id) if row.customer_id else None
            if conversation is None or customer is None:
                row.status = "ended"
                continue
            engine = await runtime.engine(session)
            facts = await chat_facts(session, customer, row, business_hours=True)
            try:
                node = engine.flows.get(row.flow).node(row.node)
                attempt = 1 if node.kind == "handoff" else 0
                turn = engine.resume(FlowState(row.flow, row.node, row.language, attempt), facts)
            except (FlowError, KeyError):
                row.status = "ended"
                continue
            row.outcome = "handoff_timeout"
            effects = await run_turns(session, engine, row, turn, facts, customer, now)
            await send(session, effects, conversation=conversation, customer=customer,
                       channel=conversation.channel, to=_recipient(conversation, customer),
                       language=row.language)
            returned += 1
            log.info("bot.handoff_timeout", session_id=row.id, conversation_id=conversation.id)
    return returned
