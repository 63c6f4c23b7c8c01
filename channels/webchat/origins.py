"""Which web pages may open a chat socket: the ``Origin`` of the handshake against a list."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` lower-cased, default port dropped; ``None`` if not an origin.

    A browser sends exactly this shape; anything with a path, query, credentials or
    another scheme is not an origin (``null`` from sandboxed frames and files included).
    """
    value = origin.strip()
    if not value or value == "null":
        return None
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    if parts.username or parts.password or parts.query or parts.fragment:
        return None
    if parts.path not in ("", "/"):
        return None
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


class OriginPolicy:
    """The configured allowed origins; ``"*"`` allows every page."""

    def __init__(self, allowed: Iterable[str]) -> None:
        values = list(allowed)
        self.allow_any = "*" in values
        self.allowed = frozenset(
            n for n in (normalize_origin(v) for v in values if v != "*") if n is not None
        )

    def allows(self, origin: str | None) -> bool:
        """Whether a handshake with this ``Origin`` header may proceed."""
        if self.allow_any:
            return True
        if origin is None:
            return False
        normalized = normalize_origin(origin)
        return normalized is not None and normalized in self.allowed


def invalid_origins(values: Iterable[str]) -> list[str]:
    """The configured values that are neither ``*`` nor an origin (for settings checks)."""
    return [v for v in values if v != "*" and normalize_origin(v) is None]
