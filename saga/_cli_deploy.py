"""The deploy gate on the command line: `saga export --running` and `saga check-deploy`.

    saga export --running -o running.json          # where the database is
    saga check-deploy --app myapp.app:app --from running.json   # in CI, no database needed
    saga check-deploy --app myapp.app:app          # against the live database (DATABASE_URL)

`check-deploy` exits 0 when nothing would break, 1 with a table of what would.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path

import click
import orjson
from rich.table import Table
from rich.text import Text

from eventstore import Database
from saga import _deploy as deploy
from saga._app import App, AppLoadError, load_app
from saga._cli_base import Context, cli, console, pass_ctx, run
from saga._state import SagaState


@cli.command("export")
@click.option("--running", is_flag=True, help="Every saga not completed or compensated (required)")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to this file instead of stdout",
)
@pass_ctx
def export(ctx: Context, running: bool, output: Path | None) -> None:
    """Write the sagas still running, as JSON, for `saga check-deploy --from FILE`."""
    if not running:
        raise click.UsageError("say what to export: --running (every saga not completed or compensated)")
    settings = ctx.settings()

    async def go() -> tuple[list[SagaState], datetime]:
        async with Database(settings.database_url) as database:
            return await deploy.running_states(database)

    states, at = run(go())
    document = orjson.dumps(deploy.export_document(states, at), option=orjson.OPT_INDENT_2) + b"\n"
    if output is None:
        sys.stdout.buffer.write(document)
        return
    try:
        output.write_bytes(document)
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from None
    click.echo(f"exported {len(states)} running saga(s) to {output}", err=True)


@cli.command("check-deploy")
@click.option(
    "--app",
    "app_path",
    default=None,
    help="The app about to be deployed, package.module:attribute (default: the --app before the command, "
    "or SAGA_APP)",
)
@click.option(
    "--from",
    "from_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Check the sagas of a file `saga export --running` wrote; no database is touched",
)
@pass_ctx
def check_deploy(ctx: Context, app_path: str | None, from_file: Path | None) -> None:
    """Would deploying this app break a saga still running? Checks every saga not ended (from
    the database, or from --from FILE): its version is in the app or a migration covers it,
    its definition did not change under it, its data fits, the steps and messages it awaits
    are there. Exit 0 when nothing would break, 1 with a table of what would."""
    app = _new_app(ctx, app_path)
    if from_file is not None:
        try:
            states = deploy.read_export(from_file)
        except deploy.ExportFileError as exc:
            raise click.ClickException(str(exc)) from None
    else:
        settings = ctx.settings()

        async def go() -> list[SagaState]:
            async with Database(settings.database_url) as database:
                return (await deploy.running_states(database))[0]

        states = run(go())
    report = deploy.check_deploy(app, states)
    ctx.emit(report.as_json(), lambda: _render(report))
    if not report.ok:
        sys.exit(1)


def _new_app(ctx: Context, given: str | None) -> App:
    """The app named after the command, else before it, else by SAGA_APP; no settings are
    loaded, so that a check from a file needs no DATABASE_URL."""
    path = given or ctx.flags.get("app") or os.environ.get("SAGA_APP")
    if not path:
        raise click.ClickException(
            "no app to check: pass --app package.module:attribute, the app about to be deployed"
        )
    try:
        return load_app(path)
    except AppLoadError as exc:
        raise click.ClickException(str(exc)) from None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _render(report: deploy.DeployReport) -> None:
    versions = ", ".join(f"{label}: {n}" for label, n in report.by_version.items())
    checked = f"checked {_plural(report.checked, 'running saga')} against the app"
    if report.problems:
        _problems_table(report)
        # Each problem once, with what to do: the per-saga table stays narrow enough to read.
        fixes = {p.problem: p.fix for p in reversed(report.problems)}
        counts = Table(title="problems, and what to do")
        counts.add_column("sagas", justify="right")
        counts.add_column("problem", overflow="fold")
        counts.add_column("fix", overflow="fold")
        for problem, n in report.counts().items():
            counts.add_row(str(n), Text(problem), Text(fixes[problem]))
        console.print(counts)
        problems = _plural(len(report.problems), "problem")
        click.echo(f"{checked}: {report.broken} would break ({problems}; {versions})")
        return
    click.echo(f"{checked}: nothing would break" + (f" ({versions})" if versions else ""))
    for move, n in report.migrations.items():
        source, _, target = move.partition(" -> ")
        click.echo(
            f"{_plural(n, 'saga')} of {source} pass by migration only: after the deploy, run "
            f"`saga migrate {source} --to {target.rpartition('@')[2]} --apply` (until then they stay parked)"
        )


def _problems_table(report: deploy.DeployReport) -> None:
    table = Table(title=f"what would break ({_plural(report.broken, 'saga')})")
    for column in ("saga_id", "saga@version", "status", "step", "problem"):
        table.add_column(column, no_wrap=column in ("saga_id", "saga@version", "status"), overflow="fold")
    for p in report.problems:
        cells = (p.saga_id, f"{p.saga_type}@{p.saga_version}", p.status, p.step or "", p.problem)
        table.add_row(*(Text(cell) for cell in cells))  # Text: a "[...]" in a problem is no markup
    console.print(table)
