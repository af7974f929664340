"""Appending to several streams in one statement, and loading several streams in one query."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore import ANY, NO_STREAM, ConcurrencyError, EventStore, NewEvents
from tests.eventstore.events import Noted
from tests.helpers import wait_for


def noted(writer: int, *seqs: int) -> list[Noted]:
    return [Noted(writer=writer, seq=s) for s in seqs]


async def test_append_many_writes_every_stream_in_order(store: EventStore) -> None:
    await store.append("b", noted(0, 1), NO_STREAM)
    results = await store.append_many(
        [
            NewEvents("a", noted(1, 1, 2, 3), NO_STREAM, correlation_id="saga-a"),
            NewEvents("b", noted(2, 2), 1),
            NewEvents("c", noted(3, 1), ANY),
        ]
    )
    assert [(r.stream_id, r.first_version, r.last_version) for r in results] == [
        ("a", 1, 3),
        ("b", 2, 2),
        ("c", 1, 1),
    ]
    loaded = await store.load_many(["a", "b", "c", "none"])
    assert [e.event for e in loaded["a"]] == noted(1, 1, 2, 3)
    assert [e.version for e in loaded["b"]] == [1, 2]
    assert loaded["none"] == []
    assert loaded["a"][0].metadata.correlation_id == "saga-a"
    # Positions follow versions within a stream, so the global feed shows each stream in order.
    assert [e.position for e in loaded["a"]] == sorted(e.position for e in loaded["a"])
    assert results[0].positions == [e.position for e in loaded["a"]]
    feed: list[int] = []

    async def feed_shows_a() -> bool:
        feed[:] = [e.version for e in await store.read_all() if e.stream_id == "a"]
        return len(feed) == 3

    # The feed holds back events behind any transaction open on the server, another database's too.
    await wait_for(feed_shows_a, 30, "the feed to show stream a's three events")
    assert feed == [1, 2, 3]


async def test_one_failed_expectation_writes_nothing_and_names_the_stream(store: EventStore) -> None:
    await store.append("b", noted(0, 1, 2), NO_STREAM)
    with pytest.raises(ConcurrencyError) as info:
        await store.append_many([NewEvents("a", noted(1, 1), NO_STREAM), NewEvents("b", noted(2, 3), 1)])
    assert (info.value.stream_id, info.value.expected, info.value.actual) == ("b", 1, 2)
    assert await store.stream_version("a") == 0
    assert await store.stream_version("b") == 2


async def test_bad_batches_are_rejected_before_writing(store: EventStore) -> None:
    assert await store.append_many([]) == []
    with pytest.raises(ValueError, match="a stream appears twice"):
        await store.append_many([NewEvents("a", noted(1, 1), ANY), NewEvents("a", noted(1, 2), ANY)])
    with pytest.raises(ValueError, match=r"append to 'b': no events given"):
        await store.append_many([NewEvents("a", noted(1, 1), ANY), NewEvents("b", [], ANY)])
    with pytest.raises(ValueError, match="expected_version must be an int >= 1"):
        await store.append_many([NewEvents("a", noted(1, 1), 0)])
    assert await store.stream_version("a") == 0


async def test_racing_batches_on_a_shared_stream_one_wins(engine: AsyncEngine, store: EventStore) -> None:
    """Two transactions append to the same stream as loaded: the second to commit fails whole."""
    await store.append("shared", noted(0, 1), NO_STREAM)
    async with engine.connect() as first, engine.connect() as second:
        await store.append_many(
            [NewEvents("shared", noted(1, 2), 1), NewEvents("x", noted(1, 1), ANY)], conn=first
        )
        late = asyncio.create_task(
            store.append_many(
                [NewEvents("y", noted(2, 1), ANY), NewEvents("shared", noted(2, 2), 1)], conn=second
            )
        )
        await wait_for(lambda: blocked_on_a_lock(engine), 10, "the second batch to wait on the first")
        await first.commit()
        with pytest.raises(ConcurrencyError) as info:
            await late
        await second.rollback()
    assert info.value.stream_id == "shared"
    assert [e.event for e in (await store.load_many(["shared", "x", "y"]))["shared"]] == noted(0, 1) + noted(
        1, 2
    )
    assert await store.stream_version("y") == 0


async def blocked_on_a_lock(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        waiting = await conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
        return bool(waiting.scalar_one())
