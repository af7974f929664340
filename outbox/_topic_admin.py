"""Topics on the broker, through the admin client: what it has of the topics wanted, making the
changes of a `TopicPlan`, and the check a consumer makes before it subscribes.

Every look lists all topics (a metadata request for all, none named): a broker that creates
topics on first use creates a missing topic that a metadata request names, with its own
default partition count, and the look would have made what it was looking for.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from outbox._broker import broker_unavailable
from outbox._errors import OutboxError, TopicsMissingError
from outbox._kafka_check import check_kafka
from outbox._kafka_connection import KafkaConnection, as_connection
from outbox._topic_plan import BrokerTopics, TopicChange, TopicPlan, TopicState

log = logging.getLogger(__name__)

MIN_INSYNC = "min.insync.replicas"
AUTO_CREATE = "auto.create.topics.enable"
DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs' config_source of a value set on the topic itself


@dataclass(frozen=True)
class ChangeOutcome:
    """A change of a plan as made: `error` is the broker's reason when it refused it;
    `already` is true when someone else made it meanwhile (a topic created since the plan)."""

    change: TopicChange
    error: str | None = None
    already: bool = False

    def describe(self) -> str:
        if self.error is not None:
            return f"failed: {self.change.describe()}: {self.error}"
        if self.already:
            return f"already done: {self.change.describe()}"
        return f"done: {self.change.describe()}"

    def as_json(self) -> dict[str, Any]:
        return {**self.change.as_json(), "error": self.error, "already": self.already}


@asynccontextmanager
async def _admin(kafka: KafkaConnection, role: str) -> AsyncIterator[AIOKafkaAdminClient]:
    """An admin client; a broker that stops answering is a `BrokerUnavailableError`, another
    error of the client an `OutboxError` naming the broker."""
    admin = AIOKafkaAdminClient(**kafka.admin_options(role))
    try:
        await admin.start()
        yield admin
    except KafkaError as exc:
        gone = broker_unavailable(kafka.bootstrap_servers, exc)
        raise (gone or OutboxError(f"{kafka.describe()}: {type(exc).__name__}: {exc}")) from exc
    finally:
        await admin.close()


async def describe_broker(kafka: str | KafkaConnection, names: Iterable[str]) -> BrokerTopics:
    """The number of brokers, and the partitions, replication factor and min.insync.replicas
    of each of `names` the cluster has. Raises `KafkaConfigError` when Kafka refuses the
    settings, `BrokerUnavailableError` when it does not answer."""
    connection = as_connection(kafka)
    await check_kafka(connection)
    async with _admin(connection, "topics") as admin:
        cluster = await admin.describe_cluster()
        wanted = set(names)
        found = {t["topic"]: t for t in await admin.describe_topics() if t["error_code"] == 0}
        have = sorted(wanted & found.keys())
        configs = await _topic_configs(admin, have) if have else {}
    topics = {
        name: TopicState(
            partitions=len(found[name]["partitions"]),
            replication_factor=max((len(p["replicas"]) for p in found[name]["partitions"]), default=0),
            min_insync_replicas=_int(configs.get(name, {}).get(MIN_INSYNC)),
        )
        for name in have
    }
    return BrokerTopics(brokers=len(cluster["brokers"]), topics=topics)


async def _topic_configs(admin: AIOKafkaAdminClient, topics: Sequence[str]) -> dict[str, dict[str, str]]:
    resources = [ConfigResource(ConfigResourceType.TOPIC, topic, {MIN_INSYNC: None}) for topic in topics]
    result: dict[str, dict[str, str]] = {}
    for response in await admin.describe_configs(resources):
        for resource in response.to_object()["resources"]:
            if resource["error_code"] == 0:
                result[resource["resource_name"]] = {
                    e["config_names"]: e["config_value"] for e in resource["config_entries"]
                }
    return result


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


async def apply_topic_plan(kafka: str | KafkaConnection, plan: TopicPlan) -> list[ChangeOutcome]:
    """Make the plan's changes, each for itself: one the broker refuses does not stop the others.
    A topic created meanwhile by someone else counts as done."""
    connection = as_connection(kafka)
    await check_kafka(connection)
    outcomes: list[ChangeOutcome] = []
    async with _admin(connection, "topics") as admin:
        creates = [c for c in plan.changes if c.kind == "create"]
        if creates:
            outcomes += await _create(admin, creates)
        for change in (c for c in plan.changes if c.kind == "add_partitions"):
            outcomes.append(await _add_partitions(admin, change))
        for change in (c for c in plan.changes if c.kind == "set_min_insync_replicas"):
            outcomes.append(await _set_min_insync(admin, change))
    return outcomes


async def _create(admin: AIOKafkaAdminClient, changes: list[TopicChange]) -> list[ChangeOutcome]:
    new = [
        NewTopic(
            c.topic,
            num_partitions=c.partitions,
            replication_factor=c.replication_factor,
            topic_configs={MIN_INSYNC: str(c.min_insync_replicas)},
        )
        for c in changes
    ]
    response = await admin.create_topics(new)
    by_topic = {c.topic: c for c in changes}
    outcomes = []
    for result in response.to_object()["topic_errors"]:
        change, code = by_topic[result["topic"]], result["error_code"]
        if code == 0:
            outcomes.append(ChangeOutcome(change))
        elif for_code(code) is TopicAlreadyExistsError:
            outcomes.append(ChangeOutcome(change, already=True))
        else:
            outcomes.append(
                ChangeOutcome(change, error=_reason(for_code(code).__name__, result["error_message"]))
            )
    return outcomes


async def _add_partitions(admin: AIOKafkaAdminClient, change: TopicChange) -> ChangeOutcome:
    try:
        await admin.create_partitions({change.topic: NewPartitions(total_count=change.partitions)})
    except KafkaError as exc:
        grown = ("already has", "currently has")  # by someone else since the plan
        if "InvalidPartitions" in type(exc).__name__ and any(g in str(exc) for g in grown):
            return ChangeOutcome(change, already=True)
        return ChangeOutcome(change, error=_reason(type(exc).__name__, str(exc)))
    return ChangeOutcome(change)


async def _set_min_insync(admin: AIOKafkaAdminClient, change: TopicChange) -> ChangeOutcome:
    # AlterConfigs replaces every value set on the topic: send the others back unchanged.
    [described] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, change.topic)])
    [resource] = described.to_object()["resources"]
    kept = {
        e["config_names"]: e["config_value"]
        for e in resource["config_entries"]
        if e.get("config_source") == DYNAMIC_TOPIC_CONFIG and e["config_value"] is not None
    }
    configs = {**kept, MIN_INSYNC: str(change.min_insync_replicas)}
    [response, *_] = await admin.alter_configs(
        [ConfigResource(ConfigResourceType.TOPIC, change.topic, configs)]
    )
    [result] = response.to_object()["resources"]
    if result["error_code"] != 0:
        return ChangeOutcome(
            change, error=_reason(for_code(result["error_code"]).__name__, result["error_message"])
        )
    return ChangeOutcome(change)


def _reason(error: str, message: str | None) -> str:
    return f"{error}: {message}" if message else error


async def check_topics(kafka: str | KafkaConnection, topics: Sequence[str], *, who: str = "consumer") -> None:
    """Before a consumer subscribes: are its topics there? Lists the broker's topics without
    creating any. When some are missing and the broker creates no topic by itself, raises
    `TopicsMissingError` naming them; when it does, logs one warning and returns (the broker
    will create them with its default partition count)."""
    connection = as_connection(kafka)
    async with _admin(connection, who) as admin:
        present = {t["topic"] for t in await admin.describe_topics() if t["error_code"] == 0}
        missing = sorted(set(topics) - present)
        if not missing:
            return
        auto_create = await _auto_create(admin)
    if not auto_create:
        raise TopicsMissingError(missing, connection.describe())
    log.warning(
        "%s: the topic(s) %s do not exist yet; the broker will create them with its default partition "
        "count when first used. Create them with `saga topics apply` instead, with the partitions and "
        "replicas you chose",
        who,
        ", ".join(missing),
    )


async def _auto_create(admin: AIOKafkaAdminClient) -> bool:
    """Whether the broker creates topics on first use; False when it will not say (a broker
    that refuses to describe its configuration is treated as the strict one)."""
    try:
        cluster = await admin.describe_cluster()
        node = str(cluster["brokers"][0]["node_id"])
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.BROKER, node, {AUTO_CREATE: None})]
        )
    except (KafkaError, IndexError, ValueError):
        return False
    for resource in response.to_object()["resources"]:
        for entry in resource["config_entries"] if resource["error_code"] == 0 else ():
            if entry["config_names"] == AUTO_CREATE:
                return str(entry["config_value"]).lower() == "true"
    return False
