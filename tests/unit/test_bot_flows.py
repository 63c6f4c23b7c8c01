"""The bot's node kinds in the flow engine: ask, answer, handoff, end, the new actions,
per-language labels and buttons; the field checks; the chat renderings."""

from __future__ import annotations

import textwrap

import pytest

from contact_center.demo_knowledge import ARTICLES
from routing.bot import buttons, numbered_menu, parse_flow_source
from routing.flows import (
    DEFAULT_FLOWS_PATH,
    CallFacts,
    Choice,
    FlowEngine,
    FlowError,
    load_flows,
    validate_field,
)
from routing.knowledge import Article, KnowledgeBase

BOT = load_flows(DEFAULT_FLOWS_PATH)
EN = CallFacts(language="en")


def knowledge() -> KnowledgeBase:
    return KnowledgeBase([
        Article(id=i, language=a["language"], title=a["title"], answer=a["answer"],
                questions=tuple(a["questions"].splitlines()),
                keywords=tuple(a["keywords"].split(",")))
        for i, a in enumerate(ARTICLES)
    ])


@pytest.mark.parametrize(("kind", "raw", "expected"), [
    ("order_number", " a2026-0001# ", "A2026-0001"),
    ("order_number", "订单号：20260001", "20260001"),
    ("order_number", "12", None),
    ("email", "Li.Wei@Example.COM", "li.wei@example.com"),
    ("email", "li.wei@", None),
    ("phone", "138 0013 8000", "+8613800138000"),
    ("phone", "12345", None),
    ("rating", "五", "5"),
    ("rating", "four", "4"),
    ("rating", "6", None),
    ("digits", "12-34#", "1234"),
    ("text", "  ", None),
])
def test_field_checks(kind: str, raw: str, expected: str | None) -> None:
    assert validate_field(kind, raw, "CN") == expected


def test_menu_buttons_have_labels_in_the_language() -> None:
    engine = FlowEngine(BOT)
    zh = engine.start("bot", CallFacts(language="zh-CN"))
    en = engine.start("bot", EN)
    assert zh.gather is not None and en.gather is not None
    assert zh.gather.choices[0] == Choice("1", "常见问题", "1")
    assert en.gather.choices[0] == Choice("1", "Ask a question", "1")
    # a chat customer may type the label of either language
    turn = engine.answer(en.state, EN, speech="常见问题")
    assert turn.state.node == "question" and turn.gather is not None and turn.gather.question
    assert buttons(en.gather.choices[:3]) == [
        [{"text": "Ask a question", "data": "1"}, {"text": "Ticket status", "data": "2"}],
        [{"text": "Order enquiry", "data": "3"}]]
    assert numbered_menu(en.gather.choices[:2], "en") == (
        "Reply with a number:\n1. Ask a question\n2. Ticket status")
    assert numbered_menu(zh.gather.choices[:1], "zh-CN") == "回复数字选择：\n1. 常见问题"


def test_ask_collects_a_valid_field_or_asks_again_then_gives_up() -> None:
    engine = FlowEngine(BOT)
    menu = engine.start("bot", EN)
    ask = engine.answer(menu.state, EN, digits="4")
    assert ask.state.node == "callback_phone" and ask.gather is not None
    assert ask.gather.field == "phone" and ask.gather.digits == 20
    wrong = engine.answer(ask.state, EN, speech="tomorrow")
    assert wrong.state.node == "callback_phone" and wrong.state.attempt == 1
    assert "not valid" in wrong.says[0].text and not wrong.collected
    done = engine.answer(wrong.state, EN, digits="13800138000#")
    assert done.collected == {"phone": "+8613800138000"}
    assert done.action is not None and done.action.kind == "callback"
    assert "+8613800138000" in done.says[0].text
    # retries used up: on to on_exhausted (the handoff)
    state = ask.state
    for _ in range(3):
        turn = engine.answer(state, EN, speech="nope")
        state = turn.state
    assert turn.action is not None and turn.action.kind == "handoff"


