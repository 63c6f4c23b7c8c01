"""``contact-center telegram …`` against the fake Bot API (the CLI runs in a thread)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select

from crm_core.models import CustomerLinkToken, QueueEntry
from tests.fakes.telegram_api import TOKEN, FakeTelegramApi, private_message
from tests.integration.test_cli import invoke, migrated, with_database

pytestmark = pytest.mark.usefixtures("clean_settings_env")


def _config(tmp_path: Path, api: FakeTelegramApi, mode: str = "polling") -> Path:
    path = tmp_path / "cc.toml"
    path.write_text(
        "[http]\npublic_base_url = \"https://cc.shop.example\"\n\n"
        f"[telegram]\ntoken_env = \"TG_TOKEN\"\nmode = \"{mode}\"\n"
        "webhook_secret_env = \"TG_SECRET\"\n"
        f"api_base_url = \"{api.base_url}\"\napi_file_url = \"{api.file_url}\"\n",
        encoding="utf-8",
    )
    return path


async def test_poll_link_and_set_webhook(tmp_path: Path) -> None:
    """Deep links name the bot, one poll reads an update, the webhook is registered."""
    api = FakeTelegramApi()
    await api.start()
    try:
        db_url = await asyncio.to_thread(migrated, f"sqlite:///{tmp_path}/cc.db")
        env = {"CC_CONFIG": str(_config(tmp_path, api)), "TG_TOKEN": TOKEN,
               "TG_SECRET": "hook-secret"}

        from crm_core.services.customers import create_customer

        async def seed(database: object) -> None:
            async with database.transaction() as session:  # type: ignore[attr-defined]
                await create_customer(session, {"display_name": "王芳"}, actor="t", region="CN")

        await asyncio.to_thread(with_database, db_url, seed)
        linked = await asyncio.to_thread(invoke, ["telegram", "link", "1"], db_url, **env)
        assert linked.exit_code == 0, linked.output
        assert linked.stdout.startswith("https://t.me/cc_test_bot?start=")
        missing = await asyncio.to_thread(invoke, ["telegram", "link", "99"], db_url, **env)
        assert missing.exit_code != 0 and "no customer 99" in missing.output

        api.add_update("message", private_message("你好", message_id=1))
        polled = await asyncio.to_thread(invoke, ["telegram", "poll", "--once"], db_url, **env)
        assert polled.exit_code == 0, polled.output
        assert "1 update(s) read" in polled.stdout

        async def counts(database: object) -> tuple[int, int]:
            async with database.sessions() as session:  # type: ignore[attr-defined]
                queued = await session.scalar(select(func.count()).select_from(QueueEntry))
                tokens = await session.scalar(
                    select(func.count()).select_from(CustomerLinkToken))
                return int(queued), int(tokens)

        assert await asyncio.to_thread(with_database, db_url, counts) == (1, 1)

        hooked = await asyncio.to_thread(invoke, ["telegram", "set-webhook"], db_url, **env)
        assert hooked.exit_code == 0, hooked.output
        assert api.webhook is not None
        assert api.webhook["url"] == "https://cc.shop.example/webhooks/telegram"
        assert api.webhook["secret_token"] == "hook-secret"
    finally:
        await api.stop()


def test_without_a_bot_the_commands_say_so(tmp_path: Path) -> None:
    """A clear message instead of a traceback."""
    db_url = migrated(f"sqlite:///{tmp_path}/cc.db")
    result = invoke(["telegram", "poll", "--once"], db_url)
    assert result.exit_code != 0 and "no Telegram bot configured" in result.output
