"""What the consumer hands to handlers, and what it counts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from aiokafka import ConsumerRecord
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from outbox._errors import MessageDecodeError
from outbox._log_context import log_context_of
from outbox._message import Envelope
from outbox._tracing import in_context

Record: TypeAlias = "ConsumerRecord[bytes, bytes]"

Handler = Callable[[AsyncConnection, Any, Envelope], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Delivery:
    """A record decoded into its message, with the handler its type maps to."""

    handler: Handler
    message: BaseModel
    envelope: Envelope
    record: Record | None = None  # where it came from (topic, partition, offset, key)


# Handles several deliveries in the caller's transaction, in order (the default runs each
# one's handler in turn). Raising rolls all of them back; they are then handled one by one.
BatchHandler = Callable[[AsyncConnection, list[Delivery]], Awaitable[None]]


async def handle_in_turn(conn: AsyncConnection, deliveries: list[Delivery]) -> None:
    for d in deliveries:
        with log_context_of(d.envelope), in_context(d.envelope.traceparent):
            await d.handler(conn, d.message, d.envelope)


@dataclass(frozen=True, slots=True)
class Decoded:
    """A fetched record and what it decoded to: a delivery, or why it cannot be one."""

    record: Record
    result: Delivery | MessageDecodeError

    @property
    def offset(self) -> int:
        return int(self.record.offset)

    @property
    def where(self) -> str:
        return f"{self.record.topic}[{self.record.partition}]@{self.record.offset}"


@dataclass
class ConsumerStats:
    handled: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    retries: int = 0
    collisions: int = 0  # batches rolled back by a deadlock or serialization failure, then redone
    slow_batches: int = 0  # batches that ran past slow_batch_s and went on in the background
    # Now (not a count): records whose dead letter Kafka has not taken yet; each holds its partition.
    dead_letters_waiting: int = 0
    inbox_rows_deleted: int = 0  # by the inbox retention
