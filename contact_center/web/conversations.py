"""The conversation screen: the customer's whole history, the reply box, notes, the ticket.

- The timeline holds every interaction of the customer on every channel (mail with its
  subject, chats, calls with their recording and duration, notes, system events), not
  only this conversation's. Texts are shown as escaped plain text; a mail's sanitized
  HTML is only served on a page of its own under ``Content-Security-Policy: sandbox``,
  so nothing in it can run with the console's origin.
- Replies go through the outbox (``routing.outbox.enqueue_reply``) on the conversation's
  channel or another channel the customer has an identity on. Canned responses are
  inserted with ``/shortcut``; their variables (``{{customer.name}}``, ``{{agent.name}}``,
  ``{{ticket.number}}``) are filled in here, by plain substitution, when the reply is sent.
- Notes are internal (kind ``note``, direction ``internal``), with ``@login`` mentions
  announced to those agents by a ``note.mentioned`` event.
- Ticket fields, merges of duplicate tickets and snoozes are audited and announced with
  ``ticket.updated``.

Snoozing changes no schema: the ticket goes to ``pending`` (which the routing engine
already turns back to ``open`` when the customer writes) and a system interaction keeps
the time (``meta = {"event": "snoozed", "snoozed_until": "…Z"}``); the inbox hides a
pending ticket from "mine" while its latest snooze time is ahead.
"""

from __future__ import annotations

import re
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote
from zoneinfo import ZoneInfo

import structlog
from aiohttp import BodyPartReader, web
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from channels.webchat import agent_typing
from contact_center.app import ENGINE_KEY, SETTINGS_KEY
from contact_center.channel_setup import attachment_policy, blob_store
from contact_center.web.auth import (
    DATABASE,
    PREFIX,
    RequestContext,
    context,
    current_agent,
    forbidden,
)
from contact_center.web.customer360 import card_values, customer_visible
from contact_center.web.display import Display
from contact_center.web.forms import FormProblem, actor_of, done, parse_int, problem
from contact_center.web.inbox import (
    SNOOZE_EVENT,
    UNSNOOZE_EVENT,
    snooze_stamp,
)
from contact_center.web.policy import can_see_conversation
from contact_center.web.render import page
from crm_core.errors import NotFoundError
from crm_core.models import (
    Agent,
    CallRecord,
    CannedResponse,
    Channel,
    Conversation,
    ConversationStatus,
    Customer,
    Direction,
    IdentityKind,
    Interaction,
    InteractionKind,
    OutboxMessage,
    Team,
    Ticket,
    TicketCategory,
    TicketPriority,
    TicketStatus,
    utcnow,
)
from crm_core.services import audit
from crm_core.services.customers import get_customer
from crm_core.services.knowledge import bot_session_for
from routing.blobs import BlobNotFound, BlobStore
from routing.envelope import SenderHandles
from routing.events import (
    CONVERSATION_ASSIGNED,
    INTERACTION_LOGGED,
    TICKET_UPDATED,
    Event,
    changing,
)
from routing.outbox import enqueue_reply

log = structlog.get_logger(__name__)

NOTE_MENTIONED = "note.mentioned"
"""Event: an internal note mentions agents (data: conversation_id, customer_id,
interaction_id, author_id, author_name, agent_ids). The console shows it to them."""
TIMELINE_LIMIT = 300
MAX_TEXT = 20_000
MAX_FILES = 10
MAX_TAGS = 20
SNOOZE_MAX = timedelta(days=90)
REPLY_CHANNELS: dict[IdentityKind, Channel] = {
    IdentityKind.EMAIL: Channel.EMAIL,
    IdentityKind.TELEGRAM: Channel.TELEGRAM,
    IdentityKind.WEBCHAT: Channel.WEBCHAT,
}
"""Where an agent can write to: phone identities are called, not written to."""
HANDLE_FIELD = {Channel.EMAIL: "email", Channel.TELEGRAM: "telegram_id",
                Channel.WEBCHAT: "visitor_id"}
VARIABLE_NAMES = (
    "customer.name", "customer.given_name", "customer.family_name", "customer.email",
    "customer.phone", "agent.name", "ticket.number", "ticket.subject",
)
"""The variables a canned response may use (the admin area checks bodies against them)."""
VARIABLES = re.compile(r"\{\{\s*(" + "|".join(re.escape(n) for n in VARIABLE_NAMES)
                       + r")\s*\}\}")
