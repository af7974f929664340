"""Catch-up subscriptions: a named reader follows the global feed from a stored checkpoint.

Each batch runs in one transaction: the handler's own writes and the new checkpoint commit
together, so a crash replays at most the batch that did not commit, and a handler that
writes a read model idempotently gets every event's effect exactly once.

Two processes running the same subscriber take turns: an advisory lock on its name guards
each batch. (An advisory lock, not `SELECT ... FOR UPDATE` on the checkpoint row: a row lock
would give the batch's transaction an id before it reads the feed, and the feed only shows
rows below the oldest running transaction id; see `_store.py`.)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from eventstore._errors import translate_errors
from eventstore._queries import NOTIFY_CHANNEL
from eventstore._records import FEED_START, FeedPosition, RecordedEvent
from eventstore._store import EventStore
from eventstore._worker import Worker

log = logging.getLogger(__name__)

Handler = Callable[[AsyncConnection, list[RecordedEvent]], Awaitable[None]]

_LOCK = text("SELECT pg_advisory_xact_lock(hashtext('es_subscription:' || :name))")
_GET = text("SELECT tx_id, position FROM es_checkpoints WHERE subscriber = :name")
_SET = text(
    """
    INSERT INTO es_checkpoints (subscriber, tx_id, position) VALUES (:name, :tx_id, :position)
    ON CONFLICT (subscriber) DO UPDATE
        SET tx_id = excluded.tx_id, position = excluded.position, updated_at = now()
    """
)


async def load_checkpoint(conn: AsyncConnection, name: str) -> FeedPosition:
    row = (await conn.execute(_GET, {"name": name})).first()
    return FEED_START if row is None else FeedPosition(row[0], row[1])


async def save_checkpoint(conn: AsyncConnection, name: str, at: FeedPosition) -> None:
    """Store a checkpoint in the caller's transaction, beside the effects it stands for."""
    await conn.execute(_SET, {"name": name, "tx_id": at.tx_id, "position": at.position})


class Subscription(Worker):
    """Follows the feed: `await sub.start()` ... `await sub.stop()`, or `await sub.run_until_caught_up()`.

    It works through the store's database (its transactions and its LISTEN): the store
    decodes the feed with its registry, so one argument says both where and how to read.
    """

    def __init__(
        self,
        store: EventStore,
        name: str,
        handler: Handler,
        *,
        batch_size: int = 500,
        poll_interval_s: float = 1.0,
        listen: bool = True,
        retry_delay_s: float = 1.0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"subscription {name!r}: batch_size must be >= 1, got {batch_size}")
        if poll_interval_s <= 0:
            raise ValueError(f"subscription {name!r}: poll_interval_s must be > 0, got {poll_interval_s}")
        super().__init__()
        self.store = store
        self.name = name
        self.handler = handler
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.listen = listen
        self.retry_delay_s = retry_delay_s

    async def process_batch(self) -> int:
        """Handle the next batch in one transaction; returns how many events it held."""
        with translate_errors():
            async with self.store.database.begin() as conn:
                await conn.execute(_LOCK, {"name": self.name})
                after = await load_checkpoint(conn, self.name)
                events = await self.store.read_all(after, self.batch_size, conn=conn)
                if events:
                    await self.handler(conn, events)
                    await save_checkpoint(conn, self.name, events[-1].feed_position)
        return len(events)

    async def run_until_caught_up(self) -> int:
        """Process batches until the feed has nothing more to give; returns the event count."""
        total = 0
        while n := await self.process_batch():
            total += n
        return total

    async def checkpoint(self) -> FeedPosition:
        async with self.store.database.connect() as conn:
            return await load_checkpoint(conn, self.name)

    async def _open(self) -> None:
        # Data restored from another cluster would make the feed skip events: refuse loudly.
        await self.store.check_cluster()

    async def _run(self) -> None:
        wake = (
            self.store.database.listening(NOTIFY_CHANNEL, self._wakeup)
            if self.listen
            else contextlib.nullcontext()
        )
        async with wake:
            while not self._stopping.is_set():
                # Cleared before reading, so a NOTIFY that lands during the batch is not lost.
                self._wakeup.clear()
                try:
                    if await self.process_batch() == self.batch_size:
                        continue
                    delay = self.poll_interval_s
                except Exception:
                    log.exception(
                        "subscription %r: batch failed; retrying in %.1fs", self.name, self.retry_delay_s
                    )
                    delay = self.retry_delay_s
                await self._pause(delay)
