"""The deployment files: the compose file parses, and every command, option and setting
they use exists in our command line and settings (we cannot run Docker or systemd here)."""

from __future__ import annotations

import shlex
import types
import typing
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from pydantic import BaseModel

from contact_center.cli import main
from contact_center.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
ALIASES = {"DATABASE_URL", "REDIS_URL", "CC_CONFIG"}


def click_envvars(command: click.Command) -> set[str]:
    """Every environment variable a command (and its subcommands) reads for an option."""
    found = {p.envvar for p in command.params if isinstance(p.envvar, str)}
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            found |= click_envvars(sub)
    return found


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        for arg in typing.get_args(annotation):
            model = _model_of(arg)
            if model is not None:
                return model
    return None


def is_setting(name: str) -> bool:
    """Whether ``CC_A__B`` names a field of the settings (nested by ``__``)."""
    if name in ALIASES or name in click_envvars(main):
        return True
    if not name.startswith("CC_"):
        return False
    model: type[BaseModel] | None = Settings
    for part in name[3:].lower().split("__"):
        if model is None or part not in model.model_fields:
            return False
        model = _model_of(model.model_fields[part].annotation)
    return True


def check_command(args: list[str]) -> None:
    """Resolve ``contact-center ARGS`` down to its command and parse its options."""
    command: click.Command = main
    rest = list(args)
    while isinstance(command, click.Group):
        assert rest, f"{args}: a group needs a command"
        sub = command.get_command(click.Context(command), rest[0])
        assert sub is not None, f"{args}: no command {rest[0]!r}"
        command, rest = sub, rest[1:]
    command.make_context(command.name or "", rest)  # raises on an unknown option


def compose() -> dict[str, Any]:
    """The compose file, with its anchors resolved."""
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def app_services() -> dict[str, dict[str, Any]]:
    """The services that run our image."""
    return {name: s for name, s in compose()["services"].items() if "build" in s}


def test_compose_has_the_whole_deployment() -> None:
    services = compose()["services"]
    assert {"postgres", "redis", "web1", "web2", "worker1", "worker2", "scheduler",
            "proxy", "migrate"} <= set(services)
    assert "--appendonly" in services["redis"]["command"]
    assert (DEPLOY / "nginx.conf").exists()
    nginx = (DEPLOY / "nginx.conf").read_text()
    assert "web1:8080" in nginx and "web2:8080" in nginx and "Upgrade $http_upgrade" in nginx
    for name in ("web1", "web2"):
        assert services[name]["command"] == ["serve"]
    for name in ("worker1", "worker2"):
        assert services[name]["command"][0] == "worker"


@pytest.mark.parametrize("service", sorted(app_services()))
def test_compose_commands_and_settings_exist(service: str) -> None:
    spec = app_services()[service]
    check_command(spec["command"])
    env = dict(spec.get("environment", {}))
    for line in (DEPLOY / "contact-center.env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            env[line.split("=", 1)[0]] = line.split("=", 1)[1]
    unknown = sorted(name for name in env if not is_setting(name))
    assert not unknown, f"{service}: not settings of ours: {unknown}"
    assert env["CC_ROUTING__EMBEDDED_WORKER"] == "false"


def test_the_setting_check_rejects_a_misspelling() -> None:
    assert is_setting("CC_HTTP__PORT") and is_setting("CC_TELEGRAM__MODE")
    assert not is_setting("CC_HTTP__PROT") and not is_setting("CC_NOPE")
    with pytest.raises(click.UsageError):
        check_command(["worker", "--no-such-option"])
    with pytest.raises(AssertionError):
        check_command(["wrker"])


@pytest.mark.parametrize("unit", sorted(p.name for p in (DEPLOY / "systemd").glob("*.service")))
def test_systemd_units_run_real_commands(unit: str) -> None:
    text = (DEPLOY / "systemd" / unit).read_text()
    [exec_start] = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    args = shlex.split(exec_start.replace("%i", "9101"))
    assert args[0].endswith("/contact-center")
    check_command(args[1:])
    for line in text.splitlines():
        if line.startswith("Environment="):
            assert is_setting(line.split("=", 2)[1]), line
    env_file = DEPLOY / "systemd" / "contact-center.env.example"
    for line in env_file.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert is_setting(line.split("=", 1)[0]), line
