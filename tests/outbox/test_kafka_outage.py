"""The broker stopped for 10 seconds while the relay works: after the restart, nothing is lost."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore import Database
from outbox import Outbox, Relay
from tests.helpers import Collector, wait_for
from tests.outbox.messages import Ping
from tests.outbox.test_relay_failover import check_order

OUTAGE_S = 10.0


async def test_broker_down_for_ten_seconds_loses_nothing(
    engine: AsyncEngine, database: Database, outbox: Outbox, private_broker: Any
) -> None:
    bootstrap = private_broker.bootstrap()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic("outage", num_partitions=2, replication_factor=1)])
    await admin.close()

    sent = 0

    async def put_some(n: int) -> None:
        nonlocal sent
        async with engine.begin() as conn:
            for _ in range(n):
                key = f"key-{sent % 10}"
                await outbox.put(conn, Ping(key=key, seq=sent // 10), topic="outage", key=key)
                sent += 1

    relay = Relay(database, bootstrap, poll_interval_s=0.1, retry_max_s=1.0, batch_size=100, ack_timeout_s=5)
    await relay.start()
    try:
        async with Collector(bootstrap, ["outage"]) as collected:
            await put_some(500)
            await wait_for(lambda: len(collected.records) >= 200, 30, "records before the outage")

            await asyncio.to_thread(private_broker.down)
            loop = asyncio.get_running_loop()
            outage_ends = loop.time() + OUTAGE_S
            while loop.time() < outage_ends:  # the application keeps writing during the outage
                await put_some(50)
                await asyncio.sleep(0.25)
            await asyncio.to_thread(private_broker.up)
            await put_some(500)

            def values() -> list[tuple[str, int]]:
                return [
                    (p.key, p.seq) for p in (Ping.model_validate_json(r.value) for r in collected.records)
                ]

            await wait_for(
                lambda: check_order(values())[0] == sent, 120, f"all {sent} messages after the restart"
            )
            distinct, duplicates = check_order(values())
        assert distinct == sent
        assert (await relay.lag()).pending == 0
        assert relay.stats.failures > 0  # the outage really cut batches short, and the relay recovered
        print(f"\n{sent} messages across a {OUTAGE_S:.0f}s outage, {duplicates} duplicates")
    finally:
        await relay.stop()