WHOLE_SHORTCUT = re.compile(r"^/([\w-]{1,50})$")
MENTION = re.compile(r"(?<![\w@])@([^\s@,;:!?，。；：！？]{1,100})")
CONTENT_TYPE = re.compile(r"^[\w.+-]+/[\w.+-]+$")
SAFE_URL = re.compile(r"^https?://", re.IGNORECASE)
HTML_CSP = ("sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
"""The sanitized original of a mail is shown on its own page, sandboxed: no scripts,
no forms, no remote images (tracking pixels), a unique origin without cookies."""
BLOBS = web.AppKey("console_blobs", BlobStore)  # type: ignore[type-abstract]


def _int(value: str | None) -> int | None:
    return parse_int(value)


def fill_variables(text: str, values: dict[str, str | None]) -> str:
    """Replace ``{{customer.name}}``, ``{{agent.name}}``, ``{{ticket.number}}`` … (no eval:
    a fixed list of names substituted as text; a known name without a value becomes empty,
    anything else in braces stays as written)."""
    return VARIABLES.sub(lambda m: values.get(m.group(1)) or "", text)


def variable_values(customer: Customer, agent: Agent, ticket: Ticket | None,
                    ) -> dict[str, str | None]:
    """The values of the canned-response variables for one reply."""
    return {
        "customer.name": customer.display_name, "customer.given_name": customer.given_name,
        "customer.family_name": customer.family_name,
        "customer.email": next(iter(customer.emails), None),
        "customer.phone": next(iter(customer.phones), None),
        "agent.name": agent.display_name,
        "ticket.number": ticket.number if ticket else None,
        "ticket.subject": ticket.subject if ticket else None,
    }


def parse_tags(raw: str) -> list[str]:
    """Tags typed as ``a, b，c``: trimmed, de-duplicated, at most ``MAX_TAGS``."""
    tags = [t.strip()[:50] for t in re.split(r"[,，、;；\n]", raw or "") if t.strip()]
    return list(dict.fromkeys(tags))[:MAX_TAGS]


def safe_url(url: str | None) -> str | None:
    """Only http(s) links are rendered (a recording URL is provider data)."""
    return url if url and SAFE_URL.match(url) else None


# -- loading ----------------------------------------------------------------------------


async def visible_conversation(request: web.Request, session: AsyncSession) -> Conversation:
    """The conversation of the URL, if the agent may see it (404 / 403 otherwise)."""
    ctx = context(request)
    agent = current_agent(request)
    conversation_id = _int(request.match_info.get("id"))
    conversation = await session.get(Conversation, conversation_id) if conversation_id else None
    if conversation is None:
        raise web.HTTPNotFound(text=ctx.gettext("This conversation does not exist."))
    if not can_see_conversation(agent, ctx.team_ids, conversation, ctx.team_member_ids):
        log.warning("console.conversation_refused", agent_id=agent.id,
                    conversation_id=conversation.id)
        raise forbidden(request)
    return conversation


async def latest_ticket(session: AsyncSession, conversation_id: int) -> Ticket | None:
    """The conversation's newest ticket."""
    return await session.scalar(
        select(Ticket).where(Ticket.conversation_id == conversation_id)
        .order_by(Ticket.id.desc()).limit(1))


async def active_snooze(session: AsyncSession, conversation_id: int) -> datetime | None:
    """The snooze time of the conversation's latest snooze record, when still ahead."""
    meta = await session.scalar(
        select(Interaction.meta)
        .where(Interaction.conversation_id == conversation_id,
               Interaction.kind == InteractionKind.SYSTEM,
               Interaction.meta["event"].as_string().in_([SNOOZE_EVENT, UNSNOOZE_EVENT]))
        .order_by(Interaction.id.desc()).limit(1))
    stamp = (meta or {}).get("snoozed_until") or ""
    try:
        until = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    return until if until > utcnow() else None


@dataclass
class TimelineItem:
    """One entry of the customer's history: an interaction, or a call without one."""

    at: datetime
    interaction: Interaction | None = None
    call: CallRecord | None = None
    agent_name: str | None = None
    outbox_status: str | None = None
    outbox_error: str | None = None
    here: bool = False
    mentions: list[str] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)
    rule_hits: list[str] = field(default_factory=list)
    recording_url: str | None = None


async def load_timeline(session: AsyncSession, customer_id: int, conversation_id: int, *,
                        limit: int = TIMELINE_LIMIT) -> list[TimelineItem]:
    """The customer's last ``limit`` interactions on every channel, oldest first, with the
    delivery state of replies, the agents' names and the calls' records."""
    interactions = list(await session.scalars(
        select(Interaction).where(Interaction.customer_id == customer_id)
        .order_by(Interaction.occurred_at.desc(), Interaction.id.desc()).limit(limit)))
    interactions.reverse()
    ids = [i.id for i in interactions]
    outbox: dict[int, tuple[str, str | None]] = {}
    if ids:
        rows = await session.execute(
            select(OutboxMessage.interaction_id, OutboxMessage.status, OutboxMessage.last_error)
            .where(OutboxMessage.interaction_id.in_(ids)))
        outbox = {iid: (status, error) for iid, status, error in rows if iid is not None}
    agent_ids = {i.agent_id for i in interactions if i.agent_id}
    for interaction in interactions:
        agent_ids.update(m for m in (interaction.meta or {}).get("mentions", [])
                         if isinstance(m, int))
    names: dict[int, str] = {}
    if agent_ids:
        rows = await session.execute(
            select(Agent.id, Agent.display_name).where(Agent.id.in_(agent_ids)))
        names = {agent_id: name for agent_id, name in rows}
    calls = {c.call_id: c for c in await session.scalars(
        select(CallRecord).where(CallRecord.customer_id == customer_id)
        .order_by(CallRecord.started_at.desc()).limit(limit))}
    shown_calls: set[str] = set()
    items: list[TimelineItem] = []
    for interaction in interactions:
        meta = interaction.meta or {}
        channel_meta = meta.get("channel") if isinstance(meta.get("channel"), dict) else {}
        call = None
        call_sid = channel_meta.get("call_sid")
        if interaction.kind == InteractionKind.CALL and call_sid in calls and (
                call_sid not in shown_calls):
            call = calls[call_sid]
            shown_calls.add(call_sid)
        status, error = outbox.get(interaction.id, (None, None))
        items.append(TimelineItem(
            at=interaction.occurred_at, interaction=interaction, call=call,
            agent_name=names.get(interaction.agent_id) if interaction.agent_id else None,
            outbox_status=status, outbox_error=error,
            here=interaction.conversation_id == conversation_id,
            mentions=[names[m] for m in meta.get("mentions", []) if m in names],
            refused=[r for r in channel_meta.get("attachments_refused", [])
                     if isinstance(r, dict)],
            rule_hits=[str(h) for h in meta.get("rule_hits", []) or []][:20],
            recording_url=safe_url(call.recording_url) if call else None,
        ))
    oldest = items[0].at if items and len(interactions) >= limit else None
    for call_id, call in calls.items():
        if call_id in shown_calls or (oldest is not None and call.started_at < oldest):
            continue
        items.append(TimelineItem(at=call.started_at, call=call,
                                  recording_url=safe_url(call.recording_url)))
    items.sort(key=lambda item: item.at)
    return items


