"""EventStore.stream_ids: the streams under a prefix, from a range of the stream index."""

from __future__ import annotations

from sqlalchemy import text

from eventstore import ANY, NO_STREAM, Database, EventStore
from eventstore._queries import prefix_end, stream_ids_sql
from tests.eventstore.events import Noted

TOP = chr(0x10FFFF)


async def test_stream_ids_lists_each_stream_under_the_prefix_once_in_order(store: EventStore) -> None:
    # Neighbours on both sides of the range, and ids a language collation would mix in.
    names = ["sag", "saga", "saga:", "saga:b", "saga:a", f"saga:{TOP}", "saga;", "sagab", "saga-x", "other"]
    for name in names:
        await store.append(name, [Noted(writer=0, seq=1)], NO_STREAM)
    await store.append("saga:a", [Noted(writer=0, seq=2), Noted(writer=0, seq=3)], ANY)

    assert await store.stream_ids("saga:") == ["saga:", "saga:a", "saga:b", f"saga:{TOP}"]
    assert await store.stream_ids("saga:a") == ["saga:a"]
    assert await store.stream_ids("nothing") == []
    assert await store.stream_ids("") == sorted(names, key=lambda s: s.encode())
    assert await store.stream_ids(f"saga:{TOP}") == [f"saga:{TOP}"]


async def test_a_prefix_is_text_not_a_pattern(store: EventStore) -> None:
    for name in ["a_b", "axb", "a%c", "abc"]:
        await store.append(name, [Noted(writer=0, seq=1)], NO_STREAM)
    assert await store.stream_ids("a_") == ["a_b"]
    assert await store.stream_ids("a%") == ["a%c"]


async def test_stream_ids_pages_with_after_and_limit(store: EventStore) -> None:
    for n in range(7):
        await store.append(f"p:{n}", [Noted(writer=0, seq=n)], NO_STREAM)
    pages, after = [], None
    while page := await store.stream_ids("p:", after=after, limit=3):
        pages.append(page)
        after = page[-1]
    assert pages == [["p:0", "p:1", "p:2"], ["p:3", "p:4", "p:5"], ["p:6"]]


def test_the_end_of_a_prefix_is_the_next_string_up() -> None:
    assert prefix_end("saga:") == "saga;"
    assert prefix_end(f"a{TOP}") == "b"
    assert prefix_end("\ud7ff") == "\ue000"  # no surrogates
    assert prefix_end(TOP) is None
    assert prefix_end("") is None


async def test_stream_ids_is_a_range_scan_of_the_stream_index(database: Database) -> None:
    """Not LIKE: the prefix becomes bounds on the (stream_id, version) index (stream_id is
    COLLATE "C", so the bounds are exact whatever the database's collation)."""
    async with database.connect() as conn:
        await conn.execute(text("SET LOCAL enable_seqscan = off"))
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        params = {"prefix": "saga:", "end": "saga;", "after": None, "limit": 10}
        cur = await driver.execute("EXPLAIN " + stream_ids_sql(True, False), params)
        plan = "\n".join(row[0] for row in await cur.fetchall())
    assert "es_events_stream_version" in plan
    assert (
        "Index Cond: ((stream_id >= 'saga:'::text) AND (stream_id < 'saga;'::text) AND (version = 1))" in plan
    )
