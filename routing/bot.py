"""The self-service bot's runtime: flows and knowledge base from the database, sessions,
the chat rendering of a flow turn, and handoffs that time out.

The flow engine (:mod:`routing.flows`) and the matcher (:mod:`routing.knowledge`) are
pure; this module gives them their data and keeps what a customer's walk leaves behind
in a :class:`~crm_core.models.BotSession` — the transcript, the collected fields, the
nodes passed and how it ended (for the handoff view and the metrics). The flows are the
newest document saved in the console, else the flows file; both are re-read only when
they change, and so is the knowledge base.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.models import (
    Agent,
    Availability,
    BotSession,
    Customer,
    FlowDocument,
    Interaction,
    KnowledgeArticle,
    Ticket,
    TicketStatus,
    UnansweredQuestion,
    utcnow,
)
from crm_core.models.enums import Direction
from routing.flows import (
    CallFacts,
    Choice,
    FlowEngine,
    FlowError,
    FlowSet,
    FlowState,
    Turn,
    load_flows,
    parse_flows,
)
from routing.knowledge import Article, KnowledgeBase, KnowledgeConfig, detect_language, fold

log = structlog.get_logger(__name__)

INSTANT_ACTIONS = frozenset(
    {"ticket_status", "create_ticket", "callback", "voicemail", "subscribe", "unsubscribe",
     "survey"}
)
"""Actions a chat performs at once before going on to the action's ``goto``."""
_PLACEHOLDER_NAMES = ("访客 Visitor", "Telegram ", "Unknown 未知客户")
ABANDONED_AFTER = timedelta(minutes=30)
"""A bot session silent this long without ending counts as dropped at its node."""


def parse_flow_source(source: str, *, name: str = "console") -> FlowSet:
    """Parse flows TOML typed in the console; :class:`FlowError` names the mistake."""
    try:
        data = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        raise FlowError(name, "", f"not valid TOML: {exc}") from None
    return parse_flows(data, source=name)


def articles_of(rows: Sequence[KnowledgeArticle]) -> list[Article]:
    """Matcher articles from database rows (questions one per line, keywords , or lines)."""
    return [
        Article(
            id=row.id, language=row.language, title=row.title, answer=row.answer,
            questions=tuple(q.strip() for q in (row.questions or "").splitlines() if q.strip()),
            keywords=tuple(
                k.strip() for k in (row.keywords or "").replace("，", ",").replace("\n", ",")
                .split(",") if k.strip()
            ),
        )
        for row in rows
    ]


@dataclass
class BotRuntime:
    """Flows, knowledge base and settings the bot needs; one per process."""

    channels: Mapping[str, str]
    """Which flow answers each channel (``{"telegram": "bot", "webchat": "bot"}``)."""
    flows_file: Path
    region: str = "CN"
    default_language: str = "zh-CN"
    knowledge_config: KnowledgeConfig = field(default_factory=KnowledgeConfig.default,
                                              repr=False)
    _flows_version: Any = field(default=None, repr=False)
    _engine: FlowEngine | None = field(default=None, repr=False)
    _kb_version: Any = field(default=None, repr=False)
    _kb: KnowledgeBase | None = field(default=None, repr=False)

    def flow_for(self, channel: str) -> str | None:
        """The flow that answers ``channel``, or None when the bot is off there."""
        return self.channels.get(channel)

    async def engine(self, session: AsyncSession) -> FlowEngine:
        """The flow engine over the current flows (console document, else the file)."""
        newest = await session.scalar(select(func.max(FlowDocument.id)))
        if self._engine is None or newest != self._flows_version:
            flows: FlowSet | None = None
            if newest is not None:
                source = await session.scalar(
                    select(FlowDocument.source).where(FlowDocument.id == newest))
                try:
                    flows = parse_flow_source(source or "", name="console flows")
                except FlowError as exc:  # saved ones are checked; a bad row falls back
                    log.error("bot.flows_invalid", error=str(exc))
            if flows is None:
                flows = load_flows(self.flows_file)
            self._engine = FlowEngine(flows, self.default_language, region=self.region)
            self._flows_version = newest
        return self._engine

    async def knowledge(self, session: AsyncSession) -> KnowledgeBase:
        """The knowledge base over the enabled articles (rebuilt when they change)."""
        result = await session.execute(
            select(func.count(KnowledgeArticle.id), func.max(KnowledgeArticle.updated_at),
                   func.max(KnowledgeArticle.id))
        )
        version = tuple(result.one())
        if self._kb is None or version != self._kb_version:
            rows = (await session.scalars(
                select(KnowledgeArticle).where(KnowledgeArticle.enabled.is_(True))
            )).all()
            self._kb = KnowledgeBase(articles_of(rows), self.knowledge_config)
            self._kb_version = version
        return self._kb


