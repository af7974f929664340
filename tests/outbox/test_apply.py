"""Applying records on the real Postgres, without Kafka: the one transaction path and its callers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psycopg
import pytest
from aiokafka.structs import ConsumerRecord
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from eventstore import Database, Refusal, libpq_url
from outbox import ConsumerStats, Delivery, Envelope, MessageRegistry, Outbox
from outbox._apply import Applied, Applier
from outbox._delivery import BatchHandler, Handler, Record, handle_in_turn
from tests.helpers import kafka_headers, wait_for
from tests.outbox.messages import Ping


class CountingRegistry(MessageRegistry):
    """Counts how often a payload is decoded."""

    decoded = 0

    def decode(self, name: str, version: int, payload: str | bytes, where: Callable[[], str]) -> BaseModel:
        self.decoded += 1
        return super().decode(name, version, payload, where)


def counting_registry() -> CountingRegistry:
    registry = CountingRegistry()
    registry.register(Ping, "test.ping")
    return registry


@dataclass
class Fixture:
    database: Database
    outbox: Outbox
    registry: CountingRegistry = field(default_factory=lambda: counting_registry())
    dead: list[tuple[int, str, int]] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)

    def applier(self, handler: Handler, *, max_attempts: int = 2) -> Applier:
        async def dead_letter(record: Record, reason: str, error_type: str, attempts: int) -> bool:
            self.dead.append((int(record.offset), reason, attempts))
            return True

        async def batch(conn: AsyncConnection, deliveries: list[Delivery]) -> None:
            self.batches.append(len(deliveries))
            await handle_in_turn(conn, deliveries)

        async def no_wait(seconds: float) -> None:
            return None

        batch_handler: BatchHandler = batch
        return Applier(
            self.database,
            group_id="g",
            registry=self.registry,
            handlers={"test.ping": handler},
            batch_handler=batch_handler,
            stats=ConsumerStats(),
            dead_letter=dead_letter,
            stopping=lambda: False,
            backoff=no_wait,
            max_attempts=max_attempts,
            retry_backoff_s=0.001,
            retry_max_s=0.01,
        )

    def record(self, offset: int, ping: Ping | None) -> Record:
        """A record as Kafka would hand it over; without a ping, one with no envelope at all."""
        value = b"\x00garbage" if ping is None else ping.model_dump_json().encode()
        headers = [] if ping is None else kafka_headers(self.outbox.envelope(ping))
        return ConsumerRecord("t", 0, offset, 0, 0, b"k", value, None, 1, len(value), headers)

    def deliveries(self, applier: Applier, seqs: Sequence[int]) -> list[Delivery]:
        decoded = [applier.decode(self.record(i, Ping(key="k", seq=s))) for i, s in enumerate(seqs)]
        return [d.result for d in decoded if isinstance(d.result, Delivery)]

    async def applied(self) -> list[tuple[int, int]]:
        async with self.database.connect() as conn:
            rows = await conn.execute(text("SELECT seq, applied FROM effects ORDER BY seq"))
            return [(r.seq, r.applied) for r in rows]

    async def inbox_rows(self) -> int:
        async with self.database.connect() as conn:
            return int((await conn.execute(text("SELECT count(*) FROM inbox"))).scalar_one())


@pytest.fixture
async def fx(database: Database, outbox: Outbox) -> Fixture:
    async with database.begin() as conn:
        await conn.execute(text("CREATE TABLE effects (seq int PRIMARY KEY, applied int NOT NULL)"))
        await conn.execute(text("CREATE TABLE rows (id int PRIMARY KEY)"))
        await conn.execute(text("INSERT INTO rows VALUES (1)"))
    return Fixture(database, outbox)


async def apply_ping(conn: AsyncConnection, message: Ping, envelope: Envelope) -> None:
    await conn.execute(
        text(
            "INSERT INTO effects VALUES (:s, 1) ON CONFLICT (seq) DO UPDATE SET applied = effects.applied + 1"
        ),
        {"s": message.seq},
    )


def failing_on(*seqs: int) -> Handler:
    async def handler(conn: AsyncConnection, message: Ping, envelope: Envelope) -> None:
        if message.seq in seqs:
            raise RuntimeError(f"seq {message.seq} fails")
        await apply_ping(conn, message, envelope)

    return handler


async def test_in_turn_commits_the_deliveries_before_the_one_that_fails(fx: Fixture) -> None:
    applier = fx.applier(failing_on(2))
    applied = await applier.transact(fx.deliveries(applier, range(5)), together=False)
    assert applied.count == 2
    assert repr(applied.failure) == "RuntimeError('seq 2 fails')"
    assert await fx.applied() == [(0, 1), (1, 1)]
    assert await fx.inbox_rows() == 2
    assert applier.stats.handled == 2


async def test_together_is_all_or_nothing(fx: Fixture) -> None:
    applier = fx.applier(failing_on(2))
    applied = await applier.transact(fx.deliveries(applier, range(5)), together=True)
    assert applied.count == 0
    assert repr(applied.failure) == "RuntimeError('seq 2 fails')"
    assert fx.batches == [5]
    assert await fx.applied() == []
    assert await fx.inbox_rows() == 0
    assert applier.stats.handled == 0


async def test_a_message_seen_before_is_skipped_in_either_mode(fx: Fixture) -> None:
    applier = fx.applier(apply_ping)
    first, second = fx.deliveries(applier, [1, 2])
    assert await applier.transact([first, second, first], together=True) == Applied(3)
    assert (applier.stats.handled, applier.stats.duplicates) == (2, 1)
    assert (await applier.transact([second, first], together=False)).count == 2
    assert (applier.stats.handled, applier.stats.duplicates) == (2, 3)
    assert fx.batches == [2]  # the batch handler got each fresh message once
    assert await fx.applied() == [(1, 1), (2, 1)]


async def test_a_partition_is_decoded_once_and_goes_together_then_in_turn_then_together(fx: Fixture) -> None:
    """Offsets 0..5: seq 0; a record with no envelope; seq 2 always fails; seqs 3, 4, 5."""
    applier = fx.applier(failing_on(2), max_attempts=2)
    pings = [Ping(key="k", seq=0), None, *(Ping(key="k", seq=s) for s in (2, 3, 4, 5))]
    decoded = [applier.decode(fx.record(offset, ping)) for offset, ping in enumerate(pings)]
    assert fx.registry.decoded == 5  # the record with no envelope fails before its payload

    assert await applier.apply_partition(decoded) == 6
    assert fx.registry.decoded == 5  # applying, retrying and dead-lettering decode nothing again
    assert fx.dead == [
        (1, "undecodable: header 'message_id' is missing", 0),
        (2, "handler failed after 2 attempt(s): RuntimeError('seq 2 fails')", 2),
    ]
    # [0] together; [2, 3, 4, 5] together fails; 2 fails in turn, alone twice; [3, 4, 5] together.
    assert fx.batches == [1, 4, 3]
    assert await fx.applied() == [(0, 1), (3, 1), (4, 1), (5, 1)]
    assert (applier.stats.handled, applier.stats.retries, applier.stats.dead_lettered) == (4, 1, 2)


async def test_contention_runs_again_and_counts_no_attempt(fx: Fixture, database_url: str) -> None:
    """The handler asks for a row lock another transaction holds, without waiting (55P03):
    with max_attempts=1, counting that as an attempt would dead-letter the record."""

    async def needs_the_row(conn: AsyncConnection, message: Ping, envelope: Envelope) -> None:
        await conn.execute(text("SELECT id FROM rows WHERE id = 1 FOR UPDATE NOWAIT"))
        await apply_ping(conn, message, envelope)

    applier = fx.applier(needs_the_row, max_attempts=1)
    item = applier.decode(fx.record(0, Ping(key="k", seq=7)))
    async with await psycopg.AsyncConnection.connect(libpq_url(database_url)) as other:
        await other.execute("SELECT id FROM rows WHERE id = 1 FOR UPDATE")
        work = asyncio.create_task(applier.apply_record(item))
        await wait_for(lambda: applier.stats.collisions >= 1, 10, "the handler to lose the race")
        await other.commit()
        assert await work
    assert (applier.stats.retries, fx.dead) == (0, [])
    assert await fx.applied() == [(7, 1)]


async def test_a_lost_connection_is_waited_out_and_counts_no_attempt(fx: Fixture) -> None:
    calls = 0

    async def drops_its_connection_once(conn: AsyncConnection, message: Ping, envelope: Envelope) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await conn.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        await apply_ping(conn, message, envelope)

    applier = fx.applier(drops_its_connection_once, max_attempts=1)
    assert await applier.apply_record(applier.decode(fx.record(0, Ping(key="k", seq=7))))
    assert (calls, applier.stats.retries, fx.dead) == (2, 0, [])
    assert await fx.applied() == [(7, 1)]


async def test_a_refusal_is_dead_lettered_at_once(fx: Fixture) -> None:
    class NoSuchCustomer(Refusal):
        pass

    async def refuses(conn: AsyncConnection, message: Ping, envelope: Envelope) -> None:
        raise NoSuchCustomer("no such customer")

    applier = fx.applier(refuses, max_attempts=5)
    assert await applier.apply_record(applier.decode(fx.record(3, Ping(key="k", seq=7))))
    assert fx.dead == [(3, "handler failed after 1 attempt(s): NoSuchCustomer('no such customer')", 1)]
    assert applier.stats.retries == 0


async def test_a_bad_statement_is_dead_lettered_at_once(fx: Fixture) -> None:
    """The one default (`eventstore.is_retriable`): a statement that breaks a constraint does
    the same on every attempt."""

    async def inserts_a_duplicate(conn: AsyncConnection, message: Ping, envelope: Envelope) -> None:
        await conn.execute(text("INSERT INTO rows VALUES (1)"))

    applier = fx.applier(inserts_a_duplicate, max_attempts=5)
    assert await applier.apply_record(applier.decode(fx.record(3, Ping(key="k", seq=7))))
    [(offset, reason, attempts)] = fx.dead
    assert (offset, attempts) == (3, 1)
    assert reason.startswith("handler failed after 1 attempt(s): IntegrityError(")
    assert applier.stats.retries == 0


async def test_a_failure_of_no_known_kind_is_retried_up_to_max_attempts(fx: Fixture) -> None:
    applier = fx.applier(failing_on(7), max_attempts=3)
    assert await applier.apply_record(applier.decode(fx.record(3, Ping(key="k", seq=7))))
    assert fx.dead == [(3, "handler failed after 3 attempt(s): RuntimeError('seq 7 fails')", 3)]
    assert applier.stats.retries == 2
