"""The web chat's outbound adapter: an agent's reply goes to the visitor's open tabs."""

from __future__ import annotations

import structlog

from channels.webchat.hub import WebchatHub
from channels.webchat.protocol import VISITOR_ID
from crm_core.models import Channel, utcnow
from routing.adapters import PermanentSendError
from routing.envelope import OutboundMessage

log = structlog.get_logger(__name__)


class WebchatAdapter:
    """Hands replies to the hub (and through Redis to the other web nodes).

    A visitor without an open socket still succeeds: the reply is in the database and
    the widget shows it with the history on the next page load.
    """

    channel = Channel.WEBCHAT

    def __init__(self, hub: WebchatHub) -> None:
        self.hub = hub

    async def send(self, message: OutboundMessage) -> str | None:
        """Push the reply; returns ``webchat:<outbox id>``."""
        visitor_id = message.to.visitor_id or message.thread.chat_id
        if not visitor_id or not VISITOR_ID.match(visitor_id):
            raise PermanentSendError("no web chat visitor id to send to")
        text = message.text or ""
        if not text.strip():
            raise PermanentSendError("a web chat reply needs a text")
        agent_name = message.metadata.get("agent_name")
        pushed = await self.hub.deliver({
            "visitor_id": visitor_id,
            "text": text,
            "agent_name": str(agent_name) if agent_name else None,
            "outbox_id": message.outbox_id,
            "sent_at": utcnow(),
            "buttons": message.metadata.get("buttons") or None,
        })
        log.info("webchat.reply_sent", visitor_id=visitor_id, outbox_id=message.outbox_id,
                 local_sockets=pushed)
        return f"webchat:{message.outbox_id}"