@dataclass(frozen=True)
class ReplyTarget:
    """A channel and handle an agent can write to."""

    channel: Channel
    value: str
    bounced: bool = False

    @property
    def key(self) -> str:
        """The form value naming this target."""
        return f"{self.channel.value}:{self.value}"


async def reply_targets(session: AsyncSession, customer: Customer,
                        conversation: Conversation) -> list[ReplyTarget]:
    """Where a reply can go, best first: the conversation's own channel and handle (for
    mail, the address the customer last wrote from), then the customer's other handles."""
    targets = [ReplyTarget(REPLY_CHANNELS[i.kind], i.value, i.bounced_at is not None)
               for i in customer.identities if i.kind in REPLY_CHANNELS]
    preferred: str | None = None
    if conversation.channel == Channel.EMAIL:
        meta = await session.scalar(
            select(Interaction.meta).where(Interaction.conversation_id == conversation.id,
                                           Interaction.direction == Direction.INBOUND)
            .order_by(Interaction.id.desc()).limit(1))
        sender = ((meta or {}).get("channel") or {}).get("from")
        preferred = str(sender).lower() if sender else None
    elif conversation.channel in (Channel.TELEGRAM, Channel.WEBCHAT):
        preferred = conversation.thread_key

    def rank(target: ReplyTarget) -> tuple[int, int, int]:
        same_channel = target.channel == conversation.channel
        return (0 if same_channel else 1, 0 if target.value == preferred else 1,
                1 if target.bounced else 0)

    return sorted(targets, key=rank)


async def canned_responses(session: AsyncSession, language: str | None) -> list[CannedResponse]:
    """Every canned response; those in the customer's language first."""
    rows = list(await session.scalars(
        select(CannedResponse).order_by(CannedResponse.shortcut, CannedResponse.language)))
    wanted = (language or "").lower()[:2]
    return sorted(rows, key=lambda r: (0 if r.language.lower()[:2] == wanted else 1,
                                       r.shortcut))


async def expand_shortcut(session: AsyncSession, text: str, language: str | None) -> str:
    """A reply that is only ``/shortcut`` becomes that canned response's body."""
    match = WHOLE_SHORTCUT.match(text.strip())
    if not match:
        return text
    for response in await canned_responses(session, language):
        if response.shortcut == match.group(1):
            return response.body
    return text


# -- pages ------------------------------------------------------------------------------


def _display(request: web.Request) -> Display:
    return Display(context(request).language, request.app[SETTINGS_KEY].locale.timezone)


async def conversation_page(request: web.Request) -> web.StreamResponse:
    """``/console/conversations/{id}``: ticket, history, reply and note, customer card."""
    ctx = context(request)
    agent = current_agent(request)
    database = request.app[DATABASE]
    settings = request.app[SETTINGS_KEY]
    async with database.sessions() as session:
        conversation = await visible_conversation(request, session)
        try:
            customer = await get_customer(session, conversation.customer_id,
                                          include_deleted=True)
        except NotFoundError:
            raise web.HTTPNotFound() from None
        ticket = await latest_ticket(session, conversation.id)
        other_tickets = list(await session.scalars(
            select(Ticket).where(Ticket.customer_id == customer.id,
                                 Ticket.id != (ticket.id if ticket else 0),
                                 Ticket.status.not_in([TicketStatus.CLOSED]))
            .order_by(Ticket.id.desc()).limit(20)))
        timeline = await load_timeline(session, customer.id, conversation.id)
        targets = await reply_targets(session, customer, conversation)
        canned = await canned_responses(session, customer.language)
        agents = list(await session.scalars(
            select(Agent).where(Agent.active.is_(True)).order_by(Agent.display_name)))
        teams = list(await session.scalars(select(Team).order_by(Team.name)))
        history = await audit.history(session, "ticket", ticket.id, limit=8) if ticket else []
        snoozed_until = await active_snooze(session, conversation.id)
        bot_session = await bot_session_for(session, conversation)
        card = await card_values(session, agent, ctx.team_ids, customer.id, settings,
                                 conversation_id=conversation.id, language=ctx.language)
    log.info("console.conversation_opened", agent_id=agent.id, conversation_id=conversation.id)
    return page(request, "conversation.html", conversation=conversation, customer=customer,
                ticket=ticket, other_tickets=other_tickets, timeline=timeline,
                targets=targets, canned=canned, agents=agents, teams=teams,
                history=history, snoozed_until=snoozed_until, show=_display(request),
                card=card, error=request.query.get("error"), bot_session=bot_session)


async def timeline_fragment(request: web.Request) -> web.StreamResponse:
    """``/console/conversations/{id}/timeline``: the history, for the live region."""
    database = request.app[DATABASE]
    async with database.sessions() as session:
        conversation = await visible_conversation(request, session)
        timeline = await load_timeline(session, conversation.customer_id, conversation.id)
    return page(request, "_timeline.html", conversation=conversation, timeline=timeline,
                show=_display(request))


# -- forms ------------------------------------------------------------------------------


@dataclass
class ReplyForm:
    """The fields and stored attachments of a posted form."""

    fields: dict[str, str]
    attachments: list[dict[str, Any]]


