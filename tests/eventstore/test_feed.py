"""The global feed: nothing skipped, nothing twice, same order for every reader."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventstore import ANY, NO_STREAM, ConcurrencyError, EventStore, RecordedEvent, SchemaError, Subscription
from tests.eventstore.events import Noted
from tests.helpers import wait_for

WRITERS = 8
EVENTS_PER_WRITER = 650  # 8 x 650 = 5,200 committed events at least


async def test_gap_free_feed_under_concurrent_writers(engine: AsyncEngine, store: EventStore) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE side_writes (writer int, n int)"))

    received: list[RecordedEvent] = []

    async def collect(conn: AsyncConnection, events: list[RecordedEvent]) -> None:
        received.extend(events)

    follower = Subscription(store, "follower", collect, batch_size=200, poll_interval_s=0.05)
    await follower.start()
    rng = random.Random(20261126)
    committed: dict[str, int] = defaultdict(int)
    rolled_back = conflicts = 0

    async def writer(w: int) -> None:
        nonlocal rolled_back, conflicts
        written = 0
        while written < EVENTS_PER_WRITER:
            # Shared streams make writers collide; an earlier side write gives the transaction
            # its id before the append (the case where per-stream order could invert).
            stream = f"stream-{rng.randrange(12)}"
            n = rng.randint(1, 10)
            async with engine.connect() as conn:
                await conn.begin()
                if rng.random() < 0.3:
                    await conn.execute(text("INSERT INTO side_writes VALUES (:w, :n)"), {"w": w, "n": n})
                    await asyncio.sleep(rng.uniform(0, 0.01))
                try:
                    await store.append(
                        stream, [Noted(writer=w, seq=written + i) for i in range(n)], ANY, conn=conn
                    )
                except ConcurrencyError:
                    conflicts += 1
                    await conn.rollback()
                    continue
                await asyncio.sleep(rng.uniform(0, 0.01))
                if rng.random() < 0.05:
                    await conn.rollback()
                    rolled_back += 1
                    continue
                await conn.commit()
            committed[stream] += n
            written += n

    try:
        await asyncio.gather(*(writer(w) for w in range(WRITERS)))
        total = sum(committed.values())
        assert total >= 5000
        await wait_for(lambda: len(received) >= total, 60, f"the follower to receive {total} events")
    finally:
        await follower.stop()

    async with engine.connect() as conn:
        stored = (await conn.execute(text("SELECT position FROM es_events"))).scalars().all()
    positions = [e.position for e in received]
    assert len(positions) == len(set(positions)), "an event was delivered twice"
    assert sorted(positions) == sorted(stored), "the follower missed events or got rolled-back ones"
    assert len(stored) == total

    per_stream: dict[str, list[int]] = defaultdict(list)
    for event in received:
        per_stream[event.stream_id].append(event.version)
    for stream, versions in per_stream.items():
        assert versions == list(range(1, committed[stream] + 1)), f"{stream} out of order in the feed"

    second: list[RecordedEvent] = []

    async def collect_second(conn: AsyncConnection, events: list[RecordedEvent]) -> None:
        second.extend(events)

    await Subscription(store, "second", collect_second, batch_size=333).run_until_caught_up()
    assert [e.position for e in second] == positions
    assert rolled_back > 0  # the run really exercised rollbacks


async def test_checkpoint_commits_with_the_handlers_effects(engine: AsyncEngine, store: EventStore) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE totals (writer int PRIMARY KEY, events int NOT NULL)"))
    for i in range(30):
        await store.append(f"s-{i % 3}", [Noted(writer=i % 3, seq=i)], ANY)

    fail_next = True

    async def project(conn: AsyncConnection, events: list[RecordedEvent]) -> None:
        nonlocal fail_next
        for event in events:
            assert isinstance(event.event, Noted)
            await conn.execute(
                text(
                    "INSERT INTO totals VALUES (:w, 1) ON CONFLICT (writer) DO UPDATE SET events = totals.events + 1"
                ),
                {"w": event.event.writer},
            )
        if fail_next:
            fail_next = False
            raise RuntimeError("projection crashed mid-batch")

    sub = Subscription(store, "totals", project, batch_size=7)
    try:
        await sub.process_batch()
        raise AssertionError("the first batch should have failed")
    except RuntimeError:
        pass
    assert await sub.checkpoint() == (0, 0)
    assert await sub.run_until_caught_up() == 30
    async with engine.connect() as conn:
        totals: dict[int, int] = dict((await conn.execute(text("SELECT writer, events FROM totals"))).all())
    assert totals == {0: 10, 1: 10, 2: 10}
    assert (await sub.checkpoint()).position == max(e.position for e in await store.read_all())
    assert await sub.run_until_caught_up() == 0


async def test_a_long_open_transaction_holds_readers_back_without_skipping(
    engine: AsyncEngine, store: EventStore
) -> None:
    async with engine.connect() as slow:
        await slow.begin()
        await store.append("slow", [Noted(writer=1, seq=1)], ANY, conn=slow)
        await store.append("fast", [Noted(writer=2, seq=1)], ANY)
        assert await store.read_all() == []  # the fast event waits behind the open transaction
        assert await store.feed_lag() == 1
        await slow.commit()
    assert [e.stream_id for e in await store.read_all()] == ["slow", "fast"]
    await store.check_cluster()


async def test_two_instances_of_one_subscriber_take_turns(engine: AsyncEngine, store: EventStore) -> None:
    for i in range(20):
        await store.append(f"s-{i}", [Noted(writer=0, seq=n) for n in range(25)], ANY)
    received: list[int] = []

    async def collect(conn: AsyncConnection, events: list[RecordedEvent]) -> None:
        received.extend(e.position for e in events)
        await asyncio.sleep(0.01)  # widen the window in which the two would overlap

    twins = [Subscription(store, "twin", collect, batch_size=20, poll_interval_s=0.05) for _ in range(2)]
    for twin in twins:
        await twin.start()
    try:
        await wait_for(lambda: len(received) >= 500, 30, "500 events")
    finally:
        for twin in twins:
            await twin.stop()
    assert len(received) == len(set(received)) == 500


async def test_notify_wakes_a_subscriber_long_before_its_poll(store: EventStore) -> None:
    received: list[RecordedEvent] = []

    async def collect(conn: AsyncConnection, events: list[RecordedEvent]) -> None:
        received.extend(events)

    await store.append("a", [Noted(writer=0, seq=1)], ANY)
    sub = Subscription(store, "sleepy", collect, poll_interval_s=600)
    await sub.start()
    await sub.start()  # a second start is harmless
    try:
        await wait_for(lambda: len(received) == 1, 10, "the first batch")
        await store.append("b", [Noted(writer=0, seq=2)], ANY)
        await wait_for(lambda: len(received) == 2, 10, "the NOTIFY to wake the subscriber")
    finally:
        await sub.stop()
        await sub.stop()
    assert [e.stream_id for e in received] == ["a", "b"]


async def test_events_from_another_cluster_are_refused(engine: AsyncEngine, store: EventStore) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO es_events (tx_id, stream_id, version, event_id, type, schema_version, data, metadata) "
                "VALUES (1099511627776, 'restored', 1, gen_random_uuid(), 'test.noted', 1, "
                "'{\"writer\": 0, \"seq\": 0}', '{}')"
            )
        )
    with pytest.raises(SchemaError, match=r"transaction id 1099511627776 but this cluster is at \d+"):
        await store.check_cluster()

    async def ignore(conn: AsyncConnection, events: list[RecordedEvent]) -> None:
        pass

    with pytest.raises(SchemaError, match="restored from another cluster"):
        await Subscription(store, "restored", ignore).start()


async def test_a_notify_wakes_a_waiting_subscription(store: EventStore) -> None:
    """Polling once a minute, the subscription still sees a new event at once: the append's
    NOTIFY reached its LISTEN connection (made the way the store's own connections are)."""
    seen: list[int] = []

    async def collect(conn: AsyncConnection, events: list[RecordedEvent]) -> None:
        seen.extend(e.version for e in events)

    async def listening() -> bool:
        async with store.database.connect() as conn:
            found = await conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND query = 'LISTEN es_events'"
                )
            )
            return bool(found.scalar_one())

    sub = Subscription(store, "woken", collect, poll_interval_s=60)
    await sub.start()
    try:
        await wait_for(listening, 20, "the subscription to LISTEN")
        await store.append("late", [Noted(writer=0, seq=1)], NO_STREAM)
        await wait_for(lambda: seen == [1], 20, "the NOTIFY to wake the subscription")
    finally:
        await sub.stop()
