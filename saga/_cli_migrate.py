"""`saga migrate SAGA@N --to M`: move the running sagas of one version to another (issue 15).

A dry run by default: each saga is planned under its lock in a transaction rolled back, so
nothing is written. With `--apply` each saga moves in a transaction of its own, recorded as
`saga.migrated`; one refused does not hold back the others.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from eventstore import Database, driver_connection
from saga import _repository as repo
from saga._app import App, AppLoadError, _importable_from_cwd
from saga._cli_base import Context, cli, console, pass_ctx, run
from saga._definition import Saga
from saga._errors import SagaError
from saga._migrate import MigrationPlan
from saga._orchestrator import Orchestrator
from saga._steps import DefinitionError
from saga._versions import DataMigration, Migration

DEFAULT_LIMIT = 1000


@dataclass(frozen=True)
class Outcome:
    """One saga's plan, and what became of it."""

    plan: MigrationPlan
    status: str
    step: str | None
    outcome: str  # "would move", "moved" or "refused"

    def view(self) -> dict[str, Any]:
        return {
            **asdict(self.plan),
            "ok": self.plan.ok,
            "status": self.status,
            "step": self.step,
            "outcome": self.outcome,
        }


def parse_source(value: str) -> tuple[str, int]:
    """`Transfer@1` -> ("Transfer", 1)."""
    match = re.fullmatch(r"\s*([^@\s]+)@(\d+)\s*", value)
    if not match or int(match[2]) < 1:
        raise click.BadParameter(
            f"{value!r} is not a saga and its version like Transfer@1 (the version its sagas run on now)",
            param_hint="SAGA@N",
        )
    return match[1], int(match[2])


def parse_maps(values: Sequence[str]) -> dict[str, str]:
    renames: dict[str, str] = {}
    for value in values:
        old, sep, new = value.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise click.BadParameter(f"{value!r} is not old_step=new_step", param_hint="--map")
        renames[old.strip()] = new.strip()
    return renames


