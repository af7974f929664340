"""Outbox.pending and Outbox.counts: what waits in the outbox, asked of the outbox."""

from __future__ import annotations

from datetime import datetime

from eventstore import Database
from outbox import Outbox, PendingMessage, RelayLag
from tests.outbox.messages import Ping, Unhandled


async def test_pending_lists_a_keys_messages_oldest_first(database: Database, outbox: Outbox) -> None:
    assert await Outbox.pending(database, "saga-1") == []
    async with database.begin() as conn:
        for attempt in (1, 2):
            envelope = outbox.envelope(
                Ping(key="k", seq=attempt), saga_id="saga-1", step="reserve", attempt=attempt
            )
            await outbox.put(
                conn, Ping(key="k", seq=attempt), topic="commands", key="saga-1", envelope=envelope
            )
        await outbox.put(conn, Unhandled(note="no step"), topic="other", key="saga-1")
        await outbox.put(conn, Ping(key="k", seq=9), topic="commands", key="saga-2")
        # Inside the writing transaction its own rows are visible already.
        assert len(await outbox.pending(conn, "saga-1")) == 3

    pending = await outbox.pending(database, "saga-1")
    assert [(p.topic, p.message_type, p.step, p.attempt) for p in pending] == [
        ("commands", "test.ping", "reserve", 1),
        ("commands", "test.ping", "reserve", 2),
        ("other", "test.unhandled", None, None),
    ]
    assert all(isinstance(p, PendingMessage) and isinstance(p.created_at, datetime) for p in pending)
    assert pending[0].created_at <= pending[1].created_at <= pending[2].created_at


async def test_counts_says_how_many_wait_and_for_how_long(database: Database, outbox: Outbox) -> None:
    assert await Outbox.counts(database) == RelayLag(0, 0.0)
    async with database.begin() as conn:
        for seq in range(4):
            await outbox.put(conn, Ping(key="k", seq=seq), topic="commands", key="k")
    counts = await Outbox.counts(database)
    assert counts.pending == 4
    assert counts.oldest_age_s >= 0
    async with database.connect() as conn:
        assert (await outbox.counts(conn)).pending == 4
