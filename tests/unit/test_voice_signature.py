"""Our Twilio signature check agrees with Twilio's own RequestValidator."""

from __future__ import annotations

import hashlib
import json

import pytest
from multidict import MultiDict
from twilio.request_validator import RequestValidator

from channels.voice.signature import compute_signature, is_valid_signature

TOKEN = "12345678901234567890123456789012"
CASES = [
    ("https://cc.example/webhooks/voice/incoming", {"CallSid": "CA1", "From": "+8613800138000",
                                                    "To": "+861058000000"}),
    ("https://cc.example/webhooks/voice/gather?state=main.menu.zh-CN.0.abc",
     {"CallSid": "CA1", "SpeechResult": "我要查工单", "Digits": ""}),
    ("https://cc.example:443/webhooks/voice/status", {"CallSid": "CA2", "CallStatus": "completed"}),
    ("http://127.0.0.1:8080/webhooks/voice/incoming", {"CallSid": "CA3", "Caller": "anonymous"}),
]


@pytest.mark.parametrize(("url", "params"), CASES)
def test_signatures_match_twilio(url: str, params: dict[str, str]) -> None:
    """What we compute is what Twilio's SDK computes and accepts."""
    validator = RequestValidator(TOKEN)
    ours = compute_signature(TOKEN, url, params)
    assert validator.validate(url, params, ours)
    assert is_valid_signature(TOKEN, url, params, validator.compute_signature(url, params))


def test_default_ports_and_tampering() -> None:
    """The URL with or without :443 is accepted; any change to a value is not."""
    params = {"CallSid": "CA9", "Digits": "1"}
    signed = compute_signature(TOKEN, "https://cc.example/webhooks/voice/gather", params)
    assert is_valid_signature(TOKEN, "https://cc.example:443/webhooks/voice/gather", params,
                              signed)
    assert not is_valid_signature(TOKEN, "https://cc.example/webhooks/voice/gather",
                                  {**params, "Digits": "2"}, signed)
    assert not is_valid_signature("another-token", "https://cc.example/webhooks/voice/gather",
                                  params, signed)
    assert not is_valid_signature(TOKEN, "https://cc.example/webhooks/voice/gather", params, "")


def test_repeated_parameters_and_json_bodies() -> None:
    """Multi-valued parameters and JSON bodies (bodySHA256) as Twilio signs them."""
    url = "https://cc.example/webhooks/voice/incoming"
    pairs = [("CallSid", "CA1"), ("StirVerstat", "TN-Validation-Passed-A"), ("StirVerstat", "A")]
    params = {"CallSid": ["CA1"], "StirVerstat": ["TN-Validation-Passed-A", "A"]}
    validator = RequestValidator(TOKEN)
    theirs = validator.compute_signature(url, MultiDict(pairs))
    assert is_valid_signature(TOKEN, url, params, theirs)
    body = json.dumps({"CallSid": "CA1"}).encode()
    with_hash = f"{url}?bodySHA256={hashlib.sha256(body).hexdigest()}"
    signature = validator.compute_signature(with_hash, {})
    assert is_valid_signature(TOKEN, with_hash, {}, signature, body=body)
    assert not is_valid_signature(TOKEN, with_hash, {}, signature, body=body + b" ")
