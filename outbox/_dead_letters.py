"""The dead-letter topic: records the consumer cannot apply, with the reason in their headers.

Each consumed topic has its dead-letter topic beside it, created (with the same partition
count) when the consumer starts, or later when it is found missing. A broker may refuse to
create it (no permission, say): it is then for the operator to create; one error says so.

A dead letter Kafka does not take (its topic is missing, the broker refuses it, the broker is
away) *waits*: the consumer holds its record's partition at it (nothing after it in that
partition is applied, and its offset is not committed past it) while its other partitions go
on. Waiting dead letters are tried again in the background, with one error line at the first
failure and one a minute after, until Kafka takes them; then their partitions go on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from eventstore import is_retriable
from outbox._delivery import ConsumerStats, Record
from outbox._kafka_connection import KafkaConnection
from outbox._log_context import log_context_of_headers
from outbox._metrics import count_dead_letter
from outbox._topics import create_missing

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]

# How long the broker has to answer about a dead-letter topic, or show a new one's metadata.
METADATA_WAIT_S = 2.0
# For creating the dead-letter topics at start.
PROVIDE_TIMEOUT_S = 10.0
# One line when a dead letter starts waiting, then one this often while it still waits.
REPEAT_S = 60.0


@dataclass(eq=False)
class _Letter:
    record: Record
    topic: str
    headers: Headers
    since: float = field(default_factory=time.monotonic)
    said_at: float = 0.0
    value_refused: bool = False  # said once
    sent: asyncio.Future[bool] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.record.topic, self.record.partition)

    @property
    def where(self) -> str:
        return f"{self.record.topic}[{self.record.partition}]@{self.record.offset}"


class DeadLetters:
    """Publishes a record to `<its topic><suffix>`, keeping its key, value and headers and
    adding `dlq_*` headers: the reason, the error type, where it came from, the attempts.

    A value the dead-letter topic refuses for good (too large, say) is dropped and the record
    sent without it. A dead letter that cannot be sent at all waits (see the module docstring);
    `on_sent(record)` is called when a waiting one finally went through."""

    def __init__(
        self,
        kafka: KafkaConnection,
        *,
        group_id: str,
        suffix: str,
        replication_factor: int,
        retry_backoff_s: float,
        retry_max_s: float,
        stats: ConsumerStats,
        stopping: Callable[[], bool],
        on_sent: Callable[[Record], Awaitable[None]],
    ) -> None:
        self.kafka = kafka
        self.group_id = group_id
        self.suffix = suffix
        self.replication_factor = replication_factor
        self.retry_backoff_s = retry_backoff_s
        self.retry_max_s = retry_max_s
        self.send_timeout_s = max(retry_max_s * 2, 10.0)
        self.stats = stats
        self._stopping = stopping
        self._on_sent = on_sent
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._waiting: dict[tuple[str, int, int], _Letter] = {}
        self._arrived = asyncio.Event()

    async def start(self) -> None:
        if self._producer is not None:
            return
        self._producer = AIOKafkaProducer(**self.kafka.producer_options(f"dead-letters-{self.group_id}"))
        self._admin = AIOKafkaAdminClient(
            **self.kafka.admin_options(
                f"dead-letters-{self.group_id}", request_timeout_ms=int(PROVIDE_TIMEOUT_S * 1000)
            )
        )
        try:
            await self._producer.start()
            await self._admin.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Safe to call twice. Dead letters still waiting are given up (their records stay
        uncommitted, and come again)."""
        self.abandon()
        producer, self._producer = self._producer, None
        admin, self._admin = self._admin, None
        if admin is not None:
            await admin.close()
        if producer is not None:
            await producer.stop()

    def topic_for(self, topic: str) -> str:
        return f"{topic}{self.suffix}"

    async def provide(self, topics: Iterable[str]) -> None:
        """Create the dead-letter topics of these topics that are missing. One error line for
        each that cannot be created, or one for all when the broker cannot be asked."""
        wanted = {topic: self.topic_for(topic) for topic in topics}
        try:
            created, problems = await asyncio.wait_for(self._create(wanted), PROVIDE_TIMEOUT_S)
        except (KafkaError, TimeoutError, OSError) as exc:
            log.error(
                "consumer %s: could not make sure the dead-letter topics %s exist (%r); a record that "
                "cannot be applied will wait for its own",
                self.group_id,
                ", ".join(sorted(wanted.values())),
                exc,
            )
            return
        for topic in created:
            log.info("consumer %s: created the dead-letter topic %s", self.group_id, topic)
        for topic, problem in problems.items():
            log.error(
                "consumer %s: the dead-letter topic %s does not exist and could not be created (%s); "
                "a record that cannot be applied will wait for it: create it",
                self.group_id,
                topic,
                problem,
            )

    async def _create(self, wanted: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        if self._admin is None:
            raise RuntimeError(f"consumer {self.group_id!r}: dead letters need start() first")
        return await create_missing(self._admin, wanted, self.replication_factor)

    async def send(self, record: Record, reason: str, error_type: str, attempts: int) -> bool:
        """True once Kafka has the record. False when the consumer stops first, or when Kafka
        did not take it: then it waits (`waiting_in`, `wait`) and is tried again."""
        with log_context_of_headers(record.headers):
            return await self._send(record, reason, error_type, attempts)

    async def _send(self, record: Record, reason: str, error_type: str, attempts: int) -> bool:
        letter = _Letter(
            record, self.topic_for(record.topic), self._headers(record, reason, error_type, attempts)
        )
        log.error("consumer %s: %s to %s: %s", self.group_id, letter.where, letter.topic, reason)
        failure = await self._try(letter)
        if failure is None:
            return True
        if self._stopping():
            return False
        key = (record.topic, record.partition, record.offset)
        self._waiting[key] = letter
        self.stats.dead_letters_waiting = len(self._waiting)
        self._arrived.set()
        letter.said_at = time.monotonic()
        log.error(
            "consumer %s: cannot write to the dead-letter topic %s (%s); %s waits for it, and what "
            "follows it in its partition waits too, while the other partitions go on; trying again",
            self.group_id,
            letter.topic,
            failure,
            letter.where,
        )
        return False

    def waiting_in(self, tp: TopicPartition) -> bool:
        """Whether a dead letter of this partition is waiting."""
        return any(letter.tp == tp for letter in self._waiting.values())

    async def wait(self, record: Record) -> bool:
        """Until the record's waiting dead letter is sent (True) or given up (False)."""
        letter = self._waiting.get((record.topic, record.partition, record.offset))
        if letter is None:
            return False
        return await asyncio.shield(letter.sent)

    def abandon(self, tps: Iterable[TopicPartition] | None = None) -> None:
        """Give up the waiting dead letters of these partitions (all when None): they are no
        longer ours, or the consumer stops. Their records come again from Kafka."""
        going = None if tps is None else set(tps)
        for key, letter in list(self._waiting.items()):
            if going is None or letter.tp in going:
                del self._waiting[key]
                if not letter.sent.done():
                    letter.sent.set_result(False)
        self.stats.dead_letters_waiting = len(self._waiting)

    async def retry_waiting(self) -> None:
        """Try the waiting dead letters again, with growing pauses, until cancelled."""
        delay = self.retry_backoff_s
        while True:
            if not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
                delay = self.retry_backoff_s
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_max_s)
            for key, letter in list(self._waiting.items()):
                with log_context_of_headers(letter.record.headers):
                    await self._retry(key, letter)

    async def _retry(self, key: tuple[str, int, int], letter: _Letter) -> None:
        try:
            failure = await self._try(letter)
        except Exception as exc:  # not Kafka's answer: a bug, but the partition must not stay held
            log.exception("consumer %s: trying %s again failed", self.group_id, letter.where)
            failure = repr(exc)
        if self._waiting.get(key) is not letter:
            return  # given up meanwhile
        if failure is None:
            await self._went_through(key, letter)
        else:
            self._still_failing(letter, failure)

    async def _went_through(self, key: tuple[str, int, int], letter: _Letter) -> None:
        self.stats.dead_lettered += 1
        count_dead_letter(letter.record.topic)
        log.warning(
            "consumer %s: %s is in the dead-letter topic %s after %.0fs; its partition goes on",
            self.group_id,
            letter.where,
            letter.topic,
            time.monotonic() - letter.since,
        )
        letter.sent.set_result(True)
        try:
            # Still counted as waiting meanwhile: the partition is not let go on before it.
            await self._on_sent(letter.record)
        except Exception:
            log.exception("consumer %s: resuming %s failed", self.group_id, letter.where)
        finally:
            if self._waiting.get(key) is letter:
                del self._waiting[key]
            self.stats.dead_letters_waiting = len(self._waiting)

    def _still_failing(self, letter: _Letter, failure: str) -> None:
        now = time.monotonic()
        if now - letter.said_at < REPEAT_S:
            return
        letter.said_at = now
        log.error(
            "consumer %s: still cannot write to the dead-letter topic %s after %.0fs (%s); %s and what "
            "follows it in its partition wait",
            self.group_id,
            letter.topic,
            now - letter.since,
            failure,
            letter.where,
        )

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

    async def _try(self, letter: _Letter) -> str | None:
        """One try at sending: None when Kafka has it, else why not."""
        if self._producer is None:
            raise RuntimeError(f"consumer {self.group_id!r}: dead letters need start() first")
        producer = self._producer
        if producer.client.cluster.partitions_for_topic(letter.topic) is None:
            # Asked through the admin client: the producer's own metadata requests for a topic
            # that is missing would log an error at every try.
            problem = await self._find_or_create(letter)
            if problem is not None:
                return problem
        failure = await self._publish(producer, letter, letter.record.value, letter.headers)
        if isinstance(failure, KafkaError) and not is_retriable(failure) and letter.record.value is not None:
            # Say too large for the dead-letter topic: keep the reason and the headers at least.
            if not letter.value_refused:
                letter.value_refused = True
                log.error(
                    "consumer %s: %s refused by %s (%r); dead-lettering without the value",
                    self.group_id,
                    letter.where,
                    letter.topic,
                    failure,
                )
            headers = [*letter.headers, ("dlq_value_dropped", repr(failure).encode())]
            failure = await self._publish(producer, letter, None, headers)
        return None if failure is None else repr(failure)

    async def _find_or_create(self, letter: _Letter) -> str | None:
        try:
            _, problems = await asyncio.wait_for(
                self._create({letter.record.topic: letter.topic}), METADATA_WAIT_S
            )
            if problems:
                return f"it does not exist and could not be created: {problems[letter.topic]}"
            assert self._producer is not None
            await asyncio.wait_for(self._producer.partitions_for(letter.topic), METADATA_WAIT_S)
        except (KafkaError, TimeoutError, OSError) as exc:
            return f"cannot learn about it from the broker: {exc!r}"
        return None

    async def _publish(
        self, producer: AIOKafkaProducer, letter: _Letter, value: bytes | None, headers: Headers
    ) -> Exception | None:
        try:
            await asyncio.wait_for(
                producer.send_and_wait(letter.topic, value=value, key=letter.record.key, headers=headers),
                timeout=self.send_timeout_s,
            )
        except (KafkaError, TimeoutError) as exc:
            return exc
        return None
