"""Pure parts of the agent screens: search terms and SQL, filters, variables, live rules."""

from __future__ import annotations

from urllib.parse import unquote

from sqlalchemy.dialects import postgresql, sqlite

from contact_center.web.conversations import (
    content_disposition,
    fill_variables,
    parse_tags,
    safe_url,
)
from contact_center.web.inbox import InboxFilters
from contact_center.web.live import EventScope, LiveClient, allowed
from contact_center.web.search import (
    fts_phrase,
    interaction_text_condition,
    like_pattern,
    search_terms,
    snippet,
)
from crm_core.models import (
    Agent,
    AgentRole,
    Channel,
    Conversation,
    Customer,
    TicketPriority,
)
from routing.events import Event


def compiled(condition: object, dialect: object) -> str:
    return str(condition.compile(dialect=dialect,  # type: ignore[attr-defined]
                                 compile_kwargs={"literal_binds": True}))


def test_terms_and_escaping() -> None:
    assert search_terms("  发票   refund\t老位置 ") == ["发票", "refund", "老位置"]
    assert search_terms("") == [] and search_terms(None) == []
    assert len(search_terms(" ".join(["x"] * 50))) == 8
    assert like_pattern("100%_\\") == "%100\\%\\_\\\\%"
    assert fts_phrase('say "hi" OR x') == '"say ""hi"" OR x"'


def test_three_characters_use_the_trigram_index_shorter_terms_like() -> None:
    """SQLite: MATCH on the FTS5 trigram table for 3+ characters, LIKE below; PostgreSQL:
    ILIKE (answered by the pg_trgm GIN indexes)."""
    lite = compiled(interaction_text_condition("发票抬头 发票", sqlite=True), sqlite.dialect())
    assert "interactions_fts MATCH" in lite and "'\"发票抬头\"'" in lite
    assert "LIKE '%发票%'" in lite
    pg = compiled(interaction_text_condition("发票抬头 ab", sqlite=False),
                  postgresql.dialect())
    assert "ILIKE '%%发票抬头%%'" in pg or "ILIKE '%发票抬头%'" in pg
    assert "MATCH" not in pg


def test_snippet_centres_on_the_term() -> None:
    body = "前言" * 60 + "关键的发票信息" + "后记" * 60
    excerpt = snippet(body, ["发票"], width=40)
    assert "发票" in excerpt and excerpt.startswith("…") and excerpt.endswith("…")


def test_inbox_filters_from_the_query_string() -> None:
    filters = InboxFilters.from_query({"view": "teams", "priority": "high", "status": "nope",
                                       "channel": "fax", "breach": "1", "q": " 发票 ",
                                       "page": "x"})
    assert filters.view == "teams" and filters.priority == TicketPriority.HIGH
    assert filters.status == "active" and filters.channel is None and filters.breach
    assert filters.q == "发票" and filters.page == 1
    assert filters.query_string() == "view=teams&priority=high&breach=1&q=%E5%8F%91%E7%A5%A8"
    assert "page=2" in filters.query_string(page=2)
    assert InboxFilters.from_query({"view": "everything"}).view == "mine"


def test_variables_are_substituted_never_evaluated() -> None:
    values = {"customer.name": "张伟", "agent.name": "李娜", "ticket.number": "T-000001",
              "customer.email": None}
    text = "{{customer.name}} {{ agent.name }} {{ticket.number}} {{customer.email}}" \
           " {{ 7*7 }} {{customer.__class__}} {customer.name}"
    assert fill_variables(text, values) == ("张伟 李娜 T-000001  {{ 7*7 }} "
                                            "{{customer.__class__}} {customer.name}")


def test_small_helpers() -> None:
    assert parse_tags("发票, vip，发票、 ;b") == ["发票", "vip", "b"]
    assert safe_url("javascript:alert(1)") is None
    assert safe_url("https://x.example/r.mp3") == "https://x.example/r.mp3"
    header = content_disposition("attachment", '发票"2026.pdf')
    assert header.startswith('attachment; filename="')
    assert unquote(header.split("UTF-8''")[1]) == '发票"2026.pdf'
    assert '"' not in header.split('filename="')[1].split('";')[0]


def _client(agent_id: int, role: AgentRole, teams: set[int]) -> LiveClient:
    agent = Agent(id=agent_id, login=f"a{agent_id}", display_name="x", password_hash="!",
                  role=role)
    return LiveClient(agent=agent, team_ids=teams, socket=None, session_token="")  # type: ignore[arg-type]


def test_live_rules() -> None:
    """Who gets which event, by the policy."""
    li = _client(1, AgentRole.AGENT, {10})
    wang = _client(2, AgentRole.AGENT, {20})
    boss = _client(3, AgentRole.SUPERVISOR, {10})
    conversation = Conversation(id=5, customer_id=7, channel=Channel.EMAIL, assignee_id=1,
                                team_id=10)
    scope = EventScope(conversation=conversation, names_something=True)
    logged = Event("interaction.logged", {"conversation_id": 5})
    assert allowed(li, logged, scope) and allowed(boss, logged, scope)
    assert not allowed(wang, logged, scope)
    pop = Event("call.screen_pop", {"agent_id": 2, "customer_id": 7})
    assert allowed(wang, pop, scope) and not allowed(li, pop, scope)
    mention = Event("note.mentioned", {"conversation_id": 5, "agent_ids": [3]})
    assert allowed(boss, mention, scope) and not allowed(li, mention, scope)
    customer = Customer(id=7, display_name="张伟", owner_agent_id=2)
    by_customer = EventScope(customer=customer, customer_conversations=[conversation],
                             names_something=True)
    created = Event("customer.created", {"customer_id": 7})
    assert allowed(li, created, by_customer)  # through the visible conversation
    assert allowed(wang, created, by_customer)  # the owner
    nothing = EventScope()
    assert allowed(boss, Event("notification", {}), nothing)
    assert not allowed(li, Event("notification", {}), nothing)
