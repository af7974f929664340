"""`saga topics plan|apply` on the real broker (issue 19, must-show 3), and a worker started
against a broker that creates no topic by itself while one of its topics is missing."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from examples.orders.app import app as shop
from outbox import describe_broker
from saga._topics_plan import TopicNumbers, app_topics
from tests.cli.test_cli import Cli, assert_clean_error


def order_topics(prefix: str) -> list[str]:
    return [s.name for s in app_topics(shop.with_topic_prefix(prefix), TopicNumbers())]


async def delete_topics(bootstrap: str, topics: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(topics)
    finally:
        await admin.close()


async def test_plan_lists_every_topic_apply_creates_them_and_plan_then_has_nothing_to_do(
    cli: Cli, topic_prefix: str, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGA_TOPIC_PARTITIONS", "2")
    topics = order_topics(topic_prefix)
    assert len(topics) == 8  # 3 participants' commands, the saga's replies, a dead-letter topic each
    try:
        planned = await cli("topics", "plan")
        assert planned.code == 0, planned.describe()
        assert planned.stdout.splitlines() == [
            f"create {t}: 2 partitions, replication factor 1, min.insync.replicas 1" for t in topics
        ] + ["8 change(s)"]
        assert (await describe_broker(kafka_bootstrap, topics)).topics == {}  # plan changed nothing

        applied = await cli("topics", "apply")
        assert applied.code == 0, applied.describe()
        assert applied.stdout.splitlines()[-1] == "8 change(s) made"
        have = (await describe_broker(kafka_bootstrap, topics)).topics
        assert {t: (s.partitions, s.min_insync_replicas) for t, s in have.items()} == dict.fromkeys(
            topics, (2, 1)
        )

        again = await cli("topics", "plan")
        assert again.stdout.splitlines() == ["nothing to do (8 topic(s) as wanted)"], again.describe()
        reapplied = (await cli("topics", "apply", "--json")).json()
        assert reapplied == {"changes": [], "unchanged": topics, "notes": [], "failed": 0}
    finally:
        await delete_topics(kafka_bootstrap, topics)


async def test_numbers_the_cluster_cannot_take_are_refused_naming_the_setting(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGA_TOPIC_REPLICATION_FACTOR", "3")
    result = await cli("topics", "plan")
    assert_clean_error(result, "SAGA_TOPIC_REPLICATION_FACTOR is 3 but the cluster has 1 broker(s)")


async def test_a_worker_on_a_broker_that_creates_no_topics_names_the_missing_topic(
    database_url: str, topic_prefix: str, strict_broker: Any
) -> None:
    strict = Cli(database_url, strict_broker.bootstrap(), topic_prefix)
    result = await strict("worker")
    assert_clean_error(result, f"{topic_prefix}.OrderSaga.replies", "run `saga topics apply`")
    assert result.stderr.count("Error: ") == 1, result.describe()
