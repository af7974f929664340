"""The consumer runtime: effectively once through the inbox, poison to the dead-letter topic."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventstore import Database, libpq_url
from outbox import Consumer, Delivery, Envelope, MessageRegistry, Outbox, Relay
from outbox._broker import close_producer
from outbox._delivery import handle_in_turn
from tests.conftest import NewTopicFactory
from tests.helpers import Collector, kafka_headers, wait_for
from tests.outbox.messages import Ping, Unhandled


class CrashBeforeDelete(Relay):
    """A relay that dies after Kafka acknowledged the batch and before it deleted the rows."""

    async def delete(self, conn: psycopg.AsyncConnection[Any], ids: list[int]) -> None:
        raise RuntimeError("killed between publish and delete")


async def apply_ping(conn: AsyncConnection, message: Ping, envelope: Envelope) -> None:
    await conn.execute(
        text(
            "INSERT INTO effects (key, seq, applied) VALUES (:k, :s, 1) "
            "ON CONFLICT (key, seq) DO UPDATE SET applied = effects.applied + 1"
        ),
        {"k": message.key, "s": message.seq},
    )


async def send_pings(
    bootstrap: str, outbox: Outbox, topic: str, pings: Sequence[Ping], partition: int | None = None
) -> None:
    """Produce pings straight to Kafka, each with the headers the relay would give it."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for ping in pings:
            await producer.send(
                topic,
                ping.model_dump_json().encode(),
                key=ping.key.encode(),
                partition=partition,
                headers=kafka_headers(outbox.envelope(ping)),
            )
        await producer.flush()
    finally:
        await producer.stop()


async def test_resent_batch_takes_effect_once(
    effects: AsyncEngine,
    database: Database,
    database_url: str,
    kafka_bootstrap: str,
    outbox: Outbox,
    registry: MessageRegistry,
    new_topic: NewTopicFactory,
) -> None:
    engine = effects
    topic = await new_topic("effects")
    async with engine.begin() as conn:
        for seq in range(5):
            await outbox.put(conn, Ping(key="k", seq=seq), topic=topic, key="k")

    crashing = CrashBeforeDelete(database, kafka_bootstrap)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        async with database.session() as conn:
            with pytest.raises(RuntimeError, match="killed between publish and delete"):
                await crashing.publish_batch(conn, producer)
    finally:
        await close_producer(producer, 5)
    assert (await crashing.lag()).pending == 5  # published, but still in the outbox

    relay = Relay(database, kafka_bootstrap, poll_interval_s=0.1)
    consumer = Consumer(
        database,
        kafka_bootstrap,
        group_id=f"effects-{topic}",
        topics=[topic],
        registry=registry,
        handlers={Ping: apply_ping},
    )
    await relay.start()
    await consumer.start()
    try:
        await wait_for(
            lambda: consumer.stats.handled + consumer.stats.duplicates == 10, 60, "both copies of 5"
        )
    finally:
        await consumer.stop()
        await relay.stop()
    async with engine.connect() as conn:
        applied = (await conn.execute(text("SELECT seq, applied FROM effects ORDER BY seq"))).all()
        inbox = (
            await conn.execute(
                text("SELECT count(*) FROM inbox WHERE consumer_group = :g"), {"g": f"effects-{topic}"}
            )
        ).scalar_one()
    assert [tuple(r) for r in applied] == [(s, 1) for s in range(5)]
    assert inbox == 5
    assert (consumer.stats.handled, consumer.stats.duplicates) == (5, 5)


