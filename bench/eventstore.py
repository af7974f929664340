"""Event store benchmark: the framework against plain psycopg on the same server, same run.

    python bench/eventstore.py          (DATABASE_URL set; `make bench` does it)

Prints a table, then one JSON line with the headline figures. Each measurement runs in a
fresh database created from scratch, so the runs do not see each other's rows.

The raw baselines use plain psycopg on the same server:
- append: an INSERT of the same rows into the same table (same indexes), one transaction per
  append, `executemany` for the 10-event appends;
- append_many: an executemany of the same rows (one per stream), one transaction per call;
- replay: a SELECT of the stream's rows with the driver's default types, JSON columns left as
  text (no decoding of any kind).
The store's append additionally checks the expected version, keeps the feed order and
queues a NOTIFY; its replay validates every payload into its pydantic model.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import orjson
import psycopg
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._scratch import ScratchDatabase
from eventstore import (
    ANY,
    NO_STREAM,
    Database,
    EventRegistry,
    EventStore,
    NewEvents,
    eventstore_migrations,
    libpq_url,
)


class Deposited(BaseModel):
    account: str
    amount: Decimal
    currency: str
    reference: str


registry = EventRegistry()
registry.register(Deposited, "bench.deposited")

APPENDS_1 = 1500  # single-writer appends per measurement
APPENDS_8 = 400  # per writer, 8 writers
REPLAY_EVENTS = 10_000
REPLAY_ROUNDS = 5
ROUNDS = 5


def event(i: int) -> Deposited:
    return Deposited(
        account=f"acct-{i % 97}", amount=Decimal(i) / 100, currency="EUR", reference=f"ref-{i:08d}"
    )


def scratch_database(server_url: str) -> ScratchDatabase:
    return ScratchDatabase(server_url, eventstore_migrations())


async def timed(workers: int, work: Callable[[int], Awaitable[int]]) -> float:
    """Run `work(worker)` on `workers` tasks; returns events/s over the wall time."""
    start = time.perf_counter()
    counts = await asyncio.gather(*(work(w) for w in range(workers)))
    return sum(counts) / (time.perf_counter() - start)


async def framework_append(server_url: str, workers: int, appends: int, batch: int) -> float:
    async with scratch_database(server_url) as db:
        database = Database(db.url, pool_size=workers)
        store = EventStore(database, registry)
        await store.append("warmup", [event(0)], ANY)

        async def work(w: int) -> int:
            stream = f"writer-{w}"
            for n in range(appends):
                await store.append(
                    stream, [event(n * batch + i) for i in range(batch)], n * batch if n else NO_STREAM
                )
            return appends * batch

        rate = await timed(workers, work)
        await database.aclose()
        return rate


_RAW_INSERT = (
    "INSERT INTO es_events (stream_id, version, event_id, type, schema_version, data, metadata) "
    "VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s::jsonb)"
)


def raw_row(stream: str, version: int, i: int, meta: str) -> tuple[object, ...]:
    return (stream, version, uuid.uuid4(), "bench.deposited", 1, event(i).model_dump_json(), meta)


async def raw_insert(server_url: str, workers: int, appends: int, batch: int) -> float:
    async with scratch_database(server_url) as db:
        conns = [await psycopg.AsyncConnection.connect(libpq_url(db.url)) for _ in range(workers)]
        meta = orjson.dumps({"correlation_id": "c"}).decode()

        async def work(w: int) -> int:
            conn, stream = conns[w], f"writer-{w}"
            for n in range(appends):
                rows = [raw_row(stream, n * batch + i + 1, n * batch + i, meta) for i in range(batch)]
                async with conn.cursor() as cur:
                    if batch == 1:
                        await cur.execute(_RAW_INSERT, rows[0])
                    else:
                        await cur.executemany(_RAW_INSERT, rows)
                await conn.commit()
            return appends * batch

        rate = await timed(workers, work)
        for conn in conns:
            await conn.close()
        return rate


APPEND_MANY_CALLS = 100
APPEND_MANY_STREAMS = 100


async def framework_append_many(server_url: str) -> float:
    """append_many: one event to each of APPEND_MANY_STREAMS new streams per call."""
    async with scratch_database(server_url) as db:
        database = Database(db.url)
        store = EventStore(database, registry)

        async def work(_: int) -> int:
            for n in range(APPEND_MANY_CALLS):
                await store.append_many(
                    [
                        NewEvents(f"s{n}-{k}", [event(n * APPEND_MANY_STREAMS + k)], NO_STREAM)
                        for k in range(APPEND_MANY_STREAMS)
                    ]
                )
            return APPEND_MANY_CALLS * APPEND_MANY_STREAMS

        rate = await timed(1, work)
        await database.aclose()
        return rate


async def raw_insert_many(server_url: str) -> float:
    """The same rows, an executemany of APPEND_MANY_STREAMS rows per transaction."""
    async with scratch_database(server_url) as db:
        meta = orjson.dumps({}).decode()
        async with await psycopg.AsyncConnection.connect(libpq_url(db.url)) as conn:

            async def work(_: int) -> int:
                for n in range(APPEND_MANY_CALLS):
                    rows = [
                        raw_row(f"s{n}-{k}", 1, n * APPEND_MANY_STREAMS + k, meta)
                        for k in range(APPEND_MANY_STREAMS)
                    ]
                    async with conn.cursor() as cur:
                        await cur.executemany(_RAW_INSERT, rows)
                    await conn.commit()
                return APPEND_MANY_CALLS * APPEND_MANY_STREAMS

            return await timed(1, work)


async def replay(server_url: str) -> tuple[float, float]:
    async with scratch_database(server_url) as db:
        database = Database(db.url)
        store = EventStore(database, registry)
        for n in range(REPLAY_EVENTS // 100):
            await store.append("long", [event(n * 100 + i) for i in range(100)], ANY)

        framework, raw = [], []
        async with await psycopg.AsyncConnection.connect(libpq_url(db.url)) as conn:
            for _ in range(REPLAY_ROUNDS):
                start = time.perf_counter()
                count = 0
                async for recorded in store.read_stream("long"):
                    assert isinstance(recorded.event, Deposited)
                    count += 1
                framework.append(count / (time.perf_counter() - start))

                start = time.perf_counter()
                async with conn.cursor() as cur:
                    # The same columns the store selects, left as the driver returns them.
                    await cur.execute(
                        "SELECT position, tx_id, stream_id, version, event_id, type, schema_version, "
                        "data::text, metadata::text, recorded_at FROM es_events "
                        "WHERE stream_id = %s ORDER BY version",
                        ("long",),
                    )
                    rows = await cur.fetchall()
                raw.append(len(rows) / (time.perf_counter() - start))
                assert len(rows) == count == REPLAY_EVENTS
        await database.aclose()
        return max(framework), max(raw)


async def main() -> None:
    server_url = os.environ.get("DATABASE_URL")
    if not server_url:
        sys.exit('DATABASE_URL is not set: run `make bench`, or `eval "$(scripts/services env)"` first')

    rows: list[tuple[str, float, float]] = []
    for label, workers, appends, batch in [
        ("append 1 writer, 1 event", 1, APPENDS_1, 1),
        ("append 8 writers, 1 event", 8, APPENDS_8, 1),
        ("append 1 writer, 10 events", 1, APPENDS_1 // 5, 10),
        ("append 8 writers, 10 events", 8, APPENDS_8 // 5, 10),
    ]:
        # Alternate the two, several rounds, and keep the medians: commit latency on a shared
        # machine wanders more between runs than the difference being measured.
        raws, frameworks = [], []
        for _ in range(ROUNDS):
            raws.append(await raw_insert(server_url, workers, appends, batch))
            frameworks.append(await framework_append(server_url, workers, appends, batch))
        rows.append((label, statistics.median(frameworks), statistics.median(raws)))
    many, raw_many = [], []
    for _ in range(ROUNDS):
        raw_many.append(await raw_insert_many(server_url))
        many.append(await framework_append_many(server_url))
    rows.append(
        (
            f"append_many, {APPEND_MANY_STREAMS} streams x 1",
            statistics.median(many),
            statistics.median(raw_many),
        )
    )
    replay_rate, raw_read = await replay(server_url)
    rows.append((f"replay {REPLAY_EVENTS:,}-event stream", replay_rate, raw_read))

    print(f"{'measurement':<34}{'framework ev/s':>16}{'raw psycopg ev/s':>18}{'ratio':>8}")
    for label, framework, raw in rows:
        print(f"{label:<34}{framework:>16,.0f}{raw:>18,.0f}{framework / raw:>8.2f}")
    figures = {
        "append_ratio_1": round(rows[0][1] / rows[0][2], 3),
        "append_ratio_8": round(rows[1][1] / rows[1][2], 3),
        "append_events_per_s_8": round(rows[1][1]),
        "append_events_per_s_8_batch10": round(rows[3][1]),
        "append_many_events_per_s": round(rows[4][1]),
        "append_many_ratio": round(rows[4][1] / rows[4][2], 3),
        "replay_events_per_s": round(replay_rate),
        "replay_ratio": round(replay_rate / raw_read, 3),
    }
    print(orjson.dumps(figures).decode())


if __name__ == "__main__":
    asyncio.run(main())
