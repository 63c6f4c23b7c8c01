"""What the pipeline steps share while one envelope is processed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.models import Conversation, Customer, Interaction, Ticket
from routing.envelope import InboundMessage
from routing.events import Event

if TYPE_CHECKING:
    from routing.rules import RuleSet


class StopProcessing(Exception):
    """Raised by a step to end processing of an envelope normally (e.g. a duplicate)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class RoutingConfig:
    """Settings of the pipeline, fixed for the life of a worker."""

    region: str
    rules: RuleSet
    link_threshold: float = 92.0
    suggest_threshold: float = 75.0
    chat_idle_gap: timedelta = timedelta(hours=4)
    default_language: str = "zh-CN"
    bot: Any | None = None
    """The self-service bot (:class:`routing.bot.BotRuntime`), or None when it is off."""


@dataclass
class RoutingContext:
    """One envelope on its way through the steps, and what they found or made."""

    envelope: InboundMessage
    session: AsyncSession
    config: RoutingConfig
    customer: Customer | None = None
    customer_created: bool = False
    conversation: Conversation | None = None
    conversation_created: bool = False
    interaction: Interaction | None = None
    ticket: Ticket | None = None
    ticket_created: bool = False
    ticket_reopened: bool = False
    hits: list[str] = field(default_factory=list)
    """Why the message went where it went (kept on the interaction for the console)."""
    events: list[Event] = field(default_factory=list)
    bot_active: bool = False
    """The bot answered this message (no automatic reply on top of it)."""
    bot_handled: bool = False
    """The bot answered this message: no ticket, assignment or automation for it."""
    bot_team: str | None = None
    """The bot handed the conversation over to this team's queue."""
    bot_tags: list[str] = field(default_factory=list)
    """Tags for the ticket the bot asked for."""
    bot_subject: str | None = None
    """Subject of a ticket the bot opens (what was asked for and the collected fields)."""

    def hit(self, text: str) -> None:
        """Record one routing decision."""
        self.hits.append(text)

    def emit(self, name: str, **data: Any) -> None:
        """Queue an event for publication after commit."""
        self.events.append(Event(name, data))

    def require_customer(self) -> Customer:
        """The identified customer (the identify step runs first)."""
        if self.customer is None:
            raise RuntimeError("no customer: the identify step must run before this one")
        return self.customer

    def require_conversation(self) -> Conversation:
        """The conversation (the thread step runs first)."""
        if self.conversation is None:
            raise RuntimeError("no conversation: the thread step must run before this one")
        return self.conversation

    def require_ticket(self) -> Ticket:
        """The ticket (the ticket step runs first)."""
        if self.ticket is None:
            raise RuntimeError("no ticket: the ticket step must run before this one")
        return self.ticket
