"""Helpers for the API tests: the app on a test server and tokens with chosen scopes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from crm_core.db import Database
from crm_core.services.api_tokens import SCOPES, create_token
from routing.events import EventBus
from tests.integration.console_support import make_engine, start_client

ALL_SCOPES = sorted(SCOPES)


async def api_client(db: Database, tmp_path: Path, events: EventBus | None = None,
                     **settings: Any) -> TestClient:
    """The whole app on a test server."""
    return await start_client(db, tmp_path, make_engine(db, events), **settings)


async def issue_token(db: Database, scopes: list[str] | None = None, *,
                      rate_limit: int | None = None, agent_id: int | None = None) -> str:
    """A clear token with ``scopes`` (all by default)."""
    async with db.transaction() as session:
        issued = await create_token(session, name="test", scopes=scopes or ALL_SCOPES,
                                    actor="test", rate_limit_per_minute=rate_limit,
                                    agent_id=agent_id)
        return issued.token


def bearer(token: str) -> dict[str, str]:
    """The Authorization header of a token."""
    return {"Authorization": f"Bearer {token}"}
