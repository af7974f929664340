"""Faults made of Kafka records: copies of real records, poison, commands that want an
answer where none can go. Each returns what the system should make of what it sent."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import BaseModel

from examples.orders.messages import (
    ChargePayment,
    CreditReserved,
    ReleaseCredit,
    ReleaseStock,
    ReserveCredit,
    ReserveStock,
    messages,
)
from examples.orders.saga import OrderSaga
from outbox import Outbox
from saga import Topics

READ_DEADLINE_S = 15.0
# On every record a fault makes up, so that copies are made of real records only.
MARK = ("chaos_fault", b"1")
# A command each participant handles with no effect on the books: answering it is harmless.
HARMLESS: dict[str, tuple[str, BaseModel]] = {
    "customers": ("reserve_credit", ReleaseCredit(customer_id="c0", order_id="chaos-none")),
    "inventory": ("reserve_stock", ReleaseStock(order_id="chaos-none")),
    "payments": (
        "charge_payment",
        ChargePayment(order_id="chaos-none", customer_id="declined", amount=Decimal(1)),
    ),
}
# A message type each consumed topic knows, for poison that looks right but is not.
KNOWN_TYPE: dict[str, type[BaseModel]] = {
    "customers": ReserveCredit,
    "inventory": ReserveStock,
    "payments": ChargePayment,
    "replies": CreditReserved,
}
Record = tuple[
    str, int | None, bytes | None, bytes | None, list[tuple[str, bytes]]
]  # topic, partition, key, value, headers


@dataclass(frozen=True)
class Sent:
    records: int  # produced
    to_dead_letter: int = 0  # that a consumer should dead-letter
    to_outbox_dead: int = 0  # whose reply no broker will take
    detail: str = ""


class RecordFaults:
    """Produces onto the topics the order system consumes (commands per participant, replies)."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self.bootstrap = bootstrap
        self.topics = Topics(prefix)
        self.commands = {p: self.topics.commands(p) for p in HARMLESS}
        self.replies = self.topics.replies(OrderSaga.name)
        self.outbox = Outbox(messages)

    def consumed(self) -> list[str]:
        return [*self.commands.values(), self.replies]

    async def _produce(self, records: Sequence[Record], *, mark: bool = True) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            sent = [
                await producer.send(
                    topic,
                    value=value,
                    key=key,
                    headers=[*headers, MARK] if mark else headers,
                    partition=partition,
                )
                for topic, partition, key, value, headers in records
            ]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()

    async def _partitions(self, topics: Sequence[str]) -> list[TopicPartition]:
        """The partitions of topics that exist (asking a producer, which waits for metadata)."""
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap)
        await producer.start()
        try:
            return [TopicPartition(t, p) for t in topics for p in sorted(await producer.partitions_for(t))]
        finally:
            await producer.stop()

    async def _sample(self, rng: random.Random, per_topic: int, recent: bool) -> list[Any]:
        """Real records: the latest ones (`recent`) or from anywhere in each partition."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            parts = await self._partitions(self.consumed())
            consumer.assign(parts)
            ends = await consumer.end_offsets(parts)
            starts = await consumer.beginning_offsets(parts)
            wanted: dict[TopicPartition, int] = {}
            for tp in parts:
                if ends[tp] <= starts[tp]:
                    continue
                span = per_topic // 2 + 1
                first = max(starts[tp], ends[tp] - span) if recent else rng.randrange(starts[tp], ends[tp])
                consumer.seek(tp, first)
                wanted[tp] = min(ends[tp], first + span)
            records: list[Any] = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + READ_DEADLINE_S
            while wanted and loop.time() < deadline:
                batch = await consumer.getmany(*wanted, timeout_ms=200)
                for tp, got in batch.items():
                    records.extend(r for r in got if r.offset < wanted[tp] and MARK not in r.headers)
                for tp in list(wanted):
                    if await consumer.position(tp) >= wanted[tp]:
                        del wanted[tp]
        finally:
            await consumer.stop()
        by_topic: dict[str, list[Any]] = {}
        for r in records:
            by_topic.setdefault(r.topic, []).append(r)
        return [r for rs in by_topic.values() for r in rng.sample(rs, min(per_topic, len(rs)))]

    async def copy_records(self, rng: random.Random, *, recent: bool, per_topic: int = 30) -> Sent:
        """Duplicates (`recent`: right behind the originals) or replays (old records again)."""
        sample = await self._sample(rng, per_topic, recent)
        await self._produce(
            [(r.topic, r.partition, r.key, r.value, list(r.headers)) for r in sample], mark=False
        )
        kinds = {t: sum(1 for r in sample if r.topic == t) for t in self.consumed()}
        return Sent(len(sample), detail=", ".join(f"{t.rsplit('.', 2)[-2]} {n}" for t, n in kinds.items()))

    def _headers(self, message: BaseModel, **fields: Any) -> list[tuple[str, bytes]]:
        envelope = self.outbox.envelope(message, **fields)
        return [(k, v.encode()) for k, v in envelope.to_headers().items()]

    async def poison(self, rng: random.Random) -> Sent:
        """On every consumed topic: garbage bytes under a known type, an unknown type, no
        headers, a header that is not UTF-8, a malformed envelope, a schema version nobody has."""
        records = [
            r
            for name, topic in [*self.commands.items(), ("replies", self.replies)]
            for r in self._poison_for(topic, messages.type_of_model(KNOWN_TYPE[name]).name.encode(), rng)
        ]
        await self._produce(records)
        return Sent(len(records), to_dead_letter=len(records), detail=f"6 kinds x {len(records) // 6} topics")

    def _poison_for(self, topic: str, known: bytes, rng: random.Random) -> list[Record]:
        good = self._headers(
            ReleaseStock(order_id="chaos-poison"),
            saga_id=str(uuid.uuid4()),
            saga_type=OrderSaga.name,
            reply_topic=self.replies,
        )
        base = [(k, v) for k, v in good if k not in ("message_type", "schema_version")]
        garbage = rng.randbytes(rng.randint(1, 200))
        headers: list[tuple[bytes, list[tuple[str, bytes]]]] = [
            (garbage, [*base, ("message_type", known), ("schema_version", b"1")]),
            (b"{}", [*base, ("message_type", b"chaos.no_such_type"), ("schema_version", b"1")]),
            (b'{"order_id": "x"}', []),
            (b"{}", [("message_id", b"\xff\xfe\x00"), ("message_type", known), ("schema_version", b"1")]),
            (b"{}", [("message_id", b"not-a-uuid"), ("message_type", known), ("schema_version", b"one")]),
            (b"{}", [*base, ("message_type", known), ("schema_version", b"99")]),
        ]
        return [(topic, None, _key(rng), value, h) for value, h in headers]

    async def bad_reply_topic(self, rng: random.Random) -> Sent:
        """To each participant, a harmless command asking for its reply on `.` (never a topic)
        and one on a reply topic under the prefix that does not exist."""
        missing = self.topics.replies(f"ChaosMissing{rng.randrange(10**6)}")
        records: list[Record] = []
        for participant, (step, command) in HARMLESS.items():
            for reply_topic in (".", missing):
                saga_id = str(uuid.UUID(int=rng.getrandbits(128)))
                headers = self._headers(
                    command,
                    saga_id=saga_id,
                    saga_type=OrderSaga.name,
                    step=step,
                    phase="compensation" if participant != "payments" else "action",
                    attempt=1,
                    reply_topic=reply_topic,
                )
                _, payload = messages.encode(command)
                records.append(
                    (self.commands[participant], None, saga_id.encode(), payload.encode(), headers)
                )
        await self._produce(records)
        return Sent(
            len(records),
            to_dead_letter=len(HARMLESS),
            to_outbox_dead=len(HARMLESS),
            detail=f"'.' and {missing}",
        )

    async def dead_letters(self) -> dict[str, int]:
        """Records in each consumed topic's dead-letter topic (0 when it does not exist)."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            existing = await consumer.topics()
            dead = [self.topics.dead_letter(t) for t in self.consumed()]
            parts = await self._partitions([t for t in dead if t in existing])
            ends = await consumer.end_offsets(parts)
            starts = await consumer.beginning_offsets(parts)
            counts = dict.fromkeys(dead, 0)
            for tp in parts:
                counts[tp.topic] += ends[tp] - starts[tp]
            return counts
        finally:
            await consumer.stop()


def _key(rng: random.Random) -> bytes:
    return str(uuid.UUID(int=rng.getrandbits(128))).encode()
