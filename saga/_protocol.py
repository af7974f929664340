"""The saga wire contract, shared by the orchestrator and the participants.

Saga ids, stream names, lock keys, topic and consumer-group names, dead-letter names, the
ids of the commands a saga sends, and `StepRefused`, the failure reply. Participants import
this module, never the orchestrator.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from outbox import MessageRegistry

SAGA_ID_NAMESPACE = uuid.UUID("5a9a0000-0000-4000-8000-000000000001")
STREAM_PREFIX = "saga:"
DEAD_LETTER_SUFFIX = ".dlq"
_LEGAL_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


class StepRefused(BaseModel):
    """The failure reply a participant sends when it refuses a command."""

    model_config = ConfigDict(frozen=True)
    reason: str


STEP_REFUSED = "saga.step_refused"


class ChildEnded(BaseModel):
    """A child saga ended: sent to its parent, answering the parent's step request."""

    model_config = ConfigDict(frozen=True)
    child_id: str
    saga_type: str
    outcome: Literal["completed", "compensated"]
    data: dict[str, Any]
    reason: str | None = None


class CompensateSaga(BaseModel):
    """A parent asks its child saga to undo itself; the child answers with ChildEnded."""

    model_config = ConfigDict(frozen=True)
    reason: str
    step: str
    phase: Literal["action", "compensation"]
    attempt: int


CHILD_ENDED = "saga.child_ended"
COMPENSATE_SAGA = "saga.compensate"


def stream_of(saga_id: str) -> str:
    """The event stream of a saga; also the key of its advisory lock."""
    return f"{STREAM_PREFIX}{saga_id}"


def saga_id_of(stream_id: str) -> str:
    return stream_id.removeprefix(STREAM_PREFIX)


def lock_key(saga_id: str) -> str:
    """What every decision on a saga locks (hashed by Postgres into an advisory lock key)."""
    return stream_of(saga_id)


def saga_id_for(saga_type: str, key: str) -> str:
    """Starting twice with the same key names the same saga: that is what makes start idempotent."""
    return str(uuid.uuid5(SAGA_ID_NAMESPACE, f"{saga_type}\x00{key}"))


def command_id(saga_id: str, step: str, phase: str, attempt: int) -> uuid.UUID:
    """The message id of a step's command: one per attempt, the same however often the
    decision that sends it is computed (so the decider stays pure and a resent decision
    cannot send a second, different command)."""
    return uuid.uuid5(SAGA_ID_NAMESPACE, f"{saga_id}\x00{step}\x00{phase}\x00{attempt}")


def child_id_for(parent_id: str, step: str, attempt: int) -> str:
    """The id of the child saga a parent's step starts: the same however often the decision is
    computed, another for each attempt."""
    return str(uuid.uuid5(SAGA_ID_NAMESPACE, f"child\x00{parent_id}\x00{step}\x00{attempt}"))


def with_saga_messages(registry: MessageRegistry) -> MessageRegistry:
    for model, name in (
        (StepRefused, STEP_REFUSED),
        (ChildEnded, CHILD_ENDED),
        (CompensateSaga, COMPENSATE_SAGA),
    ):
        if name not in registry:
            registry.register(model, name)
    return registry


class Topics:
    """Topic and consumer-group names, all under one prefix: commands per participant,
    replies per saga type, and a dead-letter topic beside each consumed topic."""

    def __init__(self, prefix: str = "saga") -> None:
        self.prefix = prefix

    def commands(self, participant: str) -> str:
        return f"{self.prefix}.{participant}.commands"

    def replies(self, saga_type: str) -> str:
        return f"{self.prefix}.{saga_type}.replies"

    def is_reply_topic(self, topic: str) -> bool:
        """Whether a command's `reply_topic` header names a reply topic under this prefix: a
        participant answers there only, never to a topic a garbled command names."""
        name = topic.removeprefix(f"{self.prefix}.").removesuffix(".replies")
        return (
            _LEGAL_TOPIC.fullmatch(topic) is not None
            and topic == self.replies(name)
            and bool(name.strip("."))
            and ".." not in name
        )

    def dead_letter(self, topic: str) -> str:
        return f"{topic}{DEAD_LETTER_SUFFIX}"

    def orchestrator_group(self) -> str:
        return f"{self.prefix}.orchestrator"

    def participant_group(self, service: str) -> str:
        return f"{self.prefix}.{service}"
