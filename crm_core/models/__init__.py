"""Every table of the contact center; importing this registers them all on ``Base``."""

from crm_core.models.admin import AuditLog, Segment
from crm_core.models.agent import Agent, Team, agent_teams
from crm_core.models.api import ApiToken, WebhookDelivery, WebhookSubscription
from crm_core.models.base import Base, utcnow
from crm_core.models.bot import (
    BotSession,
    FlowDocument,
    KnowledgeArticle,
    UnansweredQuestion,
)
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
from crm_core.models.membership import MemberLevel, MemberLevelChange, Membership, PointsEntry
from crm_core.models.outbox import OutboxMessage
from crm_core.models.queue import QueueEntry
from crm_core.models.reports import ReportDelivery
from crm_core.models.rollups import (
    RollupAgentConversation,
    RollupAgentDay,
    RollupChannelDay,
    RollupOrderDay,
    RollupState,
    RollupTicketDuration,
)
from crm_core.models.sales import (
    Contract,
    FollowUp,
    Opportunity,
    Order,
    OrderLine,
    Payment,
    PipelineStage,
)
from crm_core.models.service import Conversation, Interaction, Ticket, ticket_number

__all__ = [
    "Agent",
    "AgentRole",
    "AgentSession",
    "ApiToken",
    "AuditLog",
    "Availability",
    "Base",
    "BotSession",
    "CallRecord",
    "Campaign",
    "CampaignSend",
    "CannedResponse",
    "CareTask",
    "Channel",
    "ChannelCursor",
    "ClassificationRule",
    "Contract",
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
    "FlowDocument",
    "FollowUp",
    "IdentityKind",
    "Interaction",
    "InteractionKind",
    "KnowledgeArticle",
    "LifecycleStage",
    "LifecycleTransition",
    "MemberLevel",
    "MemberLevelChange",
    "Membership",
    "MergeRecord",
    "Opportunity",
    "Order",
    "OrderLine",
    "Organization",
    "OutboxMessage",
    "PasswordResetToken",
    "Payment",
    "PipelineStage",
    "PointsEntry",
    "QuarantinedMessage",
    "QueueEntry",
    "ReportDelivery",
    "RollupAgentConversation",
    "RollupAgentDay",
    "RollupChannelDay",
    "RollupOrderDay",
    "RollupState",
    "RollupTicketDuration",
    "Segment",
    "Team",
    "Ticket",
    "TicketCategory",
    "TicketPriority",
    "TicketStatus",
    "UnansweredQuestion",
    "WebhookDelivery",
    "WebhookSubscription",
    "agent_teams",
    "ticket_number",
    "utcnow",
]
