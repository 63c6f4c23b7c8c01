"""A generic CTI webhook for PBXs (Asterisk, FreeSWITCH …): ``POST /webhooks/cti``.

The PBX posts JSON events with a bearer token: ``newCall`` (answered with the caller's
customer card, so the PBX can show a name), ``answer`` (an agent picked up: screen pop on
that agent's console) and ``hangup``. They feed the same call records as the TwiML
provider's webhooks, with ``provider = "cti"``.
"""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Literal

import structlog
from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import or_, select

from crm_core.models import Agent, utcnow
from crm_core.services.calls import call_record, finish, log_event

log = structlog.get_logger(__name__)
PROVIDER = "cti"


class CtiEvent(BaseModel):
    """One event of a PBX call."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    event: Literal["newCall", "answer", "hangup"]
    call_id: str = Field(min_length=1, max_length=200)
    from_number: str | None = Field(default=None, alias="from", max_length=64)
    to_number: str | None = Field(default=None, alias="to", max_length=64)
    direction: Literal["inbound", "outbound"] = "inbound"
    agent: str | None = Field(default=None, max_length=200)
    """The agent's login, or the phone/extension configured on the agent."""
    timestamp: AwareDatetime | None = None
    duration: int | None = Field(default=None, ge=0)


def _error(status: int, message: str, **extra: object) -> web.Response:
    return web.json_response({"ok": False, "error": message, **extra}, status=status)


async def _agent(session: object, name: str | None) -> Agent | None:
    if not name:
        return None
    return await session.scalar(  # type: ignore[attr-defined]
        select(Agent).where(or_(Agent.login == name, Agent.phone == name)).limit(1)
    )


async def cti_event(request: web.Request) -> web.Response:
    """Apply one PBX event to its call record."""
    from contact_center.voice_webhook import VOICE_KEY, VoiceService

    service: VoiceService = request.app[VOICE_KEY]  # type: ignore[assignment]
    expected = service.voice.resolved_cti_token() or ""
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        log.warning("cti.refused", channel="phone", remote=request.remote)
        return _error(401, "missing or wrong bearer token")
    try:
        event = CtiEvent.model_validate(await request.json())
    except ValueError as exc:  # JSON decoding errors and pydantic's ValidationError
        errors = exc.errors(include_url=False) if isinstance(exc, ValidationError) else None
        return _error(400, "not a CTI event", detail=errors or str(exc))
    when: datetime = event.timestamp or utcnow()
    caller = await service.caller(event.from_number if event.direction == "inbound"
                                  else event.to_number)
    agent_id: int | None = None
    async with service.database.transaction() as session:
        record = await call_record(session, PROVIDER, event.call_id,
                                   direction=event.direction, from_number=event.from_number,
                                   to_number=event.to_number, started_at=when)
        record.customer_id = record.customer_id or caller.customer_id
        if event.event == "newCall":
            record.status = "ringing"
            log_event(record, "new_call", when)
        elif event.event == "answer":
            agent = await _agent(session, event.agent)
            if agent is not None:
                record.agent_id = agent.id
                agent_id = agent.id
            record.status = "in-progress"
            record.answered_at = when
            record.outcome = "agent"
            log_event(record, "answer", when, agent=event.agent)
        else:
            duration = event.duration
            if duration is None and record.answered_at is not None:
                duration = max(0, int((when - record.answered_at).total_seconds()))
            finish(record, "completed", duration, when)
            log_event(record, "hangup", when, duration=duration)
    if event.event == "newCall":
        await service.publish(f"cti-{event.call_id}", "start", caller.number,
                              f"来电 Call {event.direction} {caller.number or ''}".strip(),
                              log_only=True, provider=PROVIDER)
    if agent_id is not None:
        await service.screen_pop(agent_id, event.call_id, caller)
    log.info("cti.event", channel="phone", call_id=event.call_id, kind=event.event,
             customer_id=caller.customer_id)
    card = None
    if caller.known:
        card = {"customer_id": caller.customer_id, "name": caller.display_name,
                "language": caller.language, "ticket_number": caller.ticket_number or None,
                "ticket_status": caller.ticket_status or None}
    return web.json_response({"ok": True, "customer": card})
