"""The contract channel adapters implement to send, and the registry that finds them by name."""

from __future__ import annotations

from typing import Protocol

from crm_core.models import Channel
from routing.envelope import OutboundMessage


class PermanentSendError(Exception):
    """A send that can never succeed (bad address, blocked bot): no retries."""


class OutboundAdapter(Protocol):
    """Sends an outbound message on one channel; returns the provider's message id."""

    channel: Channel

    async def send(self, message: OutboundMessage) -> str | None:
        """Deliver the message or raise (PermanentSendError for a hopeless case)."""
        ...


class ChannelRegistry:
    """Outbound adapters by channel; the same names are config keys and webhook prefixes."""

    def __init__(self) -> None:
        self._adapters: dict[Channel, OutboundAdapter] = {}

    def register(self, adapter: OutboundAdapter) -> None:
        """Add an adapter; a second one for the same channel replaces the first."""
        self._adapters[adapter.channel] = adapter

    def get(self, channel: Channel) -> OutboundAdapter | None:
        """The adapter of a channel, if one is configured."""
        return self._adapters.get(channel)

    def channels(self) -> list[Channel]:
        """Channels that can send."""
        return list(self._adapters)
