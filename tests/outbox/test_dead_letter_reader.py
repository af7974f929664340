"""outbox.DeadLetterReader on hand-made records: what it reads, and what it refuses to redrive.

The CLI tests (tests/cli/test_dlq.py) cover real dead letters end to end."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaProducer

from outbox import DeadLetterError, DeadLetterReader, parse_ref
from tests.conftest import NewTopicFactory


def dlq_headers(topic: str, partition: int, offset: int, **more: str) -> list[tuple[str, bytes]]:
    headers = {
        "message_id": "5d0f7c4e-1111-4a4a-8888-000000000001",
        "message_type": "test.ping",
        "schema_version": "1",
        "dlq_reason": "handler failed",
        "dlq_error_type": "Broken",
        "dlq_topic": topic,
        "dlq_partition": str(partition),
        "dlq_offset": str(offset),
        "dlq_consumer_group": "g",
        "dlq_attempts": "5",
        **more,
    }
    return [(k, v.encode()) for k, v in headers.items()]


async def produce(bootstrap: str, topic: str, partition: int, headers: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            topic, b'{"key":"k","seq":1}', key=b"k", partition=partition, headers=headers
        )
    finally:
        await producer.stop()


def test_parse_ref_reads_topic_partition_offset_and_names_the_form() -> None:
    assert parse_ref("saga.flights.commands.dlq[2]@17") == ("saga.flights.commands.dlq", 2, 17)
    with pytest.raises(DeadLetterError, match=r"write it as topic\[partition\]@offset"):
        parse_ref("saga.flights.commands.dlq@17")


async def test_reads_across_partitions_up_to_the_limit_and_decodes_the_headers(
    kafka_bootstrap: str, new_topic: NewTopicFactory
) -> None:
    origin = await new_topic("origin", partitions=2)
    dlq = await new_topic("dlq", partitions=2)
    for partition, offset in ((0, 4), (0, 5), (1, 9)):
        await produce(kafka_bootstrap, dlq, partition, dlq_headers(origin, partition, offset))
    async with DeadLetterReader(kafka_bootstrap) as reader:
        found = await reader.topic(dlq)
        assert (found.records, [p.records for p in found.partitions]) == (3, [2, 1])
        letters = await reader.read(dlq, limit=2)
        assert [x.ref for x in letters] == [f"{dlq}[0]@0", f"{dlq}[0]@1"]
        assert [x.ref for x in await reader.read(dlq)] == [f"{dlq}[0]@0", f"{dlq}[0]@1", f"{dlq}[1]@0"]
        letter = await reader.get(dlq, 1, 0)
    assert (letter.original, letter.attempts, letter.error_type, letter.consumer_group) == (
        f"{origin}[1]@9",
        5,
        "Broken",
        "g",
    )
    assert letter.is_dead_letter
    assert letter.timestamp is not None


async def test_redrive_refuses_a_dropped_value_and_a_missing_origin(
    kafka_bootstrap: str, new_topic: NewTopicFactory
) -> None:
    origin = await new_topic("origin")
    dlq = await new_topic("dlq")
    await produce(kafka_bootstrap, dlq, 0, dlq_headers(origin, 0, 0, dlq_value_dropped="MessageSizeTooLarge"))
    await produce(kafka_bootstrap, dlq, 0, dlq_headers(origin, 3, 0))
    async with DeadLetterReader(kafka_bootstrap) as reader:
        dropped, elsewhere = await reader.read(dlq)
        with pytest.raises(DeadLetterError, match="lost its value when it was dead-lettered"):
            await reader.redrive(dropped, dry_run=True)
        with pytest.raises(DeadLetterError, match=f"but {origin} has no partition 3 now"):
            await reader.redrive(elsewhere)
        assert (await reader.topic(origin)).records == 0
