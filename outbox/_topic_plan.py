"""What to change on a broker so that it has the topics wanted: a pure function of the topics
wanted and what the broker has, so that it is tested without Kafka.

The plan creates missing topics, adds partitions to a topic with too few, and sets a
`min.insync.replicas` that differs. It never removes partitions, never deletes a topic, never
touches a topic not wanted, and never changes a replication factor (that takes a partition
reassignment): what it leaves alone, it says in `notes`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from outbox._errors import TopicPlanError

# what each number of a TopicSpec is set by, in a process's settings
TOPIC_SETTING_NAMES = {
    "partitions": "SAGA_TOPIC_PARTITIONS",
    "replication_factor": "SAGA_TOPIC_REPLICATION_FACTOR",
    "min_insync_replicas": "SAGA_TOPIC_MIN_INSYNC_REPLICAS",
}

ChangeKind = Literal["create", "add_partitions", "set_min_insync_replicas"]

KEYS_MOVE = (
    "keys move to other partitions, so messages in flight for a saga may be read out of order: "
    "apply while the workers are drained"
)


@dataclass(frozen=True)
class TopicSpec:
    """A topic as wanted. `partitions_like`: a topic whose partition count this one follows
    (a dead-letter topic has as many partitions as the topic it holds records of)."""

    name: str
    partitions: int
    replication_factor: int
    min_insync_replicas: int
    partitions_like: str | None = None


@dataclass(frozen=True)
class TopicState:
    """A topic as the broker has it (`min_insync_replicas` None: the broker did not say)."""

    partitions: int
    replication_factor: int
    min_insync_replicas: int | None


@dataclass(frozen=True)
class BrokerTopics:
    """What the plan needs to know of a cluster: its number of brokers, and the wanted topics
    it has."""

    brokers: int
    topics: Mapping[str, TopicState]


@dataclass(frozen=True)
class TopicChange:
    kind: ChangeKind
    topic: str
    partitions: int
    replication_factor: int
    min_insync_replicas: int
    current: int | None = None  # partitions (add_partitions) or min.insync.replicas (set_...) now

    def describe(self) -> str:
        if self.kind == "create":
            return (
                f"create {self.topic}: {self.partitions} partitions, replication factor "
                f"{self.replication_factor}, min.insync.replicas {self.min_insync_replicas}"
            )
        if self.kind == "add_partitions":
            return f"add partitions to {self.topic}: {self.current} -> {self.partitions} ({KEYS_MOVE})"
        return f"set min.insync.replicas of {self.topic}: {self.current} -> {self.min_insync_replicas}"

    def as_json(self) -> dict[str, Any]:
        return {
            "change": self.kind,
            "topic": self.topic,
            "partitions": self.partitions,
            "replication_factor": self.replication_factor,
            "min_insync_replicas": self.min_insync_replicas,
            "current": self.current,
        }


@dataclass(frozen=True)
class TopicPlan:
    changes: list[TopicChange] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)  # wanted topics already as wanted
    notes: list[str] = field(default_factory=list)  # differences the plan leaves alone, and why

    def as_json(self) -> dict[str, Any]:
        return {
            "changes": [c.as_json() for c in self.changes],
            "unchanged": self.unchanged,
            "notes": self.notes,
        }


def plan_topics(wanted: Sequence[TopicSpec], broker: BrokerTopics) -> TopicPlan:
    """The changes that give the broker the `wanted` topics. Raises `TopicPlanError` naming the
    setting when the numbers cannot work on this cluster (more replicas than brokers, more
    in-sync replicas required than there are replicas)."""
    _check_numbers(wanted, broker.brokers)
    partitions = _partitions(wanted, broker)
    plan = TopicPlan()
    for spec in sorted(wanted, key=lambda s: s.name):
        changes, notes = _topic_changes(spec, partitions[spec.name], broker.topics.get(spec.name))
        plan.changes.extend(changes)
        plan.notes.extend(notes)
        if not changes:
            plan.unchanged.append(spec.name)
    return plan


def _check_numbers(wanted: Sequence[TopicSpec], brokers: int) -> None:
    problems: dict[str, str] = {}
    rf, isr = TOPIC_SETTING_NAMES["replication_factor"], TOPIC_SETTING_NAMES["min_insync_replicas"]
    for spec in wanted:
        if spec.partitions < 1:
            setting = TOPIC_SETTING_NAMES["partitions"]
            problems[setting] = f"{setting} is {spec.partitions}: a topic needs at least 1 partition"
        if spec.replication_factor > brokers:
            problems[rf] = (
                f"{rf} is {spec.replication_factor} but the cluster has {brokers} broker(s), and each "
                f"replica of a partition needs a broker of its own: set it to at most {brokers}"
            )
        if spec.min_insync_replicas > spec.replication_factor:
            problems[isr] = (
                f"{isr} is {spec.min_insync_replicas} but {rf} is {spec.replication_factor}: no write "
                f"could ever be acknowledged; set it to at most {spec.replication_factor} "
                "(replication factor 3 with min.insync.replicas 2 is the usual production choice)"
            )
    if problems:
        raise TopicPlanError("; ".join(problems[k] for k in sorted(problems)))


def _partitions(wanted: Sequence[TopicSpec], broker: BrokerTopics) -> dict[str, int]:
    """Partitions each wanted topic ends up with: never fewer than it has; a topic that follows
    another gets that one's."""
    own = {s.name: max(s.partitions, getattr(broker.topics.get(s.name), "partitions", 0)) for s in wanted}
    result = {}
    for spec in wanted:
        if spec.partitions_like is not None and spec.partitions_like in own:
            have = getattr(broker.topics.get(spec.name), "partitions", 0)
            result[spec.name] = max(own[spec.partitions_like], have)
        else:
            result[spec.name] = own[spec.name]
    return result


def _topic_changes(
    spec: TopicSpec, partitions: int, state: TopicState | None
) -> tuple[list[TopicChange], list[str]]:
    def change(kind: ChangeKind, current: int | None = None) -> TopicChange:
        return TopicChange(
            kind, spec.name, partitions, spec.replication_factor, spec.min_insync_replicas, current
        )

    if state is None:
        return [change("create")], []
    changes, notes = [], []
    if state.partitions < partitions:
        changes.append(change("add_partitions", state.partitions))
    elif state.partitions > spec.partitions and spec.partitions_like is None:
        notes.append(f"{spec.name} has {state.partitions} partitions, more than {spec.partitions}: kept")
    if state.replication_factor != spec.replication_factor:
        notes.append(
            f"{spec.name} has replication factor {state.replication_factor}, not {spec.replication_factor}: "
            "left as it is (changing it takes a partition reassignment, kafka-reassign-partitions)"
        )
    if state.min_insync_replicas != spec.min_insync_replicas:
        if spec.min_insync_replicas > state.replication_factor:
            notes.append(
                f"{spec.name}: min.insync.replicas {spec.min_insync_replicas} not set, its replication "
                f"factor is {state.replication_factor} and every write would be refused"
            )
        else:
            changes.append(change("set_min_insync_replicas", state.min_insync_replicas))
    return changes, notes
