"""The `saga` command line."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import click

from eventstore import StoreUnavailableError, create_engine, upgrade
from outbox import Relay
from saga import all_migrations
from saga._process import run_until_signalled
from saga._settings import Settings, SettingsError


def _settings(ctx: click.Context, **flags: Any) -> Settings:
    try:
        settings = Settings.load(**ctx.obj, **flags)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return settings


@click.group()
@click.version_option(package_name="saga-es")
@click.option("--database-url", envvar=None, default=None, help="Postgres URL [env DATABASE_URL]")
@click.option(
    "--kafka",
    "kafka_bootstrap_servers",
    default=None,
    help="Kafka bootstrap servers [env KAFKA_BOOTSTRAP_SERVERS]",
)
@click.pass_context
def cli(ctx: click.Context, database_url: str | None, kafka_bootstrap_servers: str | None) -> None:
    """Saga orchestration: workers, the outbox relay and operator commands."""
    ctx.obj = {"database_url": database_url, "kafka_bootstrap_servers": kafka_bootstrap_servers}


@cli.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Apply the migrations that are not applied yet (safe to run again, and concurrently)."""
    settings = _settings(ctx)

    async def go() -> list[str]:
        engine = create_engine(settings.database_url)
        try:
            return [
                f"{m.component} {m.version:04d}_{m.name}" for m in await upgrade(engine, all_migrations())
            ]
        finally:
            await engine.dispose()

    try:
        applied = asyncio.run(go())
    except StoreUnavailableError as exc:
        raise click.ClickException(str(exc)) from None
    for name in applied:
        click.echo(f"applied {name}")
    click.echo("schema is up to date" if not applied else f"{len(applied)} migration(s) applied")


@cli.command()
@click.option(
    "--batch-size",
    "relay_batch_size",
    type=int,
    default=None,
    help="Rows per batch [env SAGA_RELAY_BATCH_SIZE]",
)
@click.pass_context
def relay(ctx: click.Context, relay_batch_size: int | None) -> None:
    """Run the outbox relay: publish committed outbox rows to Kafka until SIGTERM."""
    settings = _settings(ctx, relay_batch_size=relay_batch_size)
    worker = Relay(
        settings.database_url,
        settings.kafka_bootstrap_servers,
        batch_size=settings.relay_batch_size,
        poll_interval_s=settings.relay_poll_interval_s,
    )
    asyncio.run(run_until_signalled(worker.start, worker.stop, worker.wait))


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)