async def _store_file(request: web.Request, filename: str, content_type: str | None,
                      data: bytes) -> dict[str, Any]:
    ctx = context(request)
    policy = attachment_policy(request.app[SETTINGS_KEY])
    # Browsers send the name as UTF-8 with '"' as %22; some clients percent-encode it all.
    name = unquote(filename or "attachment").replace("/", "_").replace("\\", "_")
    name = "".join(c for c in name if c >= " ")[:255] or "attachment"
    suffix = ("." + name.rsplit(".", 1)[1].lower()) if "." in name else ""
    if suffix in policy.blocked_extensions:
        raise FormProblem(ctx.gettext("Files of type {suffix} cannot be sent.", suffix=suffix))
    if len(data) > policy.max_bytes:
        raise FormProblem(ctx.gettext("{name} is too large (at most {size} MB).", name=name,
                                      size=round(policy.max_bytes / 1024 / 1024, 1)), 413)
    key = await request.app[BLOBS].put(data)
    kind = content_type if content_type and CONTENT_TYPE.match(content_type) else (
        "application/octet-stream")
    return {"blob_key": key, "filename": name, "content_type": kind, "size": len(data)}


async def read_form(request: web.Request) -> ReplyForm:
    """Fields and files of a posted form; files go to the blob store within the limits.

    A form sent by console.js carries the CSRF token in a header, so its body is streamed
    here part by part (the size limit is ours); a plain form was already read by the
    CSRF check (aiohttp's ``client_max_size`` bounds it).
    """
    ctx = context(request)
    policy = attachment_policy(request.app[SETTINGS_KEY])
    fields: dict[str, str] = {}
    files: list[dict[str, Any]] = []
    if request.content_type == "multipart/form-data" and request.headers.get("X-CSRF-Token"):
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.filename is not None:
                if not part.filename:
                    await part.release()
                    continue
                if len(files) >= MAX_FILES:
                    raise FormProblem(ctx.gettext("At most {count} files at once.",
                                                  count=MAX_FILES))
                data = bytearray()
                while chunk := await part.read_chunk(64 * 1024):
                    data.extend(chunk)
                    if len(data) > policy.max_bytes:
                        raise FormProblem(ctx.gettext(
                            "{name} is too large (at most {size} MB).", name=part.filename,
                            size=round(policy.max_bytes / 1024 / 1024, 1)), 413)
                files.append(await _store_file(request, part.filename,
                                               part.headers.get("Content-Type"), bytes(data)))
            elif part.name:
                fields[part.name] = (await part.text())[:MAX_TEXT + 1000]
        return ReplyForm(fields, files)
    form = await request.post()
    for name, value in form.items():
        if isinstance(value, web.FileField):
            if not value.filename:
                continue
            if len(files) >= MAX_FILES:
                raise FormProblem(ctx.gettext("At most {count} files at once.",
                                              count=MAX_FILES))
            files.append(await _store_file(request, value.filename, value.content_type,
                                           value.file.read()))
        else:
            fields[name] = str(value)[:MAX_TEXT + 1000]
    return ReplyForm(fields, files)


async def _conversation_on(session: AsyncSession, customer: Customer, target: ReplyTarget,
                           current: Conversation) -> Conversation:
    """Where a reply on another channel is threaded: the customer's latest conversation on
    that channel (its chat id, its mail thread), or a new one when there is none."""
    if target.channel == current.channel:
        return current
    found = await session.scalar(
        select(Conversation).where(Conversation.customer_id == customer.id,
                                   Conversation.channel == target.channel)
        .order_by(Conversation.last_message_at.desc().nulls_last(), Conversation.id.desc())
        .limit(1))
    if found is not None:
        return found
    created = Conversation(
        customer_id=customer.id, channel=target.channel, subject=current.subject,
        thread_key=target.value if target.channel != Channel.EMAIL else None,
        assignee_id=current.assignee_id, team_id=current.team_id,
        related_conversation_id=current.id,
        last_message_at=utcnow())
    session.add(created)
    await session.flush()
    return created


async def _publish(request: web.Request, *events: Event) -> None:
    await request.app[ENGINE_KEY].events.publish(list(events))


def _changing(
    request: web.Request,
) -> AbstractAsyncContextManager[tuple[AsyncSession, list[Event]]]:
    """A write transaction whose events (appended to the list) get their webhook rows in
    it and reach live consoles after it commits."""
    return changing(request.app[DATABASE], request.app[ENGINE_KEY].events)


