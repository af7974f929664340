"""The topics an app needs, and the plan that gives a broker them (`saga topics plan|apply`).

An app needs the commands topic of every participant its sagas send to or it serves, the
replies topic of every saga type (a child saga's too: its parent's steps reach it there), and
a dead-letter topic beside each topic its processes consume (served participants' commands,
every replies topic), with as many partitions as that topic.
"""

from __future__ import annotations

from dataclasses import dataclass

from outbox import (
    BrokerTopics,
    ChangeOutcome,
    KafkaConnection,
    TopicPlan,
    TopicSpec,
    apply_topic_plan,
    describe_broker,
    plan_topics,
)
from saga._app import App
from saga._definition import RemoteStep
from saga._protocol import Topics


@dataclass(frozen=True)
class TopicNumbers:
    """What each topic is created with (SAGA_TOPIC_PARTITIONS, SAGA_TOPIC_REPLICATION_FACTOR,
    SAGA_TOPIC_MIN_INSYNC_REPLICAS)."""

    partitions: int = 6
    replication_factor: int = 1
    min_insync_replicas: int = 1


def app_topics(app: App, numbers: TopicNumbers) -> list[TopicSpec]:
    """Every topic the app's processes send to or read, each once, sorted by name."""
    topics = Topics(app.topic_prefix)
    sent_to = {
        step.participant for saga in app.sagas for step in saga.all_steps() if issubclass(step, RemoteStep)
    }
    consumed = [topics.commands(p) for p in app.participants]
    consumed += [topics.replies(name) for name in app.versions.names()]
    wanted = {topics.commands(p) for p in sent_to} | set(consumed)

    def spec(name: str, like: str | None = None) -> TopicSpec:
        return TopicSpec(
            name, numbers.partitions, numbers.replication_factor, numbers.min_insync_replicas, like
        )

    specs = [spec(name) for name in wanted]
    specs += [spec(topics.dead_letter(name), like=name) for name in set(consumed)]
    return sorted(specs, key=lambda s: s.name)


async def plan_for(app: App, kafka: str | KafkaConnection, numbers: TopicNumbers) -> TopicPlan:
    """What `apply` would change on the broker for this app; changes nothing. Raises
    `TopicPlanError` when the numbers cannot work on this cluster."""
    wanted = app_topics(app, numbers)
    broker: BrokerTopics = await describe_broker(kafka, [s.name for s in wanted])
    return plan_topics(wanted, broker)


async def apply_for(
    app: App, kafka: str | KafkaConnection, numbers: TopicNumbers
) -> tuple[TopicPlan, list[ChangeOutcome]]:
    """Plan against the broker as it is now, then make the changes."""
    plan = await plan_for(app, kafka, numbers)
    return plan, (await apply_topic_plan(kafka, plan) if plan.changes else [])
