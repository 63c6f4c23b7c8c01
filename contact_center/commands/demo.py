"""``contact-center demo``: load the bilingual demo data set (placeholder until written)."""

from __future__ import annotations

import click


@click.command()
def demo() -> None:
    """Load demo data."""
    raise click.ClickException("not yet")
