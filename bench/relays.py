"""Relay scaling: 1, 2 and 4 relay processes sharing one outbox (issue 18).

    python bench/relays.py [--messages 40000] [--rounds 2]   (DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS set)

For each count: a fresh database and topic; the relays (`saga relay`, each its own process) are
started and left to share out the 64 buckets (checked in pg_locks); then every message is put
in the outbox in one transaction, and the time runs from its commit until the outbox is empty
and Kafka has every record. The counts alternate over the rounds; the best of each is reported,
with the CPU the relays, Postgres and Kafka used per 1,000 messages. Prints a table, then one
JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _cpu
from bench.outbox import DEADLINE_S, Message, Topics, make_messages, outbox, scratch_database
from eventstore import create_engine
from outbox import Outgoing

COUNTS = (1, 2, 4)
CHUNK = 500
_HOLDERS = text(
    "SELECT count(DISTINCT pid), count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND classid = 730211501 AND objsubid = 2 "  # outbox._buckets.BUCKET_LOCKS
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


async def start_relays(url: str, bootstrap: str, count: int) -> list[asyncio.subprocess.Process]:
    env = {**os.environ, "DATABASE_URL": url, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    env |= {"SAGA_LOG_LEVEL": "WARNING", "SAGA_RELAY_REBALANCE_INTERVAL_S": "0.2"}
    return [
        await asyncio.create_subprocess_exec(sys.executable, "-m", "saga", "relay", env=env)
        for _ in range(count)
    ]


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        await asyncio.sleep(0.02)


async def one_run(
    server_url: str, bootstrap: str, topics: Topics, messages: list[Message], count: int
) -> dict[str, float]:
    """Messages/s from the commit to an empty outbox, and CPU ms per 1,000 messages by role."""
    async with scratch_database(server_url) as db:
        topic = await topics.new(f"relays{count}")
        engine = create_engine(db.url)
        relays = await start_relays(db.url, bootstrap, count)
        try:

            async def shared() -> bool:
                async with engine.connect() as conn:
                    return tuple((await conn.execute(_HOLDERS)).one()) == (count, 64)

            await until(shared, f"{count} relays to share the buckets")
            named = {f"relay{i}": p.pid for i, p in enumerate(relays)}
            async with engine.begin() as conn:
                for first in range(0, len(messages), CHUNK):
                    chunk = messages[first : first + CHUNK]
                    await outbox.put_many(conn, [Outgoing(m.model, topic, m.key, m.envelope) for m in chunk])
            # Committed: the relays are woken now (NOTIFY), a few milliseconds' head start at most.
            cpu_before = _cpu.sample(named)
            start = time.perf_counter()

            async def empty() -> bool:
                async with engine.connect() as conn:
                    # Not count(*): scanning the whole table every few ms would take CPU from the relays.
                    return (await conn.execute(text("SELECT 1 FROM outbox LIMIT 1"))).first() is None

            await until(empty, "the relays to empty the outbox")
            elapsed = time.perf_counter() - start
            cpu_after = _cpu.sample(named)
            written = await topics.records(topic)
            if written != len(messages):
                raise RuntimeError(f"{written} records in {topic}, expected {len(messages)}")
        finally:
            for process in relays:
                process.terminate()
            for process in relays:
                await process.wait()
            await engine.dispose()
    per_k = 1000 / len(messages)
    cpu = {role: (cpu_after[role] - cpu_before.get(role, 0.0)) * 1000 * per_k for role in cpu_after}
    relays_ms = sum(v for role, v in cpu.items() if role.startswith("relay"))
    return {
        "msgs_per_s": len(messages) / elapsed,
        "relays_cpu_ms": relays_ms,
        "postgres_cpu_ms": cpu.get("postgres", 0.0),
        "kafka_cpu_ms": cpu.get("kafka", 0.0),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=40_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    server_url, bootstrap = os.environ.get("DATABASE_URL"), os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not server_url or not bootstrap:
        sys.exit(
            'DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS must be set: `eval "$(scripts/services env)"` first'
        )
    messages = make_messages(args.messages)
    best: dict[int, dict[str, float]] = {}
    async with Topics(bootstrap) as topics:
        for _ in range(args.rounds):
            for count in COUNTS:
                run = await one_run(server_url, bootstrap, topics, messages, count)
                if count not in best or run["msgs_per_s"] > best[count]["msgs_per_s"]:
                    best[count] = run
    one = best[1]["msgs_per_s"]
    print(
        f"{'relays':<8}{'msg/s':>10}{'vs 1':>7}{'CPU ms per 1,000 msgs: relays':>32}{'postgres':>10}{'kafka':>8}"
    )
    for count, run in best.items():
        print(
            f"{count:<8}{run['msgs_per_s']:>10,.0f}{run['msgs_per_s'] / one:>7.2f}"
            f"{run['relays_cpu_ms']:>32.0f}{run['postgres_cpu_ms']:>10.0f}{run['kafka_cpu_ms']:>8.0f}"
        )
    figures: dict[str, object] = {f"relays_{c}_msgs_per_s": round(r["msgs_per_s"]) for c, r in best.items()}
    figures |= {
        "two_relays_ratio": round(best[2]["msgs_per_s"] / one, 2),
        "four_relays_ratio": round(best[4]["msgs_per_s"] / one, 2),
        "messages": args.messages,
        "cpus": os.cpu_count(),
    }
    print(orjson.dumps(figures).decode())


if __name__ == "__main__":
    asyncio.run(main())
