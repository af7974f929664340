"""The CLI's shared parts: the `saga` group and its global options, the context every command
gets, and how a command's errors become one clear line."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
import orjson
import psycopg
from rich.console import Console
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from eventstore import (
    Database,
    ErrorKind,
    EventStoreError,
    StoreUnavailableError,
    classify_error,
    connection_refusal,
)
from outbox import KafkaConfigError
from saga._app import App, AppLoadError, load_app
from saga._errors import SagaError
from saga._orchestrator import Orchestrator
from saga._settings import Settings, SettingsError

T = TypeVar("T")
console = Console()
# Wide enough that no table or line is ever folded: output for scripts, files and `--wide`.
UNWRAPPED_WIDTH = 10_000


def fit_console(wide: bool) -> None:
    """Tables fit the terminal. With --wide, or when stdout is not a terminal and COLUMNS does
    not set a width, nothing is folded or cut: a pipe has no width to fit."""
    if wide or (not console.is_terminal and not os.environ.get("COLUMNS")):
        console.width = UNWRAPPED_WIDTH


class Context:
    def __init__(self, flags: dict[str, Any], as_json: bool, wide: bool = False) -> None:
        self.flags = flags
        self.as_json = as_json
        self.wide = wide
        self.database_url: str | None = None  # once the settings are loaded, for error messages
        fit_console(wide)

    def output(self, *, as_json: bool = False, wide: bool = False) -> None:
        """`--json` / `--wide` given after the command's name."""
        self.as_json = self.as_json or as_json
        self.wide = self.wide or wide
        fit_console(self.wide)

    def settings(self, **more: Any) -> Settings:
        try:
            settings = Settings.load(**self.flags, **more)
        except SettingsError as exc:
            raise click.ClickException(str(exc)) from None
        self.database_url = settings.database_url
        return settings

    def app(self, settings: Settings) -> App:
        if not settings.app:
            raise click.ClickException("no app: pass --app package.module:attribute or set SAGA_APP")
        try:
            app = load_app(settings.app)
        except AppLoadError as exc:
            raise click.ClickException(str(exc)) from None
        check_topic_prefix(settings, app)
        return app

    def topic_prefix(self, settings: Settings) -> str:
        """The app's prefix when there is an app, else SAGA_TOPIC_PREFIX (or its default)."""
        return self.app(settings).topic_prefix if settings.app else settings.topic_prefix

    def emit(self, data: Any, render: Callable[[], None]) -> None:
        if self.as_json:
            click.echo(
                orjson.dumps(data, default=str, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()
            )
        else:
            render()


def check_topic_prefix(settings: Settings, app: App) -> None:
    """SAGA_TOPIC_PREFIX, when set, must agree with the app: a worker on other topics than
    the orchestrator's would leave every command unanswered."""
    if "topic_prefix" in settings.model_fields_set and settings.topic_prefix != app.topic_prefix:
        raise click.ClickException(
            f"SAGA_TOPIC_PREFIX (or --topic-prefix) is {settings.topic_prefix!r} but the app {settings.app} "
            f"has topic_prefix {app.topic_prefix!r}: the prefix is set in one place, App(topic_prefix=...); "
            "unset SAGA_TOPIC_PREFIX and --topic-prefix"
        )


def _shown_url() -> str:
    """The database URL of this command, password hidden, for error messages."""
    context = click.get_current_context(silent=True)
    obj = context.find_object(Context) if context is not None else None
    url = obj.database_url if obj is not None else None
    if url is None:
        return "DATABASE_URL"
    return make_url(url).render_as_string(hide_password=True)  # Settings checked that it parses


def _refused(exc: BaseException) -> click.ClickException | None:
    refusal = connection_refusal(exc)
    if refusal is None:
        return None
    where = f"Postgres at {_shown_url()}"
    if refusal.what == "database":
        return click.ClickException(
            f"{where}: {refusal.reason}; check the database name in DATABASE_URL (or --database-url)"
        )
    return click.ClickException(
        f"{where}: authentication failed ({refusal.reason}); check the user and password in "
        "DATABASE_URL (or --database-url)"
    )


def run(coro: Awaitable[T]) -> T:
    """Run one command's coroutine; our own errors become one clear line and exit code 1."""
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except (EventStoreError, SagaError, AppLoadError, KafkaConfigError) as exc:
        refused = _refused(exc) if isinstance(exc, StoreUnavailableError) else None
        raise (refused or click.ClickException(str(exc))) from None
    except (sa_exc.DBAPIError, psycopg.Error, OSError) as exc:
        orig = getattr(exc, "orig", exc)
        if isinstance(orig, psycopg.errors.UndefinedTable):
            raise click.ClickException(
                f"the database has no saga schema ({orig}); run `saga db upgrade`"
            ) from None
        refused = _refused(exc)
        if refused is not None:
            raise refused from None
        if classify_error(exc) is ErrorKind.CONNECTION_LOST:
            raise click.ClickException(f"Postgres is unavailable at {_shown_url()}: {orig}") from None
        raise


async def with_orchestrator(settings: Settings, app: App, work: Callable[[Orchestrator], Awaitable[T]]) -> T:
    async with Database(settings.database_url) as database:
        orchestrator = app.orchestrator(database)
        return await work(orchestrator)


MAX_DURATION_S = 100 * 365 * 86400.0


def seconds(value: str | None) -> float | None:
    """'90s', '10m', '2h', '1d' or a plain number of seconds (at most 100 years)."""
    if value is None:
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", value.strip())
    if not match:
        raise click.BadParameter(f"{value!r} is not a duration like 30s, 10m, 2h or 1d")
    result = float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]
    if result > MAX_DURATION_S:
        raise click.BadParameter(f"{value!r} is longer than 100 years")
    return result


