"""Conversational flows: loading and validation, navigation, retries, actions, state tokens."""

from __future__ import annotations

import dataclasses
import textwrap
import urllib.parse
from pathlib import Path

import pytest

from routing.flows import (
    DEFAULT_FLOWS_PATH,
    MAX_STEPS,
    Action,
    CallFacts,
    Choice,
    Flow,
    FlowEngine,
    FlowError,
    FlowSet,
    FlowState,
    Gather,
    Node,
    Prompt,
    Say,
    Turn,
    load_flows,
)

# A small valid flow; error tests change one thing in it or write their own.
MENU = """
[flows.main]
start = "menu"

[flows.main.nodes.menu]
kind = "menu"
say = { "zh-CN" = "查询请按1", en = "Press 1 for status" }
options = [{ digit = "1", keywords = ["工单", "ticket"], goto = "bye" }]

[flows.main.nodes.bye]
kind = "action"
action = "hangup"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "flows.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(FlowError) as info:
        load_flows(path)
    message = str(info.value)
    assert message.startswith(str(path) + ": "), message
    return message.removeprefix(str(path) + ": ")


def engine_for(tmp_path: Path, text: str, default_language: str = "zh-CN") -> FlowEngine:
    return FlowEngine(load_flows(write(tmp_path, text)), default_language)


@pytest.fixture(scope="module")
def flows() -> FlowSet:
    return FlowSet.default()


@pytest.fixture(scope="module")
def engine(flows: FlowSet) -> FlowEngine:
    return FlowEngine(flows)


YU = CallFacts(
    known_caller=True,
    caller_name="于先生",
    caller_names={"en": "Mr. Yu"},
    language="zh-CN",
    has_open_ticket=True,
    ticket_number="T-2026-0042",
    ticket_status="pending",
)


def texts(turn: Turn) -> list[str]:
    return [say.text for say in turn.says]


def at_main_menu(engine: FlowEngine, language: str = "zh-CN") -> Turn:
    turn = engine.resume(FlowState("main", "main_menu", language), CallFacts(language=language))
    assert turn.gather is not None
    return turn


# --- the shipped file ---------------------------------------------------------------------


def test_shipped_file_loads_with_every_node_reachable(flows: FlowSet) -> None:
    assert flows.source == str(DEFAULT_FLOWS_PATH)
    assert {"main", "vip"} <= set(flows.flows)
    assert flows.languages == ("zh-CN", "en")
    for flow in flows.flows.values():
        assert set(flow.reachable()) == set(flow.nodes), flow.name
        assert flow.description


def test_shipped_main_menu_has_the_agreed_digits(flows: FlowSet) -> None:
    menu = flows.get("main").node("main_menu")
    by_digit = {option.digit: option.goto for option in menu.options}
    assert by_digit["1"] == "ticket_status"
    assert by_digit["2"] == "voicemail"
    assert by_digit["3"] == "callback"
    assert by_digit["0"] == "agent_check"
    assert flows.get("main").node(by_digit["0"]).kind == "branch"


def test_default_is_cached_and_get_names_known_flows(flows: FlowSet) -> None:
    assert FlowSet.default() is flows
    with pytest.raises(KeyError, match="no flow 'nope'; known: main, vip"):
        flows.get("nope")


def test_match_language(flows: FlowSet) -> None:
    assert flows.match_language("zh-CN") == "zh-CN"
    assert flows.match_language("zh_cn") == "zh-CN"
    assert flows.match_language("zh") == "zh-CN"
    assert flows.match_language("zh-TW") == "zh-CN"
    assert flows.match_language("en-GB") == "en"
    assert flows.match_language("fr") is None
    assert flows.match_language(None) is None
    assert flows.match_language("") is None


def test_engine_refuses_a_default_language_without_prompts(flows: FlowSet) -> None:
    with pytest.raises(FlowError, match="default language 'fr' is not one of the flow languages"):
        FlowEngine(flows, default_language="fr")
    assert FlowEngine(flows, default_language="en-US").default_language == "en"


# --- loading errors -----------------------------------------------------------------------


def test_minimal_file_loads(tmp_path: Path) -> None:
    flows = load_flows(write(tmp_path, MENU))
    menu = flows.get("main").node("menu")
    assert menu.timeout_seconds == 5
    assert menu.retries == 2
    assert menu.invalid is None
    assert menu.options[0].label == "bye"  # label defaults to the goto


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(FlowError, match="no such file"):
        load_flows(tmp_path / "missing.toml")
    assert "not valid TOML" in load_error(tmp_path, "[flows.main\n")


def test_no_flows(tmp_path: Path) -> None:
    assert load_error(tmp_path, "languages = ['zh-CN', 'en']") == (
        "flows: no flows: add [flows.main] with start and nodes"
    )


def test_unknown_top_level_key(tmp_path: Path) -> None:
    message = load_error(tmp_path, MENU + "\n[menus]\nx = 1\n")
    assert message.startswith("menus: unknown key 'menus'; known: languages, defaults")


def test_unknown_node_kind(tmp_path: Path) -> None:
    message = load_error(tmp_path, MENU.replace('kind = "menu"', 'kind = "prompt"'))
    assert message == (
        "flows.main.nodes.menu.kind: unknown node kind 'prompt'; "
        "known: menu, language, message, say, branch, action, ask, answer, handoff, end"
    )


def test_node_without_kind(tmp_path: Path) -> None:
    message = load_error(tmp_path, MENU.replace('kind = "menu"\n', ""))
    assert message == "flows.main.nodes.menu.kind: missing: one of menu, language, message, " \
        "say, branch, action, ask, answer, handoff, end"


def test_unknown_node_key(tmp_path: Path) -> None:
    message = load_error(tmp_path, MENU.replace("options =", "opitons ="))
    assert message.startswith("flows.main.nodes.menu.opitons: unknown key 'opitons'; known:")
    message = load_error(tmp_path, MENU + 'max_seconds = 5\n')
    assert message.startswith("flows.main.nodes.bye.max_seconds: unknown key 'max_seconds'")


def test_goto_to_a_missing_node(tmp_path: Path) -> None:
    message = load_error(tmp_path, MENU.replace('goto = "bye"', 'goto = "by"'))
    assert message == (
        "flows.main.nodes.menu.options[0].goto: no node 'by' in flow 'main'; nodes: menu, bye"
    )


def test_branch_target_missing(tmp_path: Path) -> None:
    text = MENU.replace('start = "menu"', 'start = "open"') + """
    [flows.main.nodes.open]
    kind = "branch"
    condition = "business_hours"
    then = "menu"
    else = "closed"
    """
    assert load_error(tmp_path, text).startswith(
        "flows.main.nodes.open.else: no node 'closed' in flow 'main'"
    )


def test_flow_on_exhausted_missing(tmp_path: Path) -> None:
    text = MENU.replace('start = "menu"', 'start = "menu"\non_exhausted = "agent"')
    assert load_error(tmp_path, text).startswith(
        "flows.main.on_exhausted: no node 'agent' in this flow; nodes: menu, bye"
    )


def test_flow_without_start(tmp_path: Path) -> None:
    message = load_error(tmp_path, MENU.replace('start = "menu"\n', ""))
    assert message == "flows.main.start: missing: the id of the first node"
    message = load_error(tmp_path, MENU.replace('start = "menu"', 'start = "welcome"'))
    assert message == "flows.main.start: no node 'welcome' in this flow; nodes: menu, bye"


def test_flow_without_nodes(tmp_path: Path) -> None:
    message = load_error(tmp_path, '[flows.main]\nstart = "menu"\n')
    assert message == "flows.main.nodes: no nodes: add [flows.main.nodes.<id>] tables"


def test_duplicate_digits(tmp_path: Path) -> None:
    text = MENU.replace(
        'options = [{ digit = "1", keywords = ["工单", "ticket"], goto = "bye" }]',
        'options = [{ digit = "1", goto = "bye" }, { digit = "1", goto = "bye" }]',
    )
    assert load_error(tmp_path, text) == (
        "flows.main.nodes.menu.options[1].digit: '1' is already used by "
        "flows.main.nodes.menu.options[0]"
    )


def test_digits_of_different_lengths(tmp_path: Path) -> None:
    text = MENU.replace(
        'options = [{ digit = "1", keywords = ["工单", "ticket"], goto = "bye" }]',
        'options = [{ digit = "1", goto = "bye" }, { digit = "12", goto = "bye" }]',
    )
    assert load_error(tmp_path, text).startswith(
        "flows.main.nodes.menu.options[1].digit: '12' has 2 digits, the options before have 1"
    )


def test_bad_digit(tmp_path: Path) -> None:
    text = MENU.replace('digit = "1"', 'digit = "a"')
    assert load_error(tmp_path, text).startswith(
        "flows.main.nodes.menu.options[0].digit: 'a' is not a key like \"1\""
    )


def test_integer_digit_is_accepted(tmp_path: Path) -> None:
    flows = load_flows(write(tmp_path, MENU.replace('digit = "1"', "digit = 1")))
    assert flows.get("main").node("menu").options[0].digit == "1"


def test_duplicate_keyword_across_options(tmp_path: Path) -> None:
    text = MENU.replace(
        'options = [{ digit = "1", keywords = ["工单", "ticket"], goto = "bye" }]',
        'options = [{ digit = "1", keywords = ["Ticket"], goto = "bye" },'
        ' { digit = "2", keywords = ["ticket"], goto = "bye" }]',
    )
    assert load_error(tmp_path, text) == (
        "flows.main.nodes.menu.options[1].keywords: 'ticket' is already a keyword of "
        "flows.main.nodes.menu.options[0]"
    )


def test_option_needs_digit_or_keywords_and_goto(tmp_path: Path) -> None:
    text = MENU.replace('digit = "1", keywords = ["工单", "ticket"], ', "")
    assert load_error(tmp_path, text) == (
        "flows.main.nodes.menu.options[0]: needs a digit or keywords (or both)"
    )
    text = MENU.replace(', goto = "bye"', "")
    assert load_error(tmp_path, text) == (
        "flows.main.nodes.menu.options[0].goto: missing: the node this option leads to"
    )


def test_menu_without_options(tmp_path: Path) -> None:
    text = MENU.replace(
        'options = [{ digit = "1", keywords = ["工单", "ticket"], goto = "bye" }]', "options = []"
    )
    assert load_error(tmp_path, text).startswith(
        "flows.main.nodes.menu.options: must be a non-empty list of tables"
    )


def test_prompt_missing_a_language(tmp_path: Path) -> None:
    text = MENU.replace('say = { "zh-CN" = "查询请按1", en = "Press 1 for status" }',
                        'say = { "zh-CN" = "查询请按1" }')
    assert load_error(tmp_path, text) == (
        'flows.main.nodes.menu.say: missing language en: write { "zh-CN" = "…", "en" = "…" }'
    )


def test_prompt_in_an_unknown_language(tmp_path: Path) -> None:
    text = MENU.replace('en = "Press 1 for status"', 'en = "Press 1", fr = "Tapez 1"')
    assert load_error(tmp_path, text) == (
        "flows.main.nodes.menu.say.fr: 'fr' is not one of the languages (zh-CN, en)"
    )


def test_prompt_as_plain_string(tmp_path: Path) -> None:
    text = MENU.replace('say = { "zh-CN" = "查询请按1", en = "Press 1 for status" }',
                        'say = "Press 1"')
    assert load_error(tmp_path, text).startswith(
        "flows.main.nodes.menu.say: must be a table of texts per language"
    )


def test_menu_without_prompt(tmp_path: Path) -> None:
    text = MENU.replace('say = { "zh-CN" = "查询请按1", en = "Press 1 for status" }\n', "")
    assert load_error(tmp_path, text).startswith("flows.main.nodes.menu.say: missing: write say =")


def test_empty_prompt_text(tmp_path: Path) -> None:
    text = MENU.replace('en = "Press 1 for status"', 'en = "  "')
    assert load_error(tmp_path, text) == (
        "flows.main.nodes.menu.say.en: must be a non-empty string, not '  '"
    )


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("Hello {name}", "unknown placeholder {name}; known: {caller_name}, {email}, "
                         "{greeting}, {message}, {order_number}, {phone}, {queue_position}, "
                         "{rating}, {ticket_number}, {ticket_status}"),
        ("Hello {}", "unknown placeholder {}"),
        ("Hello {caller_name!r}", "placeholder {caller_name} takes no format or !r"),
        ("Hello {caller_name:>10}", "placeholder {caller_name} takes no format or !r"),
        ("Hello {caller_name", "(write {{ and }} for literal braces)"),
    ],
)
def test_bad_placeholders(tmp_path: Path, prompt: str, expected: str) -> None:
    text = MENU.replace('en = "Press 1 for status"', f'en = "{prompt}"')
    message = load_error(tmp_path, text)
    assert message.startswith("flows.main.nodes.menu.say.en: "), message
    assert expected in message


def test_literal_braces_are_allowed(tmp_path: Path) -> None:
    text = MENU.replace('en = "Press 1 for status"', 'en = "Press {{1}}"')
    turn = FlowEngine(load_flows(write(tmp_path, text))).start("main", CallFacts(language="en"))
    assert texts(turn) == ["Press {1}"]


def test_greeting_may_only_use_the_name(tmp_path: Path) -> None:
    text = MENU + '\n[greeting]\n"zh-CN" = "{caller_name}您好"\nen = "{greeting}"\n'
    assert load_error(tmp_path, text) == (
        "greeting.en: unknown placeholder {greeting}; known: {caller_name}"
    )


def test_unknown_condition(tmp_path: Path) -> None:
    text = MENU.replace('start = "menu"', 'start = "open"') + """
    [flows.main.nodes.open]
    kind = "branch"
    condition = "weekend"
    then = "menu"
    else = "bye"
    """
    assert load_error(tmp_path, text) == (
        "flows.main.nodes.open.condition: unknown condition 'weekend'; known: business_hours, "
        "known_caller, has_open_ticket, agents_available"
    )


def test_branch_needs_then_and_else(tmp_path: Path) -> None:
    text = MENU.replace('start = "menu"', 'start = "open"') + """
    [flows.main.nodes.open]
    kind = "branch"
    condition = "known_caller"
    then = "menu"
    """
    assert load_error(tmp_path, text) == "flows.main.nodes.open.else: missing: the node to go to"


def test_unknown_and_missing_action(tmp_path: Path) -> None:
    assert load_error(tmp_path, MENU.replace('action = "hangup"', 'action = "transfer"')) == (
        "flows.main.nodes.bye.action: unknown action 'transfer'; known: ticket_status, "
        "voicemail, callback, agent, hangup, create_ticket, subscribe, unsubscribe, survey"
    )
    assert load_error(tmp_path, MENU.replace('action = "hangup"\n', "")) == (
        "flows.main.nodes.bye.action: missing: one of ticket_status, voicemail, callback, "
        "agent, hangup, create_ticket, subscribe, unsubscribe, survey"
    )


def test_agent_needs_a_queue_and_ticket_status_needs_texts(tmp_path: Path) -> None:
    assert load_error(tmp_path, MENU.replace('action = "hangup"', 'action = "agent"')) == (
        "flows.main.nodes.bye.queue: missing: the queue to wait in"
    )
    text = MENU.replace('action = "hangup"', 'action = "ticket_status"\n'
                        'say = { "zh-CN" = "{ticket_status}", en = "{ticket_status}" }')
    assert load_error(tmp_path, text) == (
        "flows.main.nodes.bye.no_ticket: missing: what to say when the caller has no ticket"
    )


def test_unreachable_node_is_an_error(tmp_path: Path) -> None:
    text = MENU + """
    [flows.main.nodes.orphan]
    kind = "message"
    say = { "zh-CN" = "孤儿", en = "Orphan" }
    goto = "menu"
    """
    assert load_error(tmp_path, text) == (
        "flows.main.nodes.orphan: unreachable: no goto leads here from start 'menu'; "
        "remove the node or point a goto at it"
    )


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("timeout_seconds", "-3", "must be positive of seconds, not -3"),
        ("timeout_seconds", "0", "must be positive of seconds, not 0"),
        ("timeout_seconds", "2.5", "must be a whole number of seconds, not 2.5"),
        ("timeout_seconds", "true", "must be a whole number of seconds, not True"),
        ("retries", "-1", "must be 0 or more, not -1"),
    ],
)
def test_bad_numbers(tmp_path: Path, key: str, value: str, expected: str) -> None:
    text = MENU.replace('kind = "menu"', f'kind = "menu"\n{key} = {value}')
    assert load_error(tmp_path, text) == f"flows.main.nodes.menu.{key}: {expected}"


def test_negative_voicemail_length_and_default_timeout(tmp_path: Path) -> None:
    text = MENU.replace('action = "hangup"', 'action = "voicemail"\nmax_seconds = -10')
    assert load_error(tmp_path, text) == (
        "flows.main.nodes.bye.max_seconds: must be positive of seconds, not -10"
    )
    text = "[defaults]\ntimeout_seconds = -1\n" + MENU
    assert load_error(tmp_path, text) == (
        "defaults.timeout_seconds: must be positive of seconds, not -1"
    )


def test_message_loop_is_an_error(tmp_path: Path) -> None:
    text = MENU.replace('start = "menu"', 'start = "a"') + """
    [flows.main.nodes.a]
    kind = "message"
    say = { "zh-CN" = "甲", en = "A" }
    goto = "b"

    [flows.main.nodes.b]
    kind = "branch"
    condition = "known_caller"
    then = "a"
    else = "menu"
    """
    assert load_error(tmp_path, text) == (
        "flows.main.nodes.b.then: loops without waiting for input: a → b → a; "
        "put a menu in the loop or end it"
    )


def test_message_to_itself_is_a_loop(tmp_path: Path) -> None:
    text = MENU.replace('start = "menu"', 'start = "a"') + """
    [flows.main.nodes.a]
    kind = "message"
    say = { "zh-CN" = "甲", en = "A" }
    goto = "a"
    """
    assert "loops without waiting for input: a → a" in load_error(tmp_path, text)


def test_loop_of_actions_is_an_error(tmp_path: Path) -> None:
    """An agent whose fallback queues the caller again would keep them on hold forever."""
    text = MENU.replace('goto = "bye" }]', 'goto = "agent" }]') + """
    [flows.main.nodes.agent]
    kind = "action"
    action = "agent"
    queue = "front"
    on_no_agent = "busy"

    [flows.main.nodes.busy]
    kind = "message"
    say = { "zh-CN" = "忙", en = "Busy" }
    goto = "agent"
    """
    text = text.replace('[flows.main.nodes.bye]\nkind = "action"\naction = "hangup"\n', "")
    assert "nodes.bye" not in text
    assert "loops without waiting for input: agent → busy → agent" in load_error(tmp_path, text)


def test_loop_through_a_menu_is_fine(tmp_path: Path) -> None:
    text = MENU.replace('goto = "bye" }]', 'goto = "status" }, { digit = "9", goto = "bye" }]')
    text += """
    [flows.main.nodes.status]
    kind = "action"
    action = "ticket_status"
    say = { "zh-CN" = "状态：{ticket_status}", en = "Status: {ticket_status}" }
    no_ticket = { "zh-CN" = "没有工单", en = "No ticket" }
    goto = "menu"
    """
    assert load_flows(write(tmp_path, text)).get("main").node("status").action == "ticket_status"


def test_loop_through_a_skipped_language_node_is_an_error(tmp_path: Path) -> None:
    text = """
    [flows.main]
    start = "lang"

    [flows.main.nodes.lang]
    kind = "language"
    skip_if_known = true
    say = { "zh-CN" = "中文请按1", en = "English press 2" }
    options = [{ digit = "1", language = "zh-CN" }, { digit = "2", language = "en" }]
    goto = "hello"

    [flows.main.nodes.hello]
    kind = "message"
    say = { "zh-CN" = "你好", en = "Hello" }
    goto = "lang"
    """
    assert "loops without waiting for input: lang → hello → lang" in load_error(tmp_path, text)
    # the same without skip_if_known always asks, so it is not an endless loop
    load_flows(write(tmp_path, text.replace("skip_if_known = true", "skip_if_known = false")))


def test_language_option_errors(tmp_path: Path) -> None:
    head = """
    [flows.main]
    start = "lang"

    [flows.main.nodes.lang]
    kind = "language"
    say = { "zh-CN" = "中文请按1", en = "English press 2" }
    goto = "bye"

    [flows.main.nodes.bye]
    kind = "action"
    action = "hangup"
    """
    message = load_error(
        tmp_path, head.replace('goto = "bye"', 'goto = "bye"\noptions = [{ digit = "1" }]')
    )
    assert message == (
        "flows.main.nodes.lang.options[0].language: missing: the language this option sets "
        "(zh-CN, en)"
    )
    message = load_error(tmp_path, head.replace(
        'goto = "bye"', 'goto = "bye"\noptions = [{ digit = "1", language = "fr" }]'
    ))
    assert message == (
        "flows.main.nodes.lang.options[0].language: 'fr' is not one of the languages (zh-CN, en)"
    )
    message = load_error(tmp_path, head.replace(
        'goto = "bye"',
        'goto = "bye"\noptions = [{ digit = "1", language = "en" }, '
        '{ digit = "2", language = "en" }]',
    ))
    assert message == (
        "flows.main.nodes.lang.options[1].language: 'en' is already set by "
        "flows.main.nodes.lang.options[0]"
    )
    message = load_error(tmp_path, head.replace(
        'goto = "bye"\n', 'options = [{ digit = "1", language = "en" }]\n'
    ))
    assert message == (
        "flows.main.nodes.lang.options[0].goto: missing: the node this option leads to "
        "(or give the node a goto)"
    )


def test_play_must_be_an_http_url_in_every_language(tmp_path: Path) -> None:
    text = MENU.replace('kind = "menu"', 'kind = "menu"\nplay = "file:///etc/passwd"')
    assert load_error(tmp_path, text) == (
        "flows.main.nodes.menu.play: 'file:///etc/passwd' is not an http(s) URL of an audio file"
    )
    text = MENU.replace('kind = "menu"', 'kind = "menu"\nplay = { en = "https://x.test/a.mp3" }')
    assert load_error(tmp_path, text) == "flows.main.nodes.menu.play: missing language zh-CN"


def test_bad_ids(tmp_path: Path) -> None:
    text = MENU + '\n[flows.main.nodes."main menu"]\nkind = "action"\naction = "hangup"\n'
    assert load_error(tmp_path, text) == (
        "flows.main.nodes.main menu: 'main menu' is not a node id (letters, digits, _ and -)"
    )
    text = MENU.replace('goto = "bye"', 'goto = "a.b"')
    assert load_error(tmp_path, text) == (
        "flows.main.nodes.menu.options[0].goto: 'a.b' is not an id (letters, digits, _ and -)"
    )


def test_unknown_ticket_status_name(tmp_path: Path) -> None:
    text = MENU + '\n[ticket_status_names.waiting]\n"zh-CN" = "等待"\nen = "waiting"\n'
    assert load_error(tmp_path, text) == (
        "ticket_status_names.waiting: unknown ticket status 'waiting'; known: new, open, "
        "pending, resolved, closed"
    )


def test_custom_languages_require_every_language(tmp_path: Path) -> None:
    text = 'languages = ["zh-CN", "en", "yue"]\n' + MENU
    assert load_error(tmp_path, text).startswith(
        "flows.main.nodes.menu.say: missing language yue"
    )
    assert load_error(tmp_path, 'languages = ["zh-CN", "zh-CN"]\n' + MENU) == (
        "languages[1]: 'zh-CN' is listed twice"
    )
    assert load_error(tmp_path, 'languages = ["chinese!"]\n' + MENU) == (
        "languages[0]: 'chinese!' is not a language tag like zh-CN or en"
    )


def test_flow_error_carries_its_parts(tmp_path: Path) -> None:
    path = write(tmp_path, MENU.replace('goto = "bye"', 'goto = "by"'))
    with pytest.raises(FlowError) as info:
        load_flows(path)
    assert info.value.source == str(path)
    assert info.value.where == "flows.main.nodes.menu.options[0].goto"
    assert isinstance(info.value, ValueError)


# --- navigation: start, language, greeting -----------------------------------------------


def test_unknown_language_asks_in_both_languages(engine: FlowEngine) -> None:
    turn = engine.start("main", CallFacts())
    assert turn.path == ("language",)
    assert [say.language for say in turn.says] == ["zh-CN", "en"]
    assert "普通话服务请按1" in turn.says[0].text
    assert "For English, press 2" in turn.says[1].text
    assert turn.gather == Gather(
        digits=1, timeout_seconds=5, speech=True, language="zh-CN",
        hints=("中文", "普通话", "国语", "chinese", "mandarin", "英语", "英文", "english"),
        choices=(Choice("1", "中文", "1"), Choice("2", "English", "2")),
    )
    assert turn.action is None and turn.after is None
    assert turn.state == FlowState("main", "language", "zh-CN", 0)


def test_language_menu_by_digit_sets_english(engine: FlowEngine) -> None:
    first = engine.start("main", CallFacts())
    turn = engine.answer(first.state, CallFacts(), digits="2")
    assert turn.path == ("language", "hours", "known", "welcome", "main_menu")
    assert {say.language for say in turn.says} == {"en"}
    assert texts(turn)[0] == "Hello, and thank you for calling our service center."
    assert turn.gather is not None and turn.gather.language == "en"
    assert turn.state == FlowState("main", "main_menu", "en")


@pytest.mark.parametrize(("speech", "language"), [
    ("中文", "zh-CN"), ("普通话", "zh-CN"), ("Mandarin please", "zh-CN"),
    ("English", "en"), ("英语", "en"), ("二", "en"), ("two", "en"),
])
def test_language_menu_by_speech(engine: FlowEngine, speech: str, language: str) -> None:
    first = engine.start("main", CallFacts())
    turn = engine.answer(first.state, CallFacts(), speech=speech)
    assert turn.state == FlowState("main", "main_menu", language)


def test_known_language_skips_the_language_menu(engine: FlowEngine) -> None:
    turn = engine.start("main", CallFacts(language="en-US"))
    assert turn.path == ("language", "hours", "known", "welcome", "main_menu")
    assert turn.state.language == "en"
    assert all(say.language == "en" for say in turn.says)


def test_language_the_flows_do_not_speak_is_asked(engine: FlowEngine) -> None:
    turn = engine.start("main", CallFacts(language="fr"))
    assert turn.state.node == "language"


def test_known_caller_greeted_by_name_with_ticket_first(engine: FlowEngine) -> None:
    turn = engine.start("main", YU)
    assert turn.path == (
        "language", "hours", "known", "welcome_back", "ticket_check", "ticket_offer",
    )
    assert texts(turn) == [
        "于先生，您好！欢迎再次致电。",
        "您的工单 T-2026-0042 等待您的回复。"
        "查询这张工单的进度请按1，其他服务请按2，人工服务请按0。",
    ]
    assert turn.state == FlowState("main", "ticket_offer", "zh-CN")


def test_known_caller_in_english_uses_the_english_name(engine: FlowEngine) -> None:
    facts = dataclasses.replace(YU, language="en")
    turn = engine.start("main", facts)
    assert texts(turn)[0] == "Hello Mr. Yu! Welcome back."
    assert texts(turn)[1].startswith("Your ticket T-2026-0042 is waiting for your reply.")


def test_known_caller_without_a_name_gets_no_greeting(engine: FlowEngine) -> None:
    turn = engine.start("main", CallFacts(known_caller=True, language="en"))
    assert texts(turn)[0] == "Welcome back."


def test_known_caller_without_open_ticket_gets_the_main_menu(engine: FlowEngine) -> None:
    facts = CallFacts(known_caller=True, caller_name="Ms. Smith", language="en")
    turn = engine.start("main", facts)
    assert turn.path[-2:] == ("ticket_check", "main_menu")
    assert texts(turn)[0] == "Hello Ms. Smith! Welcome back."


def test_ticket_status_then_back_to_the_menu(engine: FlowEngine) -> None:
    offer = engine.start("main", YU)
    turn = engine.answer(offer.state, YU, digits="1")
    assert turn.path == ("ticket_offer", "ticket_status")
    assert turn.says == ()
    assert turn.gather is None
    assert turn.action == Action("ticket_status", {
        "text": "您最近的工单 T-2026-0042 当前状态：等待您的回复。",
        "language": "zh-CN",
        "audio_url": None,
        "ticket_number": "T-2026-0042",
        "ticket_status": "pending",
        "has_ticket": True,
    })
    assert turn.state == FlowState("main", "ticket_status", "zh-CN")
    assert turn.after == FlowState("main", "main_menu", "zh-CN")
    menu = engine.resume(turn.after, YU)
    assert menu.path == ("main_menu",)
    assert menu.gather is not None and "查询工单进度请按1" in texts(menu)[0]


def test_ticket_status_without_a_ticket(engine: FlowEngine) -> None:
    turn = engine.answer(at_main_menu(engine, "en").state, CallFacts(), digits="1")
    assert turn.action is not None
    assert turn.action.params["text"] == "We could not find a ticket under your number."
    assert turn.action.params["has_ticket"] is False


def test_unknown_ticket_status_is_spoken_as_stored(engine: FlowEngine) -> None:
    facts = CallFacts(ticket_number="T-1", ticket_status="on hold", language="en")
    turn = engine.answer(at_main_menu(engine, "en").state, facts, digits="1")
    assert turn.action is not None
    assert turn.action.params["text"] == "Your latest ticket, T-1, is on hold."


# --- navigation: menus by speech ----------------------------------------------------------


@pytest.mark.parametrize(("speech", "node"), [
    ("我想留言", "voicemail"),
    ("帮我转人工", "agent"),
    ("请给我回电", "callback"),
    ("查一下我的工单", "ticket_status"),
    ("Can I talk to a PERSON?", "agent"),
    ("I'd like to leave a message", "voicemail"),
    ("please call me back", "callback"),
    ("what's the status of my ticket", "ticket_status"),
    ("2 tickets please", "ticket_status"),   # not a bare number: keywords decide
])
def test_menu_by_keyword(engine: FlowEngine, speech: str, node: str) -> None:
    turn = engine.answer(at_main_menu(engine).state, CallFacts(), speech=speech)
    assert turn.state.node == node, turn.path


@pytest.mark.parametrize(("speech", "node"), [
    ("2", "voicemail"), ("２", "voicemail"), ("two", "voicemail"), ("Two.", "voicemail"),
    ("二", "voicemail"), ("按2", "voicemail"), ("press three", "callback"),
    ("请按三", "callback"), ("零", "agent"), ("zero", "agent"), ("number one", "ticket_status"),
])
def test_menu_by_spoken_digit(engine: FlowEngine, speech: str, node: str) -> None:
    turn = engine.answer(at_main_menu(engine).state, CallFacts(), speech=speech)
    assert turn.state.node == node, turn.path


def test_digits_win_over_speech_and_trailing_hash_is_ignored(engine: FlowEngine) -> None:
    state = at_main_menu(engine).state
    turn = engine.answer(state, CallFacts(), digits="2", speech="agent")
    assert turn.state.node == "voicemail"
    assert engine.answer(state, CallFacts(), digits="3#").state.node == "callback"


def test_voicemail_action(engine: FlowEngine) -> None:
    turn = engine.answer(at_main_menu(engine, "en").state, CallFacts(), digits="2")
    assert texts(turn) == ["Please leave your message after the tone, then press the pound key."]
    assert turn.action == Action("voicemail", {"max_seconds": 120, "transcribe": True})
    assert turn.after == FlowState("main", "goodbye", "en")
    bye = engine.resume(turn.after, CallFacts())
    assert texts(bye) == ["Thank you for calling. Goodbye."]
    assert bye.action == Action("hangup", {})
    assert bye.after is None and bye.ends_call


def test_callback_action_with_queue_per_language(engine: FlowEngine) -> None:
    turn = engine.answer(at_main_menu(engine, "en").state, CallFacts(), digits="3")
    assert turn.action == Action("callback", {"queue": "国际客服 International desk"})
    assert turn.after == FlowState("main", "goodbye", "en")
    turn = engine.answer(at_main_menu(engine).state, CallFacts(), digits="3")
    assert turn.action == Action("callback", {"queue": "一线客服 Front line"})


def test_change_language_from_the_main_menu(engine: FlowEngine) -> None:
    facts = CallFacts(language="zh-CN")
    asked = engine.answer(at_main_menu(engine).state, facts, digits="9")
    assert asked.state.node == "switch_language"  # never skipped, even with a known language
    assert [say.language for say in asked.says] == ["zh-CN", "en"]
    menu = engine.answer(asked.state, facts, digits="2")
    assert menu.state == FlowState("main", "main_menu", "en")
    assert menu.path == ("switch_language", "main_menu")


# --- retries, timeouts, exhaustion --------------------------------------------------------


def test_invalid_digit_retries_then_exhausted_to_an_agent(engine: FlowEngine) -> None:
    facts = CallFacts(language="en")
    menu = at_main_menu(engine, "en")
    prompt = texts(menu)[0]
    first = engine.answer(menu.state, facts, digits="7")
    assert texts(first) == ["Sorry, that is not an option.", prompt]
    assert first.state == FlowState("main", "main_menu", "en", attempt=1)
    assert first.gather is not None and first.path == ("main_menu",)
    second = engine.answer(first.state, facts, speech="banana")
    assert second.state.attempt == 2
    exhausted = engine.answer(second.state, facts, digits="8")
    assert exhausted.path == ("main_menu", "agent_check", "agent")
    assert texts(exhausted) == [
        "Sorry, that is not an option.", "Connecting you to an agent, please hold.",
    ]
    assert exhausted.action == Action(
        "agent", {"queue": "国际客服 International desk", "max_wait_seconds": 120}
    )
    assert exhausted.after == FlowState("main", "agents_busy", "en")


def test_timeout_says_the_timeout_prompt(engine: FlowEngine) -> None:
    menu = at_main_menu(engine)
    turn = engine.answer(menu.state, CallFacts())
    assert texts(turn)[0] == "抱歉，我们没有收到您的选择。"
    assert turn.state.attempt == 1
    # empty input is a timeout too (Twilio sends Digits="" when nothing was pressed)
    assert texts(engine.answer(menu.state, CallFacts(), digits="", speech=" "))[0] == (
        "抱歉，我们没有收到您的选择。"
    )


def test_timeouts_exhausted_when_no_agent_is_free_go_to_voicemail(engine: FlowEngine) -> None:
    facts = CallFacts(agents_available=False)
    state = at_main_menu(engine).state
    for _ in range(3):
        turn = engine.answer(state, facts)
        state = turn.state
    assert turn.path == ("main_menu", "agent_check", "agents_busy", "voicemail")
    assert texts(turn) == [
        "抱歉，我们没有收到您的选择。",
        "抱歉，客服人员暂时都在忙。",
        "请在提示音后留言，按井号键结束。",
    ]
    assert turn.action is not None and turn.action.kind == "voicemail"


def test_exhausted_ticket_offer_goes_to_its_own_target(engine: FlowEngine) -> None:
    state = engine.start("main", YU).state
    for _ in range(3):
        turn = engine.answer(state, YU, digits="5")
        state = turn.state
    assert turn.state.node == "main_menu" and turn.state.attempt == 0


def test_exhausted_without_any_target_says_goodbye_and_hangs_up(tmp_path: Path) -> None:
    text = MENU.replace('kind = "menu"', 'kind = "menu"\nretries = 0') + """
    [defaults]
    goodbye = { "zh-CN" = "再见", en = "Goodbye" }
    """
    engine = engine_for(tmp_path, text)
    first = engine.start("main", CallFacts())
    turn = engine.answer(first.state, CallFacts(), digits="9")
    assert texts(turn) == ["再见"]  # no invalid prompt configured, then the goodbye
    assert turn.action == Action("hangup", {}) and turn.ends_call
    assert turn.path == ("menu",)


def test_exhausted_language_menu_continues_in_the_default_language(engine: FlowEngine) -> None:
    state = engine.start("main", CallFacts()).state
    for _ in range(3):
        turn = engine.answer(state, CallFacts())
        state = turn.state
    assert turn.path == ("language", "hours", "known", "welcome", "main_menu")
    assert turn.state == FlowState("main", "main_menu", "zh-CN")
    # the timeout prompt of a language menu is said in every language
    assert [say.language for say in turn.says[:2]] == ["zh-CN", "en"]
    english = FlowEngine(engine.flows, default_language="en")
    state = english.start("main", CallFacts()).state
    for _ in range(3):
        turn = english.answer(state, CallFacts())
        state = turn.state
    assert turn.state == FlowState("main", "main_menu", "en")


def test_stale_attempt_beyond_retries_is_exhausted_not_an_error(engine: FlowEngine) -> None:
    state = FlowState("main", "main_menu", "zh-CN", attempt=9)
    turn = engine.answer(state, CallFacts(), digits="7")
    assert turn.path[:2] == ("main_menu", "agent_check")


# --- out of hours, agents -----------------------------------------------------------------


def test_out_of_hours_goes_to_voicemail(engine: FlowEngine) -> None:
    facts = CallFacts(in_business_hours=False, language="en")
    turn = engine.start("main", facts)
    assert turn.path == ("language", "hours", "closed", "closed_voicemail")
    assert texts(turn)[0].startswith("We are closed now.")  # no name: empty {greeting}
    assert turn.action == Action("voicemail", {"max_seconds": 120, "transcribe": True})
    assert turn.after == FlowState("main", "goodbye", "en")


def test_out_of_hours_known_caller_greeted_by_name(engine: FlowEngine) -> None:
    facts = CallFacts(in_business_hours=False, caller_name="于先生", language="zh-CN")
    turn = engine.start("main", facts)
    assert texts(turn)[0].startswith("于先生，您好！现在是非工作时间。")


def test_agent_with_on_no_agent_after(engine: FlowEngine) -> None:
    turn = engine.answer(at_main_menu(engine).state, CallFacts(), digits="0")
    assert turn.path == ("main_menu", "agent_check", "agent")
    assert texts(turn) == ["正在为您转接人工客服，请稍候。"]
    assert turn.action == Action("agent", {"queue": "一线客服 Front line", "max_wait_seconds": 120})
    assert turn.state == FlowState("main", "agent", "zh-CN")
    assert turn.after == FlowState("main", "agents_busy", "zh-CN")
    fallback = engine.resume(turn.after, CallFacts())
    assert fallback.path == ("agents_busy", "voicemail")
    assert fallback.action is not None and fallback.action.kind == "voicemail"


def test_no_agent_available_skips_the_queue(engine: FlowEngine) -> None:
    turn = engine.answer(at_main_menu(engine).state, CallFacts(agents_available=False),
                         speech="人工")
    assert turn.path == ("main_menu", "agent_check", "agents_busy", "voicemail")


def test_hold_prompt_with_queue_position(engine: FlowEngine) -> None:
    state = FlowState("main", "agent", "en")
    says = engine.hold(state, CallFacts(queue_position=3))
    assert says == (Say(
        "All our agents are busy. There are 3 callers ahead of you; please stay on the line.",
        "en",
    ),)
    with pytest.raises(FlowError, match="is not an agent action"):
        engine.hold(FlowState("main", "main_menu", "en"), CallFacts())


def test_vip_flow(engine: FlowEngine) -> None:
    facts = CallFacts(known_caller=True, caller_name="Mr. Yu", language="en")
    turn = engine.start("vip", facts)
    assert turn.path == ("language", "hours", "agent")
    assert texts(turn) == ["Hello Mr. Yu! Connecting you to your VIP desk."]
    assert turn.action == Action("agent", {"queue": "VIP 专席 VIP desk", "max_wait_seconds": 60})
    assert turn.after == FlowState("vip", "voicemail", "en")


def test_start_unknown_flow(engine: FlowEngine) -> None:
    with pytest.raises(KeyError, match="no flow 'ivr'"):
        engine.start("ivr", CallFacts())


# --- prompts ------------------------------------------------------------------------------


def test_message_without_goto_hangs_up_and_audio_is_played(tmp_path: Path) -> None:
    text = """
    [flows.notice]
    start = "notice"

    [flows.notice.nodes.notice]
    kind = "message"
    play = "https://cc.example/a/jingle.mp3"
    say."zh-CN" = "{caller_name}您好，您的工单{ticket_number}已解决。"
    say.en = "Hi {caller_name}, ticket {ticket_number} is solved."
    goto = "audio_only"

    [flows.notice.nodes.audio_only]
    kind = "message"
    play = { "zh-CN" = "https://cc.example/a/zh.mp3", en = "https://cc.example/a/en.mp3" }
    """
    engine = engine_for(tmp_path, text)
    turn = engine.start("notice", CallFacts(language="en"))
    assert turn.says == (
        Say("Hi, ticket is solved.", "en", "https://cc.example/a/jingle.mp3"),
        Say("", "en", "https://cc.example/a/en.mp3"),
    )
    assert turn.action == Action("hangup", {}) and turn.gather is None and turn.ends_call
    assert turn.path == ("notice", "audio_only")
    zh = engine.start("notice", CallFacts(caller_name="王女士", ticket_number="T-9"))
    assert zh.says[0].text == "王女士您好，您的工单T-9已解决。"


def test_defaults_apply_to_menus(tmp_path: Path) -> None:
    text = """
    [defaults]
    timeout_seconds = 8
    retries = 1
    invalid = { "zh-CN" = "错了", en = "Wrong" }
    """ + MENU
    engine = engine_for(tmp_path, text)
    first = engine.start("main", CallFacts())
    assert first.gather is not None and first.gather.timeout_seconds == 8
    again = engine.answer(first.state, CallFacts(), digits="5")
    assert texts(again) == ["错了", "查询请按1"]
    assert engine.answer(again.state, CallFacts(), digits="5").ends_call


def test_runtime_loop_guard() -> None:
    """Flows built in code skip the load checks; the walk still stops."""
    nodes = {
        "a": Node(id="a", kind="message", prompt=Prompt({"zh-CN": "甲", "en": "A"}), goto="b"),
        "b": Node(id="b", kind="message", prompt=Prompt({"zh-CN": "乙", "en": "B"}), goto="a"),
    }
    flows = FlowSet(source="<code>", flows={"x": Flow(name="x", start="a", nodes=nodes)})
    with pytest.raises(FlowError, match=f"passed {MAX_STEPS} nodes without waiting"):
        FlowEngine(flows).start("x", CallFacts())


# --- states and tokens --------------------------------------------------------------------


def test_answer_validates_the_state(engine: FlowEngine) -> None:
    with pytest.raises(FlowError, match="no flow 'gone'"):
        engine.answer(FlowState("gone", "menu", "zh-CN"), CallFacts(), digits="1")
    with pytest.raises(FlowError, match="flow 'main' has no node 'gone'"):
        engine.answer(FlowState("main", "gone", "zh-CN"), CallFacts(), digits="1")
    with pytest.raises(FlowError, match="language 'fr' is not one of zh-CN, en"):
        engine.resume(FlowState("main", "main_menu", "fr"), CallFacts())
    with pytest.raises(FlowError, match="is a action node, not waiting for input"):
        engine.answer(FlowState("main", "voicemail", "zh-CN"), CallFacts(), digits="1")


def test_token_round_trip_is_compact_and_url_safe() -> None:
    state = FlowState("main", "main_menu", "zh-CN", 2)
    token = state.to_token()
    assert token.startswith("main.main_menu.zh-CN.2.")
    assert len(token) <= 40
    assert urllib.parse.quote(token, safe="") == token
    assert FlowState.from_token(token) == state
    keyed = state.to_token(key=b"server secret")
    assert keyed != token
    assert FlowState.from_token(keyed, key=b"server secret") == state


def test_every_turn_state_of_the_shipped_flows_round_trips(engine: FlowEngine) -> None:
    for name, flow in engine.flows.flows.items():
        for node_id in flow.nodes:
            for language in engine.flows.languages:
                state = FlowState(name, node_id, language, 1)
                assert FlowState.from_token(state.to_token()) == state


@pytest.mark.parametrize("change", [
    lambda t: t.replace("main_menu", "agent"),
    lambda t: t.replace(".zh-CN.", ".en."),
    lambda t: t.replace(".0.", ".1."),
    lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),
    lambda t: t.replace("main.", "vip.", 1),
])
def test_changed_token_is_refused(change: object) -> None:
    token = FlowState("main", "main_menu", "zh-CN").to_token()
    changed = change(token)  # type: ignore[operator]
    assert changed != token
    with pytest.raises(FlowError, match="state token: "):
        FlowState.from_token(changed)


def test_token_with_the_wrong_key_is_refused() -> None:
    token = FlowState("main", "main_menu", "zh-CN").to_token(key=b"one")
    with pytest.raises(FlowError, match="check tag does not match"):
        FlowState.from_token(token, key=b"two")
    with pytest.raises(FlowError, match="check tag does not match"):
        FlowState.from_token(token)


@pytest.mark.parametrize("garbage", [
    "", "x", "a.b.c.d", "a.b.c.d.e.f", "main.menu.zh-CN.x.abcdefgh",
    "main.menu.zh-CN.-1.abcdefgh", "main.menu.zh-CN.100.abcdefgh", "main.me nu.zh-CN.0.abc",
    "main.menu.中文.0.abcdefgh", "main.menu.zh-CN.0.ééé", "main.menu.zh-CN.٣.abcdefgh",
    "a" * 300, None, 42,
])
def test_garbage_token_is_refused(garbage: object) -> None:
    with pytest.raises(FlowError, match="state token: "):
        FlowState.from_token(garbage)  # type: ignore[arg-type]


def test_unfit_state_cannot_make_a_token() -> None:
    with pytest.raises(FlowError, match=r"node 'a\.b' is not a valid id"):
        FlowState("main", "a.b", "zh-CN").to_token()
    with pytest.raises(FlowError, match="attempt -1 is not 0 to 99"):
        FlowState("main", "menu", "zh-CN", -1).to_token()


def test_a_whole_call_through_tokens(engine: FlowEngine) -> None:
    """What the webhook does: keep only the token between requests."""
    facts = CallFacts()
    turn = engine.start("main", facts)
    token = turn.state.to_token()
    turn = engine.answer(FlowState.from_token(token), facts, digits="1")   # 中文
    token = turn.state.to_token()
    turn = engine.answer(FlowState.from_token(token), facts, speech="转人工")
    assert turn.action is not None and turn.action.kind == "agent"
    assert turn.after is not None
    turn = engine.resume(FlowState.from_token(turn.after.to_token()), facts)  # nobody answered
    assert turn.action is not None and turn.action.kind == "voicemail"
    assert turn.after is not None
    turn = engine.resume(FlowState.from_token(turn.after.to_token()), facts)
    assert turn.ends_call and texts(turn) == ["感谢您的来电，再见。"]
