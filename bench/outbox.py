"""Outbox relay benchmark: the relay against a plain aiokafka producer, same broker, same run.

    python bench/outbox.py          (DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS set; `make bench` does it)

Prints a table, then one JSON line with the headline figures. Each measurement uses a fresh
database and a fresh topic of 4 partitions; all are dropped or deleted at the end.

- Relay throughput: N messages are put into the outbox first (`Outbox.put`, many per
  transaction), then a `Relay` is started; timed from `relay.start()` until the outbox table
  is empty, so the relay's own start (connections, leader lock, producer start) is inside the
  time. Run once per batch size; the best is reported.
- Raw baseline: a plain `AIOKafkaProducer` with the relay's producer settings (acks="all",
  enable_idempotence=True, linger_ms=1), already started, sending the same N values with the
  same keys and headers, all prepared in memory beforehand: `await producer.send(...)` for
  every record, then every delivery future awaited. No Postgres and no (de)serialization: the
  ceiling for one producer in one process. Best of two runs.
- Idle latency: with the relay running and idle (poll interval 1 s, so only LISTEN/NOTIFY
  makes it fast), single-message transactions one at a time, ~20 ms apart; each is the time
  from the commit returning to a consumer, positioned at the end beforehand, receiving it.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._scratch import ScratchDatabase
from eventstore import Database, create_engine
from outbox import Envelope, MessageRegistry, Outbox, Outgoing, Relay
from saga import all_migrations

MESSAGES = 20_000
KEYS = 100
PARTITIONS = 4
BATCH_SIZES = (500, 1000)
PUTS_PER_TRANSACTION = 500
RAW_ROUNDS = 2
LATENCY_SAMPLES = 200
LATENCY_WARMUP = 5  # unmeasured round trips first: producer metadata, consumer fetch session
LATENCY_SPACING_S = 0.02
DEADLINE_S = 60.0  # a stuck measurement fails instead of hanging the run
PRODUCER_OPTIONS: dict[str, Any] = {"acks": "all", "enable_idempotence": True, "linger_ms": 1}

registry = MessageRegistry()


@registry.message("bench.stock_reserved")
class StockReserved(BaseModel):
    order_id: str
    sku: str
    quantity: int
    warehouse: str
    reserved_by: str


outbox = Outbox(registry)


@dataclass(frozen=True)
class Message:
    """One message, with what both the outbox and the raw producer need to send it."""

    model: StockReserved
    key: str
    envelope: Envelope

    @property
    def value(self) -> bytes:
        return registry.encode(self.model)[1].encode()

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        return [(name, value.encode()) for name, value in self.envelope.to_headers().items()]


def make_messages(count: int) -> list[Message]:
    made = []
    for i in range(count):
        key = f"saga-{i % KEYS:03d}"
        model = StockReserved(
            order_id=f"order-{i:08d}",
            sku=f"sku-{i % 997:04d}",
            quantity=1 + i % 9,
            warehouse="wh-eu-1",
            reserved_by="inventory",
        )
        made.append(Message(model, key, outbox.envelope(model, saga_id=key, saga_type="BenchSaga")))
    return made


def scratch_database(server_url: str) -> ScratchDatabase:
    return ScratchDatabase(server_url, all_migrations())


class Topics:
    """Fresh topics for the run, and a group-less consumer to look at their end offsets.

    Every topic is deleted on exit.
    """

    def __init__(self, bootstrap: str) -> None:
        self.admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        self.probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self.created: list[str] = []

    async def __aenter__(self) -> Topics:
        await self.admin.start()
        await self.probe.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.probe.stop()
            if self.created:
                await self.admin.delete_topics(self.created)
        finally:
            await self.admin.close()

    async def new(self, label: str) -> str:
        """A topic of PARTITIONS partitions, returned once every partition has a leader."""
        name = f"bench.outbox.{label}.{uuid.uuid4().hex[:8]}"
        await self.admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)])
        self.created.append(name)
        await self.records(name)
        return name

    async def records(self, topic: str) -> int:
        """Records written to `topic` so far, over all its partitions."""
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        offsets = await asyncio.wait_for(self.probe.end_offsets(partitions), DEADLINE_S)
        return sum(offsets.values())


async def fill_outbox(db: ScratchDatabase, topic: str, messages: Sequence[Message]) -> float:
    """Put every message in the outbox, PUTS_PER_TRANSACTION per transaction; returns puts/s."""
    engine = create_engine(db.url)
    try:
        start = time.perf_counter()
        for first in range(0, len(messages), PUTS_PER_TRANSACTION):
            async with engine.begin() as conn:
                for m in messages[first : first + PUTS_PER_TRANSACTION]:
                    await outbox.put(conn, m.model, topic=topic, key=m.key, envelope=m.envelope)
        return len(messages) / (time.perf_counter() - start)
    finally:
        await engine.dispose()


async def fill_rate_many(server_url: str, messages: Sequence[Message]) -> float:
    """Outbox.put_many: PUTS_PER_TRANSACTION messages per transaction, one statement each."""
    async with scratch_database(server_url) as db:
        engine = create_engine(db.url)
        try:
            start = time.perf_counter()
            for first in range(0, len(messages), PUTS_PER_TRANSACTION):
                async with engine.begin() as conn:
                    await outbox.put_many(
                        conn,
                        [
                            Outgoing(m.model, "bench.fill", m.key, m.envelope)
                            for m in messages[first : first + PUTS_PER_TRANSACTION]
                        ],
                    )
            return len(messages) / (time.perf_counter() - start)
        finally:
            await engine.dispose()


async def relay_throughput(
    server_url: str, bootstrap: str, topics: Topics, messages: Sequence[Message], batch_size: int
) -> tuple[float, float]:
    """Relay messages/s from start to an empty outbox, and the fill's puts/s."""
    async with scratch_database(server_url) as db:
        topic = await topics.new(f"relay{batch_size}")
        fill_rate = await fill_outbox(db, topic, messages)
        database = Database(db.url)
        relay = Relay(database, bootstrap, batch_size=batch_size)
        start = time.perf_counter()
        await relay.start()
        try:
            # The relay counts a row as published once its delete has run, so this is the
            # moment the table is empty; checked against the table below.
            deadline = start + DEADLINE_S
            while relay.stats.published < len(messages):
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"relay published {relay.stats.published} of {len(messages)}")
                await asyncio.sleep(0.002)
            elapsed = time.perf_counter() - start
            lag = await relay.lag()
        finally:
            await relay.stop()
            await database.aclose()
        if lag.pending or relay.stats.failures:
            raise RuntimeError(f"relay left {lag.pending} rows, {relay.stats.failures} failed batches")
        written = await topics.records(topic)
        if written != len(messages):
            raise RuntimeError(f"relay wrote {written} records to {topic}, expected {len(messages)}")
        return len(messages) / elapsed, fill_rate


