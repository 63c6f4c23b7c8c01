"""Conversational flows from ``config/flows.toml``: the IVR and the self-service bot.

A flow is a small graph of nodes. The :class:`FlowEngine` walks it for one caller and
returns a :class:`Turn` at a time: what to say, then either wait for input (a
:class:`Gather`) or perform an :class:`Action` (record, enqueue, dial, hang up). The
engine is pure and channel-neutral: no I/O besides reading the TOML file, no database,
no HTTP, no Twilio. The voice webhook renders a Turn as TwiML; a chat bot renders the
same Turn as messages and buttons. Between turns the position travels as a short
:class:`FlowState` token in the callback URL.

The file is read and checked once, at load: every mistake raises :class:`FlowError`
naming the file and the TOML path of the bad key (``flows.main.nodes.menu.options[1].goto``
names the flow, the node and the key), so a deployer never finds out during a call.

File format (see the shipped ``config/flows.toml`` for a commented example)
    ``languages``            the languages every prompt must have (default zh-CN, en).
    ``[defaults]``           ``timeout_seconds`` (5), ``retries`` (2) and the ``invalid``,
                             ``timeout`` and ``goodbye`` prompts used when a node has none.
    ``[greeting]``           the text of ``{greeting}`` per language; it may use
                             ``{caller_name}`` and renders empty when the name is unknown.
    ``[ticket_status_names.<status>]``  how a ticket status (new, open, pending, resolved,
                             closed) is spoken per language in ``{ticket_status}``.
    ``[flows.<name>]``       ``start`` (a node id), optional ``description`` and
                             ``on_exhausted`` (default for the flow's menus), and
                             ``[flows.<name>.nodes.<id>]`` tables with a ``kind``.

Node kinds
    ``menu``      ``say``/``play``, ``options``, ``timeout_seconds``, ``retries``, ``speech``,
                  ``invalid``, ``timeout``, ``on_exhausted``. Waits for input.
    ``language``  a menu whose options set ``language``; ``skip_if_known = true`` passes
                  through when the caller's language is known. Its prompt is said in every
                  language. Exhausted without ``on_exhausted``: continue in the engine's
                  default language.
    ``message``   ``say``/``play`` then ``goto`` (no ``goto``: hang up).
    ``branch``    ``condition`` (see :data:`CONDITIONS`) → ``then`` / ``else``.
    ``action``    ``action`` (see :data:`ACTIONS`) with its own keys; ``say`` is the prompt
                  before it (for ``ticket_status``: the status text itself).
    ``say``       the same as ``message``.
    ``ask``       ``say``, ``field`` (see :data:`FIELDS`), ``validate`` (see
                  :data:`VALIDATORS`), ``goto``, ``invalid``, ``retries``, ``on_exhausted``,
                  ``max_digits``. Waits for input; a valid answer is ``Turn.collected``.
    ``answer``    ``say``, ``goto``, ``on_unsure``. Waits for a free-text question and
                  looks it up in the knowledge base passed to :meth:`FlowEngine.answer`.
    ``handoff``   ``say``, ``team``, ``timeout_seconds``, ``apology``, ``on_timeout``,
                  ``hold``: an :class:`Action` of kind ``handoff``; resuming its ``after``
                  (the node with attempt 1) says the apology and goes to ``on_timeout``.
    ``end``       ``say``, then an ``end`` action: the conversation is over.

Menus
    Input is DTMF digits or speech/text. Digits must equal an option's ``digit``; speech
    that is only a number ("2", "two", "二", "按2", "press 2") counts as that digit; other
    speech matches an option's ``keywords`` as :class:`routing.rules.Keywords` do
    (case-insensitive, full-width folded, substrings; a Latin keyword must start a word).
    Options are tried in the order written. A wrong answer or a timeout says the
    ``invalid``/``timeout`` prompt and asks again, ``retries`` times; then the call goes to
    ``on_exhausted`` (node, else flow, else: hang up after the ``goodbye`` prompt).

Checks at load
    Unknown keys, kinds, conditions and actions; ``goto`` targets that do not exist; a
    flow whose ``start`` is missing; duplicate digits, keywords or languages in a menu; a
    prompt missing a language or using an unknown ``{placeholder}``; negative or zero
    timeouts; **unreachable nodes are an error** (an orphan is almost always a mistyped
    ``goto``; delete it or comment it out); and any cycle of nodes that never waits for
    input (message → branch → message …), which would loop or redirect forever.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import string
import unicodedata
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crm_core.config_file import ConfigFileError, TableChecker, describe, read_toml
from crm_core.errors import ValidationError
from crm_core.models import TicketStatus
from crm_core.normalize import normalize_email, try_normalize_phone
from routing.rules import Keywords, normalize_text

if TYPE_CHECKING:
    from routing.knowledge import KnowledgeBase

DEFAULT_FLOWS_PATH = Path(__file__).resolve().parents[1] / "config" / "flows.toml"
"""The flows shipped with the code."""

NODE_KINDS: tuple[str, ...] = (
    "menu", "language", "message", "say", "branch", "action", "ask", "answer", "handoff", "end",
)
"""What a node can be."""

CONDITIONS: tuple[str, ...] = (
    "business_hours", "known_caller", "has_open_ticket", "agents_available",
)
"""What a ``branch`` node can test; each reads one :class:`CallFacts` field."""

ACTIONS: tuple[str, ...] = (
    "ticket_status", "voicemail", "callback", "agent", "hangup", "create_ticket", "subscribe",
    "unsubscribe", "survey",
)
"""What an ``action`` node asks the renderer to do."""

FIELDS: tuple[str, ...] = ("order_number", "email", "phone", "rating", "message")
"""Names an ``ask`` node can collect into (each also a ``{placeholder}``)."""

VALIDATORS: tuple[str, ...] = ("text", "order_number", "email", "phone", "rating", "digits")
"""How an ``ask`` node checks the answer (see :func:`validate_field`)."""

PLACEHOLDERS: frozenset[str] = frozenset(
    {"caller_name", "greeting", "ticket_number", "ticket_status", "queue_position", *FIELDS}
)
"""Names a prompt may use as ``{placeholder}``; a missing value renders empty."""

DEFAULT_LANGUAGES: tuple[str, ...] = ("zh-CN", "en")
"""The languages every prompt needs when the file does not say ``languages``."""

DEFAULT_TIMEOUT_SECONDS = 5
DEFAULT_RETRIES = 2
DEFAULT_VOICEMAIL_SECONDS = 120
DEFAULT_AGENT_WAIT_SECONDS = 120
DEFAULT_HANDOFF_SECONDS = 300
MAX_STEPS = 64
"""How many nodes one turn may pass through before the engine calls it a loop."""

_DEFAULT_GREETING = {"zh-CN": "{caller_name}，您好！", "en": "Hello {caller_name}!"}
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*$")
_DIGITS = re.compile(r"^[0-9*#]{1,4}$")
_TOP_KEYS = ("languages", "defaults", "greeting", "ticket_status_names", "flows")
_DEFAULT_KEYS = ("timeout_seconds", "retries", "invalid", "timeout", "goodbye")
_FLOW_KEYS = ("start", "description", "on_exhausted", "nodes")
_INPUT_KEYS = (
    "kind", "say", "play", "options", "timeout_seconds", "retries", "speech", "invalid",
    "timeout", "on_exhausted",
)
_NODE_KEYS: dict[str, tuple[str, ...]] = {
    "menu": _INPUT_KEYS,
    "language": (*_INPUT_KEYS, "skip_if_known", "goto"),
    "message": ("kind", "say", "play", "goto"),
    "say": ("kind", "say", "play", "goto"),
    "end": ("kind", "say", "play"),
    "ask": (
        "kind", "say", "play", "field", "validate", "goto", "timeout_seconds", "retries",
        "invalid", "timeout", "on_exhausted", "max_digits",
    ),
    "answer": (
        "kind", "say", "play", "goto", "on_unsure", "timeout_seconds", "retries", "timeout",
        "on_exhausted",
    ),
    "handoff": ("kind", "say", "play", "team", "timeout_seconds", "apology", "on_timeout", "hold"),
    "branch": ("kind", "condition", "then", "else"),
    "action": ("kind", "action", "say", "play"),
}
_ACTION_KEYS: dict[str, tuple[str, ...]] = {
    "ticket_status": ("goto", "no_ticket"),
    "voicemail": ("goto", "max_seconds", "transcribe"),
    "callback": ("goto", "queue"),
    "agent": ("queue", "max_wait_seconds", "on_no_agent", "hold"),
    "hangup": (),
    "create_ticket": ("goto", "tags"),
    "subscribe": ("goto",),
    "unsubscribe": ("goto",),
    "survey": ("goto", "field", "scale"),
}
_OPTION_KEYS = ("digit", "keywords", "goto", "label")
_LANGUAGE_OPTION_KEYS = ("digit", "keywords", "goto", "label", "language")
_TOKEN_CONTEXT = b"contact-center/flow-state/1\x00"
_TOKEN_KEY = b"contact-center flow state: integrity only, pass a key to authenticate"
_TOKEN_TAG_BYTES = 6
_MAX_TOKEN_LENGTH = 256
_MAX_ATTEMPT = 99

_SPOKEN_WORDS = {
    "zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "star": "*", "pound": "#",
    "hash": "#",
}
_SPOKEN_FILLERS = frozenset(
    {"press", "option", "number", "key", "please", "dial", "choose", "select", "pick"}
)
_CHINESE_FILLERS = ("请按", "按键", "选项", "选择", "请", "按", "选", "第", "号", "键", "个")
_CHINESE_DIGITS = str.maketrans({
    "零": "0", "〇": "0", "一": "1", "幺": "1", "二": "2", "两": "2", "三": "3", "四": "4",
    "五": "5", "六": "6", "七": "7", "八": "8", "九": "9", "星": "*", "井": "#",
})
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([,.!?;:，。！？；：、])")


class FlowError(ConfigFileError):
    """A flows file, state token or state that cannot be used; the message says where."""


# --- what the engine returns --------------------------------------------------------------


@dataclass(frozen=True)
class CallFacts:
    """What the caller of the engine knows about the call; every field is optional.

    ``in_business_hours`` usually comes from ``RuleSet.default().calendar.is_open(now)``.
    ``caller_names`` gives the name per language (``{"zh-CN": "于先生", "en": "Mr. Yu"}``)
    and wins over ``caller_name`` for the languages it has.
    """

    in_business_hours: bool = True
    known_caller: bool = False
    caller_name: str = ""
    language: str | None = None
    has_open_ticket: bool = False
    ticket_number: str = ""
    ticket_status: str = ""
    agents_available: bool = True
    queue_position: int | None = None
    caller_names: Mapping[str, str] = field(default_factory=dict)
    fields: Mapping[str, str] = field(default_factory=dict)
    """What ``ask`` nodes collected so far (for ``{order_number}`` and the like)."""


@dataclass(frozen=True)
class FlowState:
    """Where a call stands: the node waiting for input (or the action node), its language
    and how many wrong answers or timeouts that node has had.

    :meth:`to_token` writes it as a short URL-safe string such as
    ``main.main_menu.zh-CN.0.3vX9kQ_a`` (flow, node, language, attempt, check tag);
    :meth:`from_token` reads it back and raises :class:`FlowError` on garbage or on a
    changed token. Without ``key`` the tag only catches edits and corruption (anyone can
    compute it); pass a server secret as ``key`` to make tokens unforgeable.
    """

    flow: str
    node: str
    language: str
    attempt: int = 0

    def to_token(self, key: bytes | None = None) -> str:
        """The state as a compact URL-safe token (validated: raises FlowError if unfit)."""
        _check_state_fields(self.flow, self.node, self.language, self.attempt)
        body = f"{self.flow}.{self.node}.{self.language}.{self.attempt}"
        return f"{body}.{_token_tag(body, key)}"

    @classmethod
    def from_token(cls, token: str, key: bytes | None = None) -> FlowState:
        """Read a token made by :meth:`to_token` with the same ``key``."""
        if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN_LENGTH:
            raise FlowError("state token", "", "not a state token (empty, too long or not text)")
        parts = token.split(".")
        if len(parts) != 5:
            raise FlowError("state token", "", f"{token!r} is not flow.node.language.attempt.tag")
        flow, node, language, attempt_text, tag = parts
        if not attempt_text.isascii() or not attempt_text.isdigit() or len(attempt_text) > 2:
            raise FlowError("state token", "", f"attempt {attempt_text!r} is not a small number")
        attempt = int(attempt_text)
        _check_state_fields(flow, node, language, attempt)
        body = ".".join(parts[:4])
        if not hmac.compare_digest(tag.encode("ascii", "replace"), _token_tag(body, key).encode()):
            raise FlowError("state token", "", "check tag does not match: changed or wrong key")
        return cls(flow=flow, node=node, language=language, attempt=attempt)


def _check_state_fields(flow: Any, node: Any, language: Any, attempt: Any) -> None:
    for name, value in (("flow", flow), ("node", node)):
        if not isinstance(value, str) or not _NAME.match(value):
            raise FlowError("state token", "", f"{name} {value!r} is not a valid id")
    if not isinstance(language, str) or not _LANGUAGE_TAG.match(language):
        raise FlowError("state token", "", f"language {language!r} is not a language tag")
    if isinstance(attempt, bool) or not isinstance(attempt, int) or not (
        0 <= attempt <= _MAX_ATTEMPT
    ):
        raise FlowError("state token", "", f"attempt {attempt!r} is not 0 to {_MAX_ATTEMPT}")


def _token_tag(body: str, key: bytes | None) -> str:
    digest = hmac.new(key or _TOKEN_KEY, _TOKEN_CONTEXT + body.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()[:_TOKEN_TAG_BYTES]).decode()


@dataclass(frozen=True)
class Say:
    """One thing to say: play ``audio_url`` first when set, then speak ``text`` if not empty."""

    text: str
    language: str
    audio_url: str | None = None


@dataclass(frozen=True, kw_only=True)
class Gather:
    """Wait for input: up to ``digits`` DTMF digits or speech in ``language``.

    Pass what came back to :meth:`FlowEngine.answer`; nothing within
    ``timeout_seconds`` is a timeout (``digits=None, speech=None``). ``hints`` are the
    menu's keywords, for the speech recognizer.
    """

    digits: int = 1
    timeout_seconds: int
    speech: bool = True
    language: str
    hints: tuple[str, ...] = ()
    choices: tuple[Choice, ...] = ()
    """A menu's options, for channels that show buttons (Telegram, web chat, e-mail)."""
    field: str | None = None
    """Set when an ``ask`` node waits for this field (free text, or digits ending in #)."""
    question: bool = False
    """Set when an ``answer`` node waits for a free-text question."""


