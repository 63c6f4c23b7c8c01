"""The outbox: replies written with their interaction in one transaction, then dispatched.

A dispatcher claims due messages with a lease, sends them through the channel's
adapter, and records the result: sent (with the provider's id), retried with backoff,
or failed for good — visible to agents, who can retry it. Sending is at-least-once:
a crash between the provider's acceptance and our record re-sends after the lease;
adapters use the outbox id as the provider-side idempotency key where one exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.db import Database
from crm_core.models import (
    Agent,
    Channel,
    Conversation,
    Customer,
    Direction,
    Interaction,
    InteractionKind,
    OutboxMessage,
    Ticket,
    utcnow,
)
from routing import metrics
from routing.adapters import ChannelRegistry, PermanentSendError
from routing.bus import RetryPolicy
from routing.envelope import AttachmentRef, OutboundMessage, SenderHandles, ThreadHints
from routing.events import MESSAGE_FAILED, MESSAGE_SENT, Event, EventSink

log = structlog.get_logger(__name__)

PENDING = "pending"
SENDING = "sending"
SENT = "sent"
FAILED = "failed"


async def _email_thread(
    session: AsyncSession, conversation: Conversation, in_reply_to: str | None
) -> ThreadHints:
    """In-Reply-To (the newest message we are answering) and References of the thread."""
    refs = list(
        await session.scalars(
            select(Interaction.message_ref)
            .where(Interaction.conversation_id == conversation.id,
                   Interaction.message_ref.is_not(None))
            .order_by(Interaction.id)
        )
    )
    if in_reply_to is None:
        in_reply_to = await session.scalar(
            select(Interaction.message_ref)
            .where(Interaction.conversation_id == conversation.id,
                   Interaction.direction == Direction.INBOUND,
                   Interaction.message_ref.is_not(None))
            .order_by(Interaction.id.desc())
            .limit(1)
        )
    if in_reply_to and in_reply_to not in refs:
        refs.append(in_reply_to)
    return ThreadHints(in_reply_to=in_reply_to, references=tuple(dict.fromkeys(refs))[-20:])


async def _mailbox_of(session: AsyncSession, conversation: Conversation) -> str | None:
    """The mailbox the customer last wrote to, so the reply leaves from that address."""
    meta = await session.scalar(
        select(Interaction.meta)
        .where(Interaction.conversation_id == conversation.id,
               Interaction.direction == Direction.INBOUND)
        .order_by(Interaction.id.desc())
        .limit(1)
    )
    channel_meta = (meta or {}).get("channel") or {}
    mailbox = channel_meta.get("mailbox")
    return str(mailbox) if mailbox else None


async def _wants_email(session: AsyncSession, conversation: Conversation) -> bool:
    """Whether the newest inbound message asked for the answer by e-mail."""
    meta = await session.scalar(
        select(Interaction.meta)
        .where(Interaction.conversation_id == conversation.id,
               Interaction.direction == Direction.INBOUND)
        .order_by(Interaction.id.desc())
        .limit(1)
    )
    return bool(((meta or {}).get("channel") or {}).get("reply_by_email"))


async def enqueue_reply(
    session: AsyncSession,
    *,
    conversation: Conversation,
    customer: Customer,
    channel: Channel,
    to: SenderHandles,
    text: str,
    subject: str | None = None,
    html: str | None = None,
    in_reply_to: str | None = None,
    agent_id: int | None = None,
    automated: bool = False,
    attachments: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
    ticket_number: str | None = None,
) -> OutboxMessage:
    """Log an outbound interaction and queue its delivery, in the caller's transaction.

    E-mail replies get their thread (In-Reply-To the customer's newest mail, References
    of the whole conversation), the ticket number for the subject, the customer's
    language for the templates and the mailbox to send from. A web chat visitor who left
    an e-mail address while nobody was online (``reply_by_email``) is answered by e-mail.
    The agent's name travels along for channels that show it. ``extra`` goes into the
    message's metadata (the bot's ``buttons``) and onto the interaction's ``meta``.
    ``ticket_number``: the conversation's ticket when the caller has it (routing does),
    else it is looked up.
    """
    if channel == Channel.WEBCHAT and to.email and await _wants_email(session, conversation):
        # The visitor left an address when nobody was online: continue by e-mail.
        channel = Channel.EMAIL
    if channel == Channel.EMAIL:
        thread = await _email_thread(session, conversation, in_reply_to)
    else:
        thread = ThreadHints(
            in_reply_to=in_reply_to,
            references=(in_reply_to,) if in_reply_to else (),
            chat_id=conversation.thread_key,
        )
    if ticket_number is None:
        ticket_number = await session.scalar(
            select(Ticket.number)
            .where(Ticket.conversation_id == conversation.id)
            .order_by(Ticket.id.desc())
            .limit(1)
        )
    metadata: dict[str, Any] = {
        "language": customer.language,
        "ticket_number": ticket_number,
        "automated": automated,
        **(extra or {}),
    }
    if channel == Channel.EMAIL:
        metadata["mailbox"] = await _mailbox_of(session, conversation)
    if agent_id is not None:
        metadata["agent_name"] = await session.scalar(
            select(Agent.display_name).where(Agent.id == agent_id)
        )
    interaction = Interaction(
        conversation_id=conversation.id,
        customer_id=customer.id,
        channel=channel,
        direction=Direction.OUTBOUND,
        kind=InteractionKind.MESSAGE,
        subject=subject,
        text=text,
        html=html,
        attachments=list(attachments or []),
        agent_id=agent_id,
        meta={"automated": automated, **(extra or {})},
    )
    session.add(interaction)
    await session.flush()
    message = OutboxMessage(
        channel=channel,
        customer_id=customer.id,
        conversation_id=conversation.id,
        interaction_id=interaction.id,
        payload={
            "to": to.model_dump(exclude_none=True),
            "thread": thread.model_dump(exclude_defaults=True),
            "subject": subject,
            "text": text,
            "html": html,
            "attachments": list(attachments or []),
            "metadata": {k: v for k, v in metadata.items() if v is not None},
        },
    )
    session.add(message)
    await session.flush()
    return message


def to_outbound(row: OutboxMessage | Any) -> OutboundMessage:
    """The adapter-facing message of an outbox row."""
    payload = row.payload
    return OutboundMessage(
        outbox_id=row.id,
        channel=row.channel,
        to=SenderHandles(**payload.get("to", {})),
        thread=ThreadHints(**payload.get("thread", {})),
        subject=payload.get("subject"),
        text=payload.get("text"),
        html=payload.get("html"),
        attachments=tuple(AttachmentRef(**a) for a in payload.get("attachments", [])),
        metadata=payload.get("metadata", {}),
        created_at=row.created_at,
    )


@dataclass(slots=True)
class _Outcome:
    """What sending one claimed message came to: a provider id, or an error."""

    message: OutboxMessage
    provider_id: str | None = None
    error: str | None = None
    permanent: bool = False


class OutboxDispatcher:
    """Sends due outbox messages through the registered channel adapters."""

    def __init__(
        self, database: Database, registry: ChannelRegistry, policy: RetryPolicy | None = None,
        *, events: EventSink | None = None,
    ) -> None:
        self.database = database
        self.registry = registry
        self.policy = policy or RetryPolicy()
        self.events = events
        """Where ``message.sent`` / ``message.failed`` go once recorded (consoles, hooks)."""

    async def _claim(self, limit: int) -> list[OutboxMessage]:
        channels = self.registry.channels()
        if not channels:
            return []  # messages wait, pending, until their channel is configured
        now = utcnow()
        due = OutboxMessage.channel.in_(channels) & or_(
            (OutboxMessage.status == PENDING) & (OutboxMessage.next_attempt_at <= now),
            (OutboxMessage.status == SENDING) & (OutboxMessage.lease_until < now),
        )
        async with self.database.transaction() as session:
            ids = select(OutboxMessage.id).where(due).order_by(OutboxMessage.id).limit(limit)
            if not self.database.is_sqlite:
                ids = ids.with_for_update(skip_locked=True)
            claimed = await session.scalars(
                update(OutboxMessage)
                .where(OutboxMessage.id.in_(ids.scalar_subquery()))
                .values(
                    status=SENDING,
                    lease_until=now + self.policy.lease,
                    attempts=OutboxMessage.attempts + 1,
                )
                .returning(OutboxMessage)
                .execution_options(synchronize_session=False)
            )
            return sorted(claimed, key=lambda m: m.id)

    async def dispatch_once(self, limit: int = 20) -> int:
        """Send what is due; returns how many messages were tried.

        The claimed batch is sent one message after the other and its outcomes are
        recorded together in one transaction: one commit per batch instead of one per
        message (1.5× the SMTP throughput measured by ``bench/campaign_fanout.py``).
        A crash before that commit re-sends the batch after its lease — the
        at-least-once window the module docstring describes, at most ``limit`` wide.
        """
        messages = await self._claim(limit)
        outcomes = [await self._send(message) for message in messages]
        if outcomes:
            await self._record(outcomes)
        return len(messages)

    async def _send(self, message: OutboxMessage) -> _Outcome:
        adapter = self.registry.get(message.channel)
        if adapter is None:  # the channel was unconfigured since the claim
            return _Outcome(message, error=f"no adapter configured for channel "
                                           f"{message.channel.value}")
        try:
            return _Outcome(message, provider_id=await adapter.send(to_outbound(message)))
        except PermanentSendError as exc:
            return _Outcome(message, error=str(exc) or type(exc).__name__, permanent=True)
        except Exception as exc:
            return _Outcome(message, error=f"{type(exc).__name__}: {exc}")

    async def _record(self, outcomes: list[_Outcome]) -> None:
        """Write a batch's statuses (and provider ids onto the interactions) at once."""
        now = utcnow()
        sent: list[dict[str, Any]] = []
        refs: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        events: list[Event] = []
        for outcome in outcomes:
            message = outcome.message
            data = {"outbox_id": message.id, "interaction_id": message.interaction_id,
                    "conversation_id": message.conversation_id,
                    "customer_id": message.customer_id, "channel": message.channel.value}
            bound = log.bind(outbox_id=message.id, channel=message.channel.value,
                             customer_id=message.customer_id)
            if outcome.error is None:
                sent.append({"id": message.id, "status": SENT, "sent_at": now,
                             "provider_id": outcome.provider_id, "lease_until": None,
                             "last_error": None})
                if outcome.provider_id and message.interaction_id:
                    refs.append({"id": message.interaction_id,
                                 "message_ref": outcome.provider_id})
                bound.info("outbox.sent", provider_id=outcome.provider_id)
                metrics.MESSAGES_OUT.labels(message.channel.value, "sent").inc()
                events.append(Event(MESSAGE_SENT, data))
                continue
            final = outcome.permanent or message.attempts >= self.policy.max_attempts
            failed.append({"id": message.id, "status": FAILED if final else PENDING,
                           "last_error": outcome.error[:4000], "lease_until": None,
                           "next_attempt_at": now + self.policy.delay(message.attempts)})
            bound.warning("outbox.send_failed", error=outcome.error, final=final,
                          attempts=message.attempts)
            metrics.MESSAGES_OUT.labels(message.channel.value,
                                        "failed" if final else "retry").inc()
            metrics.ERRORS.labels("outbox").inc()
            if final:
                events.append(Event(MESSAGE_FAILED, {**data, "error": outcome.error[:500]}))
        async with self.database.transaction() as session:
            # ORM bulk UPDATE by primary key: one executemany per kind of change.
            for rows, model in ((sent, OutboxMessage), (failed, OutboxMessage),
                                (refs, Interaction)):
                if rows:
                    await session.execute(update(model), rows)
        if self.events is not None and events:
            await self.events.publish(events)

    async def retry(self, outbox_id: int) -> bool:
        """Put a failed message back in the queue (an agent pressed retry)."""
        async with self.database.transaction() as session:
            result = await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == outbox_id, OutboxMessage.status == FAILED)
                .values(status=PENDING, attempts=0, next_attempt_at=utcnow(), last_error=None)
            )
        return bool(result.rowcount)
