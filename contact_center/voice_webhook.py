"""The phone channel's webhooks: a Twilio-compatible IVR under ``/webhooks/voice/``.

The provider posts a form for each step of a call and executes the TwiML we answer.
Every request's ``X-Twilio-Signature`` is checked (403 otherwise). Menus come from
``config/flows.toml`` through the channel-neutral flow engine; where the caller is in a
flow travels in a signed ``state`` query parameter, so any web node can answer any step.

The caller is looked up by caller id at once (greeted by name, their latest ticket
offered first). What the call leaves in the customer's history — the call itself, a
voicemail with its transcription, a callback request — goes through the bus like any
message; the call record (status, menu path, duration, recording) is written directly.
Putting a caller through picks an agent with the routing engine's assignment and pops
the customer's card on that agent's console.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import structlog
from aiohttp import web
from sqlalchemy import select

from channels.voice.signature import is_valid_signature
from channels.voice.twiml import TwiML
from contact_center.settings import Settings, VoiceSettings
from crm_core.db import Database
from crm_core.models import (
    Agent,
    Availability,
    BotSession,
    Channel,
    Customer,
    Team,
    agent_teams,
    utcnow,
)
from crm_core.services.calls import Caller, call_record, find_caller, finish, log_event
from routing.assignment import choose_assignee
from routing.bot import BotRuntime, apply_turn, note, record_knowledge
from routing.engine import RoutingEngine
from routing.envelope import InboundMessage, SenderHandles, ThreadHints
from routing.events import Event
from routing.flows import (
    CallFacts,
    FlowEngine,
    FlowError,
    FlowSet,
    FlowState,
    Say,
    Turn,
    load_flows,
)

log = structlog.get_logger(__name__)
PREFIX = "/webhooks/voice"
PROVIDER = "twilio"
SCREEN_POP = "call.screen_pop"
VOICE_KEY = web.AppKey("voice", object)


class VoiceService:
    """Everything the voice webhooks share: settings, flows, database, bus, events."""

    def __init__(self, settings: Settings, database: Database, engine: RoutingEngine) -> None:
        assert settings.voice is not None
        self.settings = settings
        self.voice: VoiceSettings = settings.voice
        self.database = database
        self.engine = engine
        self.flows: FlowSet = load_flows(self.voice.flows_file)
        self.flow_engine = FlowEngine(self.flows, settings.locale.default_language,
                                      region=settings.locale.default_region)
        self.runtime = BotRuntime(
            channels={}, flows_file=self.voice.flows_file,
            region=settings.locale.default_region,
            default_language=settings.locale.default_language,
        )
        """Console-edited flows and the knowledge base (shared with the chat bot)."""
        self.key = settings.secret_key.get_secret_value().encode()
        self.region = settings.locale.default_region
        self.now = utcnow
        """The clock for business hours (tests set their own)."""

    # -- URLs and signatures ----------------------------------------------------------

    def public_url(self, request: web.Request) -> str:
        """The URL the provider called (what it signed), behind a proxy too."""
        base = self.settings.http.public_base_url
        if base:
            return base.rstrip("/") + request.path_qs
        return str(request.url)

    def url(self, request: web.Request, step: str, state: FlowState | None = None,
            **query: str) -> str:
        """Absolute URL of one of our steps."""
        base = self.settings.http.public_base_url
        root = base.rstrip("/") if base else f"{request.scheme}://{request.host}"
        params = dict(query)
        if state is not None:
            params["state"] = state.to_token(self.key)
        suffix = f"?{urlencode(params)}" if params else ""
        return f"{root}{PREFIX}/{step}{suffix}"

    def state(self, request: web.Request, name: str = "state") -> FlowState | None:
        """The flow state in the query; ``FlowError`` when it was tampered with."""
        token = request.query.get(name)
        return FlowState.from_token(token, self.key) if token else None

    async def current_engine(self) -> FlowEngine:
        """The engine over the flows saved in the console, else the flows file."""
        async with self.database.sessions() as session:
            engine = await self.runtime.engine(session)
        self.flows = engine.flows
        return engine

    async def knowledge(self) -> Any:
        """The knowledge base for ``answer`` nodes."""
        async with self.database.sessions() as session:
            return await self.runtime.knowledge(session)

    async def fields(self, call_sid: str) -> dict[str, str]:
        """What the caller's ``ask`` answers collected so far."""
        async with self.database.sessions() as session:
            row = await session.scalar(select(BotSession.fields).where(
                BotSession.channel == Channel.PHONE.value, BotSession.session_key == call_sid))
        return dict(row or {})

    # -- facts --------------------------------------------------------------------------

    async def caller(self, number: str | None) -> Caller:
        """The customer behind a caller id."""
        async with self.database.sessions() as session:
            return await find_caller(session, number, self.region)

    async def agents_available(self) -> bool:
        """Whether any agent who takes calls is online (busy ones included: a caller
        then waits in the queue; with nobody online the flow goes to voicemail)."""
        query = select(Agent.id).where(Agent.active.is_(True), Agent.phone.is_not(None),
                                       Agent.availability == Availability.ONLINE)
        if self.voice.team:
            query = query.join(agent_teams, agent_teams.c.agent_id == Agent.id).join(
                Team, Team.id == agent_teams.c.team_id).where(Team.name == self.voice.team)
        async with self.database.sessions() as session:
            return await session.scalar(query.limit(1)) is not None

    async def facts(self, caller: Caller, language: str | None = None,
                    queue_position: int | None = None) -> CallFacts:
        """What the flow engine may know about this call."""
        names = {lang: caller.greeting_name(lang) for lang in self.flows.languages}
        rules = self.engine.config.rules
        return CallFacts(
            in_business_hours=rules.calendar.is_open(self.now()),
            known_caller=caller.known,
            caller_name=caller.display_name,
            caller_names=names if caller.known else {},
            language=language or self.flows.match_language(caller.language),
            has_open_ticket=caller.has_open_ticket,
            ticket_number=caller.ticket_number,
            ticket_status=caller.ticket_status,
            agents_available=await self.agents_available(),
            queue_position=queue_position,
        )

    # -- the history --------------------------------------------------------------------

    async def publish(self, call_sid: str, part: str, number: str | None, text: str,
                      **metadata: Any) -> None:
        """Log something of the call on the customer's record, through the bus."""
        await self.engine.publish(InboundMessage(
            channel=Channel.PHONE,
            idempotency_key=f"voice:{call_sid}:{part}",
            received_at=utcnow(),
            sender=SenderHandles(phone=number) if number else SenderHandles(
                display_name="Unknown caller 未知来电"),
            thread=ThreadHints(call_id=call_sid),
            text=text,
            metadata={"call_sid": call_sid, "call_part": part, **metadata},
        ))

    async def screen_pop(self, agent_id: int, call_sid: str, caller: Caller) -> None:
        """Show the caller's card on the agent's console."""
        await self.engine.events.publish([Event(SCREEN_POP, {
            "agent_id": agent_id, "call_id": call_sid, "number": caller.number,
            "customer_id": caller.customer_id, "name": caller.display_name,
            "language": caller.language, "ticket_number": caller.ticket_number,
            "ticket_status": caller.ticket_status,
        })])

    def say_language(self, language: str) -> str:
        """The provider's voice language for a flow language."""
        return self.voice.say_languages.get(language, language)


