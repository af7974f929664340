"""SAGA_LOG_FORMAT=json: every line a worker process writes is one JSON object, and the lines
about a saga (the runtime's and the user's own) carry its id, step, attempt and trace id."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from click.testing import CliRunner
from opentelemetry.sdk.trace import TracerProvider

from eventstore import Database
from outbox import Envelope, current_log_context, log_context, log_context_of
from saga import Topics
from saga._cli import COMMAND_MODULES
from saga._cli_base import cli
from saga._logs import JsonFormatter
from tests.helpers import wait_for
from tests.observability.log_app import LoggedSaga, Order
from tests.observability.log_app import app as log_app

ROLES = {"relay": ["relay"], "worker": ["worker"], "billing": ["participant", "billing"]}
HEX = re.compile(r"[0-9a-f]+")


# --- the formatter alone ------------------------------------------------------------------


def record(message: str, *args: Any, exc: bool = False, **extra: Any) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("naïve café ✗")
        except ValueError:
            exc_info = sys.exc_info()
    made = logging.LogRecord("shop.orders", logging.WARNING, __file__, 7, message, args, exc_info)
    made.__dict__.update(extra)
    return made


@pytest.mark.pure
def test_a_line_has_the_message_its_context_its_extra_fields_and_the_traceback() -> None:
    with log_context(saga_id="s-1", step="charge", attempt=2, trace_id="ab" * 16), log_context(step="note"):
        text = JsonFormatter().format(record("order %s: %s", "o-1", "Zürich → 東京 ✓", exc=True, amount=3))
    assert "\n" not in text  # one line, the traceback's newlines escaped
    line = orjson.loads(text)
    assert line["time"].endswith("+00:00")
    assert line["time"][10] == "T"
    assert (line["level"], line["logger"], line["message"]) == (
        "WARNING",
        "shop.orders",
        "order o-1: Zürich → 東京 ✓",
    )
    assert (line["saga_id"], line["step"], line["attempt"], line["trace_id"]) == ("s-1", "note", 2, "ab" * 16)
    assert line["amount"] == 3
    assert line["exception"].startswith("Traceback")
    assert "ValueError: naïve café ✗" in line["exception"]


@pytest.mark.pure
def test_the_context_is_gone_after_its_block_and_odd_extras_still_make_json() -> None:
    with log_context(saga_id="s-1", attempt=None):
        assert dict(current_log_context()) == {"saga_id": "s-1"}
    assert dict(current_log_context()) == {}
    line = orjson.loads(
        JsonFormatter().format(record("plain", where=Path("/tmp"), ids={1: uuid.UUID(int=1)}))
    )
    assert "saga_id" not in line
    assert "exception" not in line
    assert line["where"] == "/tmp"
    assert line["ids"] == {"1": str(uuid.UUID(int=1))}


@pytest.mark.pure
def test_a_message_gives_its_trace_else_the_current_span_does() -> None:
    message = Envelope(
        message_id=uuid.uuid4(),
        message_type="logs.charge",
        schema_version=1,
        saga_id="s-2",
        attempt=3,
        traceparent=f"00-{'cd' * 16}-{'ef' * 8}-01",
    )
    tracer = TracerProvider().get_tracer(__name__)  # not the global provider: no state left behind
    with tracer.start_as_current_span("decide") as span:
        with log_context_of(message):
            from_message = dict(current_log_context())
        from_span = dict(current_log_context())
    assert from_message["trace_id"] == "cd" * 16
    assert (from_message["span_id"], from_message["saga_id"], from_message["attempt"]) == ("ef" * 8, "s-2", 3)
    assert from_span == {
        "trace_id": format(span.get_span_context().trace_id, "032x"),
        "span_id": format(span.get_span_context().span_id, "016x"),
    }
    with log_context_of(message.model_copy(update={"traceparent": "00-garbage"})):
        assert "trace_id" not in current_log_context()


def test_a_bad_log_format_names_the_variable() -> None:
    assert COMMAND_MODULES  # importing them adds the commands to the group
    result = CliRunner().invoke(
        cli, ["relay"], env={"DATABASE_URL": "postgresql://u@localhost/x", "SAGA_LOG_FORMAT": "xml"}
    )
    assert result.exit_code != 0
    assert "SAGA_LOG_FORMAT" in result.output
    assert "'xml'" in result.output


# --- worker processes ---------------------------------------------------------------------


@pytest.fixture
async def topics(kafka_bootstrap: str) -> AsyncIterator[Topics]:
    """The app's topics under a prefix of this test's own."""
    names = Topics(f"logs_{uuid.uuid4().hex[:8]}")
    wanted = [names.commands("billing"), names.replies(LoggedSaga.name)]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1) for t in wanted])
        yield names
    finally:
        ours = [t for t in await admin.list_topics() if t.startswith(f"{names.prefix}.")]
        await admin.delete_topics(ours)
        await admin.close()


class Processes:
    """The relay, the orchestrator worker and the billing participant, with JSON logs; each
    one's stdout and stderr go to its file in `logs`."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.logs = {role: folder / f"{role}.log" for role in ROLES}
        self.running: list[subprocess.Popen[bytes]] = []
        for role, args in ROLES.items():
            with self.logs[role].open("wb") as out:
                command = [sys.executable, "-m", "saga", *args]
                self.running.append(subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT))

    def stop(self) -> None:
        """SIGTERM each, and wait: then their files are complete."""
        for process in self.running:
            process.send_signal(signal.SIGTERM)
        for process in self.running:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.running.clear()


