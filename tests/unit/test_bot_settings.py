"""``[bot]`` settings: checked at start-up with a clear message."""

from __future__ import annotations

import pytest

from contact_center.settings import SettingsError, load_settings
from contact_center.wiring import bot_runtime


def test_bot_is_off_by_default_and_on_per_channel() -> None:
    assert bot_runtime(load_settings()) is None
    runtime = bot_runtime(load_settings(bot={"channels": {"webchat": "bot"}}))
    assert runtime is not None and runtime.flow_for("webchat") == "bot"
    assert runtime.flow_for("telegram") is None


@pytest.mark.parametrize(("channels", "message"), [
    ({"fax": "bot"}, "'fax' is not one of telegram, webchat, email"),
    ({"webchat": "robot"}, "no flow 'robot'"),
])
def test_bad_bot_settings_are_refused(channels: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(bot={"channels": channels})
    assert message in str(error.value)
    assert "bot" in str(error.value)