async def test_poison_goes_to_the_dead_letter_topic_and_the_next_message_is_handled(
    effects: AsyncEngine,
    database: Database,
    kafka_bootstrap: str,
    outbox: Outbox,
    registry: MessageRegistry,
    new_topic: NewTopicFactory,
) -> None:
    engine = effects
    topic = await new_topic("poison")
    good = outbox.envelope(Ping(key="k", seq=1))
    unhandled = outbox.envelope(Unhandled(note="nobody listens"))
    bad_payload = outbox.envelope(Ping(key="k", seq=2))
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"\x00garbage", key=b"k")  # no envelope at all
        await producer.send_and_wait(
            topic, b'{"key": "k", "seq": "two"}', key=b"k", headers=kafka_headers(bad_payload)
        )
        await producer.send_and_wait(topic, b'{"note": "x"}', key=b"k", headers=kafka_headers(unhandled))
        await producer.send_and_wait(
            topic, Ping(key="k", seq=1).model_dump_json().encode(), key=b"k", headers=kafka_headers(good)
        )
    finally:
        await producer.stop()

    async def always_fails(conn: AsyncConnection, message: Ping, envelope: Envelope) -> None:
        if message.seq == 99:
            raise RuntimeError("the handler keeps failing")
        await apply_ping(conn, message, envelope)

    consumer = Consumer(
        database,
        kafka_bootstrap,
        group_id=f"poison-{topic}",
        topics=[topic],
        registry=registry,
        handlers={Ping: always_fails},
        max_attempts=3,
        retry_backoff_s=0.01,
    )
    await consumer.start()
    try:
        await wait_for(lambda: consumer.stats.handled == 1, 30, "the good message")
        # A message whose handler always fails, after the good one was handled.
        await send_pings(kafka_bootstrap, outbox, topic, [Ping(key="k", seq=99)])
        await wait_for(lambda: consumer.stats.dead_lettered == 4, 30, "four dead letters")
    finally:
        await consumer.stop()

    async with Collector(kafka_bootstrap, [f"{topic}.dlq"]) as dead:
        await wait_for(lambda: len(dead.records) == 4, 30, "the dead-letter records")
    reasons = [dead.headers(i)["dlq_reason"] for i in range(4)]
    assert reasons[0] == "undecodable: header 'message_id' is missing"
    assert reasons[1].startswith("undecodable: invalid payload for message type 'test.ping' at ")
    assert f"{topic}[0]@1" in reasons[1]
    assert (
        reasons[2]
        == f"undecodable: no handler for message type 'test.unhandled' in consumer group 'poison-{topic}'"
    )
    assert reasons[3] == "handler failed after 3 attempt(s): RuntimeError('the handler keeps failing')"
    assert dead.records[0].value == b"\x00garbage"
    assert dead.headers(3)["dlq_attempts"] == "3"
    assert dead.headers(3)["dlq_topic"] == topic
    assert consumer.stats.retries == 2
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT seq FROM effects"))).scalars().all() == [1]


async def test_a_fetch_is_handled_together_and_a_failing_record_is_isolated(
    effects: AsyncEngine,
    database: Database,
    kafka_bootstrap: str,
    outbox: Outbox,
    registry: MessageRegistry,
    new_topic: NewTopicFactory,
) -> None:
    """20 records in one partition: handled in batches; when one fails inside a batch, the
    batch is rolled back and redone record by record, so the others are applied exactly once."""
    engine = effects
    topic = await new_topic("together")
    await send_pings(kafka_bootstrap, outbox, topic, [Ping(key="k", seq=seq) for seq in range(20)])

    calls: dict[int, int] = {}

    async def flaky(conn: AsyncConnection, message: Ping, envelope: Envelope) -> None:
        calls[message.seq] = calls.get(message.seq, 0) + 1
        if message.seq == 7 and calls[7] <= 2:
            raise RuntimeError("seq 7 fails twice, then works")
        if message.seq == 13:
            raise RuntimeError("seq 13 always fails")
        await apply_ping(conn, message, envelope)

    batch_sizes: list[int] = []

    async def batch(conn: AsyncConnection, deliveries: list[Delivery]) -> None:
        batch_sizes.append(len(deliveries))
        await handle_in_turn(conn, deliveries)

    consumer = Consumer(
        database,
        kafka_bootstrap,
        group_id=f"together-{topic}",
        topics=[topic],
        registry=registry,
        handlers={Ping: flaky},
        batch_handler=batch,
        max_attempts=2,
        retry_backoff_s=0.01,
    )
    await consumer.start()
    try:
        await wait_for(
            lambda: consumer.stats.handled == 19 and consumer.stats.dead_lettered == 1,
            30,
            "19 applied, 1 dead",
        )
    finally:
        await consumer.stop()
    async with engine.connect() as conn:
        applied = (await conn.execute(text("SELECT seq, applied FROM effects ORDER BY seq"))).all()
    assert [tuple(r) for r in applied] == [(s, 1) for s in range(20) if s != 13]
    assert max(batch_sizes) > 1, batch_sizes
    assert calls[7] == 3
    assert consumer.stats.duplicates == 0