async def reply(request: web.Request) -> web.StreamResponse:
    """Send a reply through the outbox, on the chosen channel, with canned text filled in."""
    ctx = context(request)
    agent = current_agent(request)
    database = request.app[DATABASE]
    try:
        async with database.sessions() as session:
            await visible_conversation(request, session)  # before reading (and storing) files
        form = await read_form(request)
        async with _changing(request) as (session, events):
            conversation = await visible_conversation(request, session)
            customer = await get_customer(session, conversation.customer_id)
            targets = await reply_targets(session, customer, conversation)
            wanted = form.fields.get("target", "")
            target = next((t for t in targets if t.key == wanted), None) if wanted else (
                targets[0] if targets else None)
            if target is None:
                raise FormProblem(ctx.gettext("The customer cannot be written to on that "
                                              "channel."))
            ticket = await latest_ticket(session, conversation.id)
            text = await expand_shortcut(session, form.fields.get("text", ""),
                                         customer.language)
            text = fill_variables(text, variable_values(customer, agent, ticket)).strip()
            if not text and not form.attachments:
                raise FormProblem(ctx.gettext("Write a reply first."))
            if len(text) > MAX_TEXT:
                raise FormProblem(ctx.gettext("The reply is too long."))
            destination = await _conversation_on(session, customer, target, conversation)
            subject = None
            if target.channel == Channel.EMAIL:
                subject = (form.fields.get("subject") or "").strip()[:300] or _re(
                    destination.subject or (ticket.subject if ticket else ""))
            message = await enqueue_reply(
                session, conversation=destination, customer=customer, channel=target.channel,
                to=SenderHandles(**{HANDLE_FIELD[target.channel]: target.value},
                                 display_name=customer.display_name),
                text=text, subject=subject, agent_id=agent.id, attachments=form.attachments)
            now = utcnow()
            destination.last_message_at = now
            claimed = conversation.assignee_id is None
            if claimed:  # whoever answers an unassigned conversation takes it
                conversation.assignee_id = agent.id
            if ticket is not None:
                before = _reply_state(ticket)
                if ticket.first_responded_at is None:
                    ticket.first_responded_at = now
                if ticket.status == TicketStatus.NEW:
                    ticket.status = TicketStatus.OPEN
                if claimed:
                    ticket.assignee_id = agent.id
                ticket.updated_at = now
                old, new = audit.diff(before, _reply_state(ticket))
                if new:
                    audit.record(session, actor=actor_of(agent), action="reply",
                                 entity_type="ticket", entity_id=ticket.id, before=old,
                                 after={**new, "interaction_id": message.interaction_id})
            interaction_id = message.interaction_id
            outbox_id = message.id
            event_data = {"interaction_id": interaction_id, "conversation_id": destination.id,
                          "customer_id": customer.id, "channel": target.channel.value,
                          "direction": Direction.OUTBOUND.value, "agent_id": agent.id}
            events.append(Event(INTERACTION_LOGGED, event_data))
            if claimed:
                events.append(Event(CONVERSATION_ASSIGNED, {
                    "conversation_id": conversation.id, "agent_id": agent.id,
                    "team_id": conversation.team_id, "reason": "console:replied",
                    "customer_id": customer.id}))
            if ticket is not None:
                events.append(Event(TICKET_UPDATED, {
                    "ticket_id": ticket.id, "change": "agent-replied",
                    "conversation_id": conversation.id, "customer_id": customer.id}))
    except FormProblem as refusal:
        log.info("console.reply_refused", agent_id=agent.id,
                 conversation_id=request.match_info.get("id"), status=refusal.status)
        return problem(request, refusal)
    except NotFoundError:
        raise web.HTTPNotFound() from None
    log.info("console.reply", agent_id=agent.id, conversation_id=event_data["conversation_id"],
             channel=event_data["channel"], outbox_id=outbox_id,
             attachments=len(form.attachments))
    return done(request, f"{PREFIX}/conversations/{conversation.id}",
                 interaction_id=interaction_id, outbox_id=outbox_id)


def _reply_state(ticket: Ticket) -> dict[str, Any]:
    return audit.jsonable({"status": ticket.status, "assignee_id": ticket.assignee_id,
                           "first_responded_at": ticket.first_responded_at})


def _re(subject: str) -> str:
    subject = (subject or "").strip()
    if not subject or re.match(r"^(re|回复|答复)\s*[:：]", subject, re.IGNORECASE):
        return subject
    return f"Re: {subject}"


async def mentioned_agents(session: AsyncSession, text: str) -> list[Agent]:
    """The active agents named ``@login`` (or ``@display_name`` without spaces) in ``text``."""
    names = {m.group(1).rstrip(".").lower() for m in MENTION.finditer(text)}
    if not names:
        return []
    agents = await session.scalars(select(Agent).where(Agent.active.is_(True)))
    return [a for a in agents if a.login.lower() in names or a.display_name.lower() in names]


async def add_note(request: web.Request) -> web.StreamResponse:
    """An internal note; ``@login`` mentions are announced to those agents."""
    ctx = context(request)
    agent = current_agent(request)
    form = await request.post()
    text = str(form.get("text", "")).strip()
    try:
        if not text:
            raise FormProblem(ctx.gettext("Write a note first."))
        if len(text) > MAX_TEXT:
            raise FormProblem(ctx.gettext("The note is too long."))
        async with _changing(request) as (session, events):
            conversation = await visible_conversation(request, session)
            mentioned = [a for a in await mentioned_agents(session, text) if a.id != agent.id]
            note = Interaction(
                conversation_id=conversation.id, customer_id=conversation.customer_id,
                channel=Channel.INTERNAL, direction=Direction.INTERNAL,
                kind=InteractionKind.NOTE, text=text, agent_id=agent.id,
                meta={"mentions": [a.id for a in mentioned]})
            session.add(note)
            await session.flush()
            data = {"interaction_id": note.id, "conversation_id": conversation.id,
                    "customer_id": conversation.customer_id, "channel": Channel.INTERNAL.value,
                    "direction": Direction.INTERNAL.value, "agent_id": agent.id}
            events.append(Event(INTERACTION_LOGGED, data))
            if mentioned:
                events.append(Event(NOTE_MENTIONED, {
                    "conversation_id": data["conversation_id"],
                    "customer_id": data["customer_id"],
                    "interaction_id": data["interaction_id"], "author_id": agent.id,
                    "author_name": agent.display_name,
                    "agent_ids": [a.id for a in mentioned]}))
    except FormProblem as refusal:
        return problem(request, refusal)
    log.info("console.note", agent_id=agent.id, conversation_id=data["conversation_id"],
             interaction_id=data["interaction_id"], mentions=[a.id for a in mentioned])
    return done(request, f"{PREFIX}/conversations/{data['conversation_id']}",
                 interaction_id=data["interaction_id"])


