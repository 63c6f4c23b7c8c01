"""Request and response bodies of the API (pydantic v2; they also make the OpenAPI schemas)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from crm_core.models import (
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

MAX_ID = 2**31 - 1
Id = Field(ge=1, le=MAX_ID)


class Strict(BaseModel):
    """Input models refuse unknown fields and trim text."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ErrorBody(BaseModel):
    """What went wrong."""

    code: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    """Every error of the API has this shape."""

    error: ErrorBody


class PageQuery(Strict):
    """Cursor paging: pass ``next_cursor`` of one page as ``cursor`` for the next."""

    cursor: str | None = Field(default=None, max_length=100)
    limit: int = Field(default=50, ge=1, le=200)


# --- customers -----------------------------------------------------------------------


class IdentityOut(BaseModel):
    """A handle of a customer (e-mail, phone, Telegram id …)."""

    id: int
    kind: IdentityKind
    value: str
    label: str | None = None
    verified: bool = False


class IdentityList(BaseModel):
    """A customer's identities."""

    items: list[IdentityOut]


class CustomerOut(BaseModel):
    """A customer record."""

    id: int
    display_name: str
    given_name: str | None = None
    family_name: str | None = None
    organization_id: int | None = None
    job_title: str | None = None
    city: str | None = None
    province: str | None = None
    country: str | None = None
    language: str | None = None
    timezone: str | None = None
    birthday: date | None = None
    lifecycle_stage: LifecycleStage
    tier_code: str | None = None
    category_code: str | None = None
    lifetime_value: Decimal
    custom_attributes: dict[str, Any] = {}
    owner_agent_id: int | None = None
    marketing_opt_in: dict[str, Any] = {}
    do_not_contact: bool = False
    preferred_channel: Channel | None = None
    source: str | None = None
    tags: list[str] = []
    identities: list[IdentityOut] = []
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None
    merged_into_id: int | None = None


class CustomerPage(BaseModel):
    """A page of customers."""

    items: list[CustomerOut]
    next_cursor: str | None = None


class CustomerFilter(PageQuery):
    """Filters of the customer list; all given ones must hold."""

    q: str | None = Field(default=None, max_length=200,
                          description="Free text: an e-mail, a phone number or a name")
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=50)
    tag: str | None = Field(default=None, max_length=100)
    lifecycle: LifecycleStage | None = None
    updated_since: datetime | None = None


class IdentityIn(Strict):
    """A handle to attach."""

    kind: IdentityKind
    value: str = Field(min_length=1, max_length=320)
    label: str | None = Field(default=None, max_length=50)


class CustomerIn(Strict):
    """Fields of a customer; on update only the fields given change."""

    display_name: str | None = Field(default=None, max_length=200)
    given_name: str | None = Field(default=None, max_length=100)
    family_name: str | None = Field(default=None, max_length=100)
    organization_name: str | None = Field(default=None, max_length=200)
    job_title: str | None = Field(default=None, max_length=100)
    city: str | None = Field(default=None, max_length=100)
    province: str | None = Field(default=None, max_length=100)
    country: str | None = Field(default=None, max_length=60)
    language: str | None = Field(default=None, max_length=20)
    timezone: str | None = Field(default=None, max_length=64)
    birthday: date | None = None
    lifecycle_stage: LifecycleStage | None = None
    lifetime_value: Decimal | None = Field(default=None, ge=0, le=Decimal("999999999999"))
    custom_attributes: dict[str, Any] | None = None
    marketing_opt_in: dict[str, bool] | None = None
    do_not_contact: bool | None = None
    preferred_channel: Channel | None = None
    notes: str | None = Field(default=None, max_length=20000)
    source: str | None = Field(default=None, max_length=100)
    emails: list[str] | None = Field(default=None, max_length=20)
    phones: list[str] | None = Field(default=None, max_length=20)
    identities: list[IdentityIn] | None = Field(default=None, max_length=20)
    tags: list[str] | None = Field(default=None, max_length=50)


class MergeIn(Strict):
    """Fold another record into this one."""

    merged_id: int = Field(ge=1, le=MAX_ID)
    reason: str | None = Field(default=None, max_length=500)


class MergeOut(BaseModel):
    """The result of a merge."""

    survivor_id: int
    merged_id: int
    merge_record_id: int


class EraseIn(Strict):
    """Why a customer is erased (kept in the audit trail)."""

    reason: str = Field(min_length=1, max_length=500)


class EraseOut(BaseModel):
    """What erasure removed."""

    customer_id: int
    removed: dict[str, int]


class CustomerExport(BaseModel):
    """Everything stored about one customer (data subject access request)."""

    customer: dict[str, Any]
    identities: list[dict[str, Any]]
    conversations: list[dict[str, Any]]
    interactions: list[dict[str, Any]]
    tickets: list[dict[str, Any]]
    feedback: list[dict[str, Any]]
    campaign_sends: list[dict[str, Any]]
    care_tasks: list[dict[str, Any]]
    audit: list[dict[str, Any]]


# --- conversations and messages ------------------------------------------------------


class ConversationOut(BaseModel):
    """A thread with one customer on one channel."""

    id: int
    customer_id: int
    channel: Channel
    status: ConversationStatus
    subject: str | None = None
    assignee_id: int | None = None
    team_id: int | None = None
    last_message_at: datetime | None = None
    created_at: datetime


class ConversationPage(BaseModel):
    """A page of conversations."""

    items: list[ConversationOut]
    next_cursor: str | None = None


class ConversationFilter(PageQuery):
    """Filters of the conversation list."""

    customer_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    channel: Channel | None = None
    status: ConversationStatus | None = None
    assignee_id: int | None = Field(default=None, ge=1, le=MAX_ID)