async def raw_throughput(bootstrap: str, topics: Topics, messages: Sequence[Message]) -> float:
    topic = await topics.new("raw")
    records = [(m.value, m.key.encode(), m.headers) for m in messages]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **PRODUCER_OPTIONS)
    await producer.start()
    try:
        start = time.perf_counter()
        futures = [
            await producer.send(topic, value=value, key=key, headers=headers)
            for value, key, headers in records
        ]
        await asyncio.gather(*futures)
        elapsed = time.perf_counter() - start
    finally:
        await producer.stop()
    written = await topics.records(topic)
    if written != len(messages):
        raise RuntimeError(f"raw producer wrote {written} records to {topic}, expected {len(messages)}")
    return len(messages) / elapsed


async def idle_latency(server_url: str, bootstrap: str, topics: Topics) -> list[float]:
    """Commit-to-consumer latencies in ms, LATENCY_SAMPLES single-message transactions."""
    messages = make_messages(LATENCY_WARMUP + LATENCY_SAMPLES)
    async with scratch_database(server_url) as db:
        topic = await topics.new("latency")
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=5
        )
        await consumer.start()
        database = Database(db.url)
        engine = database.engine
        relay = Relay(database, bootstrap)
        try:
            partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            consumer.assign(partitions)
            await consumer.seek_to_end(*partitions)
            for tp in partitions:
                await consumer.position(tp)
            await relay.start()
            latencies = []
            for n, m in enumerate(messages):
                await asyncio.sleep(LATENCY_SPACING_S)
                async with engine.connect() as conn:
                    async with conn.begin():
                        await outbox.put(conn, m.model, topic=topic, key=m.key, envelope=m.envelope)
                    committed = time.perf_counter()
                wanted = str(m.envelope.message_id).encode()
                while True:
                    record = await asyncio.wait_for(consumer.getone(), DEADLINE_S)
                    if dict(record.headers).get("message_id") == wanted:
                        break
                received = time.perf_counter()
                if n >= LATENCY_WARMUP:
                    latencies.append((received - committed) * 1000)
            return latencies
        finally:
            await relay.stop()
            await database.aclose()
            await consumer.stop()