def _ticket_state(ticket: Ticket) -> dict[str, Any]:
    return audit.jsonable({
        "status": ticket.status, "priority": ticket.priority, "category": ticket.category,
        "assignee_id": ticket.assignee_id, "team_id": ticket.team_id, "tags": list(ticket.tags),
    })


def _apply_status(ticket: Ticket, status: TicketStatus, now: datetime) -> None:
    ticket.status = status
    if status == TicketStatus.RESOLVED:
        ticket.resolved_at = ticket.resolved_at or now
        ticket.closed_at = None
    elif status == TicketStatus.CLOSED:
        ticket.resolved_at = ticket.resolved_at or now
        ticket.closed_at = ticket.closed_at or now
    else:
        ticket.resolved_at = None
        ticket.closed_at = None


def _system_note(conversation: Conversation, agent: Agent, **meta: Any) -> Interaction:
    return Interaction(conversation_id=conversation.id, customer_id=conversation.customer_id,
                       channel=Channel.INTERNAL, direction=Direction.INTERNAL,
                       kind=InteractionKind.SYSTEM, agent_id=agent.id, meta=meta)


async def edit_ticket(request: web.Request) -> web.StreamResponse:
    """Change status, priority, category, assignee, team and tags; audited, announced."""
    ctx = context(request)
    agent = current_agent(request)
    form = await request.post()
    try:
        async with _changing(request) as (session, events):
            conversation = await visible_conversation(request, session)
            ticket = await latest_ticket(session, conversation.id)
            if ticket is None:
                raise FormProblem(ctx.gettext("This conversation has no ticket."), 404)
            before = _ticket_state(ticket)
            now = utcnow()
            try:
                if "status" in form:
                    # the Resolve button sends status=resolved after the select's value
                    status = TicketStatus(str(form.getall("status")[-1]))
                    if status != ticket.status:
                        _apply_status(ticket, status, now)
                        if await active_snooze(session, conversation.id):
                            session.add(_system_note(conversation, agent, event=UNSNOOZE_EVENT,
                                                     snoozed_until=""))
                if "priority" in form:
                    ticket.priority = TicketPriority(str(form["priority"]))
                if "category" in form:
                    ticket.category = TicketCategory(str(form["category"]))
            except ValueError:
                raise FormProblem(ctx.gettext("Choose a value from the list.")) from None
            if "assignee_id" in form:
                assignee_id = _int(str(form["assignee_id"]))
                if assignee_id is not None and await session.scalar(
                        select(Agent.id).where(Agent.id == assignee_id,
                                               Agent.active.is_(True))) is None:
                    raise FormProblem(ctx.gettext("Choose a value from the list."))
                ticket.assignee_id = assignee_id
            if "team_id" in form:
                team_id = _int(str(form["team_id"]))
                if team_id is not None and await session.get(Team, team_id) is None:
                    raise FormProblem(ctx.gettext("Choose a value from the list."))
                ticket.team_id = team_id
            if "tags" in form:
                ticket.tags = parse_tags(str(form["tags"]))
            after = _ticket_state(ticket)
            old, new = audit.diff(before, after)
            if new:
                ticket.updated_at = now
                audit.record(session, actor=actor_of(agent), action="update",
                             entity_type="ticket", entity_id=ticket.id, before=old, after=new)
                events.append(Event(TICKET_UPDATED, {
                    "ticket_id": ticket.id, "change": "edited", "fields": sorted(new),
                    "conversation_id": conversation.id,
                    "customer_id": conversation.customer_id}))
            if (ticket.assignee_id, ticket.team_id) != (conversation.assignee_id,
                                                        conversation.team_id):
                conversation.assignee_id = ticket.assignee_id
                conversation.team_id = ticket.team_id
                events.append(Event(CONVERSATION_ASSIGNED, {
                    "conversation_id": conversation.id, "agent_id": ticket.assignee_id,
                    "team_id": ticket.team_id, "reason": f"console:{agent.id}",
                    "customer_id": conversation.customer_id}))
            conversation_id = conversation.id
            ticket_id = ticket.id
    except FormProblem as refusal:
        return problem(request, refusal)
    log.info("console.ticket_edited", agent_id=agent.id, conversation_id=conversation_id,
             ticket_id=ticket_id, fields=sorted(new))
    return done(request, f"{PREFIX}/conversations/{conversation_id}", changed=sorted(new))


def _ticket_reference(value: str) -> tuple[str | None, int | None]:
    value = value.strip().upper()
    if re.fullmatch(r"T-\d{1,12}", value):
        return value if len(value) >= 8 else f"T-{int(value[2:]):06d}", None
    return None, _int(value)