@dataclass(frozen=True)
class Choice:
    """One button of a menu: the DTMF ``digit`` (if any), its label in the turn's language
    and ``value``, what the channel sends back when it is chosen (the digit, else the label).
    """

    digit: str | None
    label: str
    value: str


@dataclass(frozen=True)
class Action:
    """Something the renderer performs: ``kind`` is one of :data:`ACTIONS`.

    ``params`` per kind:
        ``ticket_status``  ``text`` and ``language`` (say it), ``audio_url``,
                           ``ticket_number``, ``ticket_status``, ``has_ticket``.
        ``voicemail``      ``max_seconds``, ``transcribe`` (record after a beep).
        ``callback``       ``queue`` (may be ``""``): register a callback request.
        ``agent``          ``queue``, ``max_wait_seconds``: enqueue for an agent.
        ``hangup``         none.
    """

    kind: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class KnowledgeAnswer:
    """What an ``answer`` node did with a question: the article (when confident) and score."""

    question: str
    article_id: int | None
    score: float
    confident: bool


@dataclass(frozen=True)
class Turn:
    """One step of a call: say ``says`` in order, then either wait (``gather``) or act.

    Exactly one of ``gather`` and ``action`` is set. After a gather, call
    :meth:`FlowEngine.answer` with ``state``. After an action, call
    :meth:`FlowEngine.resume` with ``after``; when ``after`` is None the call ends after the
    action (hang up after recording, after the goodbye, when no agent answered …).
    """

    says: tuple[Say, ...]
    gather: Gather | None
    action: Action | None
    state: FlowState
    after: FlowState | None
    path: tuple[str, ...]
    collected: Mapping[str, str] = field(default_factory=dict)
    """Fields an ``ask`` node accepted in this turn (to keep with the session)."""
    knowledge: KnowledgeAnswer | None = None
    """Set when an ``answer`` node looked a question up in the knowledge base."""

    @property
    def ends_call(self) -> bool:
        """Whether the call ends after this turn (no input expected, nothing to resume)."""
        return self.gather is None and self.after is None


