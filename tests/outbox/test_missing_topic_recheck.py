"""A topic the broker lacked when the relay first met it is asked about again even when only
its own rows wait, and its rows go out once it exists."""

from __future__ import annotations

import uuid

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore import Database
from outbox import Outbox, Relay
from tests.helpers import Collector, wait_for
from tests.outbox.messages import Ping


async def test_rows_of_a_topic_that_comes_to_exist_go_out_with_no_other_rows_waiting(
    engine: AsyncEngine, database: Database, kafka_bootstrap: str, outbox: Outbox
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    base = f"late-{uuid.uuid4().hex[:8]}"
    topic, blocker = f"{base}.x", f"{base}_x"  # Kafka refuses `x.y` while `x_y` exists
    await admin.create_topics([NewTopic(blocker, num_partitions=1, replication_factor=1)])
    relay = Relay(database, kafka_bootstrap, poll_interval_s=0.1, retry_max_s=0.5, unpublishable_after_s=600)
    try:
        async with engine.begin() as conn:
            await outbox.put(conn, Ping(key="a", seq=1), topic=topic, key="a")
        await relay.start()
        await wait_for(
            lambda: topic in relay.missing_topics.excluded, 60, "the relay to find the topic missing"
        )
        await admin.delete_topics([blocker])

        async def created() -> bool:
            try:
                await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
            except KafkaError:
                return False  # the deletion is still under way
            return True

        await wait_for(created, 60, "the topic to be created")
        async with Collector(kafka_bootstrap, [topic]) as collected:
            await wait_for(lambda: len(collected.records) == 1, 60, "the row of the topic now there")
    finally:
        await relay.stop()
        await admin.delete_topics([topic])
        await admin.close()
