"""Every table of the contact center; importing this registers them all on ``Base``."""

from crm_core.models.admin import AuditLog, Segment
from crm_core.models.agent import Agent, Team, agent_teams
from crm_core.models.api import ApiToken, WebhookDelivery, WebhookSubscription
from crm_core.models.base import Base, utcnow
from crm_core.models.calls import CallRecord
from crm_core.models.campaigns import Campaign, CampaignSend, CareTask, FeedbackResponse
from crm_core.models.console import AgentSession, CannedResponse, PasswordResetToken
from crm_core.models.customer import (
    ClassificationRule,
    Customer,
    CustomerCategory,
    CustomerIdentity,
    CustomerTag,
    CustomerTier,
    DuplicateSuggestion,
    LifecycleTransition,
    MergeRecord,
    Organization,
)
from crm_core.models.enums import (
    AgentRole,
    Availability,
    Channel,
    ConversationStatus,
    Direction,
    IdentityKind,
    InteractionKind,
    LifecycleStage,
    TicketCategory,
    TicketPriority,
    TicketStatus,
)
from crm_core.models.intake import ChannelCursor, CustomerLinkToken, QuarantinedMessage
from crm_core.models.match_keys import CustomerMatchKey, CustomerMatchProfile
from crm_core.models.outbox import OutboxMessage
from crm_core.models.queue import QueueEntry
from crm_core.models.service import Conversation, Interaction, Ticket, ticket_number

__all__ = [
    "Agent",
    "AgentRole",
    "AgentSession",
    "ApiToken",
    "AuditLog",
    "Availability",
    "Base",
    "CallRecord",
    "Campaign",
    "CampaignSend",
    "CannedResponse",
    "CareTask",
    "Channel",
    "ChannelCursor",
    "ClassificationRule",
    "Conversation",
    "ConversationStatus",
    "Customer",
    "CustomerCategory",
    "CustomerIdentity",
    "CustomerLinkToken",
    "CustomerMatchKey",
    "CustomerMatchProfile",
    "CustomerTag",
    "CustomerTier",
    "Direction",
    "DuplicateSuggestion",
    "FeedbackResponse",
    "IdentityKind",
    "Interaction",
    "InteractionKind",
    "LifecycleStage",
    "LifecycleTransition",
    "MergeRecord",
    "Organization",
    "OutboxMessage",
    "PasswordResetToken",
    "QuarantinedMessage",
    "QueueEntry",
    "Segment",
    "Team",
    "Ticket",
    "TicketCategory",
    "TicketPriority",
    "TicketStatus",
    "WebhookDelivery",
    "WebhookSubscription",
    "agent_teams",
    "ticket_number",
    "utcnow",
]
