"""Operator commands: ls, show, resume (retry), replay, rebuild, graph, status."""

from __future__ import annotations

import asyncio
import sys
from typing import Any, get_args

import click
import orjson
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from eventstore import Database
from saga import _operations as ops
from saga._app import AppLoadError
from saga._cli_base import Context, cli, console, pass_ctx, run, seconds, with_orchestrator
from saga._cli_format import definition, event_details, language_lines, steps
from saga._graph import graph as graph_of
from saga._orchestrator import Orchestrator
from saga._state import Status

STATUSES: tuple[str, ...] = get_args(Status)

# --- operators ---------------------------------------------------------------------------


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, no_wrap=column in ("saga_id", "status", "v"), overflow="fold")
    for row in rows:
        # Text, not markup: a key or a reason holding "[...]" is printed as it is.
        table.add_row(*(Text("" if v is None else str(v)) for v in row))
    console.print(table)


@cli.command("ls")
@click.option("--type", "saga_type", default=None, help="Only this saga type")
@click.option("--status", type=click.Choice(STATUSES), default=None, help="Only sagas in this status")
@click.option("--key", default=None, help="Only the sagas started with this key")
@click.option("--older-than", default=None, help="Started before this long ago (30s, 10m, 2h)")
@click.option(
    "--stuck",
    "stuck",
    default=None,
    is_flag=False,
    flag_value="5m",
    help="Stopped or parked, or active and unchanged for this long (default 5m)",
)
@click.option("--limit", type=click.IntRange(min=1, max=100_000), default=100, show_default=True)
@pass_ctx
def ls(
    ctx: Context,
    saga_type: str | None,
    status: str | None,
    older_than: str | None,
    stuck: str | None,
    limit: int,
    key: str | None,
) -> None:
    """List sagas, newest first."""
    settings = ctx.settings()

    async def go() -> list[dict[str, Any]]:
        async with Database(settings.database_url) as database:
            return await ops.list_sagas(
                database.engine,
                saga_type=saga_type,
                status=status,
                older_than_s=seconds(older_than),
                stuck_after_s=seconds(stuck),
                limit=limit,
                key=key,
            )

    rows = run(go())
    columns = ["saga_id", "saga_type", "key", "status", "step", "version", "updated_at", "last_error"]

    def cells(row: dict[str, Any]) -> list[Any]:
        # The type column names the version of its definition the saga runs on: Transfer@2.
        return [f"{row['saga_type']}@{row['saga_version']}" if c == "saga_type" else row[c] for c in columns]

    ctx.emit(rows, lambda: _table(f"{len(rows)} saga(s)", columns, [cells(r) for r in rows]))


TYPE_OPTION = click.option(
    "--type", "saga_type", default=None, help="The saga type, when the key started sagas of several types"
)