OUTPUT_OPTIONS = (
    ("--json", "as_json", "Print JSON instead of tables"),
    ("--wide", "wide", "Show whole columns and event details, however wide"),
)


def _output_option(flag: str, name: str, text: str) -> click.Option:
    def remember(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        obj = ctx.find_object(Context)
        if value and obj is not None:
            obj.output(**{name: True})

    return click.Option([flag], is_flag=True, expose_value=False, callback=remember, help=text)


class SagaGroup(click.Group):
    """Every command, and every command of a sub-group, takes the output options after its
    name too: `saga ls --json` as well as `saga --json ls`."""

    group_class = type

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        taken = {opt for param in cmd.params for opt in getattr(param, "opts", ())}
        cmd.params.extend(_output_option(*option) for option in OUTPUT_OPTIONS if option[0] not in taken)
        super().add_command(cmd, name)


@click.group(cls=SagaGroup)
@click.version_option(package_name="saga-es")
@click.option("--database-url", default=None, help="Postgres URL [env DATABASE_URL]")
@click.option(
    "--kafka",
    "kafka_bootstrap_servers",
    default=None,
    help="Kafka bootstrap servers [env KAFKA_BOOTSTRAP_SERVERS]",
)
@click.option("--app", default=None, help="The App's import path, package.module:attribute [env SAGA_APP]")
@click.option(
    "--topic-prefix",
    default=None,
    help="Prefix of every topic when no app is given; with an app it must equal App(topic_prefix=...) "
    "[env SAGA_TOPIC_PREFIX]",
)
@click.option("--json", "as_json", is_flag=True, help=OUTPUT_OPTIONS[0][2])
@click.option("--wide", is_flag=True, help=OUTPUT_OPTIONS[1][2])
@click.pass_context
def cli(
    ctx: click.Context,
    database_url: str | None,
    kafka_bootstrap_servers: str | None,
    app: str | None,
    topic_prefix: str | None,
    as_json: bool,
    wide: bool,
) -> None:
    """Saga orchestration: workers, the outbox relay and operator commands."""
    flags = {
        "database_url": database_url,
        "kafka_bootstrap_servers": kafka_bootstrap_servers,
        "app": app,
        "topic_prefix": topic_prefix,
    }
    ctx.obj = Context(flags, as_json, wide)


pass_ctx = click.make_pass_decorator(Context)
