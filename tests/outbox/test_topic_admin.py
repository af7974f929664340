"""The admin side of topics on real brokers: a consumer's check before it subscribes (strict
and lenient broker), and a plan's changes made when the broker moved on since the plan."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from outbox import (
    TopicChange,
    TopicPlan,
    TopicsMissingError,
    TopicSpec,
    apply_topic_plan,
    check_topics,
    describe_broker,
    plan_topics,
)


def unique(label: str) -> str:
    return f"topicadmin.{label}.{uuid.uuid4().hex[:8]}"


async def create(bootstrap: str, name: str, partitions: int = 1, **configs: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs)])
    finally:
        await admin.close()


async def topic_config(bootstrap: str, name: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    finally:
        await admin.close()
    [resource] = response.to_object()["resources"]
    return {e["config_names"]: e["config_value"] for e in resource["config_entries"]}


async def test_on_a_strict_broker_missing_topics_stop_the_consumer_naming_each(strict_broker: Any) -> None:
    bootstrap = strict_broker.bootstrap()
    there, missing = unique("there"), sorted([unique("gone"), unique("away")])
    await create(bootstrap, there)
    await check_topics(bootstrap, [there])
    with pytest.raises(TopicsMissingError) as raised:
        await check_topics(bootstrap, [there, *missing])
    assert raised.value.topics == missing
    assert f"the topic(s) {', '.join(missing)} and creates no topic by itself" in str(raised.value)
    assert "run `saga topics apply`" in str(raised.value)


async def test_on_a_broker_that_creates_topics_a_missing_topic_is_one_warning_and_not_created_by_the_check(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    missing = unique("later")
    caplog.set_level(logging.WARNING, logger="outbox")
    await check_topics(kafka_bootstrap, [missing], who="consumer:g")
    [warning] = [r for r in caplog.records if missing in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert "the broker will create them with its default partition count" in warning.getMessage()
    assert (await describe_broker(kafka_bootstrap, [missing])).topics == {}


async def test_a_stale_plan_counts_a_topic_made_meanwhile_as_done_and_keeps_other_topic_settings(
    kafka_bootstrap: str,
) -> None:
    made, strict = unique("made"), unique("strict")
    await create(kafka_bootstrap, strict, 2, **{"min.insync.replicas": "2", "retention.ms": "3600000"})
    wanted = [TopicSpec(made, 2, 1, 1), TopicSpec(strict, 2, 1, 1)]
    plan = plan_topics(wanted, await describe_broker(kafka_bootstrap, [made, strict]))
    assert [(c.kind, c.topic) for c in plan.changes] == [
        ("create", made),
        ("set_min_insync_replicas", strict),
    ]
    await create(kafka_bootstrap, made, 2)  # by someone else, after the plan

    outcomes = await apply_topic_plan(kafka_bootstrap, plan)
    assert [(o.change.topic, o.already, o.error) for o in outcomes] == [
        (made, True, None),
        (strict, False, None),
    ]
    config = await topic_config(kafka_bootstrap, strict)
    assert (config["min.insync.replicas"], config["retention.ms"]) == ("1", "3600000")
    assert plan_topics(wanted, await describe_broker(kafka_bootstrap, [made, strict])).changes == []


async def test_a_change_the_broker_refuses_carries_its_reason_and_the_others_are_made(
    kafka_bootstrap: str,
) -> None:
    good, bad = unique("good"), "topicadmin.bad name!"
    plan = TopicPlan(changes=[TopicChange("create", name, 1, 1, 1) for name in (good, bad)])
    outcomes = {o.change.topic: o for o in await apply_topic_plan(kafka_bootstrap, plan)}
    assert outcomes[good].error is None
    assert (
        outcomes[good].describe()
        == f"done: create {good}: 1 partitions, replication factor 1, min.insync.replicas 1"
    )
    error = outcomes[bad].error
    assert error is not None
    assert error.startswith("InvalidTopicError"), error
    assert outcomes[bad].describe().startswith(f"failed: create {bad}")