async def chat_facts(
    session: AsyncSession, customer: Customer | None, bot_session: BotSession,
    *, business_hours: bool, first_text: str = "",
) -> CallFacts:
    """What the flow may know about a chat customer."""
    ticket = None
    if customer is not None:
        ticket = await session.scalar(
            select(Ticket).where(Ticket.customer_id == customer.id,
                                 Ticket.status != TicketStatus.CLOSED)
            .order_by(Ticket.id.desc()).limit(1))
    online = await session.scalar(
        select(Agent.id).where(Agent.active.is_(True),
                               Agent.availability == Availability.ONLINE).limit(1))
    language = bot_session.language or (customer.language if customer else None) or (
        detect_language(first_text) if first_text else None)
    name = (customer.display_name if customer else "") or ""
    if name.startswith(_PLACEHOLDER_NAMES):
        name = ""  # a generated lead name ("访客 Visitor 3f2a9c") is not a greeting
    return CallFacts(
        in_business_hours=business_hours,
        known_caller=bool(name),
        caller_name=name,
        language=language,
        has_open_ticket=ticket is not None and ticket.status != TicketStatus.RESOLVED,
        ticket_number=(ticket.number or "") if ticket else "",
        ticket_status=ticket.status.value if ticket else "",
        agents_available=online is not None,
        fields=dict(bot_session.fields or {}),
    )


def note(bot_session: BotSession, who: str, text: str, **extra: Any) -> None:
    """Append a line to the session's transcript."""
    if not text:
        return
    entry = {"at": utcnow().isoformat(), "from": who, "text": text[:4000], **extra}
    bot_session.transcript = [*(bot_session.transcript or []), entry][-200:]


def apply_turn(bot_session: BotSession, turn: Turn) -> None:
    """Keep where the walk stands and what it collected; the bot's words in the transcript."""
    bot_session.flow = turn.state.flow
    bot_session.node = turn.state.node
    bot_session.language = turn.state.language
    bot_session.attempt = turn.state.attempt
    passed = list(turn.path)
    if len(passed) > 1 and bot_session.path and passed[0] == bot_session.path[-1]:
        passed = passed[1:]  # the node that was answered is already on the path
    bot_session.path = [*(bot_session.path or []), *passed][-200:]
    if turn.collected:
        bot_session.fields = {**(bot_session.fields or {}), **turn.collected}
    text = chat_text(turn)
    note(bot_session, "bot", text, node=turn.state.node)
    bot_session.updated_at = utcnow()


async def record_knowledge(session: AsyncSession, bot_session: BotSession, turn: Turn) -> None:
    """An answered question sets the outcome; an unsure one is kept for the metrics."""
    answer = turn.knowledge
    if answer is None:
        return
    if answer.confident:
        bot_session.outcome = "answered"
        return
    session.add(UnansweredQuestion(
        channel=bot_session.channel, language=bot_session.language,
        question=answer.question[:1000], normalized=fold(answer.question)[:1000],
        score=answer.score, session_id=bot_session.id,
    ))


def chat_text(turn: Turn) -> str:
    """The turn's prompts as one chat message."""
    parts = [s.text for s in turn.says if s.text]
    extra = (turn.action.params.get("text") if turn.action is not None
             and turn.action.kind == "ticket_status" else None)
    if extra:
        parts.append(str(extra))
    return "\n".join(parts)


def buttons(choices: Sequence[Choice]) -> list[list[dict[str, str]]]:
    """Telegram inline-keyboard / web chat quick-reply rows (two buttons a row)."""
    items = [{"text": c.label, "data": c.value} for c in choices]
    return [items[i : i + 2] for i in range(0, len(items), 2)]


def numbered_menu(choices: Sequence[Choice], language: str) -> str:
    """A menu for e-mail: one numbered line per option (answer with the number)."""
    if not choices:
        return ""
    head = "回复数字选择：" if language.startswith("zh") else "Reply with a number:"
    lines = [f"{c.digit or i + 1}. {c.label}" for i, c in enumerate(choices)]
    return "\n".join([head, *lines])


async def agent_replied_since(session: AsyncSession, conversation_id: int | None,
                              since: datetime | None) -> bool:
    """Whether an agent wrote to the conversation since ``since`` (they joined)."""
    if conversation_id is None:
        return False
    query = select(Interaction.id).where(
        Interaction.conversation_id == conversation_id,
        Interaction.direction == Direction.OUTBOUND,
        Interaction.agent_id.is_not(None),
    )
    if since is not None:
        query = query.where(Interaction.created_at >= since)
    return await session.scalar(query.limit(1)) is not None


def state_of(bot_session: BotSession) -> FlowState:
    """The engine state a session is at."""
    return FlowState(bot_session.flow, bot_session.node, bot_session.language,
                     min(bot_session.attempt, 99))
