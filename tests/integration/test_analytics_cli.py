"""``contact-center analytics rollup``: builds the roll-ups, then refreshes them."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from contact_center.cli import main

pytestmark = pytest.mark.usefixtures("clean_settings_env")

def test_rollup_command_builds_then_refreshes(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/cc.db"}
    runner = CliRunner()
    assert runner.invoke(main, ["migrate"], env=env).exit_code == 0
    first = runner.invoke(main, ["analytics", "rollup"], env=env)
    assert first.exit_code == 0, first.output
    assert "roll-ups built up to" in first.output
    again = runner.invoke(main, ["analytics", "rollup"], env=env)
    assert again.exit_code == 0 and "roll-ups refreshed up to" in again.output
    assert "0 days" in again.output
    rebuilt = runner.invoke(main, ["analytics", "rollup", "--rebuild"], env=env)
    assert rebuilt.exit_code == 0 and "roll-ups built" in rebuilt.output
