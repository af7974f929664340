"""Applying fetched records: each one's inbox row and handler, in Postgres transactions.

Every record is decoded once, into a `Delivery` or the reason it cannot be one (`Decoded`).
Deliveries are applied by one method, `Applier.transact`: in one transaction, their inbox
rows (consumer group, message id), so a message redelivered after a crash or a rebalance
finds its row and is skipped; then, for the messages not seen before, either the batch
handler on all of them together, or each one's handler in turn, each in a savepoint, up to
the first that fails (the ones before it are committed).

The rest is when to use which. A fetch goes in one transaction, together. When that fails,
partition by partition: runs of records together again, and when a run fails, one by one up
to the record that fails; that record alone, retried with backoff until it is applied or,
after `max_attempts` or at once when its error is not retriable (`eventstore.is_retriable`:
a refusal, a bad statement, `retriable = False`), dead-lettered; then together again. A
record that cannot be decoded is dead-lettered in its turn. Errors are sorted by
`eventstore.classify_error`: contention (a deadlock, a serialization failure, a lock
timeout, a `ConcurrencyError`) is nobody's fault, so the same work runs again and no
attempt is counted; nor is Postgres being unreachable, which is waited out, and nothing is
dead-lettered for it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from eventstore import Database, ErrorKind, classify_error, driver_connection, is_retriable, translate_errors
from outbox._delivery import BatchHandler, ConsumerStats, Decoded, Delivery, Handler, Record
from outbox._errors import MessageDecodeError
from outbox._inbox import CLAIM as INBOX_CLAIM
from outbox._log_context import log_context_of
from outbox._message import Envelope, MessageRegistry
from outbox._metrics import count_applied, count_dead_letter
from outbox._tracing import ProcessSpans, in_context

log = logging.getLogger(__name__)

# record, reason, error type, attempts -> False when the consumer stopped before it was sent
DeadLetter = Callable[[Record, str, str, int], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class Applied:
    """How many deliveries, from the front, a transaction committed; why the next was not."""

    count: int
    failure: Exception | None = None


def offset_after(decoded: Sequence[Decoded], done: int) -> int:
    """The offset to commit once the first `done` of `decoded` (one partition's) are done."""
    return decoded[done - 1].offset + 1 if done else decoded[0].offset


class Applier:
    """Decodes records and applies them for one consumer group (see the module docstring)."""

    def __init__(
        self,
        database: Database,
        *,
        group_id: str,
        registry: MessageRegistry,
        handlers: Mapping[str, Handler],
        batch_handler: BatchHandler,
        stats: ConsumerStats,
        dead_letter: DeadLetter,
        stopping: Callable[[], bool],
        backoff: Callable[[float], Awaitable[None]],
        max_attempts: int,
        retry_backoff_s: float,
        retry_max_s: float,
    ) -> None:
        self.database = database
        self.group_id = group_id
        self.registry = registry
        self.handlers = handlers
        self.batch_handler = batch_handler
        self.stats = stats
        self.max_attempts = max_attempts
        self.retry_backoff_s = retry_backoff_s
        self.retry_max_s = retry_max_s
        self._send_dead_letter = dead_letter
        self._stopping = stopping
        self._backoff = backoff

    def decode(self, record: Record) -> Decoded:
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        try:
            envelope = Envelope.from_kafka(record.headers)
            handler = self.handlers.get(envelope.message_type)
            if handler is None:
                raise MessageDecodeError(
                    f"no handler for message type {envelope.message_type!r} in consumer group {self.group_id!r}"
                )
            message = self.registry.decode(
                envelope.message_type, envelope.schema_version, record.value or b"", lambda: where
            )
        except MessageDecodeError as exc:
            return Decoded(record, exc)
        except Exception as exc:  # an upcaster or a validator that raised something else
            problem = MessageDecodeError(f"cannot decode {where}: {exc!r}")
            problem.__cause__ = exc
            return Decoded(record, problem)
        return Decoded(record, Delivery(handler, message, envelope, record))

    # --- the one way deliveries are applied ------------------------------------------------

    async def transact(self, deliveries: Sequence[Delivery], *, together: bool) -> Applied:
        """In one transaction: `together`, the inbox rows and the batch handler on the fresh
        deliveries, all or nothing; otherwise each delivery's inbox row and handler in turn,
        committing those before the first that fails. Never raises an `Exception`: what
        went wrong is the result's `failure`, for the caller to judge."""
        if not deliveries:
            return Applied(0)
        spans = ProcessSpans(self.group_id)
        try:
            with translate_errors():
                async with self.database.begin() as conn:
                    if together:
                        fresh = await self._claim(conn, deliveries)
                        if fresh:
                            await self.batch_handler(conn, spans.start(fresh))
                        handled, applied = len(fresh), Applied(len(deliveries))
                    else:
                        handled, applied = await self._in_turn(conn, deliveries, spans)
        except BaseException as exc:
            spans.end(exc)  # rolled back (cancelled, too: a slow batch goes on in lanes)
            if not isinstance(exc, Exception):
                raise
            return Applied(0, exc)
        spans.end()
        self.stats.handled += handled
        self.stats.duplicates += applied.count - handled
        count_applied(self.group_id, handled, applied.count - handled)
        return applied

    async def _in_turn(
        self, conn: AsyncConnection, deliveries: Sequence[Delivery], spans: ProcessSpans
    ) -> tuple[int, Applied]:
        """Returns how many handlers ran, and what was applied."""
        # The first needs no savepoint: when it fails, there is nothing to keep.
        handled = await self._apply_one(conn, deliveries[0], spans)
        for i, d in enumerate(deliveries[1:], start=1):
            try:
                async with conn.begin_nested():
                    handled += await self._apply_one(conn, d, spans)
            except Exception as exc:
                if classify_error(exc) is ErrorKind.CONNECTION_LOST:
                    raise
                return handled, Applied(i, exc)
        return handled, Applied(len(deliveries))

    async def _apply_one(self, conn: AsyncConnection, d: Delivery, spans: ProcessSpans) -> int:
        if not await self._claim(conn, [d]):
            return 0
        (d,) = spans.start([d])
        try:
            with log_context_of(d.envelope), in_context(d.envelope.traceparent):
                await d.handler(conn, d.message, d.envelope)
        except Exception as exc:
            spans.fail_last(exc)  # the ones before it may still commit
            raise
        return 1

    async def _claim(self, conn: AsyncConnection, deliveries: Sequence[Delivery]) -> list[Delivery]:
        """Insert the inbox rows; returns the deliveries whose messages were not seen before."""
        driver = await driver_connection(conn)
        cur = await driver.execute(
            INBOX_CLAIM,
            (
                self.group_id,
                [d.envelope.message_id for d in deliveries],
                [d.envelope.message_type for d in deliveries],
            ),
        )
        new = {row[0] for row in await cur.fetchall()}
        fresh = []
        for d in deliveries:
            if d.envelope.message_id in new:  # the first of a message sent twice in one fetch
                new.discard(d.envelope.message_id)
                fresh.append(d)
        return fresh

    # --- when to use which -----------------------------------------------------------------

    async def apply_fetch(self, decoded: Sequence[Decoded]) -> bool | None:
        """The deliveries of a whole fetch together, until that is not held up by contention
        or Postgres being away. False when it failed for a reason of the records' own (go on
        partition by partition); None when the consumer stops while Postgres is away."""
        deliveries = [d.result for d in decoded if isinstance(d.result, Delivery)]
        while True:
            failure = (await self.transact(deliveries, together=True)).failure
            if failure is None:
                return True
            if not await self._not_their_fault(failure):
                log.info(
                    "consumer %s: %d records failed together (%r); handling them one by one",
                    self.group_id,
                    len(deliveries),
                    failure,
                )
                return False
            if self._stopping():
                return None

    async def apply_partition(self, decoded: Sequence[Decoded]) -> int:
        """One partition's records in order (see the module docstring); returns the offset
        after the last one done."""
        done, together = 0, True
        try:
            while done < len(decoded):
                run = _deliveries_from(decoded, done)
                if run:
                    applied = await self.transact(run, together=together)
                    done += applied.count
                    if applied.failure is None:
                        continue
                    if await self._not_their_fault(applied.failure):
                        if self._stopping():
                            break
                        continue
                    if together:
                        together = False
                        continue
                # The record at `done` cannot be decoded, or is the one that failed in turn.
                if not await self.apply_record(decoded[done]):
                    break
                done += 1
                together = True
        except Exception:
            log.exception("consumer %s: unexpected failure; the record will be fetched again", self.group_id)
            await self._backoff(self.retry_max_s)
        return offset_after(decoded, done)

    async def apply_record(self, item: Decoded) -> bool:
        """One record in a transaction of its own, until it is applied or dead-lettered.
        False when the consumer stops first."""
        d = item.result
        if isinstance(d, MessageDecodeError):
            return await self.dead_letter(item.record, f"undecodable: {d}", type(d).__name__, 0)
        with log_context_of(d.envelope):  # its retries' and dead letter's lines are about its saga
            return await self._retry(item, d)

    async def _retry(self, item: Decoded, d: Delivery) -> bool:
        attempt = 0
        while True:
            failure = (await self.transact([d], together=False)).failure
            if failure is None:
                return True
            kind = classify_error(failure)
            if kind is ErrorKind.CONTENTION:
                self.stats.collisions += 1
                delay = 0.05
            elif kind is ErrorKind.CONNECTION_LOST:
                log.warning("consumer %s: %s: Postgres unavailable (%s)", self.group_id, item.where, failure)
                delay = self.retry_max_s
            else:
                attempt += 1
                if not is_retriable(failure) or attempt >= self.max_attempts:
                    reason = f"handler failed after {attempt} attempt(s): {failure!r}"
                    return await self.dead_letter(item.record, reason, type(failure).__name__, attempt)
                self.stats.retries += 1
                delay = min(self.retry_backoff_s * 2 ** (attempt - 1), self.retry_max_s)
                log.warning(
                    "consumer %s: %s attempt %d failed (%r)", self.group_id, item.where, attempt, failure
                )
            if self._stopping():
                return False
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def dead_letter(self, record: Record, reason: str, error_type: str, attempts: int) -> bool:
        sent = await self._send_dead_letter(record, reason, error_type, attempts)
        if sent:
            self.stats.dead_lettered += 1
            count_dead_letter(record.topic)
        return sent

    async def _not_their_fault(self, failure: Exception) -> bool:
        """True for contention or Postgres being away, once it is time to run the same again."""
        kind = classify_error(failure)
        if kind is ErrorKind.CONTENTION:
            self.stats.collisions += 1
            await asyncio.sleep(random.uniform(0.005, 0.05))
            return True
        if kind is ErrorKind.CONNECTION_LOST:
            log.warning("consumer %s: Postgres unavailable (%s); waiting", self.group_id, failure)
            await self._backoff(self.retry_max_s)
            return True
        return False


def _deliveries_from(decoded: Sequence[Decoded], start: int) -> list[Delivery]:
    """The deliveries from `start` up to the first record that cannot be decoded."""
    run = []
    for item in decoded[start:]:
        if not isinstance(item.result, Delivery):
            break
        run.append(item.result)
    return run
