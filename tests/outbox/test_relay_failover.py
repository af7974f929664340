"""Two relay processes, the leader killed with SIGKILL midway: nothing lost, order per key kept."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import defaultdict

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from outbox import Outbox
from tests.conftest import NewTopicFactory
from tests.helpers import Collector, wait_for
from tests.outbox.messages import Ping

MESSAGES = 10_000
KEYS = 100
PER_TRANSACTION = 50


async def start_relay(database_url: str, kafka_bootstrap: str) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "SAGA_RELAY_POLL_INTERVAL_S": "0.2",
        "SAGA_LOG_LEVEL": "WARNING",
    }
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "saga", "relay", env=env)


async def leader_pid(engine: AsyncEngine) -> int | None:
    """The OS pid of the relay holding the advisory lock (from its application_name)."""
    async with engine.connect() as conn:
        name = (
            await conn.execute(
                text(
                    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE 'saga-relay-%' "
                    # Only this test's database: another relay on the same server is not ours.
                    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                )
            )
        ).scalar_one_or_none()
    return int(name.rsplit("-", 1)[1]) if name else None


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


async def test_leader_killed_midway_loses_nothing(
    engine: AsyncEngine, database_url: str, kafka_bootstrap: str, outbox: Outbox, new_topic: NewTopicFactory
) -> None:
    topic = await new_topic("failover", partitions=4)
    relays = [await start_relay(database_url, kafka_bootstrap) for _ in range(2)]

    async def has_leader() -> bool:
        return await leader_pid(engine) is not None

    try:
        await wait_for(has_leader, 30, "a relay to take the lead")

        async def produce() -> None:
            for start in range(0, MESSAGES, PER_TRANSACTION):
                async with engine.begin() as conn:
                    for n in range(start, start + PER_TRANSACTION):
                        key = f"key-{n % KEYS}"
                        await outbox.put(conn, Ping(key=key, seq=n // KEYS), topic=topic, key=key)

        async with Collector(kafka_bootstrap, [topic]) as collected:
            producing = asyncio.create_task(produce())
            await wait_for(lambda: len(collected.records) >= MESSAGES // 4, 60, "a quarter of the messages")
            killed = await leader_pid(engine)
            assert killed in {r.pid for r in relays}
            os.kill(killed, signal.SIGKILL)
            await producing

            def values() -> list[tuple[str, int]]:
                return [
                    (p.key, p.seq) for p in (Ping.model_validate_json(r.value) for r in collected.records)
                ]

            await wait_for(lambda: check_order(values())[0] == MESSAGES, 120, f"all {MESSAGES} messages")
            distinct, duplicates = check_order(values())
            new_leader = await leader_pid(engine)

        assert distinct == MESSAGES
        assert new_leader is not None
        assert new_leader != killed
        for record in collected.records:
            assert record.key.decode() == Ping.model_validate_json(record.value).key
        print(f"\n{MESSAGES} messages, {duplicates} duplicates after the SIGKILL")

        survivor = next(r for r in relays if r.pid != killed)
        survivor.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(survivor.wait(), timeout=30) == 0
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM outbox"))).scalar_one() == 0
    finally:
        for process in relays:
            if process.returncode is None:
                process.kill()
                await process.wait()
