"""``contact-center api token create/list/revoke``."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from contact_center.cli import main

pytestmark = pytest.mark.usefixtures("clean_settings_env")

def test_token_lifecycle_on_the_command_line(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/cc.db"}
    runner = CliRunner()
    assert runner.invoke(main, ["migrate"], env=env).exit_code == 0
    bad = runner.invoke(main, ["api", "token", "create", "--name", "x", "--scope", "nope"],
                        env=env)
    assert bad.exit_code != 0 and "unknown scope" in bad.output
    created = runner.invoke(main, ["api", "token", "create", "--name", "ERP",
                                   "--scope", "customers:read"], env=env)
    assert created.exit_code == 0, created.output
    token = created.stdout.strip().splitlines()[0]
    assert token.startswith("cct_")
    listed = runner.invoke(main, ["api", "token", "list"], env=env)
    assert "ERP" in listed.output and "never" in listed.output and token not in listed.output
    revoked = runner.invoke(main, ["api", "token", "revoke", "1"], env=env)
    assert revoked.exit_code == 0
    assert "revoked" in runner.invoke(main, ["api", "token", "list"], env=env).output
    assert runner.invoke(main, ["api", "token", "revoke", "99"], env=env).exit_code != 0
