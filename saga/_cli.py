"""The `saga` command line."""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="saga-es")
def cli() -> None:
    """Saga orchestration: workers, the outbox relay and operator commands."""


def main() -> None:
    cli()
