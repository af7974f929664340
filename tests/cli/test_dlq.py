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

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventstore import Database
from outbox import Consumer, DeadLetterReader, Envelope, MessageRegistry, Outbox, parse_ref
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
            raise Broken(f"billing cannot charge {message.key}/{message.seq}: handler broken")
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


async def dead_letter(billing: Billing, kafka_bootstrap: str, *pings: Ping) -> str:
    """Send the pings to billing's partition 0 while its handler is broken: each is
    dead-lettered. They share a key, so their dead letters share a partition (the one that key
    hashes to): returns it as `<dead-letter topic>[partition]`."""
    assert len({ping.key for ping in pings}) == 1
    before = billing.consumer.stats.dead_lettered
    await send_pings(kafka_bootstrap, Outbox(make_registry()), billing.topic, list(pings), partition=0)
    await wait_for(
        lambda: billing.consumer.stats.dead_lettered == before + len(pings), 60, "the pings' dead letters"
    )
    async with DeadLetterReader(kafka_bootstrap) as reader:
        [held] = [p.partition for p in (await reader.topic(billing.dlq)).partitions if p.records]
    return f"{billing.dlq}[{held}]"


async def applied(engine: AsyncEngine) -> dict[tuple[str, int], int]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT key, seq, applied FROM effects"))
        return {(r.key, r.seq): r.applied for r in rows}


async def test_item1_status_counts_dead_letters(cli: Cli, billing: Billing, kafka_bootstrap: str) -> None:
    dlq = await dead_letter(billing, kafka_bootstrap, Ping(key="card", seq=1), Ping(key="card", seq=2))
    report = (await cli("--json", "status")).json()
    assert report["dead_letters"] == {billing.dlq: 2}
    human = await cli("status")
    assert human.code == 0, human.describe()
    [row] = [line for line in human.stdout.splitlines() if billing.dlq in line]
    assert row.split("│")[2].strip() == "2", human.stdout

    # Records the topic's retention deleted are not counted (end minus beginning offsets).
    topic, partition, _ = parse_ref(f"{dlq}@0")
    await delete_records_before(kafka_bootstrap, TopicPartition(topic, partition), 1)
    assert (await cli("--json", "status")).json()["dead_letters"] == {billing.dlq: 1}