@pytest.fixture
def processes(database_url: str, kafka_bootstrap: str, topics: Topics, tmp_path: Path) -> Iterator[Processes]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "SAGA_APP": "tests.observability.log_app:app",
        "LOG_APP_PREFIX": topics.prefix,
        "SAGA_LOG_FORMAT": "json",
        "SAGA_LOG_LEVEL": "INFO",
        "SAGA_RELAY_POLL_INTERVAL_S": "0.2",
    }
    running = Processes(env, tmp_path)
    try:
        yield running
    finally:
        running.stop()


def lines_of(path: Path) -> list[dict[str, Any]]:
    """Each line as JSON; a line that is not fails the test, naming the file and the line."""
    parsed = []
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            parsed.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            pytest.fail(f"{path.name} line {number} is not JSON: {line[:300]!r}")
    return parsed


async def command_traces(bootstrap: str, topic: str, count: int) -> dict[str, str]:
    """saga id -> the trace id in its command's traceparent header, as Kafka has it."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    found: dict[str, str] = {}
    try:
        async with asyncio.timeout(30):
            while len(found) < count:
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    for r in records:
                        headers = {name: value.decode() for name, value in r.headers}
                        found[headers["saga_id"]] = headers["traceparent"].split("-")[1]
    finally:
        await consumer.stop()
    return found


def about(lines: list[dict[str, Any]], saga_id: str, **fields: Any) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("saga_id") == saga_id and fields.items() <= line.items()]


async def test_lines_about_a_saga_carry_its_id_step_attempt_and_trace(
    database_url: str, kafka_bootstrap: str, topics: Topics, processes: Processes
) -> None:
    app = log_app.with_topic_prefix(topics.prefix)
    async with Database(database_url) as database:
        orchestrator = app.orchestrator(database)
        async with database.engine.begin() as conn:
            ok = await orchestrator.start(conn, LoggedSaga, Order(order="ok-1"))
            failing = await orchestrator.start(conn, LoggedSaga, Order(order="fail-1"))
        assert (await orchestrator.wait(ok, timeout_s=60)).status == "completed"

        def dead_lettered() -> bool:
            return bool(about(lines_of(processes.logs["billing"]), failing, level="ERROR"))

        await wait_for(dead_lettered, 60, "the failing saga's command to be dead-lettered")
    trace = await command_traces(kafka_bootstrap, topics.commands("billing"), 2)
    processes.stop()
    logs = {role: lines_of(path) for role, path in processes.logs.items()}  # every line is JSON
    assert all(logs.values())

    saga = {"saga_type": "LoggedSaga", "step": "charge", "attempt": 1}
    # The user's handler, in the participant
    # (more than once: its first tries shared a rolled-back transaction with the failing one)
    charging = about(logs["billing"], ok, logger="log_app.billing", message="charging order ok-1", **saga)
    assert charging
    assert {line["trace_id"] for line in charging} == {trace[ok]}
    assert all(HEX.fullmatch(line["span_id"]) for line in charging)
    # The user's local step, in the worker (it runs on the reply: same trace).
    [noting] = about(logs["worker"], ok, logger="log_app.note", step="note", attempt=1)
    assert noting["message"] == "noting order ok-1 ✓"
    assert noting["trace_id"] == trace[ok]
    # The runtime's retries and dead letter of the failing saga's command.
    retries = about(logs["billing"], failing, level="WARNING", logger="outbox._apply", **saga)
    [dead] = about(logs["billing"], failing, level="ERROR", **saga)
    assert retries
    assert "attempt 1 failed" in retries[0]["message"]
    assert "CardDeclinedByTest" in dead["message"]
    assert {line["trace_id"] for line in [*retries, dead]} == {trace[failing]}
    assert trace[ok] != trace[failing]
    # A line about the whole fetch, logged after its handlers ran, is about no saga.
    [together] = [line for line in logs["billing"] if "failed together" in line["message"]]
    assert "saga_id" not in together
