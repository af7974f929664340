"""The faults an exploration tries, read off a run without faults (the baseline): what went
over Kafka (each command and each reply), which steps could time out, and which crash points
each worker passed and how often."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from saga import RemoteStep, Saga

if TYPE_CHECKING:
    from saga.testing._system import System

FaultKind = Literal["command", "reply", "timeout", "crash"]
FAULT_KINDS: tuple[FaultKind, ...] = ("command", "reply", "timeout", "crash")
# Which faults to try: a predicate, or kinds ("command", "reply", "timeout", "crash").
FaultFilter = Callable[["Fault"], bool] | Iterable[str]

# What a worker killed at a crash point leaves behind, in a user's words.
LEFT_BEHIND = {
    "consumer.after_commit": "its transaction committed, its Kafka offsets not",
    "participant.after_commit": "its handlers' work committed, its Kafka offsets not",
    "orchestrator.after_commit": "its decisions committed, the replies' Kafka offsets not",
    "participant.before_commit": "its handlers ran, nothing committed",
    "relay.after_ack": "Kafka has the batch, its outbox rows are not deleted",
}


@dataclass(frozen=True)
class Fault:
    """One fault a run suffers.

    command  the command of `step`/`phase` to participant `service` is delivered twice
    reply    the reply to `step`/`phase` (of a `saga_type` saga) is delivered twice
    timeout  `step`/`phase` times out: participant `service` gets its first command only once
             the saga has acted on the timeout
    crash    `worker` is killed at crash `point` the `nth` time it gets there, and replaced
    """

    kind: FaultKind
    step: str = ""
    phase: str = ""
    service: str = ""
    saga_type: str = ""
    worker: str = ""
    point: str = ""
    nth: int = 0

    def __str__(self) -> str:
        if self.kind == "command":
            return f"command {self.step}/{self.phase} to {self.service} delivered twice"
        if self.kind == "reply":
            return f"reply to {self.step}/{self.phase} delivered twice"
        if self.kind == "timeout":
            what = f"step {self.step}" if self.phase == "action" else f"compensation of step {self.step}"
            return f"{what} timed out (its command arrived late)"
        who = self.worker.replace(":", " ")
        left = LEFT_BEHIND.get(self.point, "")
        return f"{who} killed at {self.point}, pass {self.nth}" + (f" ({left})" if left else "")


@dataclass(frozen=True)
class Sent:
    """A record the baseline saw on Kafka: a command to `service`, or a reply to a saga."""

    kind: Literal["command", "reply"]
    to: str  # the participant service, or the saga type
    saga_type: str
    step: str
    phase: str


def topics_of(system: System) -> dict[str, tuple[Literal["command", "reply"], str]]:
    """The system's consumed topics: topic -> (command, service) or (reply, saga type)."""
    topics = system.orchestrator.topics
    kinds: dict[str, tuple[Literal["command", "reply"], str]] = {
        topics.commands(service): ("command", service) for service in system.handlers
    }
    kinds.update({topics.replies(saga_type): ("reply", saga_type) for saga_type in system.orchestrator.sagas})
    return kinds


def faults_of(system: System, sent: Iterable[Sent], passes: Mapping[tuple[str, str], int]) -> list[Fault]:
    """Every fault of the baseline's run, in the order they are tried."""
    found: list[Fault] = []
    for item in sent:
        if item.kind == "command":
            found.append(Fault("command", item.step, item.phase, service=item.to, saga_type=item.saga_type))
            if _may_time_out(system, item):
                found.append(Fault("timeout", item.step, item.phase, item.to, item.saga_type))
        else:
            found.append(Fault("reply", item.step, item.phase, saga_type=item.saga_type))
    for (worker, point), count in sorted(passes.items()):
        found.extend(Fault("crash", worker=worker, point=point, nth=n) for n in range(1, count + 1))
    unique = list(dict.fromkeys(found))
    return sorted(unique, key=lambda f: FAULT_KINDS.index(f.kind))


def _may_time_out(system: System, item: Sent) -> bool:
    saga: type[Saga[Any]] | None = system.orchestrator.sagas.get(item.saga_type)
    if saga is None or not saga.has_step(item.step):
        return False
    step = saga.step(item.step)
    return issubclass(step, RemoteStep) and step.timeout_s is not None and step.participant in system.handlers


def selected(faults: list[Fault], which: FaultFilter | None) -> list[Fault]:
    """The faults `which` keeps (all of them for None)."""
    if which is None:
        return faults
    if callable(which):
        return [f for f in faults if which(f)]
    kinds = {which} if isinstance(which, str) else set(which)
    unknown = sorted(kinds - set(FAULT_KINDS))
    if unknown:
        raise ValueError(
            f"explore(faults=...): {', '.join(map(repr, unknown))} is not a kind of fault; the kinds are "
            f"{', '.join(FAULT_KINDS)} (or pass a predicate taking a Fault)"
        )
    return [f for f in faults if f.kind in kinds]
