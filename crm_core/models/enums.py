"""The closed vocabularies of the domain, stored as their string values."""

from __future__ import annotations

import enum


class LifecycleStage(enum.StrEnum):
    """Where a customer stands in the relationship, from first contact to loss."""

    LEAD = "lead"
    PROSPECT = "prospect"
    ACTIVE = "active"
    DORMANT = "dormant"
    CHURNED = "churned"


LIFECYCLE_TRANSITIONS: dict[LifecycleStage, frozenset[LifecycleStage]] = {
    LifecycleStage.LEAD: frozenset(
        {LifecycleStage.PROSPECT, LifecycleStage.ACTIVE, LifecycleStage.CHURNED}
    ),
    LifecycleStage.PROSPECT: frozenset(
        {LifecycleStage.LEAD, LifecycleStage.ACTIVE, LifecycleStage.CHURNED}
    ),
    LifecycleStage.ACTIVE: frozenset({LifecycleStage.DORMANT, LifecycleStage.CHURNED}),
    LifecycleStage.DORMANT: frozenset({LifecycleStage.ACTIVE, LifecycleStage.CHURNED}),
    LifecycleStage.CHURNED: frozenset({LifecycleStage.ACTIVE, LifecycleStage.PROSPECT}),
}
"""Allowed moves: forward along the funnel, win-back from dormant or churned."""


class IdentityKind(enum.StrEnum):
    """The kinds of handle by which a customer can be recognised."""

    EMAIL = "email"
    PHONE = "phone"
    TELEGRAM = "telegram"
    WEBCHAT = "webchat"
    EXTERNAL = "external"


class Channel(enum.StrEnum):
    """The channels customers reach us on."""

    EMAIL = "email"
    TELEGRAM = "telegram"
    WEBCHAT = "webchat"
    PHONE = "phone"
    INTERNAL = "internal"


class AgentRole(enum.StrEnum):
    """What a console user may do."""

    ADMIN = "admin"
    SUPERVISOR = "supervisor"
    AGENT = "agent"


class Availability(enum.StrEnum):
    """Whether an agent can take new work now."""

    ONLINE = "online"
    AWAY = "away"
    OFFLINE = "offline"


class Direction(enum.StrEnum):
    """Which way an interaction went."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"
    INTERNAL = "internal"


class InteractionKind(enum.StrEnum):
    """What an interaction was."""

    MESSAGE = "message"
    CALL = "call"
    NOTE = "note"
    SYSTEM = "system"


class ConversationStatus(enum.StrEnum):
    """Whether a conversation is still going on."""

    OPEN = "open"
    CLOSED = "closed"


class TicketCategory(enum.StrEnum):
    """The kind of service request, as a CRM operations manual classifies feedback."""

    INQUIRY = "inquiry"
    COMPLAINT = "complaint"
    SUGGESTION = "suggestion"
    FAULT = "fault"
    OTHER = "other"


class TicketPriority(enum.StrEnum):
    """How urgent a ticket is."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class TicketStatus(enum.StrEnum):
    """Where a ticket stands."""

    NEW = "new"
    OPEN = "open"
    PENDING = "pending"
    RESOLVED = "resolved"
    CLOSED = "closed"