async def test_a_batch_that_loses_a_deadlock_runs_again_and_is_not_a_failure(
    effects: AsyncEngine,
    database: Database,
    kafka_bootstrap: str,
    outbox: Outbox,
    registry: MessageRegistry,
    new_topic: NewTopicFactory,
    database_url: str,
) -> None:
    """The handler locks row 1 then waits for row 2, which another transaction holds while it
    waits for row 1: Postgres picks the handler's transaction as the victim (its
    deadlock_timeout is the shorter). The batch runs again: applied once, no retry counted,
    nothing dead-lettered."""
    engine = effects
    topic = await new_topic("deadlock")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE rows (id int PRIMARY KEY, v int NOT NULL)"))
        await conn.execute(text("INSERT INTO rows VALUES (1, 0), (2, 0)"))

    async def both_rows(conn: AsyncConnection, message: Ping, envelope: Envelope) -> None:
        await conn.execute(text("UPDATE rows SET v = v + 1 WHERE id = 1"))
        await conn.execute(text("UPDATE rows SET v = v + 1 WHERE id = 2"))
        await apply_ping(conn, message, envelope)

    other = await psycopg.AsyncConnection.connect(libpq_url(database_url))
    consumer = Consumer(
        database,
        kafka_bootstrap,
        group_id=f"deadlock-{topic}",
        topics=[topic],
        registry=registry,
        handlers={Ping: both_rows},
        slow_batch_s=60,  # the lock wait is not to be taken for a slow handler here
    )
    try:
        await other.execute("SET deadlock_timeout = '30s'")
        await other.execute("UPDATE rows SET v = v + 1 WHERE id = 2")
        await consumer.start()
        await send_pings(kafka_bootstrap, outbox, topic, [Ping(key="k", seq=1)])

        async def handler_waits() -> bool:
            async with engine.connect() as conn:
                waiting = await conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock' AND query LIKE 'UPDATE rows%'"
                    )
                )
                return bool(waiting.scalar_one())

        await wait_for(handler_waits, 30, "the handler to wait for row 2")
        await other.execute("UPDATE rows SET v = v + 1 WHERE id = 1")  # closes the cycle
        await other.commit()
        await wait_for(lambda: consumer.stats.handled == 1, 30, "the batch to run again and pass")
    finally:
        try:
            await consumer.stop()
        finally:
            await other.close()  # even when stopping failed: never an open connection left behind
    assert consumer.stats.collisions >= 1
    assert (consumer.stats.retries, consumer.stats.dead_lettered) == (0, 0)
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT id, v FROM rows ORDER BY id"))).all()
        applied = (await conn.execute(text("SELECT applied FROM effects"))).scalars().all()
    assert [tuple(r) for r in rows] == [(1, 2), (2, 2)]
    assert applied == [1]


async def test_a_slow_handler_holds_up_its_own_key_and_no_other(
    effects: AsyncEngine,
    database: Database,
    kafka_bootstrap: str,
    outbox: Outbox,
    registry: MessageRegistry,
    new_topic: NewTopicFactory,
) -> None:
    """Partition 0 starts with a handler (key k0) that does not return until the test lets
    it. The other key of partition 0, and partition 1, are applied meanwhile; k0's later
    records wait for it. Then everything is applied exactly once, k0's in order."""
    engine = effects
    topic = await new_topic("slow", partitions=2)
    release = asyncio.Event()
    order: list[int] = []

    async def blocking(conn: AsyncConnection, message: Ping, envelope: Envelope) -> None:
        if message.seq == 0:
            await release.wait()
        await apply_ping(conn, message, envelope)
        order.append(message.seq)

    first = [Ping(key="k0", seq=0), Ping(key="j0", seq=3), Ping(key="k0", seq=1), Ping(key="j0", seq=4)]
    await send_pings(kafka_bootstrap, outbox, topic, [*first, Ping(key="k0", seq=2)], partition=0)
    await send_pings(
        kafka_bootstrap, outbox, topic, [Ping(key="k1", seq=s) for s in range(10, 15)], partition=1
    )

    consumer = Consumer(
        database,
        kafka_bootstrap,
        group_id=f"slow-{topic}",
        topics=[topic],
        registry=registry,
        handlers={Ping: blocking},
        slow_batch_s=0.2,
    )

    async def applied() -> list[int]:
        async with engine.connect() as conn:
            return list((await conn.execute(text("SELECT seq FROM effects ORDER BY seq"))).scalars())

    await consumer.start()
    try:
        others = [3, 4, 10, 11, 12, 13, 14]
        await wait_for(
            lambda: _holds(applied(), lambda seqs: seqs == others), 20, "all but key k0 while it waits"
        )
        release.set()
        await wait_for(lambda: _holds(applied(), lambda seqs: len(seqs) == 10), 30, "everything")
    finally:
        release.set()  # a failed wait must not leave the handler, and so the stop, hanging
        await consumer.stop()
    async with engine.connect() as conn:
        counts = (await conn.execute(text("SELECT seq, applied FROM effects ORDER BY seq"))).all()
    assert [tuple(r) for r in counts] == [(s, 1) for s in [0, 1, 2, 3, 4, 10, 11, 12, 13, 14]]
    assert [s for s in order if s < 3] == [0, 1, 2]
    assert consumer.stats.slow_batches >= 1
    assert consumer.stats.dead_lettered == 0
    # The lanes committed their offsets: a new member of the group starts after everything.
    probe = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=f"slow-{topic}", enable_auto_commit=False
    )
    await probe.start()
    try:
        committed = [await probe.committed(TopicPartition(topic, p)) for p in (0, 1)]
    finally:
        await probe.stop()
    assert committed == [5, 5]


async def _holds(value: Awaitable[list[int]], check: Callable[[list[int]], bool]) -> bool:
    return check(await value)