async def merge_ticket(request: web.Request) -> web.StreamResponse:
    """Fold a duplicate ticket into this conversation's: its conversation's interactions
    move here, it is closed with a system note on both sides; audited."""
    ctx = context(request)
    agent = current_agent(request)
    form = await request.post()
    number, ticket_id = _ticket_reference(str(form.get("ticket", "")))
    try:
        async with _changing(request) as (session, events):
            conversation = await visible_conversation(request, session)
            ticket = await latest_ticket(session, conversation.id)
            other = None
            if number is not None:
                other = await session.scalar(select(Ticket).where(Ticket.number == number))
            elif ticket_id is not None:
                other = await session.get(Ticket, ticket_id)
            if ticket is None or other is None or other.id == ticket.id:
                raise FormProblem(ctx.gettext("No other ticket with that number."), 404)
            other_conversation = (await session.get(Conversation, other.conversation_id)
                                  if other.conversation_id else None)
            if other_conversation is None or not can_see_conversation(
                    agent, ctx.team_ids, other_conversation, ctx.team_member_ids):
                raise FormProblem(ctx.gettext("You are not allowed to see this."), 403)
            if other.customer_id != ticket.customer_id:
                raise FormProblem(ctx.gettext(
                    "The tickets belong to different customers: merge the customers first."))
            if other.status == TicketStatus.CLOSED and "merged" in other.tags:
                raise FormProblem(ctx.gettext("That ticket was already merged."))
            before_this, before_other = _ticket_state(ticket), _ticket_state(other)
            moved = 0
            now = utcnow()
            if other_conversation.id != conversation.id:
                result = await session.execute(
                    update(Interaction)
                    .where(Interaction.conversation_id == other_conversation.id)
                    .values(conversation_id=conversation.id))
                moved = result.rowcount or 0
                await session.execute(
                    update(OutboxMessage)
                    .where(OutboxMessage.conversation_id == other_conversation.id)
                    .values(conversation_id=conversation.id))
                latest = max(filter(None, [conversation.last_message_at,
                                           other_conversation.last_message_at]), default=None)
                conversation.last_message_at = latest
                other_conversation.status = ConversationStatus.CLOSED
                other_conversation.closed_at = now
                other_conversation.related_conversation_id = conversation.id
            _apply_status(other, TicketStatus.CLOSED, now)
            other.tags = list(dict.fromkeys([*other.tags, "merged"]))
            other.updated_at = now
            ticket.tags = list(dict.fromkeys([*ticket.tags,
                                              *(t for t in other.tags if t != "merged")]))
            ticket.updated_at = now
            session.add(_system_note(conversation, agent, event="ticket_merged",
                                     ticket_number=other.number, moved=moved))
            session.add(_system_note(other_conversation, agent, event="merged_into",
                                     ticket_number=ticket.number))
            for row, before, action, extra in (
                (ticket, before_this, "merge", {"merged_ticket_id": other.id, "moved": moved}),
                (other, before_other, "merged_into", {"into_ticket_id": ticket.id}),
            ):
                old, new = audit.diff(before, _ticket_state(row))
                audit.record(session, actor=actor_of(agent), action=action,
                             entity_type="ticket", entity_id=row.id, before=old,
                             after={**new, **extra})
            result_ids = (conversation.id, ticket.id, other.id)
            events.extend(Event(TICKET_UPDATED, {
                "ticket_id": tid, "change": change, "conversation_id": cid,
                "customer_id": conversation.customer_id})
                for tid, change, cid in ((ticket.id, "merged", conversation.id),
                                         (other.id, "merged-into", other_conversation.id)))
    except FormProblem as refusal:
        return problem(request, refusal)
    conversation_id, this_id, other_id = result_ids
    log.info("console.tickets_merged", agent_id=agent.id, conversation_id=conversation_id,
             ticket_id=this_id, merged_ticket_id=other_id, moved=moved)
    return done(request, f"{PREFIX}/conversations/{conversation_id}", moved=moved)


def _snooze_time(form: Any, timezone: str) -> datetime | None:
    hours = _int(str(form.get("hours", "")))
    if hours is not None:
        return utcnow() + timedelta(hours=hours)
    raw = str(form.get("until", "")).strip()
    if not raw:
        return None
    try:
        local = datetime.fromisoformat(raw)
    except ValueError:
        return None
    if local.tzinfo is None:
        local = local.replace(tzinfo=ZoneInfo(timezone))
    return local.astimezone(UTC)


async def snooze(request: web.Request) -> web.StreamResponse:
    """Put the ticket aside until a time: pending, out of "mine" until then (or until the
    customer writes, which reopens it)."""
    ctx = context(request)
    agent = current_agent(request)
    form = await request.post()
    until = _snooze_time(form, request.app[SETTINGS_KEY].locale.timezone)
    now = utcnow()
    try:
        if until is None or until <= now or until - now > SNOOZE_MAX:
            raise FormProblem(ctx.gettext("Choose a time within the next 90 days."))
        async with _changing(request) as (session, events):
            conversation = await visible_conversation(request, session)
            ticket = await latest_ticket(session, conversation.id)
            if ticket is None:
                raise FormProblem(ctx.gettext("This conversation has no ticket."), 404)
            before = _ticket_state(ticket)
            _apply_status(ticket, TicketStatus.PENDING, now)
            ticket.updated_at = now
            stamp = snooze_stamp(until)
            session.add(_system_note(conversation, agent, event=SNOOZE_EVENT,
                                     snoozed_until=stamp, previous_status=before["status"]))
            old, new = audit.diff(before, _ticket_state(ticket))
            audit.record(session, actor=actor_of(agent), action="snooze", entity_type="ticket",
                         entity_id=ticket.id, before=old, after={**new, "snoozed_until": stamp})
            ids = (conversation.id, ticket.id, conversation.customer_id)
            events.append(Event(TICKET_UPDATED, {
                "ticket_id": ticket.id, "change": "snoozed", "conversation_id": conversation.id,
                "customer_id": conversation.customer_id}))
    except FormProblem as refusal:
        return problem(request, refusal)
    log.info("console.snoozed", agent_id=agent.id, conversation_id=ids[0], ticket_id=ids[1],
             until=stamp)
    return done(request, f"{PREFIX}/conversations/{ids[0]}", snoozed_until=stamp)