# --- the loaded flows ---------------------------------------------------------------------


@dataclass(frozen=True)
class Prompt:
    """A prompt's text per language (possibly empty when it only plays audio) and audio."""

    texts: Mapping[str, str]
    audio: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Option:
    """One choice of a menu; ``language`` is set on the options of a language node."""

    digit: str | None
    keywords: Keywords
    goto: str
    label: str
    language: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    """The label per language (``label`` is the first one)."""

    def label_in(self, language: str) -> str:
        """The label to show in ``language``."""
        return self.labels.get(language) or self.label


@dataclass(frozen=True)
class Node:
    """One node of a flow; which fields matter depends on ``kind`` (see the module doc)."""

    id: str
    kind: str
    prompt: Prompt | None = None
    goto: str | None = None
    options: tuple[Option, ...] = ()
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    retries: int = DEFAULT_RETRIES
    speech: bool = True
    invalid: Prompt | None = None
    timeout: Prompt | None = None
    on_exhausted: str | None = None
    skip_if_known: bool = False
    condition: str | None = None
    then: str | None = None
    otherwise: str | None = None
    action: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    queue: Mapping[str, str] = field(default_factory=dict)
    no_ticket: Prompt | None = None
    hold: Prompt | None = None
    on_no_agent: str | None = None
    field: str | None = None
    validate: str | None = None
    max_digits: int = 20
    on_unsure: str | None = None
    on_timeout: str | None = None
    apology: Prompt | None = None

    @property
    def waits_for_input(self) -> bool:
        """Whether a turn can stop here to ask the caller (menus, ask and answer nodes)."""
        return self.kind in ("menu", "language", "ask", "answer")

    def targets(self) -> Iterator[tuple[str, str]]:
        """``(key, node id)`` for every node this one can lead to, as written in the file."""
        if self.goto:
            yield "goto", self.goto
        if self.on_exhausted:
            yield "on_exhausted", self.on_exhausted
        for i, option in enumerate(self.options):
            if option.goto != self.goto:
                yield f"options[{i}].goto", option.goto
        if self.then:
            yield "then", self.then
        if self.otherwise:
            yield "else", self.otherwise
        if self.on_no_agent:
            yield "on_no_agent", self.on_no_agent
        if self.on_unsure:
            yield "on_unsure", self.on_unsure
        if self.on_timeout:
            yield "on_timeout", self.on_timeout

    def passes_through(self) -> Iterator[tuple[str, str]]:
        """The targets reachable without the caller's input (what a loop is made of)."""
        if self.kind in ("menu", "ask", "answer") or (
            self.kind == "language" and not self.skip_if_known
        ):
            return
        for key, target in self.targets():
            if key not in ("on_exhausted", "on_timeout"):
                yield key, target

    @property
    def digit_length(self) -> int:
        """How many DTMF digits an answer to this menu has."""
        return max((len(o.digit) for o in self.options if o.digit), default=1)

    def hints(self) -> tuple[str, ...]:
        """The options' keywords, once each, for the speech recognizer."""
        return tuple(dict.fromkeys(k for o in self.options for k in o.keywords.keywords))

    def match(self, digits: str | None, speech: str | None) -> Option | None:
        """The option chosen by ``digits`` or by ``speech``, or None."""
        if digits:
            for candidate in (digits, digits.rstrip("#")):
                for option in self.options:
                    if option.digit == candidate:
                        return option
        if speech:
            spoken = _spoken_digits(speech)
            if spoken is not None:
                for option in self.options:
                    if option.digit == spoken:
                        return option
            folded = normalize_text(speech)
            for option in self.options:
                if any(normalize_text(label) == folded
                       for label in (option.label, *option.labels.values())):
                    return option
            for option in self.options:
                if option.keywords.find(speech):
                    return option
        return None

    def choices(self, language: str) -> tuple[Choice, ...]:
        """The options as buttons in ``language``."""
        return tuple(
            Choice(digit=o.digit, label=o.label_in(language), value=o.digit or o.label_in(language))
            for o in self.options
        )


@dataclass(frozen=True)
class Flow:
    """One named flow: its start node, its nodes and the default for exhausted menus."""

    name: str
    start: str
    nodes: Mapping[str, Node]
    on_exhausted: str | None = None
    description: str = ""

    def node(self, node_id: str) -> Node:
        """The node with this id (KeyError naming the flow when there is none)."""
        try:
            return self.nodes[node_id]
        except KeyError:
            raise KeyError(f"flow {self.name!r} has no node {node_id!r}") from None

    def reachable(self) -> list[str]:
        """Node ids reachable from ``start``, in the order a breadth-first walk finds them."""
        seen = [self.start]
        for node_id in seen:
            node = self.nodes[node_id]
            targets = [t for _, t in node.targets()]
            if node.kind == "menu" and not node.on_exhausted and self.on_exhausted:
                targets.append(self.on_exhausted)
            seen.extend(t for t in targets if t not in seen and t in self.nodes)
        return seen


class FlowSet:
    """Loaded, validated flows. Build with :func:`load_flows` or :meth:`default`."""

    def __init__(
        self,
        *,
        source: str,
        flows: Mapping[str, Flow],
        languages: Sequence[str] = DEFAULT_LANGUAGES,
        greeting: Mapping[str, str] | None = None,
        status_names: Mapping[str, Mapping[str, str]] | None = None,
        goodbye: Prompt | None = None,
    ) -> None:
        self.source = source
        self.flows: dict[str, Flow] = dict(flows)
        self.languages: tuple[str, ...] = tuple(languages)
        self.greeting: dict[str, str] = dict(greeting or {})
        self.status_names = {k: dict(v) for k, v in (status_names or {}).items()}
        self.goodbye = goodbye

    def __repr__(self) -> str:
        return f"FlowSet({self.source!r}, flows: {', '.join(self.flows)})"

    @classmethod
    def default(cls) -> FlowSet:
        """The flows shipped in ``config/flows.toml`` (read once, then cached)."""
        return _default_flows()

    def get(self, name: str) -> Flow:
        """The flow called ``name``; KeyError naming the known flows when there is none."""
        try:
            return self.flows[name]
        except KeyError:
            known = ", ".join(self.flows) or "none"
            raise KeyError(f"{self.source}: no flow {name!r}; known: {known}") from None

    def match_language(self, tag: str | None) -> str | None:
        """The flow language for a customer's language tag (``zh`` → ``zh-CN``), or None.

        An exact tag wins (case and ``_``/``-`` ignored), else the first flow language with
        the same base language.
        """
        if not tag or not isinstance(tag, str):
            return None
        wanted = tag.strip().replace("_", "-").casefold()
        for language in self.languages:
            if language.casefold() == wanted:
                return language
        base = wanted.split("-")[0]
        for language in self.languages:
            if language.casefold().split("-")[0] == base:
                return language
        return None


