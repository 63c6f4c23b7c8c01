"""Knowledge-base articles (zh-CN and en) and the self-service bot's metrics.

Articles are edited in the console; every change is audited (entity type
``kb_article``). The metrics read the bot sessions: containment (sessions that ended
without an agent), drop-off per node (where sessions that neither ended nor reached an
agent went quiet) and the questions the knowledge base could not answer.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.errors import NotFoundError, ValidationError
from crm_core.models import (
    BotSession,
    Channel,
    Conversation,
    KnowledgeArticle,
    UnansweredQuestion,
    utcnow,
)
from crm_core.services import audit

ENTITY = "kb_article"
LANGUAGES: tuple[str, ...] = ("zh-CN", "en")
MAX_ANSWER = 10_000


def _text(field: str, value: str | None, limit: int, *, required: bool) -> str:
    cleaned = (value or "").strip()
    if required and not cleaned:
        raise ValidationError(field, value, "required")
    if len(cleaned) > limit:
        raise ValidationError(field, value, f"at most {limit} characters")
    return cleaned


def _snapshot(row: KnowledgeArticle) -> dict[str, Any]:
    return {"language": row.language, "title": row.title, "questions": row.questions,
            "keywords": row.keywords, "answer": row.answer, "enabled": row.enabled}


def _checked(language: str, title: str, questions: str, keywords: str, answer: str,
             ) -> dict[str, str]:
    if language not in LANGUAGES:
        raise ValidationError("language", language, "zh-CN or en")
    return {
        "language": language,
        "title": _text("title", title, 300, required=True),
        "questions": _text("questions", questions, 5000, required=False),
        "keywords": _text("keywords", keywords, 2000, required=False),
        "answer": _text("answer", answer, MAX_ANSWER, required=True),
    }


async def list_articles(session: AsyncSession, language: str | None = None,
                        ) -> list[KnowledgeArticle]:
    """Every article (of one language), by language then title."""
    query = select(KnowledgeArticle).order_by(KnowledgeArticle.language, KnowledgeArticle.title)
    if language:
        query = query.where(KnowledgeArticle.language == language)
    return list((await session.scalars(query)).all())


async def get_article(session: AsyncSession, article_id: int) -> KnowledgeArticle:
    """One article, or NotFoundError."""
    row = await session.get(KnowledgeArticle, article_id)
    if row is None:
        raise NotFoundError("kb_article", article_id)
    return row


async def create_article(
    session: AsyncSession, *, language: str, title: str, answer: str, questions: str = "",
    keywords: str = "", enabled: bool = True, actor: str,
) -> KnowledgeArticle:
    """Add an article."""
    row = KnowledgeArticle(**_checked(language, title, questions, keywords, answer),
                           enabled=enabled)
    session.add(row)
    await session.flush()
    audit.record(session, actor=actor, action="create", entity_type=ENTITY, entity_id=row.id,
                 after=_snapshot(row))
    return row


async def update_article(
    session: AsyncSession, article_id: int, *, language: str, title: str, answer: str,
    questions: str = "", keywords: str = "", enabled: bool = True, actor: str,
) -> KnowledgeArticle:
    """Change an article; audited with the changed values."""
    row = await get_article(session, article_id)
    before = _snapshot(row)
    for key, value in _checked(language, title, questions, keywords, answer).items():
        setattr(row, key, value)
    row.enabled = enabled
    old, new = audit.diff(before, _snapshot(row))
    if new:
        row.updated_at = utcnow()
        await session.flush()
        audit.record(session, actor=actor, action="update", entity_type=ENTITY,
                     entity_id=row.id, before=old, after=new)
    return row


async def delete_article(session: AsyncSession, article_id: int, *, actor: str) -> None:
    """Remove an article."""
    row = await get_article(session, article_id)
    before = _snapshot(row)
    await session.delete(row)
    await session.flush()
    audit.record(session, actor=actor, action="delete", entity_type=ENTITY,
                 entity_id=article_id, before=before)


# --- metrics -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BotMetrics:
    """The bot's numbers over a period."""

    sessions: int
    contained: int
    handed_off: int
    dropped: int
    active: int
    by_channel: dict[str, int]
    outcomes: dict[str, int]
    drop_off: list[tuple[str, int, int]]
    """``(node, sessions dropped there, sessions that reached it)``, worst first."""
    unanswered: list[tuple[str, int]]
    """``(question, times asked)``, most asked first."""

    @property
    def containment_rate(self) -> float | None:
        """Share of finished sessions solved without an agent (None without any)."""
        finished = self.contained + self.handed_off + self.dropped
        return None if finished == 0 else self.contained / finished


CONTAINED_STATUSES = frozenset({"ended"})
AGENT_STATUSES = frozenset({"handoff", "agent"})


async def bot_metrics(
    session: AsyncSession, *, since: datetime | None = None, now: datetime | None = None,
    idle: timedelta = timedelta(minutes=30), top: int = 20,
) -> BotMetrics:
    """Containment, drop-off per node and the top unanswered questions since ``since``.

    A session counts as handed off once an agent was asked for (even when the handoff
    timed out), as contained when it ended without one, and as dropped when it is still
    with the bot but has been silent longer than ``idle``.
    """
    now = now or utcnow()
    query = select(BotSession)
    if since is not None:
        query = query.where(BotSession.created_at >= since)
    rows = (await session.scalars(query)).all()
    contained = handed_off = dropped = active = 0
    channels: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    reached: Counter[str] = Counter()
    dropped_at: Counter[str] = Counter()
    for row in rows:
        channels[row.channel] += 1
        outcomes[row.outcome or "none"] += 1
        for node in dict.fromkeys(row.path or []):
            reached[node] += 1
        if row.status in AGENT_STATUSES or row.handoff_at is not None:
            handed_off += 1
        elif row.status in CONTAINED_STATUSES:
            contained += 1
        elif row.updated_at <= now - idle:
            dropped += 1
            dropped_at[row.node] += 1
        else:
            active += 1
    drop_off = sorted(((node, n, reached.get(node, n)) for node, n in dropped_at.items()),
                      key=lambda item: (-item[1], item[0]))
    unanswered_query = select(UnansweredQuestion.normalized,
                              func.count(UnansweredQuestion.id).label("n")) \
        .group_by(UnansweredQuestion.normalized) \
        .order_by(func.count(UnansweredQuestion.id).desc(), UnansweredQuestion.normalized) \
        .limit(top)
    if since is not None:
        unanswered_query = unanswered_query.where(UnansweredQuestion.created_at >= since)
    unanswered = [(str(q), int(n)) for q, n in (await session.execute(unanswered_query)).all()]
    return BotMetrics(
        sessions=len(rows), contained=contained, handed_off=handed_off, dropped=dropped,
        active=active, by_channel=dict(channels), outcomes=dict(outcomes), drop_off=drop_off,
        unanswered=unanswered,
    )


async def bot_session_for(session: AsyncSession, conversation: Conversation,
                          ) -> BotSession | None:
    """The newest bot session of a conversation (for the agent's view), or None.

    A call's session is found by its call id, the phone conversation's thread key.
    """
    row = await session.scalar(
        select(BotSession).where(BotSession.conversation_id == conversation.id)
        .order_by(BotSession.id.desc()).limit(1))
    if row is None and conversation.channel == Channel.PHONE and conversation.thread_key:
        row = await session.scalar(select(BotSession).where(
            BotSession.channel == Channel.PHONE.value,
            BotSession.session_key == conversation.thread_key))
    return row
