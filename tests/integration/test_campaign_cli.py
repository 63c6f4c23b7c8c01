"""``contact-center scheduler`` and ``contact-center campaigns …`` on a fresh SQLite file."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner

from contact_center.cli import main
from crm_core import schema
from crm_core.db import Database
from crm_core.models import CareTask, Customer, utcnow


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """A migrated database with one customer and one open care task."""
    url = f"sqlite:///{tmp_path / 'cc.db'}"

    async def prepare() -> None:
        database = Database(url)
        await schema.upgrade(database.engine)
        async with database.transaction() as session:
            customer = Customer(display_name="于海", name_key="于海")
            session.add(customer)
            await session.flush()
            session.add(CareTask(customer_id=customer.id, title="回访 于海", kind="call",
                                 due_at=utcnow() + timedelta(hours=2)))
        await database.dispose()

    asyncio.run(prepare())
    return url


def invoke(url: str, *args: str, **env: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env={"DATABASE_URL": url,
                                                      "CC_LOG__LEVEL": "WARNING", **env})
    structlog.reset_defaults()
    return result.exit_code, result.output


def test_check_list_tick_tasks_and_feedback(database_url: str, tmp_path: Path) -> None:
    code, out = invoke(database_url, "campaigns", "check")
    assert code == 0, out
    assert "birthday-greeting  message  birthday  enabled" in out
    code, out = invoke(database_url, "scheduler", "--once")
    assert code == 0, out
    assert json.loads(out.strip().splitlines()[-1])["planned"] == 0
    code, out = invoke(database_url, "campaigns", "list", "--json")
    assert code == 0, out
    listed = json.loads(out[:out.rindex("]") + 1])
    assert [c["key"] for c in listed] == ["birthday-greeting", "contract-renewal",
                                          "complaint-check-in", "csat-after-resolution"]
    code, out = invoke(database_url, "campaigns", "tasks")
    assert code == 0 and "回访 于海" in out
    code, out = invoke(database_url, "campaigns", "task-done", "1", "--outcome", "reached")
    assert code == 0 and "care task 1 done: reached" in out
    code, out = invoke(database_url, "campaigns", "task-done", "1", "--outcome", "reached")
    assert code != 0 and "is done" in out
    code, out = invoke(database_url, "campaigns", "feedback", "--days", "7")
    assert code == 0 and json.loads(out)["csat_average"] is None


def test_a_broken_campaigns_file_is_named(database_url: str, tmp_path: Path) -> None:
    broken = tmp_path / "campaigns.toml"
    broken.write_text('[[campaigns]]\nkey = "x"\nname = "x"\n'
                      'trigger = { kind = "birthday", at = "25:61" }\n', encoding="utf-8")
    code, out = invoke(database_url, "campaigns", "check", CC_CAMPAIGNS__FILE=str(broken))
    assert code != 0
    assert "campaigns.file" in out and "campaigns[0] (x).trigger.at" in out