def _params(form: Mapping[str, Any]) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for name, value in form.items():
        params.setdefault(name, []).append(str(value))
    return params


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _twiml(document: TwiML) -> web.Response:
    return web.Response(text=document.to_xml(), content_type="application/xml")


async def _verified(request: web.Request) -> tuple[VoiceService, dict[str, str]]:
    """The service and the form, or an HTTPException for a bad signature or request."""
    service: VoiceService = request.app[VOICE_KEY]  # type: ignore[assignment]
    token = service.voice.resolved_auth_token()
    if not token:
        raise web.HTTPNotFound(text='{"error": "no TwiML provider configured"}',
                               content_type="application/json")
    form = await request.post()
    signature = request.headers.get("X-Twilio-Signature", "")
    if not is_valid_signature(token, service.public_url(request), _params(form), signature):
        log.warning("voice.bad_signature", channel="phone", path=request.path,
                    call_sid=form.get("CallSid"))
        raise web.HTTPForbidden(text='{"error": "bad or missing X-Twilio-Signature"}',
                                content_type="application/json")
    values = {k: str(v) for k, v in form.items()}
    if not values.get("CallSid"):
        raise web.HTTPBadRequest(text='{"error": "CallSid is required"}',
                                 content_type="application/json")
    return service, values


def _state_or_400(service: VoiceService, request: web.Request, name: str = "state",
                  ) -> FlowState | None:
    try:
        return service.state(request, name)
    except FlowError as exc:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"bad flow state: {exc.message}"}),
                                 content_type="application/json") from None


