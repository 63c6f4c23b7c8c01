"""The web chat channel: an embeddable widget that talks to the server over a WebSocket.

``protocol`` holds the JSON frames in and out, ``envelope`` turns a visitor's message into
an ``InboundMessage``, ``adapter`` sends agents' replies through the ``hub`` (in process
and across web nodes via Redis), ``history`` reads presence and past messages, and
``static/widget.js`` is the widget itself. The aiohttp routes live in
``contact_center/webchat.py``.
"""

from channels.webchat.adapter import WebchatAdapter
from channels.webchat.hub import AGENT_TYPING, REDIS_CHANNEL, Connection, WebchatHub, agent_typing

__all__ = [
    "AGENT_TYPING",
    "REDIS_CHANNEL",
    "Connection",
    "WebchatAdapter",
    "WebchatHub",
    "agent_typing",
]