class MessageOut(BaseModel):
    """A message, call or note of a conversation."""

    id: int
    conversation_id: int | None = None
    customer_id: int
    channel: Channel
    direction: Direction
    kind: InteractionKind
    subject: str | None = None
    text: str | None = None
    agent_id: int | None = None
    attachments: list[dict[str, Any]] = []
    occurred_at: datetime


class MessagePage(BaseModel):
    """A page of messages, oldest first."""

    items: list[MessageOut]
    next_cursor: str | None = None


class ReplyIn(Strict):
    """A reply to send on the conversation's channel."""

    text: str = Field(min_length=1, max_length=20000)
    subject: str | None = Field(default=None, max_length=300)


class ReplyOut(BaseModel):
    """The queued reply: its message and its outbox entry."""

    interaction_id: int
    outbox_id: int
    conversation_id: int


# --- tickets --------------------------------------------------------------------------


class TicketOut(BaseModel):
    """A service ticket."""

    id: int
    number: str | None = None
    subject: str
    category: TicketCategory
    priority: TicketPriority
    status: TicketStatus
    customer_id: int
    conversation_id: int | None = None
    assignee_id: int | None = None
    team_id: int | None = None
    tags: list[str] = []
    description: str | None = None
    first_response_due_at: datetime | None = None
    resolution_due_at: datetime | None = None
    resolved_at: datetime | None = None
    closed_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


class TicketPage(BaseModel):
    """A page of tickets."""

    items: list[TicketOut]
    next_cursor: str | None = None


class TicketFilter(PageQuery):
    """Filters of the ticket list; ``status`` may repeat."""

    status: list[TicketStatus] | None = None
    open: bool | None = Field(default=None, description="Only new, open and pending tickets")
    customer_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    assignee_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    priority: TicketPriority | None = None
    category: TicketCategory | None = None


class TicketIn(Strict):
    """A new ticket."""

    customer_id: int = Field(ge=1, le=MAX_ID)
    subject: str = Field(min_length=1, max_length=500)
    description: str | None = Field(default=None, max_length=20000)
    category: TicketCategory = TicketCategory.INQUIRY
    priority: TicketPriority = TicketPriority.NORMAL
    conversation_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    assignee_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    tags: list[str] = Field(default_factory=list, max_length=20)


class TicketPatch(Strict):
    """Changes to a ticket; status moves are checked."""

    subject: str | None = Field(default=None, min_length=1, max_length=500)
    description: str | None = Field(default=None, max_length=20000)
    category: TicketCategory | None = None
    priority: TicketPriority | None = None
    status: TicketStatus | None = None
    assignee_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    tags: list[str] | None = Field(default=None, max_length=20)


# --- campaigns, feedback, reports -------------------------------------------------


class CampaignOut(BaseModel):
    """A care campaign (defined in config/campaigns.toml)."""

    id: int
    key: str
    name: str
    action: str
    purpose: str
    trigger_kind: str
    enabled: bool
    status: str


class CampaignList(BaseModel):
    """Every campaign."""

    items: list[CampaignOut]


class TriggerIn(Strict):
    """Send a campaign now to these customers (consent, quiet hours and caps still apply
    at send time)."""

    customer_ids: list[int] = Field(min_length=1, max_length=1000)
    occurrence: str | None = Field(default=None, max_length=60,
                                   description="Idempotency key: the same key sends once")


class TriggerOut(BaseModel):
    """How many sends were planned (repeats of an occurrence are not planned twice)."""

    campaign_id: int
    planned: int


class FeedbackOut(BaseModel):
    """A survey answer or comment."""

    id: int
    customer_id: int
    campaign_id: int | None = None
    ticket_id: int | None = None
    kind: str
    score: int | None = None
    comment: str | None = None
    classification: str | None = None
    channel: Channel
    created_at: datetime


class FeedbackPage(BaseModel):
    """A page of feedback."""

    items: list[FeedbackOut]
    next_cursor: str | None = None


class FeedbackFilter(PageQuery):
    """Filters of the feedback list."""

    customer_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    campaign_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    kind: Literal["csat", "nps", "comment"] | None = None


class SummaryOut(BaseModel):
    """Counts for dashboards elsewhere."""

    customers: int
    open_tickets: int
    tickets_by_status: dict[str, int]
    conversations_by_channel: dict[str, int]
    messages_last_24h: int
    csat_average: float | None = None
    nps: float | None = None


# --- webhooks -------------------------------------------------------------------------


class WebhookIn(Strict):
    """A subscription: where to post which events."""

    name: str = Field(min_length=1, max_length=100)
    url: str = Field(min_length=1, max_length=2000)
    events: list[str] = Field(min_length=1, max_length=50)
    secret: str | None = Field(default=None, min_length=16, max_length=100,
                               description="Leave out to get a generated one")


class WebhookOut(BaseModel):
    """A subscription (its secret only when created)."""

    id: int
    name: str
    url: str
    events: list[str]
    active: bool
    consecutive_failures: int
    disabled_reason: str | None = None
    created_at: datetime
    secret: str | None = None


class WebhookList(BaseModel):
    """Every subscription."""

    items: list[WebhookOut]


class DeliveryOut(BaseModel):
    """One delivery of an event to a subscription."""

    id: int
    event_id: str
    event: str
    status: str
    attempts: int
    last_status_code: int | None = None
    last_error: str | None = None
    next_attempt_at: datetime
    delivered_at: datetime | None = None
    created_at: datetime


class DeliveryList(BaseModel):
    """The latest deliveries of a subscription."""

    items: list[DeliveryOut]