async def _record_turn(service: VoiceService, call_sid: str, turn: Turn, event: str,
                       **detail: Any) -> None:
    """The call record's menu path, and the call's bot session (transcript, fields).

    A ``survey`` action's rating goes through the bus (like every part of a call), so
    the routing step ``care-replies`` records it on the caller's record — which, for a
    first-time caller, only routing creates.
    """
    survey: dict[str, Any] | None = None
    async with service.database.transaction() as session:
        record = await call_record(session, PROVIDER, call_sid)
        record.path = [*record.path, *turn.path]
        record.language = turn.state.language
        log_event(record, event, node=turn.state.node, **detail)
        row = await session.scalar(select(BotSession).where(
            BotSession.channel == Channel.PHONE.value, BotSession.session_key == call_sid))
        if row is None:
            row = BotSession(channel=Channel.PHONE.value, session_key=call_sid,
                             customer_id=record.customer_id, flow=turn.state.flow,
                             node=turn.state.node, language=turn.state.language, status="bot",
                             fields={}, path=[], transcript=[])
            session.add(row)
            await session.flush()
        heard = detail.get("speech") or detail.get("digits")
        if heard:
            note(row, "customer", str(heard))
        apply_turn(row, turn)
        await record_knowledge(session, row, turn)
        action = turn.action
        if action is not None and action.kind in ("end", "hangup") and row.status == "bot":
            row.status = "ended"
            row.outcome = row.outcome or "ended"
        elif action is not None and action.kind in ("agent", "handoff"):
            row.status = "handoff"
            row.outcome = "handoff"
            row.handoff_at = utcnow()
            row.handoff_team = str(action.params.get("team") or action.params.get("queue")
                                   or "") or None
        elif action is not None and action.kind in ("create_ticket", "callback", "voicemail"):
            row.outcome = "callback" if action.kind == "callback" else "ticket"
        elif action is not None and action.kind in ("subscribe", "unsubscribe", "survey"):
            row.outcome = "survey" if action.kind == "survey" else f"{action.kind}d"
            answer = (row.fields or {}).get(str(action.params.get("field") or "rating"))
            if action.kind == "survey" and answer:
                survey = {"answer": str(answer), "scale": action.params.get("scale", "csat"),
                          "ref": f"call:{call_sid}", "number": record.from_number}
            if action.kind != "survey" and record.customer_id is not None:
                customer = await session.get(Customer, record.customer_id)
                if customer is not None:
                    customer.marketing_opt_in = {**(customer.marketing_opt_in or {}),
                                                 "phone": action.kind == "subscribe"}
    if survey is not None:
        await service.publish(call_sid, "survey", survey.pop("number"),
                              f"满意度评分 Rating: {survey['answer']}", survey_answer=survey)


def _speak(service: VoiceService, says: tuple[Say, ...]) -> tuple[Say, ...]:
    return tuple(Say(s.text, service.say_language(s.language), s.audio_url) for s in says)


