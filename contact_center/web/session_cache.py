"""A few seconds' memory of who is behind a console session cookie.

Every console request needs the session, its agent and the agent's teams: three or four
queries before the page's own. Consoles ask often (the inbox refreshes on every live
event, scripts poll ``/console/inbox.json``), so a web process remembers a checked
session for ``max_age`` seconds (5 by default) and answers from memory meanwhile; the
tabs of one agent asking at the same moment share one check (see ``fresh_cache``).

What stays exact: the cache is keyed by the token's SHA-256 (no secret kept in memory);
every state-changing request of this process (a logout, an agent's own status change, an
admin editing an agent or a team) empties it, so this process's own changes are seen at
once; an entry is checked again after ``max_age`` (answering meanwhile, for at most as
long again), so a change made through another process (a logout on another web node, an
agent disabled there) is seen within twice that time. Each
request gets its own detached copy of the agent, never one shared between requests.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.base import manager_of_class

from contact_center.web.fresh_cache import FreshCache
from crm_core.models import Agent

DEFAULT_MAX_AGE = 5.0
DEFAULT_MAX_ENTRIES = 10_000


_AGENT_CLASS = manager_of_class(Agent)


def _own(value: Any) -> Any:
    """A copy of a mutable column value (the JSON lists of skills and languages)."""
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return copy.deepcopy(value)
    return value


@dataclass(frozen=True)
class CheckedLogin:
    """What a checked session gives a request: its agent's columns, CSRF token, teams."""

    agent_columns: dict[str, Any]
    csrf_token: str
    team_ids: frozenset[int]
    team_member_ids: frozenset[int]

    @classmethod
    def of(cls, agent: Agent, csrf_token: str, team_ids: set[int],
           team_member_ids: set[int]) -> CheckedLogin:
        """Remember a loaded agent's columns with the session's token and teams."""
        columns = {attr.key: getattr(agent, attr.key)
                   for attr in sa_inspect(Agent).column_attrs}
        return cls(columns, csrf_token, frozenset(team_ids), frozenset(team_member_ids))

    def agent(self) -> Agent:
        """A fresh detached copy of the agent (as if loaded by a session just closed)."""
        # filled the way the ORM's loader fills a row (the instrumented constructor and
        # attribute events cost more than the rest of a remembered request)
        agent = _AGENT_CLASS.new_instance()
        agent.__dict__.update({key: _own(value) for key, value in self.agent_columns.items()})
        make_transient_to_detached(agent)
        return agent


def token_key(token: str) -> str:
    """The cache key of a session token (its hash: the token itself is not kept)."""
    return hashlib.sha256(token.encode()).hexdigest()


class SessionCache(FreshCache[CheckedLogin | None]):
    """Checked console sessions of this process (``None``: no live session), for
    ``max_age`` seconds each."""

    def __init__(self, max_age: float = DEFAULT_MAX_AGE,
                 max_entries: int = DEFAULT_MAX_ENTRIES, **kwargs: Any) -> None:
        super().__init__(max_age, max_entries, **kwargs)

    async def login(self, token: str,
                    check: Callable[[], Awaitable[CheckedLogin | None]]) -> CheckedLogin | None:
        """The login behind ``token``: remembered, or ``check``ed in the database now."""
        return await self.get(token_key(token), check)
