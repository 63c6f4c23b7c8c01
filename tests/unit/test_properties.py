"""Hypothesis property tests for the normalizers and renderers that meet hostile input:
phone and e-mail normalization, MIME header decoding, TwiML and IVR flow rendering."""

from __future__ import annotations

import email.header
import xml.etree.ElementTree as ET

from hypothesis import given, settings
from hypothesis import strategies as st

from channels.email.parse import decode_header_value
from channels.voice.twiml import TwiML
from crm_core.errors import ValidationError
from crm_core.normalize import normalize_email, normalize_phone
from routing.flows import CallFacts, FlowEngine, FlowSet, FlowState, Gather, Say

FAST = settings(max_examples=200, deadline=None)
LOCAL = st.from_regex(r"[a-z0-9]([a-z0-9._+-]{0,20}[a-z0-9])?", fullmatch=True).filter(
    lambda s: ".." not in s)
LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,15}[a-z0-9])?", fullmatch=True)
DOMAIN = st.builds(lambda labels, tld: ".".join([*labels, tld]),
                   st.lists(LABEL, min_size=1, max_size=3), st.sampled_from(["com", "cn", "net"]))
ADDRESS = st.builds(lambda local, domain: f"{local}@{domain}", LOCAL, DOMAIN)
CN_MOBILE = st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True)
XML_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)
"""Any text, control characters included (a caller's name can hold anything)."""


@FAST
@given(ADDRESS)
def test_email_normalization_is_idempotent_and_case_blind(address: str) -> None:
    try:
        once = normalize_email(address)
    except ValidationError:
        return  # e.g. a reserved domain: refusing is fine, crashing is not
    assert once == once.lower() and once == once.strip()
    assert normalize_email(once) == once
    assert normalize_email(address.upper()) == once
    assert normalize_email(f"  {address}  ") == once


@FAST
@given(st.text(max_size=60))
def test_email_normalization_refuses_cleanly(text: str) -> None:
    try:
        result = normalize_email(text)
    except ValidationError:
        return
    assert "@" in result


@FAST
@given(CN_MOBILE, st.sampled_from(["{n}", "+86{n}", "+86 {a} {b} {c}", "0086{n}", "{a}-{b}-{c}",
                                   "(+86) {a} {b} {c}", " {n} "]))
def test_phone_spellings_of_one_number_agree(number: str, spelling: str) -> None:
    a, b, c = number[:3], number[3:7], number[7:]
    try:
        expected = normalize_phone(number, "CN")
    except ValidationError:
        return  # an unallocated prefix
    typed = spelling.format(n=number, a=a, b=b, c=c)
    assert normalize_phone(typed, "CN") == expected == "+86" + number
    assert normalize_phone(expected, "US") == expected  # E.164 ignores the default region


@FAST
@given(st.text(max_size=40), st.sampled_from(["CN", "US", "GB", "HK"]))
def test_phone_normalization_gives_e164_or_a_validation_error(text: str, region: str) -> None:
    try:
        result = normalize_phone(text, region)
    except ValidationError:
        return
    assert result.startswith("+") and result[1:].isdigit() and len(result) <= 16
    assert normalize_phone(result, region) == result


WORDS = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")),
                min_size=1, max_size=12)


@FAST
@given(st.lists(WORDS, min_size=1, max_size=6), st.sampled_from(["utf-8", "gb18030", "big5"]),
       st.sampled_from(["b", "q"]))
def test_mime_encoded_words_decode_back(words: list[str], charset: str, encoding: str) -> None:
    text = " ".join(words)
    try:
        text.encode(charset)
    except UnicodeEncodeError:
        return  # not representable in that charset
    header = email.header.Header(text, charset, header_name="Subject")
    encoded = header.encode()
    if encoding == "q":
        encoded = email.header.Header(text, email.charset.Charset(charset)).encode()
    assert decode_header_value(encoded) == text


@FAST
@given(st.text(max_size=200))
def test_header_decoding_never_fails_and_gives_one_line(raw: str) -> None:
    decoded = decode_header_value(raw)
    assert "\n" not in decoded and "\r" not in decoded
    assert decoded == decoded.strip()


@FAST
@given(XML_TEXT, st.sampled_from(["zh-CN", "en"]), XML_TEXT)
def test_twiml_is_well_formed_for_any_text(text: str, language: str, hint: str) -> None:
    twiml = TwiML().say([Say(text=text, language=language)])
    twiml.gather(Gather(digits=1, speech=True, language=language, hints=(hint,),
                        timeout_seconds=5),
                 "https://cc.example.com/voice/gather?s=a&t=b", [Say(text=text,
                                                                        language=language)])
    twiml.redirect("https://cc.example.com/voice/next?x=1&y=<2>")
    root = ET.fromstring(twiml.to_xml().split("\n", 1)[1])  # parses: well-formed XML
    assert root.tag == "Response"
    said = [e.text or "" for e in root.iter("Say")]
    for value in said:
        assert all(ch in value for ch in text if ch.isprintable() and ch not in "\r")
    gather = root.find("Gather")
    assert gather is not None and gather.get("action", "").endswith("s=a&t=b")


ENGINE = FlowEngine(FlowSet.default())


@FAST
@given(caller=XML_TEXT, known=st.booleans(), hours=st.booleans(), ticket=st.booleans(),
       language=st.sampled_from([None, "zh-CN", "en", "fr", "zh"]),
       number=st.from_regex(r"T-[0-9]{6}", fullmatch=True),
       status=st.sampled_from(["open", "pending", "resolved", "", "weird"]))
def test_flow_rendering_fills_every_placeholder(caller: str, known: bool, hours: bool,
                                                ticket: bool, language: str | None,
                                                number: str, status: str) -> None:
    facts = CallFacts(in_business_hours=hours, known_caller=known, caller_name=caller,
                      language=language, has_open_ticket=ticket, ticket_number=number,
                      ticket_status=status)
    turn = ENGINE.start("main", facts)
    assert (turn.gather is None) != (turn.action is None)
    for say in turn.says:
        for placeholder in ("{greeting}", "{caller_name}", "{ticket_number}",
                            "{ticket_status}", "{queue_position}"):
            assert placeholder not in say.text.replace(caller, "")
        assert say.text == say.text.strip()
        assert "  " not in say.text.replace(caller, "")
    token = turn.state.to_token(b"k")
    assert FlowState.from_token(token, b"k") == turn.state


@FAST
@given(st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True),
       st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True),
       st.sampled_from(["zh-CN", "en", "yue-HK"]), st.integers(0, 99), st.text(max_size=5))
def test_flow_state_tokens_round_trip_and_resist_edits(flow: str, node: str, language: str,
                                                       attempt: int, junk: str) -> None:
    state = FlowState(flow, node, language, attempt)
    token = state.to_token(b"secret")
    assert FlowState.from_token(token, b"secret") == state
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    for bad in (tampered, token + junk if junk else token + "x"):
        try:
            FlowState.from_token(bad, b"secret")
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")