@cli.command()
@click.argument("saga")
@TYPE_OPTION
@pass_ctx
def show(ctx: Context, saga: str, saga_type: str | None) -> None:
    """A saga's timeline of events, its folded state and data, its parallel groups, waits,
    timers, kept signals, child sagas and parent, and its messages in flight.
    SAGA is a saga id or the key the saga was started with."""
    settings = ctx.settings()

    async def go(o: Orchestrator) -> ops.SagaDetails:
        return await ops.show(o, await ops.resolve(o, saga, saga_type))

    details = run(with_orchestrator(settings, ctx.app(settings), go))
    data = {
        "state": ops.state_view(details.state),
        "timeline": details.timeline,
        "in_flight": details.in_flight,
        "deadlines": details.deadlines,
        **details.language,
    }

    def render() -> None:
        s = details.state
        key = f"  key {escape(s.key)}" if s.key is not None else ""
        console.print(
            f"[bold]{s.saga_type}[/bold] {s.saga_id}{key}  status [bold]{s.status}[/bold]  "
            f"{definition(s.saga_version, s.fingerprint)}  {s.version} events"
        )
        if s.parked is not None:
            console.print(f"parked (was {s.parked.status}): {s.parked.reason}", markup=False, soft_wrap=True)
        elif s.last_error:
            console.print(f"last error: {s.last_error}", markup=False, soft_wrap=True)
        for line in [*steps(s.done, s.timed_out), *language_lines(details.language)]:
            console.print(line, markup=False, soft_wrap=True)
        _table(
            "timeline",
            ["v", "at", "event", "details"],
            [
                [e["version"], e["at"], e["type"], event_details(e["event"], ctx.wide, e["type"])]
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
        for deadline in details.deadlines:
            console.print("deadline: " + ", ".join(f"{k} {v}" for k, v in deadline.items()), markup=False)

    ctx.emit(data, render)


@cli.command()
@click.argument("saga_id")
@click.option("--note", required=True, help="Why: recorded in the saga's events")
@pass_ctx
def resume(ctx: Context, saga_id: str, note: str) -> None:
    """Resume a stopped saga (compensation_failed or failed) with fresh retry budgets, or
    send a waiting saga's current step again, or take up a parked one once the deployed
    definition has its steps. `saga retry` is the same command."""
    settings = ctx.settings()
    state = run(with_orchestrator(settings, ctx.app(settings), lambda o: o.resume(saga_id, note)))
    ctx.emit(
        ops.state_json(state),
        lambda: click.echo(f"{saga_id}: {state.status} (version {state.version})"),
    )
    if state.parked is not None:  # the resume found steps missing: recorded, and not resumed
        raise click.ClickException(f"{saga_id} is parked: {state.parked.reason}")


cli.add_command(resume, name="retry")


@cli.command()
@click.argument("saga")
@click.option(
    "--at", "at_version", type=click.IntRange(min=1), default=None, help="Fold the events up to this version"
)
@TYPE_OPTION
@pass_ctx
def replay(ctx: Context, saga: str, at_version: int | None, saga_type: str | None) -> None:
    """Rebuild a saga's state from its events, as it was at a version: time travel.
    SAGA is a saga id or the key the saga was started with. In the state, `done` lists the
    steps that succeeded and `timed_out` those whose reply never came (they may have acted)."""
    settings = ctx.settings()

    async def go(o: Orchestrator) -> dict[str, Any]:
        return ops.state_view(await ops.replay(o, await ops.resolve(o, saga, saga_type), at_version))

    view = run(with_orchestrator(settings, ctx.app(settings), go))
    ctx.emit(view, lambda: console.print_json(orjson.dumps(view).decode()))


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
    """A Mermaid diagram of a saga: its steps, parallel groups (fork and join), waits and their
    signals, timers, child sagas, compensations, the pivot and timeouts. SAGA_TYPE is a saga's
    name (its newest version) or NAME@VERSION."""
    settings = ctx.settings()
    name, _, version = saga_type.partition("@")
    if version and not version.isdigit():
        raise click.BadParameter(f"{saga_type!r}: write NAME or NAME@VERSION, e.g. OrderSaga@2")
    try:
        saga = ctx.app(settings).saga(name, int(version) if version else None)
    except AppLoadError as exc:
        raise click.ClickException(str(exc)) from None
    diagram = graph_of(saga)
    ctx.emit({"saga_type": saga_type, "mermaid": diagram}, lambda: click.echo(diagram))


@cli.command()
@pass_ctx
def status(ctx: Context) -> None:
    """Relay lag, sagas per status, the oldest active saga, dead-letter counts."""
    settings = ctx.settings()
    prefix = ctx.topic_prefix(settings)

    async def go() -> dict[str, Any]:
        async with Database(settings.database_url) as database:
            result = await ops.status(database.engine)
        try:
            counts = await asyncio.wait_for(ops.dead_letter_counts(settings.kafka(), prefix), timeout=20)
            # Consumers create every dead-letter topic at start: only those holding records count.
            result["dead_letters"] = {topic: n for topic, n in counts.items() if n}
        except Exception as exc:
            result["dead_letters"] = f"unavailable: {exc or type(exc).__name__}"
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
