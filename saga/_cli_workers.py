"""`saga db upgrade` and the long-running processes: relay, orchestrator worker, participant."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import click

from eventstore import Database, DatabaseConfigError, SchemaError, upgrade
from outbox import KafkaConfigError, Relay, TopicsMissingError
from saga._app import AppLoadError
from saga._cli_base import Context, cli, pass_ctx, run, with_orchestrator
from saga._logs import configure_logging
from saga._orchestrator import Orchestrator
from saga._process import run as run_process
from saga._process import run_until_signalled
from saga._settings import Settings
from saga._telemetry import TelemetrySetupError, metrics_interval, prepare_process
from saga._worker import OrchestratorWorker

# --- schema and workers ------------------------------------------------------------------


def prepare(settings: Settings) -> None:
    """Telemetry first (the user's SDK, /metrics): a mistake there stops the process at once."""
    try:
        prepare_process(settings)
    except TelemetrySetupError as exc:
        raise click.ClickException(str(exc)) from None


def serve(main: Coroutine[Any, Any, None], settings: Settings) -> None:
    """Run a long-running process. A database it must not work on (wrong password, no such
    database, schema behind) ends it at start with one line and exit code 1; an outage it
    waits out (see `run_until_signalled`)."""
    try:
        run_process(main, settings.event_loop)
    except (DatabaseConfigError, SchemaError, KafkaConfigError, TopicsMissingError) as exc:
        raise click.ClickException(str(exc)) from None


@cli.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
@pass_ctx
def db_upgrade(ctx: Context) -> None:
    """Apply the migrations not applied yet (safe to run again, and concurrently)."""
    from saga import all_migrations

    settings = ctx.settings()

    async def go() -> list[str]:
        async with Database(settings.database_url) as database:
            applied = await upgrade(database.engine, all_migrations())
        return [f"{m.component} {m.version:04d}_{m.name}" for m in applied]

    applied = run(go())
    ctx.emit(
        {"applied": applied},
        lambda: click.echo(
            "\n".join(
                [
                    *(f"applied {a}" for a in applied),
                    f"{len(applied)} migration(s) applied" if applied else "schema is up to date",
                ]
            )
        ),
    )


@cli.command()
@click.option(
    "--batch-size",
    "relay_batch_size",
    type=int,
    default=None,
    help="Rows per batch [env SAGA_RELAY_BATCH_SIZE]",
)
@pass_ctx
def relay(ctx: Context, relay_batch_size: int | None) -> None:
    """Run the outbox relay: publish committed outbox rows to Kafka until SIGTERM."""
    settings = ctx.settings(relay_batch_size=relay_batch_size)
    configure_logging(settings)
    prepare(settings)

    async def go() -> None:
        async with Database(settings.database_url) as database:
            worker = Relay(
                database,
                settings.kafka(),
                batch_size=settings.relay_batch_size,
                poll_interval_s=settings.relay_poll_interval_s,
                rebalance_interval_s=settings.relay_rebalance_interval_s,
                unpublishable_after_s=settings.relay_unpublishable_after_s,
                metrics_interval_s=metrics_interval(settings),
            )
            await run_until_signalled(worker.start, worker.stop, worker.wait)

    serve(go(), settings)


@cli.command()
@pass_ctx
def worker(ctx: Context) -> None:
    """Run an orchestrator worker (replies and deadlines) for the app's sagas until SIGTERM."""
    settings = ctx.settings()
    configure_logging(settings)
    prepare(settings)
    app = ctx.app(settings)

    async def go() -> None:
        async def work(orchestrator: Orchestrator) -> None:
            w = OrchestratorWorker(
                orchestrator,
                settings.kafka(),
                slow_batch_s=settings.slow_batch_s,
                inbox_retention_s=settings.inbox_retention_s,
                metrics_interval_s=metrics_interval(settings),
            )
            await run_until_signalled(w.start, w.stop, w.wait)

        await with_orchestrator(settings, app, work)

    serve(go(), settings)


@cli.command()
@click.argument("service")
@pass_ctx
def participant(ctx: Context, service: str) -> None:
    """Run the app's handlers of one participant SERVICE until SIGTERM."""
    settings = ctx.settings()
    configure_logging(settings)
    prepare(settings)
    app = ctx.app(settings)
    try:
        app.handlers(service)
    except AppLoadError as exc:
        raise click.ClickException(str(exc)) from None

    async def go() -> None:
        async with Database(settings.database_url) as database:
            p = app.participant(
                database,
                settings.kafka(),
                service,
                slow_batch_s=settings.slow_batch_s,
                inbox_retention_s=settings.inbox_retention_s,
            )
            await run_until_signalled(p.start, p.stop, p.wait)

    serve(go(), settings)
