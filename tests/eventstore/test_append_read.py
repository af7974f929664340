"""Appending and reading streams on the real Postgres."""

from __future__ import annotations

import asyncio
import re
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore import (
    ANY,
    NO_STREAM,
    ConcurrencyError,
    Database,
    DuplicateEventError,
    EventStore,
    EventTypeError,
    NewEvents,
    eventstore_migrations,
    upgrade,
)
from tests.eventstore.events import Deposited, Noted, Withdrawn, make_registry, noted
from tests.helpers import wait_for


async def test_append_then_read_back_typed_events(store: EventStore) -> None:
    result = await store.append(
        "acct-1",
        [Deposited(amount=Decimal("10.50")), Withdrawn(amount=Decimal("3"))],
        NO_STREAM,
        correlation_id="corr-1",
        causation_id="cause-1",
    )
    assert (result.first_version, result.last_version) == (1, 2)
    events = await store.load("acct-1")
    assert [e.event for e in events] == [Deposited(amount=Decimal("10.50")), Withdrawn(amount=Decimal("3"))]
    assert [e.version for e in events] == [1, 2]
    assert [e.position for e in events] == result.positions
    assert events[0].metadata.correlation_id == "corr-1"
    assert events[0].metadata.causation_id == "cause-1"
    assert events[0].metadata.event_id != events[1].metadata.event_id
    assert events[0].type == "account.deposited"


async def test_expected_versions(store: EventStore) -> None:
    await store.append("s", [Noted(writer=0, seq=1)], NO_STREAM)
    with pytest.raises(ConcurrencyError) as info:
        await store.append("s", [Noted(writer=0, seq=2)], NO_STREAM)
    assert (info.value.stream_id, info.value.expected, info.value.actual) == ("s", NO_STREAM, 1)
    assert str(info.value) == "stream 's': expected version no stream, actual 1"
    assert info.value.retriable

    with pytest.raises(ConcurrencyError, match=r"stream 's': expected version 3, actual 1"):
        await store.append("s", [Noted(writer=0, seq=2)], 3)
    await store.append("s", [Noted(writer=0, seq=2)], 1)
    await store.append("s", [Noted(writer=0, seq=3)], ANY)
    with pytest.raises(ConcurrencyError, match=r"expected version 1, actual 0"):
        await store.append("missing-versions-stay-contiguous", [Noted(writer=0, seq=1)], 1)
    assert await store.stream_version("s") == 3
    assert [e.version for e in await store.load("s")] == [1, 2, 3]


@pytest.mark.parametrize("bad", [0, -1, None, "3", True, 2.0])
async def test_bad_expected_version_is_rejected_with_its_value(store: EventStore, bad: object) -> None:
    with pytest.raises(
        ValueError, match=rf"expected_version must be an int >= 1, NO_STREAM or ANY; got {bad!r}"
    ):
        await store.append("s", [Noted(writer=0, seq=1)], bad)  # type: ignore[arg-type]
    assert await store.stream_version("s") == 0


async def test_bad_batches_are_rejected(store: EventStore) -> None:
    with pytest.raises(ValueError, match="no events given"):
        await store.append("s", [], ANY)
    with pytest.raises(ValueError, match="10001 events in one append; at most 10000"):
        await store.append("s", [Noted(writer=0, seq=i) for i in range(10_001)], ANY)
    same = uuid.uuid4()
    with pytest.raises(ValueError, match="the same event id twice in one append"):
        await store.append("s", [Noted(writer=0, seq=1), Noted(writer=0, seq=2)], ANY, event_ids=[same, same])
    assert await store.stream_version("s") == 0
    result = await store.append("s", [Noted(writer=0, seq=i) for i in range(10_000)], NO_STREAM)
    assert result.last_version == 10_000


async def test_append_on_a_connection_without_a_transaction(engine: AsyncEngine, store: EventStore) -> None:
    async with engine.connect() as conn:
        await store.append("auto", [Noted(writer=0, seq=1)], NO_STREAM, conn=conn)
        assert conn.in_transaction()
        await conn.commit()
    assert await store.stream_version("auto") == 1


async def test_any_retries_when_appenders_collide(store: EventStore) -> None:
    await asyncio.gather(*(store.append("busy", [Noted(writer=w, seq=0)], ANY) for w in range(6)))
    events = await store.load("busy")
    assert [e.version for e in events] == [1, 2, 3, 4, 5, 6]
    assert sorted(noted(e.event).writer for e in events) == list(range(6))


async def test_a_cancelled_statement_does_not_poison_the_next(engine: AsyncEngine, store: EventStore) -> None:
    sleeper = asyncio.create_task(_sleep_in_store(store))

    async def sleeping() -> bool:
        async with engine.connect() as conn:
            query = text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'SELECT pg_sleep(30)%'"
            )
            return bool((await conn.execute(query)).scalar_one())

    await wait_for(sleeping, 10, "the store's statement to be running")
    sleeper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeper
    result = await asyncio.wait_for(store.append("after", [Noted(writer=0, seq=1)], NO_STREAM), timeout=10)
    assert result.last_version == 1
    await wait_for(lambda: _not(sleeping), 10, "the cancelled statement to end")


async def _sleep_in_store(store: EventStore) -> None:
    await store._fetch(None, "SELECT pg_sleep(30)", {})


async def _not(condition: object) -> bool:
    assert callable(condition)
    return not await condition()


