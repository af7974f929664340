"""The `saga` command line: workers, migrations and operator commands.

Every command takes `--json` (before the command: `saga --json ls`) for scripts; without it,
output is a table in a terminal.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
import orjson
import psycopg
from rich.console import Console
from rich.table import Table
from sqlalchemy import exc as sa_exc

from eventstore import EventStoreError, create_engine, upgrade
from eventstore._errors import is_connection_lost
from outbox import Relay
from saga import _operations as ops
from saga._app import App, AppLoadError, load_app
from saga._errors import SagaError
from saga._orchestrator import Orchestrator
from saga._participant import Participant
from saga._process import run as run_process
from saga._process import run_until_signalled
from saga._settings import Settings, SettingsError
from saga._worker import OrchestratorWorker

T = TypeVar("T")
console = Console()


class Context:
    def __init__(self, flags: dict[str, Any], as_json: bool) -> None:
        self.flags = flags
        self.as_json = as_json

    def settings(self, **more: Any) -> Settings:
        try:
            settings = Settings.load(**self.flags, **more)
        except SettingsError as exc:
            raise click.ClickException(str(exc)) from None
        return settings

    def app(self, settings: Settings) -> App:
        if not settings.app:
            raise click.ClickException("no app: pass --app package.module:attribute or set SAGA_APP")
        try:
            return load_app(settings.app)
        except AppLoadError as exc:
            raise click.ClickException(str(exc)) from None

    def emit(self, data: Any, render: Callable[[], None]) -> None:
        if self.as_json:
            click.echo(
                orjson.dumps(data, default=str, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()
            )
        else:
            render()


def configure_logging(settings: Settings) -> None:
    """For the long-running processes (workers, relay, participants)."""
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run(coro: Awaitable[T]) -> T:
    """Run one command's coroutine; our own errors become one clear line and exit code 1."""
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except (EventStoreError, SagaError, AppLoadError) as exc:
        raise click.ClickException(str(exc)) from None
    except (sa_exc.DBAPIError, psycopg.Error, OSError) as exc:
        orig = getattr(exc, "orig", exc)
        if isinstance(orig, psycopg.errors.UndefinedTable):
            raise click.ClickException(
                f"the database has no saga schema ({orig}); run `saga db upgrade`"
            ) from None
        if is_connection_lost(exc):
            raise click.ClickException(f"Postgres is unavailable: {orig}") from None
        raise


async def with_orchestrator(settings: Settings, app: App, work: Callable[[Orchestrator], Awaitable[T]]) -> T:
    engine = create_engine(settings.database_url)
    orchestrator = Orchestrator(engine, app.sagas, app.messages, topic_prefix=settings.topic_prefix)
    try:
        return await work(orchestrator)
    finally:
        await orchestrator.aclose()
        await engine.dispose()


def seconds(value: str | None) -> float | None:
    """'90s', '10m', '2h', '1d' or a plain number of seconds."""
    if value is None:
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", value.strip())
    if not match:
        raise click.BadParameter(f"{value!r} is not a duration like 30s, 10m, 2h or 1d")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


@click.group()
@click.version_option(package_name="saga-es")
@click.option("--database-url", default=None, help="Postgres URL [env DATABASE_URL]")
@click.option(
    "--kafka",
    "kafka_bootstrap_servers",
    default=None,
    help="Kafka bootstrap servers [env KAFKA_BOOTSTRAP_SERVERS]",
)
@click.option("--app", default=None, help="The App's import path, package.module:attribute [env SAGA_APP]")
@click.option("--topic-prefix", default=None, help="Prefix of every topic [env SAGA_TOPIC_PREFIX]")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables")
@click.pass_context
def cli(
    ctx: click.Context,
    database_url: str | None,
    kafka_bootstrap_servers: str | None,
    app: str | None,
    topic_prefix: str | None,
    as_json: bool,
) -> None:
    """Saga orchestration: workers, the outbox relay and operator commands."""
    flags = {
        "database_url": database_url,
        "kafka_bootstrap_servers": kafka_bootstrap_servers,
        "app": app,
        "topic_prefix": topic_prefix,
    }
    ctx.obj = Context(flags, as_json)


pass_ctx = click.make_pass_decorator(Context)


# --- schema and workers ------------------------------------------------------------------


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
        engine = create_engine(settings.database_url)
        try:
            return [
                f"{m.component} {m.version:04d}_{m.name}" for m in await upgrade(engine, all_migrations())
            ]
        finally:
            await engine.dispose()

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
    worker = Relay(
        settings.database_url,
        settings.kafka_bootstrap_servers,
        batch_size=settings.relay_batch_size,
        poll_interval_s=settings.relay_poll_interval_s,
    )
    run_process(run_until_signalled(worker.start, worker.stop, worker.wait), settings.event_loop)


