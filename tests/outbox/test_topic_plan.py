"""The topic plan without Kafka: what it creates, grows and sets, what it leaves alone, and the
numbers it refuses up front naming the setting."""

from __future__ import annotations

import pytest

from outbox import BrokerTopics, TopicPlanError, TopicSpec, TopicState, plan_topics

pytestmark = pytest.mark.pure


def spec(name: str, partitions: int = 6, rf: int = 1, isr: int = 1, like: str | None = None) -> TopicSpec:
    return TopicSpec(name, partitions, rf, isr, like)


def broker(brokers: int = 1, topics: dict[str, TopicState] | None = None) -> BrokerTopics:
    return BrokerTopics(brokers=brokers, topics=topics or {})


def test_missing_topics_are_created_with_the_settings_numbers_and_a_dead_letter_topic_follows_its_source() -> (
    None
):
    plan = plan_topics([spec("a"), spec("a.dlq", partitions=2, like="a")], broker(3))
    assert [(c.kind, c.topic, c.partitions) for c in plan.changes] == [
        ("create", "a", 6),
        ("create", "a.dlq", 6),
    ]
    assert plan.changes[0].describe() == "create a: 6 partitions, replication factor 1, min.insync.replicas 1"
    assert plan.unchanged == []
    assert plan.notes == []


def test_a_topic_with_too_few_partitions_grows_and_says_keys_move() -> None:
    plan = plan_topics([spec("a", partitions=6)], broker(1, {"a": TopicState(2, 1, 1)}))
    [change] = plan.changes
    assert (change.kind, change.current, change.partitions) == ("add_partitions", 2, 6)
    assert "keys move" in change.describe()
    assert "drained" in change.describe()


def test_nothing_shrinks_and_a_dead_letter_topic_follows_the_partitions_its_source_keeps() -> None:
    wanted = [spec("a", partitions=2), spec("a.dlq", partitions=2, like="a")]
    plan = plan_topics(wanted, broker(1, {"a": TopicState(8, 1, 1), "a.dlq": TopicState(2, 1, 1)}))
    assert [(c.kind, c.topic, c.current, c.partitions) for c in plan.changes] == [
        ("add_partitions", "a.dlq", 2, 8)
    ]
    assert plan.notes == ["a has 8 partitions, more than 2: kept"]
    assert plan.unchanged == ["a"]


def test_min_insync_replicas_that_differs_is_set_and_topics_as_wanted_are_unchanged() -> None:
    plan = plan_topics(
        [spec("a", rf=3, isr=2), spec("b", rf=3, isr=2)],
        broker(3, {"a": TopicState(6, 3, 1), "b": TopicState(6, 3, 2)}),
    )
    [change] = plan.changes
    assert (change.kind, change.topic, change.current, change.min_insync_replicas) == (
        "set_min_insync_replicas",
        "a",
        1,
        2,
    )
    assert change.describe() == "set min.insync.replicas of a: 1 -> 2"
    assert plan.unchanged == ["b"]


def test_another_replication_factor_is_only_noted_and_min_insync_above_it_is_not_set() -> None:
    plan = plan_topics([spec("a", rf=3, isr=2)], broker(3, {"a": TopicState(6, 1, 1)}))
    assert plan.changes == []
    assert plan.notes == [
        "a has replication factor 1, not 3: left as it is (changing it takes a partition reassignment, "
        "kafka-reassign-partitions)",
        "a: min.insync.replicas 2 not set, its replication factor is 1 and every write would be refused",
    ]


def test_topics_not_wanted_are_not_touched() -> None:
    plan = plan_topics([spec("a")], broker(1, {"other": TopicState(1, 1, 1)}))
    assert [c.topic for c in plan.changes] == ["a"]


def test_more_replicas_than_brokers_or_more_in_sync_than_replicas_is_refused_naming_the_setting() -> None:
    with pytest.raises(TopicPlanError) as raised:
        plan_topics([spec("a", rf=3, isr=2)], broker(1))
    assert str(raised.value) == (
        "SAGA_TOPIC_REPLICATION_FACTOR is 3 but the cluster has 1 broker(s), and each replica of a "
        "partition needs a broker of its own: set it to at most 1"
    )
    with pytest.raises(
        TopicPlanError, match=r"SAGA_TOPIC_MIN_INSYNC_REPLICAS is 2 but SAGA_TOPIC_REPLICATION_FACTOR is 1"
    ):
        plan_topics([spec("a", rf=1, isr=2)], broker(3))
