"""The dead-letter topic: records the consumer cannot apply, with the reason in their headers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from eventstore import is_retriable
from outbox._delivery import Record

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]


class DeadLetters:
    """Publishes a record to `<its topic><suffix>`, keeping its key, value and headers and
    adding `dlq_*` headers: the reason, the error type, where it came from, the attempts.

    A value the dead-letter topic refuses for good (too large, say) is dropped and the
    record sent without it. Other failures are retried until Kafka takes the record or the
    consumer stops (`stopping()` says so)."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        group_id: str,
        suffix: str,
        retry_backoff_s: float,
        retry_max_s: float,
        stopping: Callable[[], bool],
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.group_id = group_id
        self.suffix = suffix
        self.retry_backoff_s = retry_backoff_s
        self.retry_max_s = retry_max_s
        self._stopping = stopping
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        if self._producer is not None:
            return
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers, acks="all", enable_idempotence=True
        )
        try:
            await self._producer.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Safe to call twice."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def send(self, record: Record, reason: str, error_type: str, attempts: int) -> bool:
        """True once Kafka has the record; False when the consumer stops before that."""
        topic = f"{record.topic}{self.suffix}"
        log.error(
            "consumer %s: %s[%d]@%d to %s: %s",
            self.group_id,
            record.topic,
            record.partition,
            record.offset,
            topic,
            reason,
        )
        return await self._publish(record, topic, self._headers(record, reason, error_type, attempts))

    def _headers(self, record: Record, reason: str, error_type: str, attempts: int) -> Headers:
        return [
            *record.headers,
            ("dlq_reason", reason[:4000].encode()),
            ("dlq_error_type", error_type.encode()),
            ("dlq_topic", record.topic.encode()),
            ("dlq_partition", str(record.partition).encode()),
            ("dlq_offset", str(record.offset).encode()),
            ("dlq_consumer_group", self.group_id.encode()),
            ("dlq_attempts", str(attempts).encode()),
        ]

    async def _publish(self, record: Record, topic: str, headers: Headers) -> bool:
        if self._producer is None:
            raise RuntimeError(f"consumer {self.group_id!r}: dead letters need start() first")
        producer = self._producer
        where = f"{record.topic}[{record.partition}]@{record.offset} -> {topic}"
        delay = self.retry_backoff_s
        value = record.value
        while True:
            try:
                await asyncio.wait_for(
                    producer.send_and_wait(topic, value=value, key=record.key, headers=headers),
                    timeout=self.retry_max_s * 6,
                )
                return True
            except (KafkaError, TimeoutError) as exc:
                if isinstance(exc, KafkaError) and not is_retriable(exc) and value is not None:
                    # Say too large for the dead-letter topic: keep the reason and the headers at least.
                    log.error(
                        "consumer %s: %s refused (%r); dead-lettering without the value",
                        self.group_id,
                        where,
                        exc,
                    )
                    value = None
                    headers = [*headers, ("dlq_value_dropped", repr(exc).encode())]
                    continue
                log.warning(
                    "consumer %s: dead-letter publish %s failed (%r); retrying", self.group_id, where, exc
                )
                if self._stopping():
                    return False
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)
