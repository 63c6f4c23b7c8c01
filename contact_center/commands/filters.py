"""Command-line options shared by commands that select customers (search, export)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

_FILTER_OPTIONS = (
    click.option("--name", default=None, help="Name, in characters or pinyin."),
    click.option("--phone", default=None, help="Phone in any common format."),
    click.option("--email", default=None),
    click.option("--organization", default=None),
    click.option("--category", default=None),
    click.option("--tier", default=None),
    click.option("--tag", default=None),
    click.option("--owner", "owner_id", type=int, default=None, help="Owner agent id."),
    click.option("--lifecycle", default=None),
    click.option("--created-from", default=None, help="YYYY-MM-DD (business time zone)"),
    click.option("--created-to", default=None, help="YYYY-MM-DD (business time zone)"),
    click.option("--deleted", "include_deleted", is_flag=True, help="Include deleted records."),
)


def customer_filters(command: F) -> F:
    """The customer query options (the same for search and export)."""
    for option in reversed(_FILTER_OPTIONS):
        command = option(command)
    return command