def test_answer_node_uses_the_knowledge_base_and_its_threshold() -> None:
    engine = FlowEngine(BOT)
    question = engine.answer(engine.start("bot", EN).state, EN, digits="1")
    sure = engine.answer(question.state, EN, speech="how long does a refund take",
                         knowledge=knowledge())
    assert sure.knowledge is not None and sure.knowledge.confident
    assert "refund to the original payment method" in sure.says[0].text
    assert sure.state.node == "more"
    unsure = engine.answer(question.state, EN, speech="do you sell second-hand phones",
                           knowledge=knowledge())
    assert unsure.knowledge is not None and not unsure.knowledge.confident
    assert unsure.state.node == "unsure"
    agent = engine.answer(unsure.state, EN, digits="1")
    assert agent.action is not None and agent.action.kind == "handoff"
    assert agent.action.params["team"] == "国际客服 International desk"
    # without a knowledge base nothing is answered
    blind = engine.answer(question.state, EN, speech="how long does a refund take")
    assert blind.state.node == "unsure"


def test_handoff_timeout_apologises_and_goes_on() -> None:
    engine = FlowEngine(BOT)
    menu = engine.start("bot", EN)
    handoff = engine.answer(menu.state, EN, digits="0")
    assert handoff.action is not None and handoff.action.kind == "handoff"
    assert handoff.action.params["timeout_seconds"] == 180
    assert handoff.after is not None and handoff.after.node == "handoff"
    back = engine.resume(handoff.after, EN)
    assert "Sorry, no agent could take your request" in back.says[0].text
    assert back.state.node == "leave_message" and back.gather is not None
    left = engine.answer(back.state, EN, speech="Please call me after 6 pm")
    assert left.collected == {"message": "Please call me after 6 pm"}
    assert left.action is not None and left.action.kind == "create_ticket"
    assert left.action.params["tags"] == ["bot-message"]
    bye = engine.resume(left.after, EN) if left.after else None
    assert bye is not None and bye.action is not None and bye.action.kind == "end"
    assert bye.ends_call


def test_survey_and_subscription_actions() -> None:
    engine = FlowEngine(BOT)
    menu = engine.start("bot", EN)
    sub = engine.answer(menu.state, EN, speech="subscribe")
    assert sub.action is not None and sub.action.kind == "subscribe"
    unsub = engine.answer(menu.state, EN, speech="unsubscribe")
    assert unsub.action is not None and unsub.action.kind == "unsubscribe"
    more = engine.answer(engine.answer(menu.state, EN, digits="1").state, EN,
                         speech="what payment methods do you accept", knowledge=knowledge())
    rating = engine.answer(more.state, EN, speech="no thanks")
    assert rating.state.node == "survey_rating"
    survey = engine.answer(rating.state, EN, speech="5")
    assert survey.collected == {"rating": "5"}
    assert survey.action is not None and survey.action.kind == "survey"
    assert survey.action.params["field"] == "rating"


FLOW = """
[flows.bot]
start = "ask"
[flows.bot.nodes.ask]
kind = "ask"
field = "{field}"
say = {{ "zh-CN" = "?", en = "?" }}
goto = "{goto}"
[flows.bot.nodes.bye]
kind = "end"
"""


@pytest.mark.parametrize(("field", "goto", "message"), [
    ("shoe_size", "bye", "flows.bot.nodes.ask.field: unknown field 'shoe_size'"),
    ("email", "nowhere", "flows.bot.nodes.ask.goto: no node 'nowhere'"),
])
def test_bot_nodes_are_checked(field: str, goto: str, message: str) -> None:
    with pytest.raises(FlowError) as error:
        parse_flow_source(textwrap.dedent(FLOW.format(field=field, goto=goto)))
    assert message in str(error.value)


def test_handoff_needs_a_team_and_console_source_must_be_toml() -> None:
    text = textwrap.dedent("""
        [flows.bot]
        start = "h"
        [flows.bot.nodes.h]
        kind = "handoff"
        """)
    with pytest.raises(FlowError, match=r"flows.bot.nodes.h.team: missing"):
        parse_flow_source(text)
    with pytest.raises(FlowError, match="not valid TOML"):
        parse_flow_source("[flows.bot\n")
