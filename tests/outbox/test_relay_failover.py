"""Relay processes share the outbox by bucket: a join, a SIGKILL, nothing lost, order per key kept."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import defaultdict
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from outbox import Outbox
from outbox._buckets import BUCKET_LOCKS, BUCKETS
from tests.conftest import NewTopicFactory
from tests.helpers import Collector, wait_for
from tests.outbox.messages import Ping

KEYS = 100
PER_TRANSACTION = 20


async def start_relay(database_url: str, kafka_bootstrap: str) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "SAGA_RELAY_POLL_INTERVAL_S": "0.2",
        "SAGA_RELAY_REBALANCE_INTERVAL_S": "0.2",
        "SAGA_LOG_LEVEL": "WARNING",
    }
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "saga", "relay", env=env)


async def bucket_holders(engine: AsyncEngine) -> dict[int, int]:
    """OS pid of each relay (from its application_name) -> how many buckets it holds."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT a.application_name, count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :locks AND l.objsubid = 2 "
                    # Only this test's database: another relay on the same server is not ours.
                    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                    "GROUP BY 1"
                ),
                {"locks": BUCKET_LOCKS},
            )
        ).all()
    return {int(name.rsplit("-", 1)[1]): count for name, count in rows}


def check_order(values: list[tuple[str, int]]) -> tuple[int, int]:
    """Per key, every message first arrives after all its predecessors. Returns (distinct, duplicates)."""
    seen: dict[str, set[int]] = defaultdict(set)
    duplicates = 0
    for key, seq in values:
        if seq in seen[key]:
            duplicates += 1
            continue
        assert seq == len(seen[key]), f"key {key}: message {seq} arrived before message {len(seen[key])}"
        seen[key].add(seq)
    return sum(len(s) for s in seen.values()), duplicates


async def test_relays_share_hand_over_and_take_over_in_order(
    engine: AsyncEngine, database_url: str, kafka_bootstrap: str, outbox: Outbox, new_topic: NewTopicFactory
) -> None:
    """One relay holds every bucket; a second joins mid-stream and takes half (a handover);
    the first is killed with SIGKILL and the second takes the rest. Nothing lost, order per key."""
    topic = await new_topic("failover", partitions=4)
    first = await start_relay(database_url, kafka_bootstrap)
    relays = [first]
    done = asyncio.Event()
    produced = 0

    async def produce() -> None:
        nonlocal produced
        while not done.is_set():
            async with engine.begin() as conn:
                for n in range(produced, produced + PER_TRANSACTION):
                    key = f"key-{n % KEYS}"
                    await outbox.put(conn, Ping(key=key, seq=n // KEYS), topic=topic, key=key)
            produced += PER_TRANSACTION
            await asyncio.sleep(0.01)  # a steady stream, not a flood: pacing, not synchronisation

    async def holders_are(expected: Callable[[dict[int, int]], bool]) -> bool:
        return expected(await bucket_holders(engine))

    try:
        await wait_for(
            lambda: holders_are(lambda h: h == {first.pid: BUCKETS}), 30, "the first relay to hold all"
        )
        async with Collector(kafka_bootstrap, [topic]) as collected:
            producing = asyncio.create_task(produce())

            async def more(count: int, what: str) -> None:
                target = len(collected.records) + count
                await wait_for(lambda: len(collected.records) >= target, 60, what)

            await more(300, "messages from the first relay")
            second = await start_relay(database_url, kafka_bootstrap)
            relays.append(second)
            halves = {first.pid: BUCKETS // 2, second.pid: BUCKETS // 2}
            await wait_for(lambda: holders_are(lambda h: h == halves), 30, "the relays to hold half each")
            await more(300, "messages from both relays")
            before_kill = len(collected.records)
            os.kill(first.pid, signal.SIGKILL)
            await wait_for(lambda: holders_are(lambda h: h == {second.pid: BUCKETS}), 30, "the takeover")
            await more(300, "messages after the takeover")
            done.set()
            await producing

            def values() -> list[tuple[str, int]]:
                return [
                    (p.key, p.seq) for p in (Ping.model_validate_json(r.value) for r in collected.records)
                ]

            await wait_for(lambda: check_order(values())[0] == produced, 120, f"all {produced} messages")
            distinct, duplicates = check_order(values())
            # Until the SIGKILL every send was acknowledged before its bucket changed hands, and
            # no two relays held one bucket: not a single copy.
            assert check_order(values()[:before_kill])[1] == 0

        assert distinct == produced
        for record in collected.records:
            assert record.key.decode() == Ping.model_validate_json(record.value).key
        print(f"\n{produced} messages, {duplicates} duplicates after the handover and the SIGKILL")

        second.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.wait(), timeout=30) == 0
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM outbox"))).scalar_one() == 0
    finally:
        done.set()
        for process in relays:
            if process.returncode is None:
                process.kill()
                await process.wait()
