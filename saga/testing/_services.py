"""The Postgres and Kafka a test run uses: the ones the environment names, or local ones.

DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS, when set, are used as they are, after a check that
each answers. A variable that is not set stands for a local service that
`saga.testing.services` starts (and leaves running for the next run) under a folder of the
project. When that cannot work, `ServicesError` names the missing piece and the two ways out.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from eventstore import Database, EventStoreError, check_database
from saga.testing._kafka_broker import ServicesError, kafka_problem
from saga.testing._local_services import LocalServices, ServiceDirs

__all__ = ["Services", "ServicesError", "find_services"]

POSTGRES_VARIABLE = "DATABASE_URL"
KAFKA_VARIABLE = "KAFKA_BOOTSTRAP_SERVERS"
CHECK_TIMEOUT_S = 5.0
SET_BOTH = (
    f"or set {POSTGRES_VARIABLE} and {KAFKA_VARIABLE} to a Postgres server (where the tests may create "
    "databases) and a Kafka broker that run already"
)


@dataclass(frozen=True)
class Services:
    database_url: str  # a server where the kit may create and drop databases
    kafka_bootstrap: str


Report = Callable[[str], None]


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


def find_services(dirs: ServiceDirs | None = None, *, report: Report = _to_stderr) -> Services:
    """The services named by the environment (checked), else local ones under `dirs` (default:
    SAGA_SERVICES_DIR, else `.cache/saga-services` of the current folder), started when they
    do not run; `report` hears what was started and how to stop it.

    Raises `ServicesError` naming what is wrong and what to do."""
    url = os.environ.get(POSTGRES_VARIABLE)
    bootstrap = os.environ.get(KAFKA_VARIABLE)
    if url:
        _check_postgres(url)
    if bootstrap:
        _check_kafka(bootstrap)
    if url and bootstrap:
        return Services(url, bootstrap)
    local = LocalServices(dirs)
    _check_prerequisites(local, postgres=not url, kafka=not bootstrap)
    with _start_lock(local.dirs.state):
        started = _start(local, postgres=not url, kafka=not bootstrap, report=report)
    return Services(url or started[POSTGRES_VARIABLE], bootstrap or started[KAFKA_VARIABLE])


def _check_postgres(url: str) -> None:
    async def check() -> None:
        async with Database(url) as database:
            await check_database(database, timeout_s=CHECK_TIMEOUT_S)

    try:
        asyncio.run(check())
    except EventStoreError as exc:
        problem = str(exc)  # names the server, without the password
    except Exception as exc:  # a URL the driver cannot use at all
        problem = f"{POSTGRES_VARIABLE} is not a usable Postgres URL: {exc}"
    else:
        return
    raise ServicesError(
        f"saga.testing: {problem} (from {POSTGRES_VARIABLE}). Start that server, or point "
        f"{POSTGRES_VARIABLE} at one that runs, or unset {POSTGRES_VARIABLE} to have the tests "
        f"start a local Postgres (`pip install 'saga-es[testing]'`)."
    )


def _check_kafka(bootstrap: str) -> None:
    problem = kafka_problem(bootstrap, CHECK_TIMEOUT_S)
    if problem is not None:
        raise ServicesError(
            f"saga.testing: Kafka at {KAFKA_VARIABLE}={bootstrap} is unreachable: {problem}. Start that "
            f"broker, or point {KAFKA_VARIABLE} at one that runs, or unset {KAFKA_VARIABLE} to have "
            "the tests start a local broker (needs java and mvn on PATH)."
        )


def _check_prerequisites(local: LocalServices, *, postgres: bool, kafka: bool) -> None:
    """Before starting anything: name every missing piece at once."""
    problems = []
    if postgres and (missing := local.postgres_missing()):
        problems.append(
            f"Postgres: {POSTGRES_VARIABLE} is not set and a local server cannot start: {missing}"
        )
    if kafka and (missing := local.kafka_missing()):
        problems.append(f"Kafka: {KAFKA_VARIABLE} is not set and a local broker cannot start: {missing}")
    if problems:
        raise ServicesError(
            "saga.testing needs Postgres and Kafka.\n"
            + "\n".join(f"  {p}" for p in problems)
            + f"\nInstall what is missing (the tests then start local services under {local.dirs.state} "
            f"and leave them up), {SET_BOTH}."
        )


def _start(local: LocalServices, *, postgres: bool, kafka: bool, report: Report) -> dict[str, str]:
    """Start the local services asked for; returns their addresses by variable."""
    ups: list[tuple[str, str, Callable[[], str | None], Callable[[], str]]] = []
    if postgres:
        ups.append((POSTGRES_VARIABLE, "Postgres", local.postgres_url, local.postgres_up))
    if kafka:
        ups.append((KAFKA_VARIABLE, "Kafka", local.kafka_bootstrap, local.kafka_up))
    addresses: dict[str, str] = {}
    started: list[str] = []
    for variable, name, running, up in ups:
        if running() is None:
            report(f"saga.testing: starting a local {name} under {local.dirs.state} ...")
            started.append(name)
        try:
            addresses[variable] = up()
        except ServicesError as exc:
            raise ServicesError(
                f"saga.testing: {variable} is not set and the local {name} did not start: {exc}\n"
                f"Fix that (the next run starts it again), {SET_BOTH}."
            ) from None
    where = "" if local.dirs == ServiceDirs.default() else f" --dir {local.dirs.state}"
    if postgres and (hint := local.postgres_restart_hint(f"python -m saga.testing.services{where}")):
        report(f"saga.testing: {hint}")
    if started:
        report(
            f"saga.testing: {' and '.join(started)} started under {local.dirs.state}; they stay up for the "
            f"next runs. Stop them with `python -m saga.testing.services{where} down`."
        )
    return addresses


@contextmanager
def _start_lock(state: Path) -> Iterator[None]:
    """One starter at a time (parallel test processes share the folder)."""
    state.mkdir(parents=True, exist_ok=True)
    with (state / "start.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
