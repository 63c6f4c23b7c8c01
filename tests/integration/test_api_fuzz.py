"""Schemathesis against our own OpenAPI document: for every operation, generated valid and
invalid requests (bounded: ``MAX_EXAMPLES`` each) must never get a 5xx, on SQLite and on
PostgreSQL (where NUL characters, 64-bit numbers and long texts fail in the driver); every
answer has a documented status, content type and body schema, errors the one format."""

from __future__ import annotations

import asyncio
import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from contact_center.api import operations
from contact_center.api.openapi import build_openapi
from contact_center.app import create_app
from contact_center.settings import Settings
from crm_core.db import Database
from tests.conftest import truncate_all
from tests.integration.api_support import issue_token
from tests.integration.console_support import make_engine, seed_conversation

MAX_EXAMPLES = 20
SCHEMA = schemathesis.openapi.from_dict(build_openapi(operations()))
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]


@dataclass
class Served:
    """The app on a real port, with a token holding every scope."""

    base_url: str
    token: str


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Served]:
    """Serve the app from a thread with its own loop for the module's tests."""
    tmp = tmp_path_factory.mktemp("fuzz")
    if request.param == "sqlite":
        path = tmp / "cc.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        url = f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("postgres_url")
    port = _free_port()
    loop = asyncio.new_event_loop()
    ready: dict[str, Any] = {}
    started = threading.Event()

    async def start() -> None:
        database = Database(url)
        if request.param == "postgres":
            await truncate_all(database)
        await seed_conversation(database)
        token = await issue_token(database, rate_limit=1_000_000)
        app = create_app(Settings(data_dir=Path(tmp)), database, engine=make_engine(database))
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.update(runner=runner, database=database, token=token)

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    started.wait(60)
    yield Served(f"http://127.0.0.1:{port}", ready["token"])

    async def stop() -> None:
        await ready["runner"].cleanup()
        await ready["database"].dispose()

    asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
def test_no_server_errors(served: Served, operation: Any) -> None:
    strategy = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                         operation.as_strategy(GenerationMode.NEGATIVE))

    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def check(case: Any) -> None:
        response = case.call(base_url=served.base_url,
                             headers={"Authorization": f"Bearer {served.token}"}, timeout=30)
        assert response.status_code < 500, (case.as_curl_command(), response.text[:500])
        case.validate_response(response, checks=[
            status_code_conformance, content_type_conformance, response_schema_conformance])
        if response.status_code >= 400:
            body = response.json()
            assert set(body["error"]) == {"code", "message", "field"}

    check()