@functools.cache
def _default_flows() -> FlowSet:
    return load_flows(DEFAULT_FLOWS_PATH)


# --- the engine ---------------------------------------------------------------------------


class FlowEngine:
    """Walks flows for callers: :meth:`start`, then :meth:`answer` or :meth:`resume`.

    Message, branch and skipped language nodes are passed inside one turn (their prompts
    collected in order) until a node needs input or is an action. The engine keeps no
    per-call data: everything it needs is in the :class:`FlowState` and the
    :class:`CallFacts` passed in each time.
    """

    def __init__(
        self, flows: FlowSet, default_language: str = "zh-CN", *, region: str = "CN"
    ) -> None:
        language = flows.match_language(default_language)
        if language is None:
            raise FlowError(
                flows.source, "",
                f"default language {default_language!r} is not one of the flow languages "
                f"({', '.join(flows.languages)})",
            )
        self.flows = flows
        self.default_language = language
        self.region = region

    def start(self, flow: str, facts: CallFacts) -> Turn:
        """The first turn of ``flow`` (KeyError for an unknown flow).

        The caller's known language (``facts.language``) is used from the start, and a
        language node with ``skip_if_known = true`` is passed without asking.
        """
        chosen = self.flows.get(flow)
        language = self.flows.match_language(facts.language) or self.default_language
        return self._walk(chosen, chosen.start, language, facts)

    def answer(
        self,
        state: FlowState,
        facts: CallFacts,
        *,
        digits: str | None = None,
        speech: str | None = None,
        knowledge: KnowledgeBase | None = None,
    ) -> Turn:
        """The turn after the caller answered the node at ``state`` (both None: timeout).

        Menus: a matching option goes on to its ``goto`` (a language option also sets the
        language). ``ask``: a valid answer is collected (``Turn.collected``) and the flow
        goes on. ``answer``: the question is looked up in ``knowledge``; a confident match
        is said and the flow goes to ``goto``, else to ``on_unsure``. A wrong answer or a
        timeout asks again with ``attempt + 1``; after ``retries`` of them the call goes to
        ``on_exhausted``.
        """
        flow, node = self._locate(state)
        if not node.waits_for_input:
            raise FlowError(
                self.flows.source, _where(flow.name, node.id),
                f"is a {node.kind} node, not waiting for input: call resume()",
            )
        digits = digits.strip() if isinstance(digits, str) else None
        speech = speech.strip() if isinstance(speech, str) else None
        if node.kind == "ask" and (digits or speech):
            value = validate_field(node.validate or "text", (speech or digits or "").rstrip("#"),
                                   self.region)
            if value is not None:
                name = node.field or "message"
                facts = replace(facts, fields={**facts.fields, name: value})
                turn = self._walk(flow, node.goto or "", state.language, facts, path=[node.id])
                return replace(turn, collected={name: value})
            return self._retry(flow, node, state, facts, timed_out=False)
        elif node.kind == "answer" and (digits or speech):
            question = (speech or digits or "")[:1000]
            match = knowledge.match(question, state.language) if knowledge is not None else None
            says: list[Say] = []
            confident = bool(match and match.confident and match.article)
            if confident and match is not None and match.article is not None:
                says.append(Say(match.article.answer, state.language))
            target = node.goto if confident else node.on_unsure
            answer = KnowledgeAnswer(
                question=question,
                article_id=match.article.id if confident and match and match.article else None,
                score=match.score if match else 0.0,
                confident=confident,
            )
            if target is None:
                turn = self._walk(flow, node.id, state.language, facts, says=says,
                                  path=[node.id])
            else:
                turn = self._walk(flow, target, state.language, facts, says=says, path=[node.id])
            return replace(turn, knowledge=answer)
        option = node.match(digits, speech) if node.options else None
        if option is not None:
            language = option.language or state.language
            return self._walk(flow, option.goto, language, facts, path=[node.id])
        return self._retry(flow, node, state, facts, timed_out=not digits and not speech)

    def _retry(
        self, flow: Flow, node: Node, state: FlowState, facts: CallFacts, *, timed_out: bool
    ) -> Turn:
        """Say the invalid/timeout prompt and ask again, or go on when retries are used up."""
        says: list[Say] = []
        self._say_prompt(says, node.timeout if timed_out else node.invalid, node, state.language,
                         facts)
        if state.attempt < node.retries:
            return self._walk(flow, node.id, state.language, facts, attempt=state.attempt + 1,
                              says=says)
        return self._exhausted(flow, node, state.language, facts, says)

    def resume(self, state: FlowState, facts: CallFacts) -> Turn:
        """Continue at ``state.node``: usually a Turn's ``after``, once its action is done."""
        flow, _node = self._locate(state)
        return self._walk(flow, state.node, state.language, facts, attempt=state.attempt)

    def hold(self, state: FlowState, facts: CallFacts) -> tuple[Say, ...]:
        """The ``hold`` prompt of the agent node at ``state`` (for the queue's wait loop).

        Render it again whenever ``facts.queue_position`` changes; empty when the node has
        no ``hold`` prompt.
        """
        flow, node = self._locate(state)
        if node.action != "agent" and node.kind != "handoff":
            raise FlowError(self.flows.source, _where(flow.name, node.id),
                            "is not an agent action: it has no hold prompt")
        says: list[Say] = []
        self._say_prompt(says, node.hold, node, state.language, facts)
        return tuple(says)

    # --- walking ----------------------------------------------------------------------

    def _locate(self, state: FlowState) -> tuple[Flow, Node]:
        if not isinstance(state, FlowState):
            raise TypeError(f"expected a FlowState, not {type(state).__name__}")
        flow = self.flows.flows.get(state.flow)
        if flow is None:
            known = ", ".join(self.flows.flows)
            raise FlowError(self.flows.source, "state",
                            f"no flow {state.flow!r} (known: {known}); the file changed?")
        if state.node not in flow.nodes:
            raise FlowError(self.flows.source, "state",
                            f"flow {flow.name!r} has no node {state.node!r}; the file changed?")
        if state.language not in self.flows.languages:
            raise FlowError(self.flows.source, "state",
                            f"language {state.language!r} is not one of "
                            f"{', '.join(self.flows.languages)}")
        if isinstance(state.attempt, bool) or not isinstance(state.attempt, int) or (
            state.attempt < 0
        ):
            raise FlowError(self.flows.source, "state",
                            f"attempt {state.attempt!r} is not 0 or more")
        return flow, flow.nodes[state.node]

    def _walk(
        self,
        flow: Flow,
        node_id: str,
        language: str,
        facts: CallFacts,
        *,
        attempt: int = 0,
        says: list[Say] | None = None,
        path: list[str] | None = None,
    ) -> Turn:
        says = list(says or ())
        path = list(path or ())
        known = self.flows.match_language(facts.language)
        next_id: str | None = node_id
        for _ in range(MAX_STEPS):
            if next_id is None:  # refused at load: a branch has both then and else
                raise AssertionError(f"flow {flow.name!r}: a node leads nowhere after {path}")
            node = flow.nodes[next_id]
            path.append(node.id)
            state = FlowState(flow.name, node.id, language, attempt)
            if node.kind == "handoff" and attempt > 0:
                # Nobody took the handoff in time: apologise and go on without an agent.
                self._say_prompt(says, node.apology, node, language, facts)
                if node.on_timeout is None:
                    self._say_prompt(says, self.flows.goodbye, node, language, facts)
                    return Turn(tuple(says), None, Action("end"), state, None, tuple(path))
                attempt = 0
                next_id = node.on_timeout
                continue
            attempt = 0
            if node.kind == "end":
                self._say_prompt(says, node.prompt, node, language, facts)
                return Turn(tuple(says), None, Action("end"), state, None, tuple(path))
            if node.kind in ("message", "say"):
                self._say_prompt(says, node.prompt, node, language, facts)
                if node.goto is None:
                    return Turn(tuple(says), None, Action("hangup"), state, None, tuple(path))
                next_id = node.goto
            elif node.kind == "branch":
                next_id = node.then if _holds(node.condition, facts) else node.otherwise
            elif node.kind == "language" and node.skip_if_known and known and (
                skip := next((o for o in node.options if o.language == known), None)
            ):
                language, next_id = known, skip.goto
            elif node.waits_for_input:
                self._say_prompt(says, node.prompt, node, language, facts)
                gather = Gather(
                    digits=node.max_digits if node.kind == "ask" else node.digit_length,
                    timeout_seconds=node.timeout_seconds,
                    speech=node.speech,
                    language=language,
                    hints=node.hints(),
                    choices=node.choices(language) if node.kind != "language" else tuple(
                        Choice(o.digit, o.label_in(o.language or language),
                               o.digit or o.label_in(language))
                        for o in node.options
                    ),
                    field=(node.field or "message") if node.kind == "ask" else None,
                    question=node.kind == "answer",
                )
                return Turn(tuple(says), gather, None, state, None, tuple(path))
            else:
                return self._action(flow, node, state, facts, says, path)
        raise FlowError(
            self.flows.source, _where(flow.name, path[0]),
            f"passed {MAX_STEPS} nodes without waiting for input: {' → '.join(path[:12])} …",
        )

    def _exhausted(
        self, flow: Flow, node: Node, language: str, facts: CallFacts, says: list[Say]
    ) -> Turn:
        target = node.on_exhausted
        if target is None and node.kind == "language":
            option = next(
                (o for o in node.options if o.language == self.default_language),
                node.options[0],
            )
            language, target = option.language or language, option.goto
        if target is None:
            target = flow.on_exhausted
        if target is None:
            self._say_prompt(says, self.flows.goodbye, node, language, facts)
            state = FlowState(flow.name, node.id, language, node.retries)
            return Turn(tuple(says), None, Action("hangup"), state, None, (node.id,))
        return self._walk(flow, target, language, facts, says=says, path=[node.id])

    def _action(
        self,
        flow: Flow,
        node: Node,
        state: FlowState,
        facts: CallFacts,
        says: list[Say],
        path: list[str],
    ) -> Turn:
        kind = node.action or ("handoff" if node.kind == "handoff" else "hangup")
        language = state.language
        params: dict[str, Any] = dict(node.params)
        after_node = node.on_no_agent if kind == "agent" else node.goto
        if kind == "handoff":
            self._say_prompt(says, node.prompt, node, language, facts)
            params["team"] = node.queue.get(language, "")
            params["queue"] = params["team"]
            after = FlowState(flow.name, node.id, language, 1)
            return Turn(tuple(says), None, Action(kind, params), state, after, tuple(path))
        if kind == "ticket_status":
            has_ticket = bool(facts.ticket_number.strip() or facts.ticket_status.strip())
            spoken: list[Say] = []
            self._say_prompt(spoken, node.prompt if has_ticket else node.no_ticket, node,
                             language, facts)
            params.update(
                text=spoken[0].text if spoken else "",
                language=language,
                audio_url=spoken[0].audio_url if spoken else None,
                ticket_number=facts.ticket_number,
                ticket_status=facts.ticket_status,
                has_ticket=has_ticket,
            )
        else:
            self._say_prompt(says, node.prompt, node, language, facts)
        if kind in ("agent", "callback"):
            params["queue"] = node.queue.get(language, "")
        after = FlowState(flow.name, after_node, language) if after_node else None
        return Turn(tuple(says), None, Action(kind, params), state, after, tuple(path))

    # --- prompts ----------------------------------------------------------------------

    def _say_prompt(
        self,
        says: list[Say],
        prompt: Prompt | None,
        node: Node,
        language: str,
        facts: CallFacts,
    ) -> None:
        """Append ``prompt`` in ``language`` (a language node's in every language)."""
        if prompt is None:
            return
        languages = self.flows.languages if node.kind == "language" else (language,)
        for lang in languages:
            text = prompt.texts.get(lang, "")
            if text:
                text = _tidy(text.format_map(self._values(lang, facts)))
            audio = prompt.audio.get(lang)
            if text or audio:
                says.append(Say(text=text, language=lang, audio_url=audio))

    def _values(self, language: str, facts: CallFacts) -> dict[str, str]:
        name = (facts.caller_names.get(language) or facts.caller_name or "").strip()
        greeting = ""
        if name and self.flows.greeting.get(language):
            greeting = self.flows.greeting[language].format_map(
                _Blank(caller_name=name)
            ).strip()
        status = (facts.ticket_status or "").strip()
        spoken_status = self.flows.status_names.get(status.casefold(), {}).get(language, status)
        position = facts.queue_position
        return _Blank(
            **{k: str(v) for k, v in facts.fields.items() if k in FIELDS},
            caller_name=name,
            greeting=greeting,
            ticket_number=(facts.ticket_number or "").strip(),
            ticket_status=spoken_status,
            queue_position="" if position is None else str(position),
        )


