"""Twilio request signatures (``X-Twilio-Signature``), checked without the Twilio SDK.

The signature is base64(HMAC-SHA1(auth token, URL + every form parameter's name and
value, names sorted)). Twilio signs the URL it called, so behind a proxy the URL is
rebuilt from the configured public base and the request's path and query. Like Twilio's
own validator, the URL is also tried with and without the scheme's default port; JSON
bodies are covered by a ``bodySHA256`` query parameter instead of form parameters.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qs, urlsplit, urlunsplit

_DEFAULT_PORTS = {"https": 443, "http": 80}


def compute_signature(
    auth_token: str, url: str, params: Mapping[str, str | Iterable[str]] | None = None
) -> str:
    """The signature Twilio sends for ``url`` with these form parameters."""
    payload = url
    for name in sorted(params or {}):
        value = (params or {})[name]
        values = [value] if isinstance(value, str) else sorted(set(value))
        for item in values:
            payload += name + item
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _url_variants(url: str) -> list[str]:
    parts = urlsplit(url)
    default = _DEFAULT_PORTS.get(parts.scheme)
    host = parts.hostname or ""
    variants = [url]
    if default is None:
        return variants
    if parts.port is None:
        variants.append(urlunsplit(parts._replace(netloc=f"{host}:{default}")))
    elif parts.port == default:
        variants.append(urlunsplit(parts._replace(netloc=host)))
    return variants


def is_valid_signature(
    auth_token: str,
    url: str,
    params: Mapping[str, str | Iterable[str]] | None,
    signature: str,
    *,
    body: bytes | None = None,
) -> bool:
    """Whether ``signature`` was made with ``auth_token`` for this request."""
    if not signature or not auth_token:
        return False
    query = parse_qs(urlsplit(url).query)
    if body is not None and "bodySHA256" in query:
        expected_hash = hashlib.sha256(body).hexdigest()
        if not hmac.compare_digest(expected_hash, query["bodySHA256"][0]):
            return False
        params = {}
    return any(
        hmac.compare_digest(compute_signature(auth_token, variant, params), signature)
        for variant in _url_variants(url)
    )