@cli.command()
@pass_ctx
def worker(ctx: Context) -> None:
    """Run an orchestrator worker (replies and deadlines) for the app's sagas until SIGTERM."""
    settings = ctx.settings()
    configure_logging(settings)
    app = ctx.app(settings)

    async def go() -> None:
        async def work(orchestrator: Orchestrator) -> None:
            w = OrchestratorWorker(
                orchestrator, settings.kafka_bootstrap_servers, slow_batch_s=settings.slow_batch_s
            )
            await run_until_signalled(w.start, w.stop, w.wait)

        await with_orchestrator(settings, app, work)

    run_process(go(), settings.event_loop)


@cli.command()
@click.argument("service")
@pass_ctx
def participant(ctx: Context, service: str) -> None:
    """Run the app's handlers of one participant SERVICE until SIGTERM."""
    settings = ctx.settings()
    configure_logging(settings)
    app = ctx.app(settings)
    if service not in app.participants:
        raise click.ClickException(
            f"the app has no participant {service!r} (it has: {', '.join(app.participants)})"
        )

    async def go() -> None:
        engine = create_engine(settings.database_url)
        try:
            p = Participant(
                engine,
                settings.kafka_bootstrap_servers,
                service=service,
                messages=app.messages,
                handlers=app.participants[service],
                topic_prefix=settings.topic_prefix,
                slow_batch_s=settings.slow_batch_s,
            )
            await run_until_signalled(p.start, p.stop, p.wait)
        finally:
            await engine.dispose()

    run_process(go(), settings.event_loop)


# --- operators ---------------------------------------------------------------------------


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, no_wrap=column in ("saga_id", "status", "v"), overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)


@cli.command("ls")
@click.option("--type", "saga_type", default=None, help="Only this saga type")
@click.option(
    "--status",
    default=None,
    help="running, compensating, completed, compensated, compensation_failed, failed",
)
@click.option("--older-than", default=None, help="Started before this long ago (30s, 10m, 2h)")
@click.option(
    "--stuck",
    "stuck",
    default=None,
    is_flag=False,
    flag_value="5m",
    help="Stopped, or active and unchanged for this long (default 5m)",
)
@click.option("--limit", default=100, show_default=True)
@pass_ctx
def ls(
    ctx: Context,
    saga_type: str | None,
    status: str | None,
    older_than: str | None,
    stuck: str | None,
    limit: int,
) -> None:
    """List sagas, newest first."""
    settings = ctx.settings()

    async def go() -> list[dict[str, Any]]:
        engine = create_engine(settings.database_url)
        try:
            return await ops.list_sagas(
                engine,
                saga_type=saga_type,
                status=status,
                older_than_s=seconds(older_than),
                stuck_after_s=seconds(stuck),
                limit=limit,
            )
        finally:
            await engine.dispose()

    rows = run(go())
    columns = ["saga_id", "saga_type", "status", "step", "version", "updated_at", "last_error"]
    ctx.emit(rows, lambda: _table(f"{len(rows)} saga(s)", columns, [[r[c] for c in columns] for r in rows]))


@cli.command()
@click.argument("saga_id")
@pass_ctx
def show(ctx: Context, saga_id: str) -> None:
    """A saga's timeline of events, its folded state and data, and its messages in flight."""
    settings = ctx.settings()
    details = run(with_orchestrator(settings, ctx.app(settings), lambda o: ops.show(o, saga_id)))
    data = {
        "state": details.state.model_dump(mode="json"),
        "timeline": details.timeline,
        "in_flight": details.in_flight,
        "deadline": details.deadline,
    }

    def render() -> None:
        s = details.state
        console.print(
            f"[bold]{s.saga_type}[/bold] {s.saga_id}  status [bold]{s.status}[/bold]  version {s.version}"
        )
        if s.last_error:
            console.print(f"last error: {s.last_error}")
        _table(
            "timeline",
            ["v", "at", "event", "details"],
            [
                [e["version"], e["at"], e["type"], orjson.dumps(e["event"]).decode()[:100]]
                for e in details.timeline
            ],
        )
        console.print("data: " + orjson.dumps(s.data).decode())
        if details.in_flight:
            _table(
                "in flight (outbox)",
                ["topic", "message_type", "step", "attempt", "queued_at"],
                [list(m.values()) for m in details.in_flight],
            )
        if details.deadline:
            console.print("deadline: " + ", ".join(f"{k} {v}" for k, v in details.deadline.items()))

    ctx.emit(data, render)