class _Blank(dict[str, str]):
    """Placeholder values where a missing one renders empty."""

    def __missing__(self, key: str) -> str:
        return ""


_ORDER_NUMBER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{3,39}$")


def validate_field(kind: str, raw: str, region: str = "CN") -> str | None:
    """The cleaned value of an ``ask`` answer, or None when it is not valid.

    ``order_number``: 4-40 letters, digits and dashes, upper-cased (spaces dropped);
    ``email``: a deliverable-looking address (normalized); ``phone``: a number valid in
    ``region`` (E.164); ``rating``: a whole number 1-5 (also "五", "five"); ``digits``:
    digits only; ``text``: any non-empty text (at most 2000 characters).
    """
    text = unicodedata.normalize("NFKC", raw or "").strip()
    if not text:
        return None
    if kind == "order_number":
        compact = re.sub(r"[\s#]", "", text).upper()
        compact = re.sub(r"^(?:ORDER|订单号?|NO\.?)[:：]?", "", compact)
        return compact if _ORDER_NUMBER.match(compact) else None
    if kind == "email":
        try:
            return normalize_email(text)
        except ValidationError:
            return None
    if kind == "phone":
        return try_normalize_phone(text, region)
    if kind == "rating":
        spoken = _spoken_digits(text)
        return spoken if spoken in {"1", "2", "3", "4", "5"} else None
    if kind == "digits":
        digits = re.sub(r"[\s#*-]", "", text)
        return digits if digits.isdigit() else None
    return text[:2000]


def _holds(condition: str | None, facts: CallFacts) -> bool:
    if condition == "business_hours":
        return bool(facts.in_business_hours)
    if condition == "known_caller":
        return bool(facts.known_caller)
    if condition == "has_open_ticket":
        return bool(facts.has_open_ticket)
    if condition == "agents_available":
        return bool(facts.agents_available)
    raise AssertionError(f"unknown condition {condition!r}")  # refused at load


def _tidy(text: str) -> str:
    """Spaces left by empty placeholders removed: runs collapsed, none before punctuation."""
    text = " ".join(text.split())
    return _SPACE_BEFORE_PUNCTUATION.sub(r"\1", text)