async def delete_records_before(bootstrap: str, tp: TopicPartition, offset: int) -> None:
    """What retention does: the partition's records before `offset` are gone."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_records({tp: RecordsToDelete(offset)})
    finally:
        await admin.close()


async def test_dlq_ls_and_show_print_the_headers(cli: Cli, billing: Billing, kafka_bootstrap: str) -> None:
    dlq = await dead_letter(billing, kafka_bootstrap, Ping(key="card", seq=1), Ping(key="card", seq=2))
    _, partition, _ = parse_ref(f"{dlq}@0")

    listed = (await cli("--json", "dlq", "ls")).json()
    assert listed == [
        {
            "topic": billing.dlq,
            "records": 2,
            "partitions": [{"partition": partition, "records": 2, "oldest": 0, "newest": 1}],
        }
    ]
    human = await cli("dlq", "ls")
    assert human.code == 0, human.describe()
    assert f"{billing.dlq}        2  [{partition}] 0..1" in human.stdout, human.stdout

    records = (await cli("--json", "dlq", "show", billing.dlq)).json()
    assert [r["ref"] for r in records] == [f"{dlq}@0", f"{dlq}@1"]
    first = records[0]
    assert first["original"] == f"{billing.topic}[0]@0"
    assert (
        first["reason"]
        == "handler failed after 1 attempt(s): Broken('billing cannot charge card/1: handler broken')"
    )
    assert (first["error_type"], first["attempts"], first["consumer_group"]) == (
        "Broken",
        1,
        f"{billing.topic[:-9]}",
    )
    assert first["message_type"] == "test.ping"
    assert first["message_id"] == first["headers"]["message_id"]
    assert first["key"] == "card"
    assert Ping.model_validate_json(first["value"]) == Ping(key="card", seq=1)

    text_out = await cli("dlq", "show", billing.dlq, "--limit", "1")
    assert text_out.code == 0, text_out.describe()
    assert f"{dlq}@0  at " in text_out.stdout
    assert f"message   test.ping {first['message_id']}" in text_out.stdout
    assert (
        "reason    handler failed after 1 attempt(s): Broken('billing cannot charge card/1" in text_out.stdout
    )
    assert f"error     Broken  attempts 1  group {billing.consumer.group_id}" in text_out.stdout
    assert f"from      {billing.topic}[0]@0" in text_out.stdout
    assert "card/2" not in text_out.stdout  # --limit 1

    # One record, by its reference or by topic, partition and offset.
    [by_ref] = (await cli("--json", "dlq", "show", f"{dlq}@1")).json()
    [by_args] = (await cli("--json", "dlq", "show", billing.dlq, "0", "1")).json()
    assert by_ref == by_args == records[1]
    assert by_ref["original"] == f"{billing.topic}[0]@1"


async def test_dlq_redrive_twice_applies_once(
    cli: Cli, billing: Billing, kafka_bootstrap: str, effects: AsyncEngine
) -> None:
    """The handler was broken: the message is dead-lettered; redriven while still broken it
    comes back (its dead letter names where it was redriven from); redriven once the handler
    works it is applied; redriven again, the inbox skips it."""
    dlq = await dead_letter(billing, kafka_bootstrap, Ping(key="card", seq=1))
    first = f"{dlq}@0"

    sent = await cli("dlq", "redrive", first)
    assert sent.code == 0, sent.describe()
    assert f"redrove {first} -> {billing.topic}[0]@1  (test.ping " in sent.stdout
    await wait_for(
        lambda: billing.consumer.stats.dead_lettered == 2, 60, "the redriven ping dead-lettered again"
    )
    [again] = (await cli("--json", "dlq", "show", f"{dlq}@1")).json()
    assert again["redriven_from"] == first
    assert again["original"] == f"{billing.topic}[0]@1"
    [original] = (await cli("--json", "dlq", "show", first)).json()
    assert again["message_id"] == original["message_id"]
    assert [k for k in again["headers"] if k.startswith("dlq_")] == [
        k for k in original["headers"] if k.startswith("dlq_")
    ]

    billing.fixed = True
    sent = await cli("dlq", "redrive", f"{dlq}@1")
    assert sent.code == 0, sent.describe()
    await wait_for(lambda: billing.consumer.stats.handled == 1, 60, "the redriven ping handled")
    assert await applied(effects) == {("card", 1): 1}

    for ref in (first, f"{dlq}@1"):
        sent = await cli("dlq", "redrive", ref)
        assert sent.code == 0, sent.describe()
    stats = billing.consumer.stats
    await wait_for(lambda: stats.handled + stats.duplicates == 3, 60, "both copies to reach billing")
    assert await applied(effects) == {("card", 1): 1}
    assert (stats.handled, stats.duplicates, stats.dead_lettered) == (1, 2, 2)
    # Reading and redriving consumed nothing: the dead letters are still there.
    assert (await cli("--json", "status")).json()["dead_letters"] == {billing.dlq: 2}


async def test_dlq_redrive_all_and_dry_run(
    cli: Cli, billing: Billing, kafka_bootstrap: str, effects: AsyncEngine
) -> None:
    dlq = await dead_letter(billing, kafka_bootstrap, Ping(key="card", seq=1), Ping(key="card", seq=2))
    billing.fixed = True

    dry = await cli("dlq", "redrive", "--all", billing.dlq, "--dry-run")
    assert dry.code == 0, dry.describe()
    assert dry.stdout.count("would redrive") == 2, dry.stdout
    assert f"would redrive {dlq}@1 -> {billing.topic}[0]  (test.ping " in dry.stdout
    async with DeadLetterReader(kafka_bootstrap) as reader:
        assert (await reader.topic(billing.topic)).records == 2  # nothing sent

    sent = (await cli("--json", "dlq", "redrive", "--all", billing.dlq)).json()
    assert [(r["ref"], r["to"]) for r in sent] == [
        (f"{dlq}@0", f"{billing.topic}[0]@2"),
        (f"{dlq}@1", f"{billing.topic}[0]@3"),
    ]
    await wait_for(lambda: billing.consumer.stats.handled == 2, 60, "both redriven pings handled")
    assert await applied(effects) == {("card", 1): 1, ("card", 2): 1}


async def test_dlq_errors_are_one_clear_line(cli: Cli, billing: Billing, kafka_bootstrap: str) -> None:
    dlq = await dead_letter(billing, kafka_bootstrap, Ping(key="card", seq=1))
    other = f"{billing.dlq}[{1 - parse_ref(f'{dlq}@0')[1]}]"  # the dead-letter topic's empty partition
    missing = f"{billing.topic}.nope.dlq"
    errors: list[tuple[tuple[str, ...], str]] = [
        (("dlq", "show", missing), f"no topic {missing!r} on the broker"),
        (("dlq", "redrive", f"{missing}[0]@0"), f"no topic {missing!r} on the broker"),
        (("dlq", "redrive", "--all", missing), f"no topic {missing!r} on the broker"),
        (
            ("dlq", "show", f"{dlq}@5"),
            f"offset 5 is past the end of {dlq}: it holds 0..0",
        ),
        (("dlq", "show", f"{billing.topic}[1]@0"), f"{billing.topic}[1] holds no records"),
        (("dlq", "show", f"{other}@0"), f"{other} holds no records"),
        (("dlq", "show", f"{billing.dlq}[7]@0"), f"{billing.dlq} has no partition 7"),
        (("dlq", "redrive", f"{billing.topic}[0]@0"), f"{billing.topic}[0]@0 is not a dead letter"),
    ]
    for args, message in errors:
        assert_clean_error(await cli(*args), message)

    # Usage mistakes: click's exit code 2, one line after the usage.
    usage: list[tuple[tuple[str, ...], str]] = [
        (("dlq", "redrive"), "REF... (topic[partition]@offset) or --all TOPIC"),
        (("dlq", "show", billing.dlq, "--offset", "0"), "an offset needs its partition"),
        (("dlq", "redrive", "not-a-ref"), "'not-a-ref' is not a record reference"),
    ]
    for args, message in usage:
        result = await cli(*args)
        assert result.code == 2, result.describe()
        assert message in result.stderr.splitlines()[-1], result.describe()

    unreachable = dataclasses.replace(cli, kafka_bootstrap="127.0.0.1:9")
    for args in [("dlq", "ls"), ("dlq", "show", billing.dlq), ("dlq", "redrive", f"{dlq}@0")]:
        result = await unreachable(*args)
        assert_clean_error(result, "Kafka at 127.0.0.1:9 did not answer")
        assert len(result.stderr.strip().splitlines()) == 1, result.describe()
