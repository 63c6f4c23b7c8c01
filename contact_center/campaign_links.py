"""Signed links in campaign messages: unsubscribe, the feedback page, tracked redirects.

A token is ``<payload>.<mac>``: the payload is compact JSON in URL-safe base64, the MAC
an HMAC-SHA256 (first 128 bits) keyed with a key derived from the settings' secret and
the link's purpose, so a token made for one purpose is worthless for another and nobody
without the secret can make or alter one. Tokens hold ids, never personal data.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

UNSUBSCRIBE = "unsubscribe"
FEEDBACK = "feedback"
REDIRECT = "redirect"
PURPOSES = (UNSUBSCRIBE, FEEDBACK, REDIRECT)
MAC_BYTES = 16
MAX_TOKEN_LENGTH = 4096


class BadToken(ValueError):
    """A token that was altered, made for another purpose, malformed or expired."""

    def __init__(self, reason: str, *, expired: bool = False) -> None:
        super().__init__(reason)
        self.expired = expired


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(secret: bytes, purpose: str) -> bytes:
    return hmac.new(secret, f"cc-campaign-link:{purpose}".encode(), hashlib.sha256).digest()


def sign(secret: bytes, purpose: str, payload: dict[str, Any]) -> str:
    """A token carrying ``payload`` for ``purpose``."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown link purpose {purpose!r}")
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True,
                      ensure_ascii=False).encode()
    mac = hmac.new(_key(secret, purpose), body, hashlib.sha256).digest()[:MAC_BYTES]
    return f"{_b64(body)}.{_b64(mac)}"


def verify(secret: bytes, purpose: str, token: str, *, now: datetime | None = None,
           ) -> dict[str, Any]:
    """The payload of a genuine token for ``purpose``; :class:`BadToken` otherwise.

    A payload with ``exp`` (Unix seconds) is refused after that time (``expired``).
    """
    if not token or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
        raise BadToken("malformed token")
    body_text, mac_text = token.split(".")
    try:
        body, mac = _unb64(body_text), _unb64(mac_text)
    except (binascii.Error, ValueError):
        raise BadToken("malformed token") from None
    if _b64(body) != body_text or _b64(mac) != mac_text:
        raise BadToken("malformed token")  # one encoding only: no spare bits to play with
    expected = hmac.new(_key(secret, purpose), body, hashlib.sha256).digest()[:MAC_BYTES]
    if not hmac.compare_digest(mac, expected):
        raise BadToken("bad signature")
    try:
        payload = json.loads(body)
    except ValueError:
        raise BadToken("malformed token") from None
    if not isinstance(payload, dict):
        raise BadToken("malformed token")
    expires = payload.get("exp")
    if isinstance(expires, int | float) and now is not None and now.timestamp() > expires:
        raise BadToken("expired", expired=True)
    return payload


def safe_target(url: str) -> bool:
    """Whether a tracked link may redirect there (absolute http or https only)."""
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


class CampaignLinks:
    """Builds the signed URLs of campaign messages under ``base_url``."""

    def __init__(self, base_url: str, secret: bytes) -> None:
        self.base_url = base_url.rstrip("/")
        self.secret = secret

    def unsubscribe_url(self, send_id: int, customer_id: int, channel: str) -> str:
        """``/unsubscribe/<token>``: stop automated messages on that channel."""
        token = sign(self.secret, UNSUBSCRIBE, {"s": send_id, "c": customer_id, "ch": channel})
        return f"{self.base_url}/unsubscribe/{token}"

    def feedback_url(self, send_id: int, customer_id: int, kind: str, expires: datetime,
                     ) -> str:
        """``/feedback/<token>``: the survey page, valid until ``expires``."""
        token = sign(self.secret, FEEDBACK, {"s": send_id, "c": customer_id, "k": kind,
                                             "exp": int(expires.timestamp())})
        return f"{self.base_url}/feedback/{token}"

    def track_url(self, send_id: int, url: str) -> str:
        """``/r/<token>``: counts the click, then redirects to ``url``."""
        if not safe_target(str(url)):
            raise ValueError(f"only absolute http(s) links can be tracked, not {url!r}")
        token = sign(self.secret, REDIRECT, {"s": send_id, "u": str(url)})
        return f"{self.base_url}/r/{quote(token, safe='.-_')}"