def _spoken_digits(speech: str) -> str | None:
    """The digits of an utterance that is only a number ("2", "two", "二", "按2", "press 2").

    Anything else in it (other words) gives None, so "I have 2 tickets" is not a "2".
    """
    text = normalize_text(speech)
    unknown = False

    def word(match: re.Match[str]) -> str:
        nonlocal unknown
        token = match.group(0)
        if token in _SPOKEN_WORDS:
            return _SPOKEN_WORDS[token]
        if token in _SPOKEN_FILLERS:
            return " "
        unknown = True
        return " "

    text = re.sub(r"[a-z]+", word, text)
    if unknown:
        return None
    for filler in _CHINESE_FILLERS:
        text = text.replace(filler, " ")
    text = text.translate(_CHINESE_DIGITS)
    digits = "".join(
        c for c in text if not (c.isspace() or unicodedata.category(c)[0] in "PZ")
        or c in "*#"
    )
    if digits and all(c in "0123456789*#" for c in digits):
        return digits
    return None


def _where(flow: str, node: str | None = None, key: str | None = None) -> str:
    where = f"flows.{flow}"
    if node is not None:
        where += f".nodes.{node}"
    if key:
        where += f".{key}"
    return where


# --- loading ------------------------------------------------------------------------------


def load_flows(path: Path) -> FlowSet:
    """Read and validate a flows file; raise :class:`FlowError` on any mistake."""
    return parse_flows(read_toml(path, FlowError), source=str(path))


def parse_flows(data: Mapping[str, Any], *, source: str = "<flows>") -> FlowSet:
    """Build a :class:`FlowSet` from already-parsed TOML data (``source`` names it in errors)."""
    return _Parser(source).parse(data)


