"""Reading dead-letter topics, and sending a dead letter back to the topic it came from.

Nothing here joins a consumer group or commits an offset: records are read by assigning
partitions to a consumer without a group, so reading a dead-letter topic never moves anyone's
position in it. Record counts come from each partition's beginning and end offsets, so records
the topic's retention has deleted are not counted.

A redriven record is the original message again: its key, value and headers (the same message
id), without the `dlq_*` headers, and with `redriven_from` naming the dead letter. The
consumer's inbox recognises the message id, so redriving one dead letter twice applies it at
most once.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from outbox._dead_letter_record import REDRIVEN_FROM, DeadLetter
from outbox._errors import BrokerUnavailableError, DeadLetterError
from outbox._kafka_check import check_kafka
from outbox._kafka_connection import KafkaConnection, as_connection

_REF = re.compile(r"(?P<topic>[A-Za-z0-9._-]{1,249})\[(?P<partition>\d+)\]@(?P<offset>\d+)")


def parse_ref(ref: str) -> tuple[str, int, int]:
    """`topic[partition]@offset` -> (topic, partition, offset)."""
    match = _REF.fullmatch(ref.strip())
    if match is None:
        raise DeadLetterError(f"{ref!r} is not a record reference: write it as topic[partition]@offset")
    return match["topic"], int(match["partition"]), int(match["offset"])


@dataclass(frozen=True)
class PartitionRange:
    """The records a partition holds now: offsets `first` to `end - 1`."""

    partition: int
    first: int
    end: int

    @property
    def records(self) -> int:
        return self.end - self.first


@dataclass(frozen=True)
class DeadLetterTopic:
    topic: str
    partitions: tuple[PartitionRange, ...]

    @property
    def records(self) -> int:
        return sum(p.records for p in self.partitions)


@dataclass(frozen=True)
class Redrive:
    """A dead letter sent back (or, on a dry run, that would be): `offset` is where it landed."""

    letter: DeadLetter
    topic: str
    partition: int
    offset: int | None

    @property
    def to(self) -> str:
        where = f"{self.topic}[{self.partition}]"
        return where if self.offset is None else f"{where}@{self.offset}"


class DeadLetterReader:
    """Lists dead-letter topics with their record counts, reads dead letters, redrives them.

    `async with DeadLetterReader(kafka) as reader: ...` (or `start()` / `stop()`); `kafka` is the
    bootstrap servers or a `KafkaConnection`.
    Every call that Kafka does not answer within `timeout_s` raises `DeadLetterError`, as do an
    unknown topic, an offset outside a partition's records, and a record that is no dead letter.
    """

    def __init__(
        self, kafka: str | KafkaConnection, *, suffix: str = ".dlq", timeout_s: float = 10.0
    ) -> None:
        if not suffix:
            raise ValueError("suffix must not be empty")
        self.kafka = as_connection(kafka)
        self.bootstrap_servers = self.kafka.bootstrap_servers
        self.suffix = suffix
        self.timeout_s = timeout_s
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

    async def __aenter__(self) -> DeadLetterReader:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._admin is not None:
            return
        ms = int(self.timeout_s * 1000)
        self._admin = AIOKafkaAdminClient(
            **self.kafka.admin_options("dead-letter-reader", request_timeout_ms=ms)
        )
        self._consumer = AIOKafkaConsumer(
            **self.kafka.consumer_options(
                "dead-letter-reader",
                group_id=None,
                enable_auto_commit=False,
                request_timeout_ms=ms,
                fetch_max_wait_ms=100,
            )
        )
        try:
            async with self._kafka("connect"):
                await check_kafka(self.kafka, self.timeout_s)
                await self._admin.start()
                await self._consumer.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Safe to call twice."""
        admin, self._admin = self._admin, None
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()
        if consumer is not None:
            await consumer.stop()
        if admin is not None:
            await admin.close()

    @asynccontextmanager
    async def _kafka(self, doing: str) -> AsyncIterator[None]:
        """Kafka's errors, and its silence past the timeout, as one DeadLetterError."""
        try:
            async with asyncio.timeout(self.timeout_s):
                yield
        except (KafkaError, TimeoutError, OSError, BrokerUnavailableError) as exc:
            problem = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            error = DeadLetterError(
                f"Kafka at {self.bootstrap_servers} did not answer ({doing}: {problem}): "
                "check that it runs and that the bootstrap servers are right"
            )
            error.retriable = True
            raise error from exc

    def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None or self._consumer is None:
            raise RuntimeError("DeadLetterReader needs start() first")
        return self._admin, self._consumer

    async def topics(self, prefix: str) -> list[DeadLetterTopic]:
        """The dead-letter topics whose names start with `<prefix>.`, empty ones too."""
        every = await self._partitions()
        wanted = sorted(t for t in every if t.startswith(f"{prefix}.") and t.endswith(self.suffix))
        return await self._ranges({t: every[t] for t in wanted})

    async def topic(self, name: str) -> DeadLetterTopic:
        """One topic's partitions and the offsets of their records."""
        partitions = (await self._partitions()).get(name)
        if partitions is None:
            raise DeadLetterError(f"no topic {name!r} on the broker: list the dead-letter topics to find it")
        [found] = await self._ranges({name: partitions})
        return found

    async def _partitions(self) -> dict[str, list[int]]:
        """Every topic's partitions, from the broker's metadata. Asked for all topics: a
        metadata request naming a missing topic makes a broker that auto-creates topics create it."""
        admin, _ = self._clients()
        async with self._kafka("reading the topics' metadata"):
            described = await admin.describe_topics()
        return {
            d["topic"]: sorted(p["partition"] for p in d["partitions"])
            for d in described
            if d["error_code"] == 0
        }

    async def _ranges(self, partitions: dict[str, list[int]]) -> list[DeadLetterTopic]:
        _, consumer = self._clients()
        tps = [TopicPartition(t, p) for t, ps in partitions.items() for p in ps]
        if not tps:
            return []
        async with self._kafka("reading offsets"):
            first = await consumer.beginning_offsets(tps)
            end = await consumer.end_offsets(tps)
        return [
            DeadLetterTopic(topic, tuple(_range(topic, p, first, end) for p in ps))
            for topic, ps in partitions.items()
        ]

    async def read(
        self, topic: str, *, partition: int | None = None, offset: int | None = None, limit: int | None = 100
    ) -> list[DeadLetter]:
        """Up to `limit` records (all when None), partition by partition, each from its oldest
        record (or from `offset`, which needs `partition`) in offset order."""
        if offset is not None and partition is None:
            raise DeadLetterError(f"an offset in {topic} needs its partition")
        ranges = (await self.topic(topic)).partitions
        if partition is not None:
            ranges = tuple(r for r in ranges if r.partition == partition)
            if not ranges:
                raise DeadLetterError(f"{topic} has no partition {partition}")
        letters: list[DeadLetter] = []
        for r in ranges:
            start = r.first if offset is None else _checked(topic, r, offset)
            stop = r.end if limit is None else min(r.end, start + limit - len(letters))
            letters += await self._read_range(topic, r.partition, start, stop)
            if limit is not None and len(letters) >= limit:
                break
        return letters

    async def get(self, topic: str, partition: int, offset: int) -> DeadLetter:
        """The record at `topic[partition]@offset`."""
        found = await self.read(topic, partition=partition, offset=offset, limit=1)
        if not found or found[0].offset != offset:
            raise DeadLetterError(f"{topic}[{partition}] has no record at offset {offset}")
        return found[0]

    async def _read_range(self, topic: str, partition: int, start: int, stop: int) -> list[DeadLetter]:
        _, consumer = self._clients()
        if start >= stop:
            return []
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, start)
        letters: list[DeadLetter] = []
        async with self._kafka(f"reading {topic}[{partition}]"):
            while await consumer.position(tp) < stop:
                batch = await consumer.getmany(tp, timeout_ms=200, max_records=stop - start)
                letters += [DeadLetter.of(r) for r in batch.get(tp, ()) if r.offset < stop]
        return letters

    async def redrive(self, letter: DeadLetter, *, dry_run: bool = False) -> Redrive:
        """Send the dead letter's message back to the partition it was read from, with its key,
        value and message headers, and `redriven_from`. A dry run checks and sends nothing."""
        topic, partition = letter.redrive_target()
        target = (await self._partitions()).get(topic)
        if target is None:
            raise DeadLetterError(
                f"{letter.ref} came from {topic}, which is not on the broker: create it first"
            )
        if partition not in target:
            raise DeadLetterError(
                f"{letter.ref} came from {letter.original}, but {topic} has no partition {partition} now"
            )
        if dry_run:
            return Redrive(letter, topic, partition, None)
        producer = await self._started_producer()
        headers = [(k, v) for k, v in letter.headers if not k.startswith("dlq_") and k != REDRIVEN_FROM]
        async with self._kafka(f"sending {letter.ref} to {topic}"):
            sent = await producer.send_and_wait(
                topic,
                value=letter.value,
                key=letter.key,
                partition=partition,
                headers=[*headers, (REDRIVEN_FROM, letter.ref.encode())],
            )
        return Redrive(letter, topic, partition, sent.offset)

    async def _started_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(**self.kafka.producer_options("dead-letter-reader"))
            try:
                async with self._kafka("connect"):
                    await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer


def _range(
    topic: str, partition: int, first: dict[TopicPartition, int], end: dict[TopicPartition, int]
) -> PartitionRange:
    tp = TopicPartition(topic, partition)
    return PartitionRange(partition, first[tp], end[tp])


def _checked(topic: str, r: PartitionRange, offset: int) -> int:
    where = f"{topic}[{r.partition}]"
    if r.records == 0:
        raise DeadLetterError(f"{where} holds no records (offset {offset} is past its end, {r.end})")
    if offset >= r.end:
        raise DeadLetterError(f"offset {offset} is past the end of {where}: it holds {r.first}..{r.end - 1}")
    if offset < r.first:
        raise DeadLetterError(
            f"offset {offset} of {where} is gone (deleted by retention): it holds {r.first}..{r.end - 1}"
        )
    return offset