async def unsnooze(request: web.Request) -> web.StreamResponse:
    """End a snooze now: the ticket is open again."""
    agent = current_agent(request)
    ctx = context(request)
    try:
        async with _changing(request) as (session, events):
            conversation = await visible_conversation(request, session)
            ticket = await latest_ticket(session, conversation.id)
            if ticket is None:
                raise FormProblem(ctx.gettext("This conversation has no ticket."), 404)
            before = _ticket_state(ticket)
            if ticket.status == TicketStatus.PENDING:
                _apply_status(ticket, TicketStatus.OPEN, utcnow())
            session.add(_system_note(conversation, agent, event=UNSNOOZE_EVENT, snoozed_until=""))
            old, new = audit.diff(before, _ticket_state(ticket))
            audit.record(session, actor=actor_of(agent), action="unsnooze",
                         entity_type="ticket", entity_id=ticket.id, before=old, after=new)
            ids = (conversation.id, ticket.id, conversation.customer_id)
            events.append(Event(TICKET_UPDATED, {
                "ticket_id": ticket.id, "change": "unsnoozed",
                "conversation_id": conversation.id, "customer_id": conversation.customer_id}))
    except FormProblem as refusal:
        return problem(request, refusal)
    log.info("console.unsnoozed", agent_id=agent.id, conversation_id=ids[0], ticket_id=ids[1])
    return done(request, f"{PREFIX}/conversations/{ids[0]}")


async def typing(request: web.Request) -> web.StreamResponse:
    """The agent types in a web chat: the visitor's widget shows it."""
    agent = current_agent(request)
    database = request.app[DATABASE]
    async with database.sessions() as session:
        conversation = await visible_conversation(request, session)
    if conversation.channel == Channel.WEBCHAT and conversation.thread_key:
        await _publish(request, agent_typing(conversation.thread_key, agent.display_name))
    return web.Response(status=204)


# -- what a message carries -------------------------------------------------------------


async def visible_interaction(request: web.Request, session: AsyncSession,
                              ctx: RequestContext) -> Interaction:
    """The interaction of the URL, if the agent may see its customer's history."""
    agent = current_agent(request)
    interaction_id = _int(request.match_info.get("interaction_id"))
    interaction = await session.get(Interaction, interaction_id) if interaction_id else None
    if interaction is None:
        raise web.HTTPNotFound()
    customer = await session.get(Customer, interaction.customer_id)
    if customer is None or not await customer_visible(session, agent, ctx.team_ids, customer):
        log.warning("console.interaction_refused", agent_id=agent.id,
                    interaction_id=interaction.id)
        raise forbidden(request)
    return interaction


def content_disposition(kind: str, filename: str) -> str:
    """``attachment; filename="…"; filename*=UTF-8''…`` (an ASCII fallback and the real
    name, so Chinese file names survive)."""
    fallback = re.sub(r'[^A-Za-z0-9._-]', "_", filename)[:100] or "file"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


async def download_attachment(request: web.Request) -> web.StreamResponse:
    """``/console/attachments/{interaction_id}/{index}``: one stored file, as a download."""
    ctx = context(request)
    agent = current_agent(request)
    async with request.app[DATABASE].sessions() as session:
        interaction = await visible_interaction(request, session, ctx)
    index = _int(request.match_info.get("index"))
    attachments = interaction.attachments or []
    if index is None or not 0 <= index < len(attachments):
        raise web.HTTPNotFound()
    item = attachments[index]
    try:
        data = await request.app[BLOBS].get(str(item.get("blob_key", "")))
    except (BlobNotFound, ValueError):
        raise web.HTTPNotFound(text=ctx.gettext("This file is no longer stored.")) from None
    content_type = str(item.get("content_type") or "")
    log.info("console.attachment_download", agent_id=agent.id, interaction_id=interaction.id,
             index=index)
    response = web.Response(body=data, content_type=(
        content_type if CONTENT_TYPE.match(content_type) else "application/octet-stream"))
    response.headers["Content-Disposition"] = content_disposition(
        "attachment", str(item.get("filename") or "attachment"))
    response.headers["Content-Security-Policy"] = "sandbox; default-src 'none'"
    response.headers["Cache-Control"] = "private, no-store"
    return response


async def original_html(request: web.Request) -> web.StreamResponse:
    """``/console/interactions/{id}/html``: a mail's sanitized HTML, sandboxed."""
    ctx = context(request)
    agent = current_agent(request)
    async with request.app[DATABASE].sessions() as session:
        interaction = await visible_interaction(request, session, ctx)
    if not interaction.html:
        raise web.HTTPNotFound()
    log.info("console.original_html", agent_id=agent.id, interaction_id=interaction.id)
    body = ('<!doctype html><html><head><meta charset="utf-8">'
            '<meta name="referrer" content="no-referrer"></head><body>'
            f"{interaction.html}</body></html>")
    response = web.Response(text=body, content_type="text/html")
    response.headers["Content-Security-Policy"] = HTML_CSP
    response.headers["Content-Disposition"] = content_disposition(
        "inline", f"message-{interaction.id}.html")
    response.headers["Cache-Control"] = "private, no-store"
    return response


def setup_conversations(app: web.Application) -> None:
    """Register the conversation screen and its actions."""
    app[BLOBS] = blob_store(app[SETTINGS_KEY])
    base = f"{PREFIX}/conversations/{{id}}"
    app.router.add_get(base, conversation_page)
    app.router.add_get(f"{base}/timeline", timeline_fragment)
    app.router.add_post(f"{base}/reply", reply)
    app.router.add_post(f"{base}/note", add_note)
    app.router.add_post(f"{base}/ticket", edit_ticket)
    app.router.add_post(f"{base}/merge", merge_ticket)
    app.router.add_post(f"{base}/snooze", snooze)
    app.router.add_post(f"{base}/unsnooze", unsnooze)
    app.router.add_post(f"{base}/typing", typing)
    app.router.add_get(f"{PREFIX}/attachments/{{interaction_id}}/{{index}}", download_attachment)
    app.router.add_get(f"{PREFIX}/interactions/{{interaction_id}}/html", original_html)