class _Parser(TableChecker):
    """Turns the TOML tables into a FlowSet, raising FlowError with a precise location."""

    error_type = FlowError
    key_separator = "."

    def __init__(self, source: str) -> None:
        super().__init__(source)
        self.languages: tuple[str, ...] = DEFAULT_LANGUAGES
        self.defaults: dict[str, Any] = {}

    # --- generic checks ---------------------------------------------------------------

    def whole(self, value: Any, where: str, *, minimum: int, unit: str = "") -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(where, f"must be a whole number{unit}, not {describe(value)}")
        if value < minimum:
            wanted = "positive" if minimum == 1 else f"{minimum} or more"
            raise self.error(where, f"must be {wanted}{unit}, not {value!r}")
        return value

    def seconds(self, value: Any, where: str) -> int:
        return self.whole(value, where, minimum=1, unit=" of seconds")

    def name(self, value: Any, where: str) -> str:
        text = self.text(value, where)
        if not _NAME.match(text):
            raise self.error(where, f"{text!r} is not an id (letters, digits, _ and -)")
        return text

    def choice(self, value: Any, allowed: Sequence[str], where: str, what: str) -> str:
        if not isinstance(value, str) or value.strip() not in allowed:
            raise self.error(where, f"unknown {what} {describe(value)}; known: "
                             f"{', '.join(allowed)}")
        return value.strip()

    def placeholders(self, text: str, where: str, allowed: frozenset[str]) -> None:
        try:
            parts = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise self.error(where, f"{exc} (write {{{{ and }}}} for literal braces)") from None
        known = ", ".join(f"{{{p}}}" for p in sorted(allowed))
        for _literal, field_name, spec, conversion in parts:
            if field_name is None:
                continue
            if field_name not in allowed:
                raise self.error(where, f"unknown placeholder {{{field_name}}}; known: {known}")
            if spec or conversion:
                raise self.error(where, f"placeholder {{{field_name}}} takes no format or !r")

    def texts(
        self, value: Any, where: str, allowed: frozenset[str] = PLACEHOLDERS
    ) -> dict[str, str]:
        """A table of one text per flow language, each checked for placeholders."""
        example = ", ".join(f'"{lang}" = "…"' for lang in self.languages)
        if not isinstance(value, Mapping):
            raise self.error(where, f"must be a table of texts per language, like "
                             f"{{ {example} }}, not {describe(value)}")
        result: dict[str, str] = {}
        for language, text in value.items():
            if language not in self.languages:
                raise self.error(f"{where}.{language}", f"{language!r} is not one of the "
                                 f"languages ({', '.join(self.languages)})")
            result[language] = self.text(text, f"{where}.{language}")
            self.placeholders(result[language], f"{where}.{language}", allowed)
        missing = [lang for lang in self.languages if lang not in result]
        if missing:
            raise self.error(where, f"missing language {', '.join(missing)}: write {{ {example} }}")
        return result

    def url(self, value: Any, where: str) -> str:
        text = self.text(value, where)
        parts = urllib.parse.urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.netloc or any(
            c.isspace() for c in text
        ):
            raise self.error(where, f"{text!r} is not an http(s) URL of an audio file")
        return text

    def prompt(self, node: Mapping[str, Any], where: str, *, required: bool) -> Prompt | None:
        """A node's own prompt from ``say`` and/or ``play``."""
        say, play = node.get("say"), node.get("play")
        if say is None and play is None:
            if required:
                raise self.error(f"{where}.say", "missing: write say = { "
                                 + ", ".join(f'"{lang}" = "…"' for lang in self.languages)
                                 + " } (or play = \"https://…\")")
            return None
        texts = self.texts(say, f"{where}.say") if say is not None else {}
        audio: dict[str, str] = {}
        if isinstance(play, str):
            url = self.url(play, f"{where}.play")
            audio = dict.fromkeys(self.languages, url)
        elif isinstance(play, Mapping):
            for language, item in play.items():
                if language not in self.languages:
                    raise self.error(f"{where}.play.{language}", f"{language!r} is not one of "
                                     f"the languages ({', '.join(self.languages)})")
                audio[language] = self.url(item, f"{where}.play.{language}")
            missing = [lang for lang in self.languages if lang not in audio]
            if missing:
                raise self.error(f"{where}.play", f"missing language {', '.join(missing)}")
        elif play is not None:
            raise self.error(f"{where}.play", f"must be a URL or a table of URLs per language, "
                             f"not {describe(play)}")
        return Prompt(texts=texts, audio=audio)

    def optional_texts(self, value: Any, where: str) -> Prompt | None:
        return None if value is None else Prompt(self.texts(value, where))

    # --- sections ---------------------------------------------------------------------

    def parse(self, data: Mapping[str, Any]) -> FlowSet:
        self.known_keys(data, _TOP_KEYS, "")
        self.languages = self.language_list(data.get("languages", list(DEFAULT_LANGUAGES)))
        defaults = self.table(data.get("defaults", {}), "defaults")
        self.known_keys(defaults, _DEFAULT_KEYS, "defaults")
        self.defaults = {
            "timeout_seconds": self.seconds(
                defaults.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS), "defaults.timeout_seconds"
            ),
            "retries": self.whole(defaults.get("retries", DEFAULT_RETRIES), "defaults.retries",
                                  minimum=0),
            "invalid": self.optional_texts(defaults.get("invalid"), "defaults.invalid"),
            "timeout": self.optional_texts(defaults.get("timeout"), "defaults.timeout"),
        }
        goodbye = self.optional_texts(defaults.get("goodbye"), "defaults.goodbye")
        greeting = self.greeting(data.get("greeting"))
        status_names = self.status_names(data.get("ticket_status_names", {}))
        flows_table = self.table(data.get("flows"), "flows") if "flows" in data else None
        if not flows_table:
            raise self.error("flows", "no flows: add [flows.main] with start and nodes")
        flows = {name: self.flow(name, value) for name, value in flows_table.items()}
        return FlowSet(
            source=self.source,
            flows=flows,
            languages=self.languages,
            greeting=greeting,
            status_names=status_names,
            goodbye=goodbye,
        )

    def language_list(self, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            raise self.error("languages", f"must be a non-empty list like [\"zh-CN\", \"en\"], "
                             f"not {describe(value)}")
        result: list[str] = []
        for i, item in enumerate(value):
            language = self.text(item, f"languages[{i}]")
            if not _LANGUAGE_TAG.match(language):
                raise self.error(f"languages[{i}]", f"{language!r} is not a language tag "
                                 "like zh-CN or en")
            if language in result:
                raise self.error(f"languages[{i}]", f"{language!r} is listed twice")
            result.append(language)
        return tuple(result)

    def greeting(self, value: Any) -> dict[str, str]:
        if value is None:
            return {lang: _DEFAULT_GREETING.get(lang, _DEFAULT_GREETING["en"])
                    for lang in self.languages}
        return self.texts(value, "greeting", frozenset({"caller_name"}))

    def status_names(self, value: Any) -> dict[str, dict[str, str]]:
        table = self.table(value, "ticket_status_names")
        statuses = tuple(s.value for s in TicketStatus)
        result: dict[str, dict[str, str]] = {}
        for status, texts in table.items():
            where = f"ticket_status_names.{status}"
            if status not in statuses:
                raise self.error(where, f"unknown ticket status {status!r}; known: "
                                 f"{', '.join(statuses)}")
            result[status] = self.texts(texts, where, frozenset())
        return result

    # --- flows ------------------------------------------------------------------------

    def flow(self, name: str, value: Any) -> Flow:
        where = _where(name)
        if not _NAME.match(name):
            raise self.error(where, f"{name!r} is not a flow name (letters, digits, _ and -)")
        table = self.table(value, where)
        self.known_keys(table, _FLOW_KEYS, where)
        nodes_table = self.table(table.get("nodes", {}), f"{where}.nodes")
        if not nodes_table:
            raise self.error(f"{where}.nodes", "no nodes: add [flows."
                             f"{name}.nodes.<id>] tables")
        nodes = {node_id: self.node(name, node_id, item) for node_id, item in nodes_table.items()}
        if "start" not in table:
            raise self.error(f"{where}.start", "missing: the id of the first node")
        start = self.name(table["start"], f"{where}.start")
        if start not in nodes:
            raise self.error(f"{where}.start", f"no node {start!r} in this flow; nodes: "
                             f"{', '.join(nodes)}")
        on_exhausted = None
        if "on_exhausted" in table:
            on_exhausted = self.name(table["on_exhausted"], f"{where}.on_exhausted")
            if on_exhausted not in nodes:
                raise self.error(f"{where}.on_exhausted", f"no node {on_exhausted!r} in this "
                                 f"flow; nodes: {', '.join(nodes)}")
        description = table.get("description", "")
        if not isinstance(description, str):
            raise self.error(f"{where}.description", "must be a string")
        flow = Flow(name=name, start=start, nodes=nodes, on_exhausted=on_exhausted,
                    description=description)
        self.check_targets(flow)
        self.check_loops(flow)
        self.check_reachable(flow)
        return flow

    def node(self, flow: str, node_id: str, value: Any) -> Node:
        where = _where(flow, node_id)
        if not _NAME.match(node_id):
            raise self.error(where, f"{node_id!r} is not a node id (letters, digits, _ and -)")
        table = self.table(value, where)
        if "kind" not in table:
            raise self.error(f"{where}.kind", f"missing: one of {', '.join(NODE_KINDS)}")
        kind = self.choice(table["kind"], NODE_KINDS, f"{where}.kind", "node kind")
        if kind == "action":
            if "action" not in table:
                raise self.error(f"{where}.action", f"missing: one of {', '.join(ACTIONS)}")
            action = self.choice(table["action"], ACTIONS, f"{where}.action", "action")
            self.known_keys(table, (*_NODE_KEYS["action"], *_ACTION_KEYS[action]), where)
            return self.action_node(node_id, action, table, where)
        self.known_keys(table, _NODE_KEYS[kind], where)
        if kind in ("ask", "answer", "handoff", "end"):
            return self.bot_node(node_id, kind, table, where)
        if kind in ("message", "say"):
            return Node(
                id=node_id, kind=kind, prompt=self.prompt(table, where, required=True),
                goto=self.optional_name(table, "goto", where),
            )
        if kind == "branch":
            if "condition" not in table:
                raise self.error(f"{where}.condition", f"missing: one of {', '.join(CONDITIONS)}")
            condition = self.choice(table["condition"], CONDITIONS, f"{where}.condition",
                                    "condition")
            for key in ("then", "else"):
                if key not in table:
                    raise self.error(f"{where}.{key}", "missing: the node to go to")
            return Node(
                id=node_id, kind=kind, condition=condition,
                then=self.name(table["then"], f"{where}.then"),
                otherwise=self.name(table["else"], f"{where}.else"),
            )
        return self.input_node(node_id, kind, table, where)

    def bot_node(self, node_id: str, kind: str, table: Mapping[str, Any], where: str) -> Node:
        """``ask``, ``answer``, ``handoff`` and ``end`` nodes."""
        if kind == "end":
            return Node(id=node_id, kind=kind, prompt=self.prompt(table, where, required=False))
        if kind == "handoff":
            if "team" not in table:
                raise self.error(f"{where}.team", "missing: the team whose queue takes over")
            return Node(
                id=node_id, kind=kind, prompt=self.prompt(table, where, required=False),
                queue=self.queue(table["team"], f"{where}.team"),
                params={"timeout_seconds": self.seconds(
                    table.get("timeout_seconds", DEFAULT_HANDOFF_SECONDS),
                    f"{where}.timeout_seconds")},
                apology=self.optional_texts(table.get("apology"), f"{where}.apology"),
                hold=self.optional_texts(table.get("hold"), f"{where}.hold"),
                on_timeout=self.optional_name(table, "on_timeout", where),
            )
        common: dict[str, Any] = {
            "timeout_seconds": self.seconds(
                table.get("timeout_seconds", self.defaults["timeout_seconds"] * 3),
                f"{where}.timeout_seconds"),
            "retries": self.whole(table.get("retries", self.defaults["retries"]),
                                  f"{where}.retries", minimum=0),
            "timeout": self.optional_texts(table.get("timeout"), f"{where}.timeout")
            or self.defaults["timeout"],
            "on_exhausted": self.optional_name(table, "on_exhausted", where),
        }
        if kind == "answer":
            return Node(id=node_id, kind=kind, prompt=self.prompt(table, where, required=True),
                        goto=self.optional_name(table, "goto", where),
                        on_unsure=self.optional_name(table, "on_unsure", where),
                        invalid=self.defaults["invalid"], **common)
        name = self.choice(table.get("field", "message"), FIELDS, f"{where}.field", "field")
        default_check = name if name in VALIDATORS else "text"
        check = self.choice(table.get("validate", default_check), VALIDATORS,
                            f"{where}.validate", "check")
        if "goto" not in table:
            raise self.error(f"{where}.goto", "missing: where to go once the answer is valid")
        return Node(
            id=node_id, kind=kind, prompt=self.prompt(table, where, required=True),
            goto=self.name(table["goto"], f"{where}.goto"), field=name, validate=check,
            max_digits=self.whole(table.get("max_digits", 20), f"{where}.max_digits",
                                  minimum=1),
            invalid=self.optional_texts(table.get("invalid"), f"{where}.invalid")
            or self.defaults["invalid"],
            **common,
        )

    def optional_name(self, table: Mapping[str, Any], key: str, where: str) -> str | None:
        return self.name(table[key], f"{where}.{key}") if key in table else None

    def input_node(self, node_id: str, kind: str, table: Mapping[str, Any], where: str) -> Node:
        goto = self.optional_name(table, "goto", where)
        options = self.options(table.get("options"), f"{where}.options", kind, goto)
        return Node(
            id=node_id,
            kind=kind,
            prompt=self.prompt(table, where, required=True),
            goto=goto,
            options=options,
            timeout_seconds=self.seconds(
                table.get("timeout_seconds", self.defaults["timeout_seconds"]),
                f"{where}.timeout_seconds",
            ),
            retries=self.whole(table.get("retries", self.defaults["retries"]),
                               f"{where}.retries", minimum=0),
            speech=self.boolean(table.get("speech", True), f"{where}.speech"),
            invalid=self.optional_texts(table.get("invalid"), f"{where}.invalid")
            or self.defaults["invalid"],
            timeout=self.optional_texts(table.get("timeout"), f"{where}.timeout")
            or self.defaults["timeout"],
            on_exhausted=self.optional_name(table, "on_exhausted", where),
            skip_if_known=self.boolean(table.get("skip_if_known", False),
                                       f"{where}.skip_if_known"),
        )

    def options(self, value: Any, where: str, kind: str, goto: str | None) -> tuple[Option, ...]:
        if value is None:
            raise self.error(where, "missing: a list like [{ digit = \"1\", goto = \"…\" }]")
        if not isinstance(value, list) or not value:
            raise self.error(where, f"must be a non-empty list of tables, not {describe(value)}")
        result: list[Option] = []
        digits: dict[str, int] = {}
        keywords: dict[str, int] = {}
        languages: dict[str, int] = {}
        for i, item in enumerate(value):
            at = f"{where}[{i}]"
            option = self.table(item, at)
            self.known_keys(option, _LANGUAGE_OPTION_KEYS if kind == "language" else _OPTION_KEYS,
                            at)
            digit = self.digit(option["digit"], f"{at}.digit") if "digit" in option else None
            if digit is not None:
                if digit in digits:
                    raise self.error(f"{at}.digit", f"{digit!r} is already used by "
                                     f"{where}[{digits[digit]}]")
                if digits and len(digit) != len(next(iter(digits))):
                    raise self.error(f"{at}.digit", f"{digit!r} has {len(digit)} digits, the "
                                     f"options before have {len(next(iter(digits)))}: "
                                     "give every option of a menu as many digits")
                digits[digit] = i
            words = self.strings(option.get("keywords", []), f"{at}.keywords")
            for word in words:
                folded = normalize_text(word)
                if folded in keywords and keywords[folded] != i:
                    raise self.error(f"{at}.keywords", f"{word!r} is already a keyword of "
                                     f"{where}[{keywords[folded]}]")
                keywords[folded] = i
            if digit is None and not words:
                raise self.error(at, "needs a digit or keywords (or both)")
            language = None
            if kind == "language":
                if "language" not in option:
                    raise self.error(f"{at}.language", "missing: the language this option "
                                     f"sets ({', '.join(self.languages)})")
                language = self.text(option["language"], f"{at}.language")
                if language not in self.languages:
                    raise self.error(f"{at}.language", f"{language!r} is not one of the "
                                     f"languages ({', '.join(self.languages)})")
                if language in languages:
                    raise self.error(f"{at}.language", f"{language!r} is already set by "
                                     f"{where}[{languages[language]}]")
                languages[language] = i
            if "goto" in option:
                target = self.name(option["goto"], f"{at}.goto")
            elif kind == "language" and goto:
                target = goto
            else:
                hint = " (or give the node a goto)" if kind == "language" else ""
                raise self.error(f"{at}.goto", f"missing: the node this option leads to{hint}")
            label = option.get("label", target)
            labels: dict[str, str] = {}
            if isinstance(label, Mapping):
                labels = self.texts(label, f"{at}.label", frozenset())
                label = next(iter(labels.values()))
            elif not isinstance(label, str):
                raise self.error(f"{at}.label", f"must be a string or a table of texts per "
                                 f"language, not {describe(label)}")
            result.append(Option(digit=digit, keywords=Keywords(words), goto=target,
                                 label=label, language=language, labels=labels))
        return tuple(result)

    def digit(self, value: Any, where: str) -> str:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 9:
            return str(value)
        if not isinstance(value, str) or not _DIGITS.match(value.strip()):
            raise self.error(where, f"{describe(value)} is not a key like \"1\" "
                             "(digits 0-9, * and #, at most 4)")
        return value.strip()

    def action_node(
        self, node_id: str, action: str, table: Mapping[str, Any], where: str
    ) -> Node:
        params: dict[str, Any] = {}
        queue: dict[str, str] = {}
        if action == "voicemail":
            params["max_seconds"] = self.seconds(
                table.get("max_seconds", DEFAULT_VOICEMAIL_SECONDS), f"{where}.max_seconds"
            )
            params["transcribe"] = self.boolean(table.get("transcribe", False),
                                                f"{where}.transcribe")
        if action == "agent":
            if "queue" not in table:
                raise self.error(f"{where}.queue", "missing: the queue to wait in")
            params["max_wait_seconds"] = self.seconds(
                table.get("max_wait_seconds", DEFAULT_AGENT_WAIT_SECONDS),
                f"{where}.max_wait_seconds",
            )
        if "queue" in table:
            queue = self.queue(table["queue"], f"{where}.queue")
        if action == "create_ticket":
            params["tags"] = self.strings(table.get("tags", []), f"{where}.tags")
        if action == "survey":
            params["field"] = self.choice(table.get("field", "rating"), FIELDS,
                                          f"{where}.field", "field")
            params["scale"] = self.choice(table.get("scale", "csat"), ("csat", "nps"),
                                          f"{where}.scale", "scale")
        prompt = self.prompt(table, where, required=action == "ticket_status")
        no_ticket = None
        if action == "ticket_status":
            if "no_ticket" not in table:
                raise self.error(f"{where}.no_ticket", "missing: what to say when the caller "
                                 "has no ticket")
            no_ticket = Prompt(self.texts(table["no_ticket"], f"{where}.no_ticket"))
        return Node(
            id=node_id,
            kind="action",
            action=action,
            prompt=prompt,
            goto=self.optional_name(table, "goto", where),
            params=params,
            queue=queue,
            no_ticket=no_ticket,
            hold=self.optional_texts(table.get("hold"), f"{where}.hold"),
            on_no_agent=self.optional_name(table, "on_no_agent", where),
        )

    def queue(self, value: Any, where: str) -> dict[str, str]:
        if isinstance(value, str):
            return dict.fromkeys(self.languages, self.text(value, where))
        return self.texts(value, where, frozenset())

    # --- whole-flow checks ------------------------------------------------------------

    def check_targets(self, flow: Flow) -> None:
        for node in flow.nodes.values():
            for key, target in node.targets():
                if target not in flow.nodes:
                    raise self.error(
                        _where(flow.name, node.id, key),
                        f"no node {target!r} in flow {flow.name!r}; nodes: "
                        f"{', '.join(flow.nodes)}",
                    )

    def check_reachable(self, flow: Flow) -> None:
        reachable = set(flow.reachable())
        for node_id in flow.nodes:
            if node_id not in reachable:
                raise self.error(
                    _where(flow.name, node_id),
                    f"unreachable: no goto leads here from start {flow.start!r}; "
                    "remove the node or point a goto at it",
                )

    def check_loops(self, flow: Flow) -> None:
        """Refuse a cycle of nodes that never waits for input (an endless call)."""
        done: set[str] = set()
        for root in flow.nodes:
            if root in done:
                continue
            stack: list[tuple[str, Iterator[tuple[str, str]]]] = [
                (root, flow.nodes[root].passes_through())
            ]
            on_path = [root]
            while stack:
                node_id, edges = stack[-1]
                step = next(edges, None)
                if step is None:
                    stack.pop()
                    on_path.pop()
                    done.add(node_id)
                    continue
                key, target = step
                if target in on_path:
                    cycle = [*on_path[on_path.index(target):], target]
                    raise self.error(
                        _where(flow.name, node_id, key),
                        f"loops without waiting for input: {' → '.join(cycle)}; "
                        "put a menu in the loop or end it",
                    )
                if target not in done:
                    stack.append((target, flow.nodes[target].passes_through()))
                    on_path.append(target)