async def main() -> None:
    server_url = os.environ.get("DATABASE_URL")
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not server_url or not bootstrap:
        missing = [name for name in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS") if not os.environ.get(name)]
        sys.exit(
            f"{' and '.join(missing)} must be set: run `make bench`, "
            'or `eval "$(scripts/services env)"` first'
        )

    messages = make_messages(MESSAGES)
    async with Topics(bootstrap) as topics:
        raw_rates: list[float] = []
        relay_rates: dict[int, float] = {}
        fill_rates: list[float] = []
        # Alternated, so a slow patch of the shared machine does not hit only one side.
        for n, batch_size in enumerate(BATCH_SIZES):
            if n < RAW_ROUNDS:
                raw_rates.append(await raw_throughput(bootstrap, topics, messages))
            relay_rates[batch_size], fill_rate = await relay_throughput(
                server_url, bootstrap, topics, messages, batch_size
            )
            fill_rates.append(fill_rate)
        latencies = await idle_latency(server_url, bootstrap, topics)
        fill_many = await fill_rate_many(server_url, messages)

    raw = max(raw_rates)
    best_batch = max(relay_rates, key=lambda b: relay_rates[b])
    relay = relay_rates[best_batch]
    p50 = statistics.median(latencies)
    p99 = statistics.quantiles(latencies, n=100, method="inclusive")[98]

    rows: list[tuple[str, str, str]] = [
        (f"relay, batch_size {b}", f"{rate:,.0f} msg/s", f"{rate / raw:.2f}")
        for b, rate in relay_rates.items()
    ]
    rows += [
        (f"raw AIOKafkaProducer (best of {len(raw_rates)})", f"{raw:,.0f} msg/s", ""),
        ("outbox fill (Outbox.put, 500 per tx)", f"{max(fill_rates):,.0f} msg/s", ""),
        ("outbox fill (Outbox.put_many, 500 per tx)", f"{fill_many:,.0f} msg/s", ""),
        (f"idle commit-to-Kafka latency p50 (n={len(latencies)})", f"{p50:.1f} ms", ""),
        (f"idle commit-to-Kafka latency p99 (n={len(latencies)})", f"{p99:.1f} ms", ""),
        (f"idle commit-to-Kafka latency max (n={len(latencies)})", f"{max(latencies):.1f} ms", ""),
    ]
    print(f"{'measurement':<48}{'value':>16}{'relay/raw':>11}")
    for label, value, ratio in rows:
        print(f"{label:<48}{value:>16}{ratio:>11}".rstrip())
    figures = {
        "relay_msgs_per_s": round(relay),
        "raw_msgs_per_s": round(raw),
        "relay_ratio": round(relay / raw, 3),
        "idle_latency_p50_ms": round(p50, 2),
        "idle_latency_p99_ms": round(p99, 2),
        "relay_best_batch_size": best_batch,
        "fill_put_msgs_per_s": round(max(fill_rates)),
        "fill_put_many_msgs_per_s": round(fill_many),
        "relay_msgs_per_s_by_batch_size": {str(b): round(rate) for b, rate in relay_rates.items()},
        "messages": MESSAGES,
        "payload_bytes": len(messages[0].value),
    }
    print(orjson.dumps(figures).decode())


if __name__ == "__main__":
    asyncio.run(main())