async def _render(service: VoiceService, request: web.Request, values: dict[str, str],
                  turn: Turn) -> TwiML:
    """TwiML for one flow turn, performing its action."""
    call_sid = values["CallSid"]
    document = TwiML()
    says = _speak(service, turn.says)
    if turn.gather is not None:
        gather = turn.gather
        spec = dataclasses.replace(gather, language=service.say_language(gather.language))
        document.gather(spec, service.url(request, "gather", turn.state), says)
        document.redirect(service.url(request, "gather", turn.state, timeout="1"))
        return document
    document.say(says)
    action = turn.action
    if action is None:
        return document.hangup()
    after = turn.after
    if action.kind == "ticket_status":
        document.say(_speak(service, (Say(action.params.get("text", ""),
                                          action.params.get("language", turn.state.language),
                                          action.params.get("audio_url")),)))
        async with service.database.transaction() as session:
            record = await call_record(session, PROVIDER, call_sid)
            record.outcome = record.outcome or "self_service"
    elif action.kind == "voicemail":
        transcribe = bool(action.params.get("transcribe"))
        document.record(
            service.url(request, "recording", after),
            max_seconds=int(action.params.get("max_seconds", 120)),
            transcribe_callback=service.url(request, "transcription") if transcribe else None,
        )
        return document
    elif action.kind == "callback":
        number = values.get("From")
        await service.publish(call_sid, "callback", number,
                              f"请求回电 Callback requested: {number or 'unknown number'}",
                              ticket_tags=["callback"], callback_number=number)
        async with service.database.transaction() as session:
            record = await call_record(session, PROVIDER, call_sid)
            record.outcome = "callback"
            log_event(record, "callback_requested")
    elif action.kind in ("agent", "handoff"):
        return await _put_through(service, request, values, turn, document)
    elif action.kind == "create_ticket":
        fields = await service.fields(call_sid)
        details = "; ".join(f"{k}: {v}" for k, v in fields.items())
        await service.publish(call_sid, f"ticket-{turn.state.node}", values.get("From"),
                              f"自助服务工单 Self-service request ({details or 'no details'})",
                              ticket_tags=list(action.params.get("tags", [])), bot_fields=fields)
    elif action.kind == "end":
        return document.hangup()
    if after is not None:
        return document.redirect(service.url(request, "resume", after))
    return document.hangup()


async def _put_through(service: VoiceService, request: web.Request, values: dict[str, str],
                       turn: Turn, document: TwiML) -> TwiML:
    """Dial an available agent (screen pop), else hold the caller in the queue."""
    call_sid = values["CallSid"]
    caller = await service.caller(values.get("From"))
    async with service.database.transaction() as session:
        assignment = await choose_assignee(
            session, customer_owner_id=None, team_name=service.voice.team,
            language=turn.state.language, strategy="least_loaded", sticky_owner=False)
        agent = await session.get(Agent, assignment.agent_id) if assignment.agent_id else None
        record = await call_record(session, PROVIDER, call_sid)
        if agent is not None and agent.phone:
            record.agent_id = agent.id
            record.outcome = "agent"
            log_event(record, "dialling_agent", agent_id=agent.id)
        else:
            agent = None
            record.status = "queued"
            log_event(record, "queued", queue=turn.action.params.get("queue") if turn.action
                      else None)
    fields = await service.fields(call_sid)
    context = "; ".join(f"{k}: {v}" for k, v in fields.items())
    if agent is not None:
        await service.screen_pop(agent.id, call_sid, caller)
        await service.publish(call_sid, "agent", caller.number,
                              f"来电转接 Call put through to {agent.display_name}"
                              + (f" ({context})" if context else ""),
                              agent_id=agent.id, bot_fields=fields)
        return document.dial(
            str(agent.phone), action=service.url(request, "dial-done", turn.after),
            timeout=service.voice.dial_timeout_seconds,
            caller_id=service.voice.caller_id,
        )
    queue = str((turn.action.params if turn.action else {}).get("queue") or "support")
    return document.enqueue(
        queue, action=service.url(request, "queue-done", turn.after),
        wait_url=service.url(request, "queue-wait", turn.state),
    )


# -- handlers ---------------------------------------------------------------------------


