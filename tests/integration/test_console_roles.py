"""Who gets what: every console route × every role, from one explicit table.

The app is built with the whole console; the world has an admin, a supervisor of team A,
an agent of team A and an agent of team B, customers and conversations of both teams.
Each route pattern registered under ``/console`` has an entry in ``MATRIX`` with the
status every role must get (anonymous, agent A, agent B, supervisor A, admin). A route
registered without an entry — or an entry whose route is gone — fails
``test_every_console_route_has_an_entry``, so a new page cannot ship untested.

Path parameters name seeded records (``customer_a`` is agent A's own customer,
``conversation_b`` sits in team B's queue …); ``{role}`` picks the record seeded for the
role at hand, so destructive actions (delete, merge) each use their own. POST forms are
chosen to pass the gate without lasting harm (an empty name gives 400; a throwaway record
is deleted). Every POST also needs the CSRF token: ``test_every_post_needs_the_csrf_token``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from crm_core.db import Database
from tests.integration.areas_support import ROLES, World, actor, app_client, seed_world

Expect = tuple[int | None, int | None, int | None, int | None, int | None]
"""Status per role, in ``ROLES`` order: anonymous, agent A, agent B, supervisor A, admin.
``None``: not requested for that role (the reason is in the case's note)."""

LOGIN = 302
"""Anonymous visitors are sent to the login page."""


def everyone(status: int) -> Expect:
    """A public route: the same answer for everybody."""
    return (status, status, status, status, status)


def logged_in(status: int = 200) -> Expect:
    """Any agent; anonymous visitors go to the login."""
    return (LOGIN, status, status, status, status)


def supervisors(status: int = 200) -> Expect:
    """Supervisors and admins; agents get 403."""
    return (LOGIN, 403, 403, status, status)


def admins(status: int = 200) -> Expect:
    """Admins only."""
    return (LOGIN, 403, 403, 403, status)


def team_a(status: int = 200) -> Expect:
    """What agent A, supervisor A and the admin may see, agent B may not (team A's work)."""
    return (LOGIN, status, 403, status, status)


def team_b_queue(status: int = 200) -> Expect:
    """Team B's unassigned conversation: agent B and the admin; supervisor A is not B's."""
    return (LOGIN, 403, status, 403, status)


def customer_of_b(status: int = 200) -> Expect:
    """A customer whose only conversation is in team B's queue: agent B, supervisors, admin."""
    return (LOGIN, 403, status, status, status)


@dataclass(frozen=True)
class Case:
    """One request per role and the statuses it must get."""

    expect: Expect
    params: Mapping[str, str] = field(default_factory=dict)
    """Path parameter → seeded id key (``{role}`` filled in) or ``=literal``."""
    form: Mapping[str, str] | None = None
    """POST fields; a value ``@key`` is the seeded id of ``key``."""
    query: str = ""
    path: str | None = None
    """The exact path, when the pattern cannot be filled (static files)."""
    note: str = ""


MATRIX: dict[tuple[str, str], tuple[Case, ...]] = {
    # -- login, language, password reset (public) ---------------------------------------
    ("GET", "/console/login"): (Case((200, 302, 302, 302, 302),
                                     note="a logged-in agent is sent on"),),
    ("POST", "/console/login"): (Case(everyone(401), form={"login": "nobody",
                                                           "password": "wrong password"}),),
    ("POST", "/console/logout"): (Case((LOGIN, None, None, None, None),
                                       note="ending the sessions: see test_console_auth"),),
    ("POST", "/console/language"): (Case(everyone(302), form={"language": "en",
                                                              "next": "/console/customers"}),),
    ("GET", "/console/account/password"): (Case(logged_in()),),
    ("POST", "/console/account/password"): (
        Case(logged_in(400), form={"current_password": "wrong", "password": "a",
                                   "password_again": "b"}),),
    ("GET", "/console/reset"): (Case(everyone(200)),),
    ("POST", "/console/reset"): (Case(everyone(200), form={"login": "nobody"}),),
    ("GET", "/console/reset/{token}"): (Case(everyone(200), params={"token": "=invalid"}),),
    ("POST", "/console/reset/{token}"): (Case(everyone(400), params={"token": "=invalid"},
                                              form={"password": "long enough password",
                                                    "password_again": "long enough password"}),),
    ("GET", "/console/static"): (Case(everyone(200), path="/console/static/console.css"),),
    ("GET", "/console/"): (Case(everyone(302), note="the inbox, or the login"),),
    # -- inbox, conversations, attachments, live, search (agents' daily screens) --------
    ("GET", "/console/inbox"): (Case(logged_in()),),
    ("GET", "/console/inbox/rows"): (Case(logged_in()),),
    ("GET", "/console/inbox.json"): (Case(logged_in()),),
    ("GET", "/console/search"): (Case(logged_in(), query="q=发票"),),
    ("GET", "/console/ws"): (Case(logged_in(400), note="a plain GET is not a WebSocket"),),
    ("GET", "/console/conversations/{id}"): (
        Case(team_a(), params={"id": "conversation_a"}),
        Case(team_a(), params={"id": "conversation_q"}),
        Case(team_b_queue(), params={"id": "conversation_b"}),
    ),
    ("GET", "/console/conversations/{id}/timeline"): (
        Case(team_a(), params={"id": "conversation_a"}),
        Case(team_b_queue(), params={"id": "conversation_b"}),
    ),
    ("POST", "/console/conversations/{id}/reply"): (
        Case(team_a(400), params={"id": "conversation_a"}, form={"text": ""}),
        Case(team_b_queue(400), params={"id": "conversation_b"}, form={"text": ""}),
    ),
    ("POST", "/console/conversations/{id}/note"): (
        Case(team_a(303), params={"id": "conversation_a"}, form={"text": "matrix note"}),
        Case(team_b_queue(303), params={"id": "conversation_b"}, form={"text": "matrix note"},
             note="a valid form: an empty one is refused (400) before the visibility check"),
    ),
    ("POST", "/console/conversations/{id}/ticket"): (
        Case(team_a(404), params={"id": "conversation_a"}, form={},
             note="the seeded conversation has no ticket"),
        Case(team_b_queue(404), params={"id": "conversation_b"}, form={}),
    ),
    ("POST", "/console/conversations/{id}/merge"): (
        Case(team_a(404), params={"id": "conversation_a"}, form={"ticket": "T-999999"}),
        Case(team_b_queue(404), params={"id": "conversation_b"}, form={"ticket": "T-999999"}),
    ),
    ("POST", "/console/conversations/{id}/snooze"): (
        Case(team_a(404), params={"id": "conversation_a"}, form={"hours": "2"},
             note="no ticket to snooze, once past the gate"),
        Case(team_b_queue(404), params={"id": "conversation_b"}, form={"hours": "2"}),
    ),
    ("POST", "/console/conversations/{id}/unsnooze"): (
        Case(team_a(404), params={"id": "conversation_a"}, form={}),
        Case(team_b_queue(404), params={"id": "conversation_b"}, form={}),
    ),
    ("POST", "/console/conversations/{id}/typing"): (
        Case(team_a(204), params={"id": "conversation_a"}, form={}),
        Case(team_b_queue(204), params={"id": "conversation_b"}, form={}),
    ),
    ("GET", "/console/attachments/{interaction_id}/{index}"): (
        Case(team_a(404), params={"interaction_id": "interaction_a", "index": "=0"},
             note="the message has no attachment: 404 once past the gate"),
    ),
    ("GET", "/console/interactions/{interaction_id}/html"): (
        Case(team_a(404), params={"interaction_id": "interaction_a"},
             note="the message has no HTML part"),
    ),
    # -- the customer card beside a conversation ----------------------------------------
    ("GET", "/console/customers/{id}/card"): (
        Case(team_a(), params={"id": "customer_a"}),
        Case(customer_of_b(), params={"id": "customer_b"}),
    ),
    ("POST", "/console/customers/{id}/card"): (
        Case(team_a(400), params={"id": "customer_a"}, form={"display_name": ""}),
        Case(customer_of_b(400), params={"id": "customer_b"}, form={"display_name": ""}),
    ),
    ("POST", "/console/customers/{id}/card/merge"): (
        Case(team_a(404), params={"id": "customer_a"}, form={"suggestion": "999"},
             note="no such suggestion"),
    ),
    ("POST", "/console/customers/{id}/card/dismiss"): (
        Case(team_a(404), params={"id": "customer_a"}, form={"suggestion": "999"}),
    ),
    # -- customers area -----------------------------------------------------------------
    ("GET", "/console/customers"): (Case(logged_in()), Case(logged_in(), query="q=zhang")),
    ("GET", "/console/customers/new"): (Case(logged_in()),),
    ("POST", "/console/customers/new"): (Case(logged_in(400), form={"display_name": ""}),),
    ("GET", "/console/customers/{customer_id}"): (
        Case(logged_in(302), params={"customer_id": "customer_a"},
             note="the short link: on to the record page, which checks access"),
    ),
    ("GET", "/console/customers/{customer_id}/edit"): (
        Case(team_a(), params={"customer_id": "customer_a"}, note="agent A owns it"),
        Case(team_a(), params={"customer_id": "customer_q"}, note="in team A's queue"),
        Case(customer_of_b(), params={"customer_id": "customer_b"}),
        Case((LOGIN, 403, 403, 200, 200), params={"customer_id": "customer_other"},
             note="nobody's customer, no conversation"),
        Case(logged_in(404), params={"customer_id": "=999999"}),
    ),
    ("POST", "/console/customers/{customer_id}/edit"): (
        Case(team_a(400), params={"customer_id": "customer_a"}, form={"display_name": ""}),
        Case(customer_of_b(400), params={"customer_id": "customer_b"},
             form={"display_name": ""}),
    ),
    ("GET", "/console/customers/{customer_id}/delete"): (
        Case(supervisors(), params={"customer_id": "customer_a"}),),
    ("POST", "/console/customers/{customer_id}/delete"): (
        Case(supervisors(303), params={"customer_id": "throwaway_{role}"}),),
    ("POST", "/console/customers/{customer_id}/restore"): (
        Case(supervisors(303), params={"customer_id": "throwaway_{role}"}),),
    ("GET", "/console/customers/{customer_id}/merge"): (
        Case(supervisors(), params={"customer_id": "customer_a"}, query="q=li"),),
    ("POST", "/console/customers/{customer_id}/merge"): (
        Case(supervisors(303), params={"customer_id": "merge_keep_{role}"},
             form={"other_id": "@merge_gone_{role}"}),),
    ("GET", "/console/customers/import"): (Case(supervisors()),),
    ("POST", "/console/customers/import"): (Case(supervisors(400), form={},
                                                 note="no file: refused past the gate"),),
    ("GET", "/console/customers/export"): (Case(supervisors(), query="tier=vip"),),
    ("GET", "/console/customers/classes"): (Case(logged_in()),),
    ("POST", "/console/customers/classes/categories"): (
        Case(supervisors(303), form={"code": "new-{role}", "name": "New"}),),
    ("POST", "/console/customers/classes/categories/{code}"): (
        Case(supervisors(303), params={"code": "=retail"},
             form={"name": "Retail", "name_zh": "零售"}),),
    ("POST", "/console/customers/classes/categories/{code}/delete"): (
        Case(supervisors(303), params={"code": "=cat-{role}"}),),
    ("POST", "/console/customers/classes/tiers"): (
        Case(supervisors(303), form={"code": "new-{role}", "name": "New", "rank": "0"}),),
    ("POST", "/console/customers/classes/tiers/{code}"): (
        Case(supervisors(303), params={"code": "=standard"},
             form={"name": "Standard", "name_zh": "普通", "rank": "1"}),),
    ("POST", "/console/customers/classes/tiers/{code}/delete"): (
        Case(supervisors(303), params={"code": "=tier-{role}"}),),
    ("GET", "/console/customers/duplicates"): (Case(supervisors()),
                                               Case(supervisors(), query="source=scan")),
    ("POST", "/console/customers/duplicates/{suggestion_id}/dismiss"): (
        Case(supervisors(404), params={"suggestion_id": "=999999"}, note="no such suggestion"),),
    ("GET", "/console/customers/segments"): (Case(supervisors()),),
    ("POST", "/console/customers/segments"): (
        Case(supervisors(303), form={"segment_name": "Matrix {role}", "filter_json": "{}"}),),
    ("GET", "/console/customers/segments/{segment_id}"): (
        Case(supervisors(), params={"segment_id": "segment"}),
        Case(supervisors(404), params={"segment_id": "=999999"}),
    ),
    ("POST", "/console/customers/segments/{segment_id}"): (
        Case(supervisors(303), params={"segment_id": "segment"},
             form={"segment_name": "VIP 客户", "filter_json": '{"tier": "vip"}'}),),
    ("POST", "/console/customers/segments/{segment_id}/delete"): (
        Case(supervisors(303), params={"segment_id": "segment_{role}"}),),
    ("GET", "/console/customers/records"): (Case(logged_in(), query="keyword=发票"),),
    ("GET", "/console/customers/records/export"): (Case(supervisors()),),
    # -- admin area ---------------------------------------------------------------------
    ("GET", "/console/admin"): (Case(admins()),),
    ("GET", "/console/admin/agents"): (Case(admins()),),
    ("GET", "/console/admin/agents/new"): (Case(admins()),),
    ("POST", "/console/admin/agents/new"): (Case(admins(400), form={"login": ""}),),
    ("GET", "/console/admin/agents/{agent_id}"): (
        Case(admins(), params={"agent_id": "agent_b_id"}),
        Case(admins(404), params={"agent_id": "=999999"}),
    ),
    ("POST", "/console/admin/agents/{agent_id}"): (
        Case(admins(400), params={"agent_id": "agent_b_id"},
             form={"display_name": "", "role": "agent", "capacity": "5"}),),
    ("POST", "/console/admin/agents/{agent_id}/password"): (
        Case(admins(200), params={"agent_id": "agent_b_id"}, form={"credential": "link"},
             note="a link, so agent B's session lives on"),),
    ("GET", "/console/admin/teams"): (Case(admins()),),
    ("POST", "/console/admin/teams"): (Case(admins(400), form={"name": ""}),),
    ("POST", "/console/admin/teams/{team_id}"): (
        Case(admins(400), params={"team_id": "team_a"}, form={"name": ""}),),
    ("GET", "/console/admin/channels"): (Case(admins()),),
    ("GET", "/console/admin/rules"): (Case(admins()),),
    ("GET", "/console/admin/settings"): (Case(admins()),),
    ("GET", "/console/admin/canned"): (Case(admins()),),
    ("GET", "/console/admin/canned/new"): (Case(admins()),),
    ("POST", "/console/admin/canned/new"): (Case(admins(400), form={"shortcut": ""}),),
    ("GET", "/console/admin/canned/{response_id}"): (
        Case(admins(), params={"response_id": "canned"}),),
    ("POST", "/console/admin/canned/{response_id}"): (
        Case(admins(400), params={"response_id": "canned"}, form={"shortcut": ""}),),
    ("POST", "/console/admin/canned/{response_id}/delete"): (
        Case(admins(303), params={"response_id": "canned_{role}"}),),
    ("GET", "/console/admin/audit"): (Case(admins()), Case(admins(), query="action=create")),
    # Care campaigns (contact_center/web/campaigns.py).
    ("GET", "/console/campaigns"): (Case(supervisors()),),
    ("GET", "/console/campaigns/{campaign_id}"): (
        Case(supervisors(404), params={"campaign_id": "=999"}, note="no such campaign"),),
    ("GET", "/console/care-tasks"): (Case(logged_in()), Case(logged_in(), query="mine=1")),
    ("POST", "/console/care-tasks/{task_id}"): (
        Case(logged_in(404), params={"task_id": "=999"}, form={"outcome": "reached"},
             note="no such task"),),
    # Reports (contact_center/web/reports.py): supervisors and admins see every report;
    # an agent sees only their own performance (the agents report narrowed to them).
    ("GET", "/console/reports"): (Case(logged_in(302),
                                       note="supervisors to the dashboard, agents to theirs"),),
    ("GET", "/console/reports/{name}"): (
        Case(supervisors(), params={"name": "=dashboard"}),
        Case(supervisors(), params={"name": "=rfm"}),
        Case(supervisors(), params={"name": "=forecast"}),
        Case(logged_in(), params={"name": "=agents"}, note="agents: their own row only"),
        Case(logged_in(404), params={"name": "=nothing"}, note="no such report"),
    ),
    ("GET", "/console/reports/{name}/export"): (
        Case(supervisors(), params={"name": "=churn"}, query="format=csv"),
        Case(supervisors(), params={"name": "=dashboard"}, query="format=xlsx"),
        Case(logged_in(), params={"name": "=agents"}, query="format=csv"),
        Case(logged_in(400), params={"name": "=agents"}, query="format=pdf"),
    ),
    # Sales: reminders, deals, follow-ups (contact_center/web/sales.py).
    ("GET", "/console/sales"): (Case(logged_in()),),
    ("POST", "/console/sales/follow-ups"): (
        Case(logged_in(400), form={"customer_id": ""}, note="no customer given"),
        Case(team_a(303), form={"customer_id": "@customer_a", "attitude": "positive"},
             note="agent A owns customer A; agent B does not"),
    ),
    # The self-service bot: knowledge base, flows, metrics (contact_center/web/bot.py).
    ("GET", "/console/bot/knowledge"): (Case(supervisors()),
                                        Case(supervisors(), query="language=en")),
    ("GET", "/console/bot/knowledge/new"): (Case(supervisors()),),
    ("POST", "/console/bot/knowledge/new"): (
        Case(supervisors(400), form={"language": "en", "title": "", "answer": ""},
             note="a title and an answer are required"),),
    ("GET", "/console/bot/knowledge/{article_id}"): (
        Case(supervisors(404), params={"article_id": "=999999"}, note="no such article"),),
    ("POST", "/console/bot/knowledge/{article_id}"): (
        Case(supervisors(404), params={"article_id": "=999999"},
             form={"language": "en", "title": "x", "answer": "y"}),),
    ("POST", "/console/bot/knowledge/{article_id}/delete"): (
        Case(supervisors(404), params={"article_id": "=999999"}),),
    ("GET", "/console/bot/flows"): (Case(admins()),),
    ("POST", "/console/bot/flows"): (
        Case(admins(400), form={"source": "[flows.main\n"}, note="not TOML: nothing saved"),),
    ("GET", "/console/bot/metrics"): (Case(supervisors()), Case(supervisors(), query="days=7")),
    # API tokens and webhooks (contact_center/web/api_admin.py).
    ("GET", "/console/admin/api"): (Case(admins()),),
    ("POST", "/console/admin/api/tokens"): (Case(admins(400), form={"name": ""}),),
    ("POST", "/console/admin/api/tokens/{token_id}/revoke"): (
        Case(admins(404), params={"token_id": "=999999"}, note="no such token"),),
    ("POST", "/console/admin/api/webhooks"): (Case(admins(400), form={"name": ""}),),
    ("GET", "/console/admin/api/webhooks/{webhook_id}"): (
        Case(admins(404), params={"webhook_id": "=999999"}, note="no such webhook"),),
    ("POST", "/console/admin/api/webhooks/{webhook_id}/test"): (
        Case(admins(404), params={"webhook_id": "=999999"}, note="no such webhook"),),
    ("POST", "/console/admin/api/webhooks/{webhook_id}/toggle"): (
        Case(admins(404), params={"webhook_id": "=999999"}, form={"active": "1"},
             note="no such webhook"),),
}

def console_routes(app: object) -> set[tuple[str, str]]:
    """(method, pattern) of every route under ``/console`` (HEAD mirrors GET)."""
    found = set()
    for route in app.router.routes():  # type: ignore[attr-defined]
        resource = route.resource
        if resource is None or route.method == "HEAD":
            continue
        if resource.canonical.startswith("/console"):
            found.add((route.method, resource.canonical))
    return found


@pytest.fixture
async def world(db: Database) -> World:
    """The seeded teams, people and records."""
    return await seed_world(db)


@pytest.fixture
async def client(db: Database, tmp_path: Path) -> AsyncIterator[TestClient]:
    """The app on the test database."""
    async with app_client(db, tmp_path) as test_client:
        yield test_client


def _fill(value: str, role: str, world: World) -> str:
    value = value.replace("{role}", role)
    if value.startswith("="):
        return value[1:]
    if value.startswith("@"):
        return str(world.ids[value[1:]])
    return str(world.ids[value])


def request_path(pattern: str, case: Case, role: str, world: World) -> str:
    """The concrete path of a case for one role."""
    path = case.path or pattern
    for name, source in case.params.items():
        path = path.replace(f"{{{name}}}", _fill(source, role, world))
    return f"{path}?{case.query}" if case.query else path


async def test_every_console_route_has_an_entry(client: TestClient) -> None:
    """A new console route needs its row in MATRIX (and a removed one loses it)."""
    registered = console_routes(client.server.app)
    missing = sorted(registered - MATRIX.keys())
    stale = sorted(MATRIX.keys() - registered)
    assert not missing, (
        "console routes without an entry in MATRIX (tests/integration/test_console_roles.py)"
        f" — add the status each role must get: {missing}")
    assert not stale, f"MATRIX entries whose route no longer exists: {stale}"


async def test_role_matrix(client: TestClient, world: World) -> None:
    """Each role gets exactly the status of the table, on every route and case."""
    failures = []
    order = ("anonymous", "agent_b", "agent_a", "supervisor", "admin")
    for (method, pattern), cases in MATRIX.items():
        for case in cases:
            for role in order:
                expected = case.expect[ROLES.index(role)]
                if expected is None:
                    continue
                who = actor(client, world, role)
                path = request_path(pattern, case, role, world)
                if method == "GET":
                    response = await who.get(path)
                else:
                    form = {k: _fill(v, role, world) if v.startswith(("@", "="))
                            else v.replace("{role}", role) for k, v in (case.form or {}).items()}
                    response = await who.post(path, form)
                status = response.status
                if status != expected:
                    failures.append(f"{method} {path} as {role}: {status}, expected {expected}")
                elif role == "anonymous" and status == LOGIN and expected == LOGIN and not (
                        pattern.startswith(("/console/login", "/console/reset",
                                            "/console/language")) or pattern == "/console/"):
                    location = response.headers.get("Location", "")
                    if not location.startswith("/console/login?next="):
                        failures.append(f"{method} {path} as anonymous: sent to {location}")
                response.release()
    assert not failures, "\n".join(failures)


async def test_every_post_needs_the_csrf_token(client: TestClient, world: World) -> None:
    """A logged-in POST without ``_csrf`` (or the header) is refused with 403, everywhere —
    the public forms (login, language, reset) included, once somebody is logged in."""
    admin = actor(client, world, "admin")
    refused = []
    for method, pattern in sorted(console_routes(client.server.app)):
        if method != "POST":
            continue
        cases = MATRIX.get((method, pattern))
        path = request_path(pattern, cases[0], "admin", world) if cases else pattern
        response = await admin.post(path, {"anything": "1"}, csrf=False)
        if response.status != 403:
            refused.append(f"POST {path}: {response.status}")
        response.release()
    assert not refused, "POSTs accepted without the CSRF token:\n" + "\n".join(refused)


def test_matrix_table_is_well_formed() -> None:
    """Every case names a status (or a reason) for each of the five roles."""
    for key, cases in MATRIX.items():
        assert cases, key
        for case in cases:
            assert len(case.expect) == len(ROLES), key
            assert all(s is not None for s in case.expect) or case.note, key
            assert (case.form is None) or key[0] == "POST", key


def expected_table() -> list[str]:
    """The matrix as a text table (printed by ``python -m`` for the docs)."""
    lines = [f"{'route':70} " + " ".join(f"{r[:10]:>10}" for r in ROLES)]
    for (method, pattern), cases in MATRIX.items():
        for case in cases:
            label = f"{method} {pattern}"
            if case.params:
                label += " [" + ",".join(case.params.values()) + "]"
            lines.append(f"{label[:70]:70} " + " ".join(
                f"{'-' if s is None else s:>10}" for s in case.expect))
    return lines


if __name__ == "__main__":
    print("\n".join(expected_table()))
