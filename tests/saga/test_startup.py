"""Issue 13 items 5 and 6: how `saga worker` and `saga participant` start.

Kafka away at start is an outage: the process waits it out with a line when the wait begins
and one when it ends, answers SIGTERM meanwhile, and joins its group once the broker is back.
Postgres away (a refused connection) is waited out the same way. A database that is wrong
(no such database, no schema) is a configuration mistake: exit 1 at once with a message
naming it, and the consumer group never sees the process. The processes run as subprocesses.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from sqlalchemy.engine import make_url

from eventstore import libpq_url
from saga import Topics
from tests.helpers import wait_for
from tests.proxy import PostgresProxy

ROOT = Path(__file__).resolve().parents[2]
# The order app on topics of the test's own: ORDERS_RUN is its topic prefix.
APP = "examples.orders.run_app:app"
# Long enough for a loaded machine; a test waits on conditions, never on this much time.
DEADLINE_S = 90.0


class SagaProcess:
    """`python -m saga --app APP <args>` with its output (stdout and stderr) read line by line."""

    def __init__(self, args: tuple[str, ...], env: dict[str, str]) -> None:
        self.args = args
        self.env = env
        self.lines: list[str] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> SagaProcess:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "saga",
            "--app",
            APP,
            *self.args,
            cwd=ROOT,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self._proc is not None
        assert self._proc.stdout is not None
        async for line in self._proc.stdout:
            self.lines.append(line.decode().rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def saw(self, text: str, what: str) -> None:
        await wait_for(lambda: text in self.output, DEADLINE_S, f"{what}; output so far:\n{self.output}")

    async def exited(self) -> int:
        assert self._proc is not None
        assert self._reader is not None
        code = await asyncio.wait_for(self._proc.wait(), DEADLINE_S)
        await asyncio.wait_for(self._reader, DEADLINE_S)
        return code

    async def terminate(self) -> int:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGTERM)
        return await self.exited()

    async def kill(self) -> None:
        if self.running():
            assert self._proc is not None
            self._proc.kill()
            await self._proc.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


Spawn = Callable[..., Any]


@pytest.fixture
def prefix() -> str:
    return f"start{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def spawn(prefix: str) -> AsyncIterator[Spawn]:
    """`await spawn("worker", database_url=..., kafka=...)`: a started SagaProcess, killed at the
    end of the test if it still runs."""
    started: list[SagaProcess] = []

    async def start(*args: str, database_url: str, kafka: str) -> SagaProcess:
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": kafka,
            "ORDERS_RUN": prefix,
        }
        env.pop("SAGA_APP", None)
        env.pop("SAGA_TOPIC_PREFIX", None)
        process = await SagaProcess(args, env).start()
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            await process.kill()


def closed_port() -> int:
    """A loopback port nothing listens on (it was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def group_state(bootstrap: str, group: str) -> tuple[str, int]:
    """The consumer group's state and member count ("Dead", 0 for a group that never existed)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described: list[Any] = []

        async def asked() -> bool:
            try:  # the group coordinator may not be ready on a fresh broker
                described.append(await admin.describe_consumer_groups([group]))
            except KafkaError:
                return False
            return True

        await wait_for(asked, DEADLINE_S, f"the broker to describe the group {group}")
        _, _, state, _, _, members = described[-1][0].groups[0]
        return str(state), len(members)
    finally:
        await admin.close()


async def joined(bootstrap: str, group: str) -> bool:
    return (await group_state(bootstrap, group))[1] == 1


def group_of(command: tuple[str, ...], prefix: str) -> str:
    topics = Topics(prefix)
    return topics.orchestrator_group() if command == ("worker",) else topics.participant_group(command[1])


def assert_no_traceback(process: SagaProcess) -> None:
    assert "Traceback" not in process.output, process.output


WORKERS = [("worker",), ("participant", "customers")]


@pytest.mark.slow
@pytest.mark.parametrize("command", WORKERS, ids=["worker", "participant"])
async def test_item5_waits_out_kafka_down_at_start(
    command: tuple[str, ...], spawn: Spawn, database_url: str, private_broker: Any, prefix: str
) -> None:
    """Started while its broker is down: it stays up, says so once, and joins its group once
    the broker is back."""
    bootstrap = private_broker.bootstrap()
    await asyncio.to_thread(private_broker.down)
    process = await spawn(*command, database_url=database_url, kafka=bootstrap)
    await process.saw(f"Kafka at {bootstrap} is unreachable", "the line saying Kafka is away")
    assert process.running(), process.output

    await asyncio.to_thread(private_broker.up)
    await process.saw(f"Kafka at {bootstrap} is reachable again", "the line saying Kafka is back")
    group = group_of(command, prefix)
    await wait_for(lambda: joined(bootstrap, group), DEADLINE_S, f"the process to join {group}")

    assert await process.terminate() == 0, process.output
    assert_no_traceback(process)
    # Tried every 2 s: said once when the wait began (and once a minute after, "still").
    began = [line for line in process.lines if "is unreachable" in line]
    assert len(began) == 1, process.output


@pytest.mark.parametrize("command", [*WORKERS, ("relay",)], ids=["worker", "participant", "relay"])
async def test_item5_sigterm_while_waiting_for_kafka_exits_0(
    command: tuple[str, ...], spawn: Spawn, database_url: str
) -> None:
    kafka = f"127.0.0.1:{closed_port()}"
    process = await spawn(*command, database_url=database_url, kafka=kafka)
    await process.saw(f"Kafka at {kafka} is unreachable", "the line saying Kafka is away")
    assert await process.terminate() == 0, process.output
    assert_no_traceback(process)


@pytest.mark.parametrize("command", WORKERS, ids=["worker", "participant"])
async def test_item6_waits_out_postgres_down_at_start(
    command: tuple[str, ...], spawn: Spawn, database_url: str, kafka_bootstrap: str, prefix: str
) -> None:
    """Postgres refusing connections at start is an outage: waited out like Kafka's, and the
    group is joined only once Postgres answers."""
    proxy = PostgresProxy(database_url)
    await proxy.start()
    await proxy.cut()
    try:
        process = await spawn(*command, database_url=proxy.url, kafka=kafka_bootstrap)
        await process.saw("is unreachable", "the line saying Postgres is away")
        assert (
            f"Postgres at postgresql://{make_url(proxy.url).username}@127.0.0.1:{proxy.port}"
            in process.output
        )
        group = group_of(command, prefix)
        assert (await group_state(kafka_bootstrap, group))[1] == 0, "joined before Postgres answered"

        await proxy.restore()
        await process.saw("is reachable again", "the line saying Postgres is back")
        await wait_for(lambda: joined(kafka_bootstrap, group), DEADLINE_S, f"the process to join {group}")
        assert await process.terminate() == 0, process.output
        assert_no_traceback(process)
    finally:
        await proxy.cut()


def _empty_database(database_url: str) -> str:
    """A database that exists and has no schema (dropped when the test's database is)."""
    name = f"{make_url(database_url).database}_empty"
    with psycopg.connect(libpq_url(os.environ["DATABASE_URL"]), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return make_url(database_url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture
def empty_database(database_url: str) -> Iterator[str]:
    url = _empty_database(database_url)
    yield url
    with psycopg.connect(libpq_url(os.environ["DATABASE_URL"]), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {make_url(url).database} WITH (FORCE)")


@pytest.mark.parametrize("command", WORKERS, ids=["worker", "participant"])
async def test_item6_participant_with_wrong_database_url_fails_before_joining_group(
    command: tuple[str, ...], spawn: Spawn, database_url: str, kafka_bootstrap: str, prefix: str
) -> None:
    """A misspelt database name: exit 1 naming it, and the group never had the process."""
    missing = make_url(database_url).set(database="no_such_database_here")
    url = missing.render_as_string(hide_password=False)
    process = await spawn(*command, database_url=url, kafka=kafka_bootstrap)
    assert await process.exited() == 1, process.output
    assert 'database "no_such_database_here" does not exist' in process.output
    assert "refused the connection" in process.output
    assert_no_traceback(process)
    assert await group_state(kafka_bootstrap, group_of(command, prefix)) == ("Dead", 0)


@pytest.mark.parametrize("command", WORKERS, ids=["worker", "participant"])
async def test_item6_participant_on_a_database_without_schema_fails_before_joining_group(
    command: tuple[str, ...], spawn: Spawn, empty_database: str, kafka_bootstrap: str, prefix: str
) -> None:
    process = await spawn(*command, database_url=empty_database, kafka=kafka_bootstrap)
    assert await process.exited() == 1, process.output
    assert "database schema is behind" in process.output
    assert "saga db upgrade" in process.output
    assert make_url(empty_database).database in process.output  # which database
    assert_no_traceback(process)
    assert await group_state(kafka_bootstrap, group_of(command, prefix)) == ("Dead", 0)


@pytest.mark.slow
async def test_item5_participant_says_when_it_loses_kafka_and_when_it_is_back(
    spawn: Spawn, database_url: str, private_broker: Any, prefix: str
) -> None:
    """Kafka going away from a running participant: its own line, and aiokafka's errors (a
    few thousand lines a minute unthrottled) cut to one a minute of each kind."""
    bootstrap = private_broker.bootstrap()
    process = await spawn("participant", "customers", database_url=database_url, kafka=bootstrap)
    group = group_of(("participant", "customers"), prefix)
    await wait_for(lambda: joined(bootstrap, group), DEADLINE_S, f"the participant to join {group}")

    await asyncio.to_thread(private_broker.down)
    try:
        await process.saw(f"Kafka at {bootstrap} is unreachable", "the line saying Kafka is away")
    finally:
        await asyncio.to_thread(private_broker.up)
    await process.saw(f"Kafka at {bootstrap} is reachable again", "the line saying Kafka is back")
    assert await process.terminate() == 0, process.output
    assert_no_traceback(process)

    start = next(i for i, line in enumerate(process.lines) if "is unreachable" in line)
    end = next(i for i, line in enumerate(process.lines) if "is reachable again" in line)
    during = process.lines[start : end + 1]
    assert len(during) < 40, "\n".join(during)


async def test_item6_relay_with_wrong_database_url_exits_1(
    spawn: Spawn, database_url: str, kafka_bootstrap: str
) -> None:
    url = make_url(database_url).set(database="no_such_database_here").render_as_string(hide_password=False)
    process = await spawn("relay", database_url=url, kafka=kafka_bootstrap)
    assert await process.exited() == 1, process.output
    assert 'database "no_such_database_here" does not exist' in process.output
    assert_no_traceback(process)


@pytest.mark.parametrize("command", [*WORKERS, ("relay",)], ids=["worker", "participant", "relay"])
async def test_item6_sigterm_while_waiting_for_postgres_exits_0(
    command: tuple[str, ...], spawn: Spawn, kafka_bootstrap: str
) -> None:
    port = closed_port()
    url = f"postgresql://someone:s3cret@127.0.0.1:{port}/db"
    process = await spawn(*command, database_url=url, kafka=kafka_bootstrap)
    await process.saw(
        f"Postgres at postgresql://someone:***@127.0.0.1:{port}/db is unreachable",
        "the line saying Postgres is away",
    )
    assert await process.terminate() == 0, process.output
    assert_no_traceback(process)
    assert "s3cret" not in process.output