async def incoming(request: web.Request) -> web.Response:
    """A new call: look the caller up, log the call, start the menu."""
    service, values = await _verified(request)
    call_sid = values["CallSid"]
    caller = await service.caller(values.get("From"))
    async with service.database.transaction() as session:
        record = await call_record(
            session, PROVIDER, call_sid, direction=values.get("Direction", "inbound")[:20],
            from_number=values.get("From"), to_number=values.get("To"))
        record.customer_id = caller.customer_id
        record.status = "in-progress"
        log_event(record, "incoming", known=caller.known)
    await service.publish(call_sid, "start", caller.number,
                          f"来电 Incoming call from {caller.number or 'a withheld number'}",
                          log_only=True)
    facts = await service.facts(caller)
    turn = (await service.current_engine()).start(service.voice.flow, facts)
    await _record_turn(service, call_sid, turn, "menu")
    log.info("voice.incoming", channel="phone", call_sid=call_sid,
             customer_id=caller.customer_id)
    return _twiml(await _render(service, request, values, turn))


async def gather(request: web.Request) -> web.Response:
    """The caller pressed keys or spoke (or said nothing: ``timeout=1``)."""
    service, values = await _verified(request)
    state = _state_or_400(service, request)
    if state is None:
        return _error(400, "state is required")
    caller = await service.caller(values.get("From"))
    facts = dataclasses.replace(await service.facts(caller, state.language),
                                fields=await service.fields(values["CallSid"]))
    timed_out = request.query.get("timeout") == "1"
    digits = None if timed_out else (values.get("Digits") or None)
    speech = None if timed_out else (values.get("SpeechResult") or None)
    engine = await service.current_engine()
    try:
        turn = engine.answer(state, facts, digits=digits, speech=speech,
                             knowledge=await service.knowledge())
    except FlowError as exc:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"bad flow state: {exc.message}"}),
                                 content_type="application/json") from None
    await _record_turn(service, values["CallSid"], turn, "input", digits=digits,
                       speech=speech, timeout=timed_out or None)
    return _twiml(await _render(service, request, values, turn))


async def resume(request: web.Request) -> web.Response:
    """Continue the flow after an action (ticket status said, voicemail left …)."""
    service, values = await _verified(request)
    state = _state_or_400(service, request)
    if state is None:
        return _twiml(TwiML().hangup())
    caller = await service.caller(values.get("From"))
    facts = dataclasses.replace(await service.facts(caller, state.language),
                                fields=await service.fields(values["CallSid"]))
    try:
        turn = (await service.current_engine()).resume(state, facts)
    except FlowError as exc:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"bad flow state: {exc.message}"}),
                                 content_type="application/json") from None
    await _record_turn(service, values["CallSid"], turn, "menu")
    return _twiml(await _render(service, request, values, turn))


async def recording(request: web.Request) -> web.Response:
    """A voicemail was recorded: keep the link, log it (it opens a ticket)."""
    service, values = await _verified(request)
    call_sid = values["CallSid"]
    url = values.get("RecordingUrl")
    seconds = int(values["RecordingDuration"]) if values.get("RecordingDuration", "").isdigit() \
        else None
    async with service.database.transaction() as session:
        record = await call_record(session, PROVIDER, call_sid)
        record.recording_url = url
        record.recording_seconds = seconds
        record.outcome = "voicemail"
        log_event(record, "voicemail", seconds=seconds)
    if url:
        await service.publish(call_sid, "voicemail", values.get("From"),
                              f"语音留言 Voicemail ({seconds or 0}s): {url}",
                              recording_url=url, recording_seconds=seconds)
    state = _state_or_400(service, request)
    if state is None:
        return _twiml(TwiML().hangup())
    return _twiml(TwiML().redirect(service.url(request, "resume", state)))


async def transcription(request: web.Request) -> web.Response:
    """The voicemail's transcription: on the call record and in the history."""
    service, values = await _verified(request)
    call_sid = values["CallSid"]
    text = values.get("TranscriptionText", "").strip()
    status = values.get("TranscriptionStatus", "")
    async with service.database.transaction() as session:
        record = await call_record(session, PROVIDER, call_sid)
        if status == "completed" and text:
            record.transcription = text
        log_event(record, "transcription", status=status)
    if status == "completed" and text:
        await service.publish(call_sid, "transcription", values.get("From"),
                              f"留言转写 Voicemail transcription: {text}",
                              recording_url=values.get("RecordingUrl"))
    return _twiml(TwiML())


