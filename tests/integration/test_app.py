"""The web application's health checks, on a migrated and on an unmigrated database."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import text

from contact_center.app import create_app
from contact_center.settings import Settings
from crm_core import schema
from crm_core.db import Database


def settings_for(database: Database) -> Settings:
    return Settings(database_url=database.url)


async def test_healthz(db: Database) -> None:
    async with TestClient(TestServer(create_app(settings_for(db), database=db))) as client:
        response = await client.get("/healthz")
        assert response.status == 200
        assert response.content_type == "application/json"
        assert await response.json() == {"status": "ok"}


async def test_favicon_is_the_consoles_icon(sqlite_db: Database) -> None:
    app = create_app(settings_for(sqlite_db), database=sqlite_db)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/favicon.ico")
        assert response.status == 200
        assert response.content_type == "image/svg+xml"
        assert (await response.read()).startswith(b"<svg")


async def test_readyz_on_migrated_database(db: Database) -> None:
    async with TestClient(TestServer(create_app(settings_for(db), database=db))) as client:
        response = await client.get("/readyz")
        assert response.status == 200
        assert response.content_type == "application/json"
        body = await response.json()
    assert body["status"] == "ready"
    assert body["database_revision"] == schema.head_revision()
    assert body["database_revision"]


async def test_given_database_is_not_closed_with_the_app(db: Database) -> None:
    async with TestClient(TestServer(create_app(settings_for(db), database=db))) as client:
        assert (await client.get("/readyz")).status == 200
    async with db.engine.connect() as conn:
        assert (await conn.execute(text("SELECT 1"))).scalar() == 1


async def test_readyz_on_unmigrated_database(tmp_path: Path) -> None:
    empty = Database(f"sqlite:///{tmp_path}/empty.db")
    try:
        app = create_app(settings_for(empty), database=empty)
        async with TestClient(TestServer(app)) as client:
            response = await client.get("/readyz")
            assert response.status == 503
            assert response.content_type == "application/json"
            body = await response.json()
            health = await client.get("/healthz")
            assert health.status == 200
    finally:
        await empty.dispose()
    assert body["status"] != "ready"
    assert body["database_revision"] is None
    assert body["code_revision"] == schema.head_revision()


async def test_readyz_on_database_behind_the_code(db: Database) -> None:
    await schema.downgrade(db.engine, "base")
    async with TestClient(TestServer(create_app(settings_for(db), database=db))) as client:
        response = await client.get("/readyz")
        assert response.status == 503
        body = await response.json()
    assert body["database_revision"] is None
    await schema.upgrade(db.engine)


async def test_readyz_when_database_cannot_be_reached() -> None:
    # nothing listens on port 1: the connection is refused at once
    # (a failed SQLite open would do too, but leaves an aiosqlite thread that races loop close)
    broken = Database("postgresql://nobody@127.0.0.1:1/nothing")
    try:
        async with TestClient(TestServer(create_app(settings_for(broken), database=broken))) as c:
            response = await c.get("/readyz")
            assert response.status == 503
            body = await response.json()
    finally:
        await broken.dispose()
    assert body["status"] == "unavailable"
    assert body["database"]


async def test_app_opens_its_own_database_from_settings(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/own/cc.db"
    migrated = Database(url)
    try:
        (tmp_path / "own").mkdir()
        await schema.upgrade(migrated.engine)
    finally:
        await migrated.dispose()
    app = create_app(Settings(database_url=url))
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/readyz")
        assert response.status == 200
        assert (await response.json())["status"] == "ready"


async def test_unknown_path_is_404(db: Database) -> None:
    async with TestClient(TestServer(create_app(settings_for(db), database=db))) as client:
        assert (await client.get("/nope")).status == 404


async def test_landing_page_tells_no_business_figures(sqlite_db: Database) -> None:
    app = create_app(settings_for(sqlite_db), database=sqlite_db)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/")
        assert response.status == 200
        text = await response.text()
    assert 'href="/console/"' in text and 'href="/api/docs"' in text
    assert 'href="/webchat/try"' in text  # the web chat is on by default
    assert "Customers" not in text and "/metrics" not in text