async def _wait_until_blocked_on_a_lock(engine: AsyncEngine, deadline_s: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    while loop.time() < deadline:
        async with engine.connect() as conn:
            if (await conn.execute(query)).scalar_one() > 0:
                return
        await asyncio.sleep(0.02)
    raise AssertionError("the second appender never waited on the first one's row")


async def test_two_appenders_racing_on_one_version(engine: AsyncEngine, store: EventStore) -> None:
    await store.append("race", [Noted(writer=0, seq=0)], NO_STREAM)
    async with engine.connect() as first:
        await first.begin()
        await store.append("race", [Noted(writer=1, seq=1)], 1, conn=first)
        # The second appender read version 1 too; its insert of version 2 waits on ours.
        second = asyncio.create_task(store.append("race", [Noted(writer=2, seq=1)], 1))
        await _wait_until_blocked_on_a_lock(engine)
        await first.commit()
    with pytest.raises(ConcurrencyError, match=r"stream 'race': expected version 1, actual changed"):
        await second
    events = await store.load("race")
    assert [(e.version, noted(e.event).writer) for e in events] == [(1, 0), (2, 1)]


async def test_many_racers_exactly_one_wins_each_version(store: EventStore) -> None:
    await store.append("hot", [Noted(writer=0, seq=0)], NO_STREAM)

    async def attempt(writer: int) -> bool:
        try:
            await store.append("hot", [Noted(writer=writer, seq=1)], 1)
        except ConcurrencyError:
            return False
        return True

    wins = await asyncio.gather(*(attempt(w) for w in range(1, 9)))
    assert sum(wins) == 1
    assert await store.stream_version("hot") == 2


async def test_append_joins_the_callers_transaction(engine: AsyncEngine, store: EventStore) -> None:
    async with engine.connect() as conn:
        await conn.begin()
        await store.append("tx", [Noted(writer=0, seq=1)], NO_STREAM, conn=conn)
        await conn.execute(text("CREATE TABLE side_effect (id int)"))
        await conn.rollback()
    assert await store.stream_version("tx") == 0

    async with engine.begin() as conn:
        await store.append("tx", [Noted(writer=0, seq=1)], NO_STREAM, conn=conn)
        assert await store.stream_version("tx", conn=conn) == 1
    assert await store.stream_version("tx") == 1


async def test_unregistered_type_and_duplicate_event_id(store: EventStore) -> None:
    from pydantic import BaseModel

    class Stranger(BaseModel):
        x: int

    with pytest.raises(EventTypeError, match="Stranger is not a registered event type"):
        await store.append("s", [Stranger(x=1)], ANY)

    event_id = uuid.uuid4()
    await store.append("a", [Noted(writer=0, seq=1)], NO_STREAM, event_ids=[event_id])
    with pytest.raises(DuplicateEventError, match="stream 'b': an event id was appended before"):
        await store.append("b", [Noted(writer=0, seq=1)], NO_STREAM, event_ids=[event_id])
    assert await store.stream_version("b") == 0


async def test_read_stream_pages_and_ranges(database: Database, registry: object) -> None:
    from eventstore import EventRegistry

    assert isinstance(registry, EventRegistry)
    store = EventStore(database, registry, page_size=7)
    for batch in range(5):
        await store.append("long", [Noted(writer=0, seq=batch * 10 + i) for i in range(10)], ANY)
    seqs = [noted(e.event).seq async for e in store.read_stream("long")]
    assert seqs == [b * 10 + i for b in range(5) for i in range(10)]
    middle = [e.version async for e in store.read_stream("long", from_version=12, to_version=30)]
    assert middle == list(range(12, 31))
    assert [e.version for e in await store.load("long", to_version=3)] == [1, 2, 3]


async def test_the_stores_own_connections_are_made_like_the_engines(
    engine: AsyncEngine, database_url: str
) -> None:
    """connect_args given to the engine reach the store's own connections: here a search_path
    that puts the whole event store in a schema of its own."""
    async with engine.begin() as conn:
        await conn.execute(text("CREATE SCHEMA tenant"))
    async with Database(database_url, connect_args={"options": "-c search_path=tenant"}) as tenant:
        await upgrade(tenant.engine, eventstore_migrations())
        store = EventStore(tenant, make_registry())
        await store.append("s", [Noted(writer=0, seq=1)], NO_STREAM)  # on an autocommit connection
        assert await store.stream_version("s") == 1
        async with tenant.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM tenant.es_events"))).scalar_one() == 1
            assert (await conn.execute(text("SELECT count(*) FROM public.es_events"))).scalar_one() == 0
    with pytest.raises(ValueError, match="takes a url or an engine"):
        Database()


@pytest.mark.parametrize(
    ("stream_id", "event", "message"),
    [
        ("acct\x00-1", Deposited(amount=Decimal(1)), "contains a NUL character"),
        ("a" * 1001, Deposited(amount=Decimal(1)), "1001 bytes, over the 1000 allowed"),
        ("", Deposited(amount=Decimal(1)), "a stream id is a non-empty string"),
        ("acct-1", Deposited(amount=Decimal(1), currency="E\x00R"), "contains a NUL character (\\x00)"),
    ],
)
async def test_what_postgres_cannot_store_is_refused_before_writing(
    store: EventStore, stream_id: str, event: Deposited, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        await store.append(stream_id, [event], NO_STREAM)
    with pytest.raises(ValueError, match=re.escape(message)):
        await store.append_many([NewEvents(stream_id, [event], NO_STREAM)])
    assert await store.stream_ids("") == []
