"""What every TOML configuration file of the product shares: reading it, and the checks
that turn a wrong value into an error naming the file, the place and the mistake.

Rules (``routing.rules``), flows (``routing.flows``) and campaigns
(``crm_core.services.campaign_config``) each have their own parser built on
:class:`TableChecker` and their own error class derived from :class:`ConfigFileError`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar


class ConfigFileError(ValueError):
    """A configuration file that cannot be used; the message says where and why."""

    def __init__(self, source: str, where: str, message: str) -> None:
        self.source = source
        self.where = where
        self.message = message
        super().__init__(f"{source}: {where}: {message}" if where else f"{source}: {message}")


def read_toml(path: Path | str, error: type[ConfigFileError]) -> dict[str, Any]:
    """The tables of a TOML file; ``error`` for a missing file or bad TOML."""
    source = str(path)
    try:
        with Path(path).open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise error(source, "", "no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(source, "", f"not valid TOML: {exc}") from None


def describe(value: Any) -> str:
    """A wrong value as an error message shows it."""
    return "a table" if isinstance(value, Mapping) else repr(value)


class TableChecker:
    """The generic checks of a configuration parser (tables, keys, texts, flags, lists);
    subclasses set ``error_type`` and add the checks of their own file."""

    error_type: ClassVar[type[ConfigFileError]] = ConfigFileError
    key_separator: ClassVar[str] = ""
    """Put between a prefix and an unknown key in errors (flows say ``nodes.x.key``)."""
    text_limit: ClassVar[int | None] = None
    list_item_limit: ClassVar[int | None] = None

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, where: str, message: str) -> ConfigFileError:
        """The error to raise for ``where``."""
        return self.error_type(self.source, where, message)

    def table(self, value: Any, where: str) -> Mapping[str, Any]:
        """A TOML table."""
        if not isinstance(value, Mapping):
            raise self.error(where, f"must be a table, not {describe(value)}")
        return value

    def known_keys(self, table: Mapping[str, Any], allowed: Sequence[str], prefix: str) -> None:
        """Refuse keys not in ``allowed``; the error is at the prefix and the key."""
        for key in table:
            if key not in allowed:
                raise self.error(f"{prefix}{self.key_separator}{key}" if prefix else key,
                                 f"unknown key {key!r}; known: {', '.join(allowed)}")

    def text(self, value: Any, where: str, *, limit: int | None = None) -> str:
        """A non-empty string (stripped), at most ``limit`` characters."""
        if not isinstance(value, str) or not value.strip():
            raise self.error(where, f"must be a non-empty string, not {describe(value)}")
        most = limit if limit is not None else self.text_limit
        if most is not None and len(value) > most:
            raise self.error(where, f"longer than {most} characters")
        return value.strip()

    def boolean(self, value: Any, where: str) -> bool:
        """``true`` or ``false``."""
        if not isinstance(value, bool):
            raise self.error(where, f"must be true or false, not {describe(value)}")
        return value

    def strings(self, value: Any, where: str) -> list[str]:
        """A list of non-empty strings."""
        if not isinstance(value, list):
            raise self.error(where, f"must be a list of strings, not {describe(value)}")
        return [self.text(item, f"{where}[{i}]", limit=self.list_item_limit)
                for i, item in enumerate(value)]