@cli.command()
@click.argument("saga_id")
@click.option("--note", required=True, help="Why: recorded in the saga's events")
@pass_ctx
def resume(ctx: Context, saga_id: str, note: str) -> None:
    """Resume a stopped saga (compensation_failed or failed) with fresh retry budgets, or
    send a waiting saga's current step again. `saga retry` is the same command."""
    settings = ctx.settings()
    state = run(with_orchestrator(settings, ctx.app(settings), lambda o: o.resume(saga_id, note)))
    ctx.emit(
        state.model_dump(mode="json"),
        lambda: click.echo(f"{saga_id}: {state.status} (version {state.version})"),
    )


cli.add_command(resume, name="retry")


@cli.command()
@click.argument("saga_id")
@click.option(
    "--at", "at_version", type=click.IntRange(min=1), default=None, help="Fold the events up to this version"
)
@pass_ctx
def replay(ctx: Context, saga_id: str, at_version: int | None) -> None:
    """Rebuild a saga's state from its events, as it was at a version: time travel."""
    settings = ctx.settings()
    state = run(with_orchestrator(settings, ctx.app(settings), lambda o: ops.replay(o, saga_id, at_version)))
    ctx.emit(state.model_dump(mode="json"), lambda: console.print_json(state.model_dump_json()))


@cli.command()
@click.option(
    "--verify",
    is_flag=True,
    help="Compare with the live read model instead of writing; exit 1 on differences",
)
@pass_ctx
def rebuild(ctx: Context, verify: bool) -> None:
    """Rebuild the saga_instances read model from the event store (safe while workers run)."""
    settings = ctx.settings()
    show_progress = not ctx.as_json and sys.stderr.isatty()

    async def go(o: Orchestrator) -> list[ops.Difference]:
        if not show_progress:
            return await ops.rebuild(o, verify=verify)
        with click.progressbar(length=1, label="rebuilding", file=sys.stderr) as bar:

            def progress(done: int, total: int) -> None:
                bar.length = total
                bar.update(1)

            return await ops.rebuild(o, verify=verify, progress=progress)

    differences = run(with_orchestrator(settings, ctx.app(settings), go))
    rows = [d.__dict__ for d in differences]

    def render() -> None:
        if not verify:
            click.echo("rebuilt saga_instances from the event store")
        elif not differences:
            click.echo("no differences: saga_instances matches the event store")
        else:
            _table(
                f"{len(differences)} difference(s)",
                ["saga_id", "column", "live", "rebuilt"],
                [[d.saga_id, d.column, d.live, d.rebuilt] for d in differences],
            )

    ctx.emit({"differences": rows}, render)
    if verify and differences:
        sys.exit(1)


@cli.command()
@click.argument("saga_type")
@pass_ctx
def graph(ctx: Context, saga_type: str) -> None:
    """A Mermaid diagram of a saga: steps, compensations, the pivot and timeouts."""
    settings = ctx.settings()
    try:
        saga = ctx.app(settings).saga(saga_type)
    except AppLoadError as exc:
        raise click.ClickException(str(exc)) from None
    diagram = ops.graph(saga)
    ctx.emit({"saga_type": saga_type, "mermaid": diagram}, lambda: click.echo(diagram))


@cli.command()
@pass_ctx
def status(ctx: Context) -> None:
    """Relay lag, sagas per status, the oldest active saga, dead-letter counts."""
    settings = ctx.settings()

    async def go() -> dict[str, Any]:
        engine = create_engine(settings.database_url)
        try:
            result = await ops.status(engine)
        finally:
            await engine.dispose()
        try:
            result["dead_letters"] = await asyncio.wait_for(
                ops.dead_letter_counts(settings.kafka_bootstrap_servers, settings.topic_prefix), timeout=20
            )
        except Exception as exc:
            result["dead_letters"] = f"unavailable: {exc!r}"
        return result

    result = run(go())

    def render() -> None:
        console.print(
            f"outbox: {result['outbox_pending']} pending, oldest {result['outbox_oldest_age_s']:.1f}s"
        )
        _table("sagas", ["status", "count"], [[k, v] for k, v in sorted(result["sagas"].items())])
        oldest = result["oldest_active"]
        console.print(
            f"oldest active: {oldest['saga_id']} ({oldest['status']} since {oldest['created_at']})"
            if oldest
            else "oldest active: none"
        )
        dead = result["dead_letters"]
        if isinstance(dead, dict):
            _table("dead letters", ["topic", "records"], [[k, v] for k, v in dead.items()] or [["none", 0]])
        else:
            console.print(f"dead letters: {dead}")

    ctx.emit(result, render)


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)