def load_data_function(path: str) -> DataMigration:
    """`module:function`, imported as `--app` is (the current directory is importable)."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise click.BadParameter(f"{path!r} must look like 'package.module:function'", param_hint="--data")
    _importable_from_cwd()
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise click.ClickException(f"--data {path}: cannot import {module_name!r}: {exc!r}") from None
    function = getattr(module, attribute, None)
    if function is None or not callable(function):
        what = "has no attribute" if function is None else "has no function"
        raise click.ClickException(
            f"--data {path}: module {module_name!r} {what} {attribute!r} (a function of the old data, "
            "returning the new data)"
        )
    result: DataMigration = function
    return result


def target_of(app: App, name: str, version: int, to: int) -> type[Saga[Any]]:
    if name not in app.versions.names():
        known = ", ".join(app.versions.names()) or "none"
        raise click.ClickException(f"no saga named {name!r} in the app (it has: {known})")
    if version == to:
        raise click.ClickException(f"{name}@{version} --to {to}: the sagas are on version {to} already")
    try:
        return app.saga(name, to)
    except AppLoadError as exc:
        raise click.ClickException(f"--to {to}: {exc}; deploy it in the app first") from None


def migration_for(
    target: type[Saga[Any]],
    from_version: int,
    renames: dict[str, str],
    dropped: Sequence[str],
    data: DataMigration | None,
) -> Migration:
    """The migration `target` declares from `from_version`, with the flags on top (they win)."""
    declared = next((m for m in target.migrations if m.from_version == from_version), None)
    base_renames = dict(declared.renames) if declared else {}
    base_dropped = list(declared.dropped) if declared else []
    merged = {old: new for old, new in base_renames.items() if old not in dropped}
    merged.update(renames)
    gone = [step for step in [*base_dropped, *dropped] if step not in renames]
    return Migration(
        from_version=from_version,
        renames=merged,
        dropped=tuple(dict.fromkeys(gone)),
        data=data if data is not None else (declared.data if declared else None),
    )


def default_note(name: str, version: int, to: int, migration: Migration) -> str:
    parts = [f"{old}={new}" for old, new in migration.renames.items()]
    parts += [f"drop {step}" for step in migration.dropped]
    if migration.data is not None:
        parts.append(f"data {getattr(migration.data, '__qualname__', repr(migration.data))}")
    return f"saga migrate {name}@{version} --to {to}" + (f" ({', '.join(parts)})" if parts else "")


async def plan_one(
    orchestrator: Orchestrator,
    saga_id: str,
    target: type[Saga[Any]],
    migration: Migration,
    note: str,
    apply: bool,
) -> MigrationPlan:
    """One saga, in a transaction of its own: committed only when applied and the plan is ok."""
    async with orchestrator.engine.connect() as conn:
        transaction = await conn.begin()
        try:
            plan = await orchestrator.migrate(conn, saga_id, target, migration, note=note, apply=apply)
        except SagaError as exc:
            await transaction.rollback()
            return MigrationPlan(
                saga_id,
                target.name,
                migration.from_version,
                target.version,
                {},
                [],
                None,
                problems=[str(exc)],
            )
        if apply and plan.ok:
            await transaction.commit()
        else:
            await transaction.rollback()
        return plan


async def migrate_all(
    database_url: str,
    app: App,
    name: str,
    version: int,
    target: type[Saga[Any]],
    migration: Migration,
    note: str,
    apply: bool,
    limit: int,
) -> list[Outcome]:
    async with Database(database_url) as database:
        orchestrator = app.orchestrator(database)
        try:
            async with orchestrator.engine.connect() as conn:
                sagas = await repo.not_ended_on_version(await driver_connection(conn), name, version, limit)
            outcomes = []
            for saga_id, status, step in sagas:
                plan = await plan_one(orchestrator, saga_id, target, migration, note, apply)
                moved = ("moved" if apply else "would move") if plan.ok else "refused"
                outcomes.append(Outcome(plan, status, step, moved))
            return outcomes
        finally:
            await orchestrator.aclose()


def summary(outcomes: Sequence[Outcome], source: str, target: str, apply: bool, limit: int) -> str:
    if not outcomes:
        return f"no saga of {source} is running (none that has not completed or compensated)"
    refused = sum(1 for o in outcomes if o.outcome == "refused")
    moving = len(outcomes) - refused
    verb = "moved" if apply else "would move"
    parts = [f"{moving} {verb} to {target}"] if moving else []
    if refused:
        parts.append(f"{refused} refused (see their problems)")
    line = f"{len(outcomes)} saga{'s' if len(outcomes) != 1 else ''} of {source}: {', '.join(parts)}"
    if not apply and moving:
        line += "; run again with --apply"
    if len(outcomes) >= limit:
        line += f" (--limit {limit} reached: there may be more)"
    return line


def changes(plan: MigrationPlan) -> str:
    """What the plan does to the saga, or why it is refused."""
    if not plan.ok:
        return "; ".join(plan.problems)
    said = [f"{old} -> {new}" for old, new in plan.renamed.items()]
    said += [f"drop {step}" for step in plan.dropped]
    said += ["new data"] if plan.data is not None else []
    return "; ".join([*said, *plan.notes])


def render(outcomes: Sequence[Outcome], line: str) -> None:
    table = Table(title=f"{len(outcomes)} saga(s)")
    for column in ("saga_id", "status", "step", "outcome", "changes / problems"):
        table.add_column(column, no_wrap=column in ("saga_id", "status", "outcome"), overflow="fold")
    for o in outcomes:
        cells = (o.plan.saga_id, o.status, o.step or "", o.outcome, changes(o.plan))
        table.add_row(*(Text(cell) for cell in cells))
    if outcomes:
        console.print(table)
    console.print(line, markup=False, soft_wrap=True)


@cli.command()
@click.argument("source", metavar="SAGA@N")
@click.option("--to", "to", type=click.IntRange(min=1), required=True, help="The version to move them to")
@click.option("--map", "maps", multiple=True, metavar="OLD=NEW", help="Rename a step (repeatable)")
@click.option(
    "--drop", "drops", multiple=True, metavar="STEP", help="Drop a step the new version lacks (repeatable)"
)
@click.option(
    "--data", "data", default=None, metavar="MODULE:FUNCTION", help="Turn the old data into the new"
)
@click.option(
    "--note",
    default=None,
    help="Why, recorded in each saga.migrated event (default: the command and its mapping)",
)
@click.option("--apply", is_flag=True, help="Write the migrations (without it: a dry run, nothing written)")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=DEFAULT_LIMIT,
    show_default=True,
    help="At most this many sagas, oldest first (with --apply, run again for the rest)",
)
@pass_ctx
def migrate(
    ctx: Context,
    source: str,
    to: int,
    maps: tuple[str, ...],
    drops: tuple[str, ...],
    data: str | None,
    note: str | None,
    apply: bool,
    limit: int,
) -> None:
    """Move the sagas of SAGA on version N that have not ended to version M.

    The migration is the one version M declares from N (Migration(from_version=N)), with
    --map, --drop and --data on top (they win); without one, the flags alone. Each saga is
    planned under its lock: a plan that would strand it (a step the new version lacks, a step
    in flight dropped, a done step losing its compensation, data the new model refuses) is
    refused. A dry run by default; with --apply each saga moves in its own transaction, so the
    others still move when one is refused. Exit 1 if any saga is refused.
    """
    name, version = parse_source(source)
    renames, dropped = parse_maps(maps), list(drops)
    settings = ctx.settings()
    app = ctx.app(settings)
    target = target_of(app, name, version, to)
    function = load_data_function(data) if data is not None else None
    try:
        migration = migration_for(target, version, renames, dropped, function)
    except DefinitionError as exc:
        raise click.ClickException(str(exc)) from None
    note = note or default_note(name, version, to, migration)
    outcomes = run(
        migrate_all(settings.database_url, app, name, version, target, migration, note, apply, limit)
    )
    line = summary(outcomes, f"{name}@{version}", f"{name}@{to}", apply, limit)
    ctx.emit([o.view() for o in outcomes], lambda: render(outcomes, line))
    if any(o.outcome == "refused" for o in outcomes):
        sys.exit(1)


__all__ = ["cli"]