async def status(request: web.Request) -> web.Response:
    """Call status callbacks: ringing … completed, busy, no-answer, failed."""
    service, values = await _verified(request)
    call_status = values.get("CallStatus", "")
    duration = values.get("CallDuration", "")
    async with service.database.transaction() as session:
        record = await call_record(
            session, PROVIDER, values["CallSid"], from_number=values.get("From"),
            to_number=values.get("To"))
        finish(record, call_status, int(duration) if duration.isdigit() else None)
        log_event(record, "status", status=call_status)
    return _twiml(TwiML())


async def queue_wait(request: web.Request) -> web.Response:
    """What a queued caller hears; after the agent node's maximum wait, leave the queue."""
    service, values = await _verified(request)
    state = _state_or_400(service, request)
    if state is None:
        return _twiml(TwiML().leave())
    waited = int(values["QueueTime"]) if values.get("QueueTime", "").isdigit() else 0
    position = int(values["QueuePosition"]) if values.get("QueuePosition", "").isdigit() \
        else None
    engine = await service.current_engine()
    node = engine.flows.flows[state.flow].nodes.get(state.node) \
        if state.flow in engine.flows.flows else None
    params = node.params if node is not None else {}
    max_wait = int(params.get("max_wait_seconds") or params.get("timeout_seconds") or 120)
    if waited >= max_wait:
        return _twiml(TwiML().leave())
    caller = await service.caller(values.get("From"))
    facts = await service.facts(caller, state.language, queue_position=position)
    document = TwiML().say(_speak(service, engine.hold(state, facts)))
    if service.voice.hold_music_url:
        document.play(service.voice.hold_music_url)
    else:
        document.pause(10)
    return _twiml(document)


async def queue_done(request: web.Request) -> web.Response:
    """The caller left the queue: bridged to an agent, or on to the fallback (voicemail)."""
    service, values = await _verified(request)
    result = values.get("QueueResult", "")
    async with service.database.transaction() as session:
        record = await call_record(session, PROVIDER, values["CallSid"])
        log_event(record, "queue_left", result=result)
        if result == "bridged":
            record.outcome = "agent"
    state = _state_or_400(service, request)
    if result in {"bridged", "hangup"} or state is None:
        return _twiml(TwiML().hangup())
    return _twiml(TwiML().redirect(service.url(request, "resume", state)))


async def dial_done(request: web.Request) -> web.Response:
    """The agent's phone answered (call over) or did not (fallback)."""
    service, values = await _verified(request)
    dial_status = values.get("DialCallStatus", "")
    async with service.database.transaction() as session:
        record = await call_record(session, PROVIDER, values["CallSid"])
        log_event(record, "dial_done", status=dial_status)
        if dial_status == "completed":
            record.answered_at = record.answered_at or utcnow()
        else:
            record.outcome = None
    state = _state_or_400(service, request)
    if dial_status == "completed" or state is None:
        return _twiml(TwiML().hangup())
    return _twiml(TwiML().redirect(service.url(request, "resume", state)))


def setup_voice(app: web.Application, settings: Settings, database: Database,
                engine: RoutingEngine) -> VoiceService:
    """Serve the voice webhooks (and the CTI webhook when a token is set) on ``app``."""
    service = VoiceService(settings, database, engine)
    app[VOICE_KEY] = service
    for step, handler in (
        ("incoming", incoming), ("gather", gather), ("resume", resume),
        ("recording", recording), ("transcription", transcription), ("status", status),
        ("queue-wait", queue_wait), ("queue-done", queue_done), ("dial-done", dial_done),
    ):
        app.router.add_post(f"{PREFIX}/{step}", handler)
    if service.voice.resolved_cti_token():
        from contact_center.cti_webhook import cti_event

        app.router.add_post("/webhooks/cti", cti_event)
    return service
