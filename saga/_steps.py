"""Steps: the base `Step`, local and remote steps, their kinds and retry policies.

Step kinds (the usual saga vocabulary):
- compensatable: may fail; once it took effect, its compensation undoes it.
- pivot: the point of no return; if it succeeds the saga completes, so it needs no
  compensation and every step after it must be retriable.
- retriable: comes after the pivot and is retried until it succeeds; it has no compensation.
"""

from __future__ import annotations

import enum
import re
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar, Union, get_args, get_origin, get_type_hints

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from eventstore import Refusal

D = TypeVar("D", bound=BaseModel)


class DefinitionError(TypeError):
    """A saga or step declared wrongly; the message names the saga and the step."""


class Refused(Refusal):
    """A business refusal ("insufficient credit"): becomes a failure reply, never retried."""


class StepKind(enum.Enum):
    COMPENSATABLE = "compensatable"
    PIVOT = "pivot"
    RETRIABLE = "retriable"


@dataclass(frozen=True)
class RetryPolicy:
    """How often to try, and how long to wait between tries (exponential, with jitter)."""

    attempts: int = 1
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    jitter: float = 0.2  # +- this fraction of the delay

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise DefinitionError(f"RetryPolicy: attempts must be >= 1, got {self.attempts}")
        if self.backoff_s < 0 or self.max_backoff_s < 0 or not 0 <= self.jitter < 1:
            raise DefinitionError("RetryPolicy: backoff must be >= 0 and jitter in [0, 1)")

    def delay_s(self, attempt: int, rand: float) -> float:
        """The wait before `attempt` (2, 3, ...); `rand` in [0, 1) gives the jitter."""
        base: float = min(self.backoff_s * 2.0 ** max(attempt - 2, 0), self.max_backoff_s)
        return base * (1 + self.jitter * (2 * rand - 1))


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class Step(Generic[D]):
    """Base of all steps. Set `name` to keep a stable name when renaming the class."""

    name: ClassVar[str] = ""
    kind: ClassVar[StepKind] = StepKind.COMPENSATABLE
    timeout_s: ClassVar[float | None] = None
    retry: ClassVar[RetryPolicy] = RetryPolicy()
    compensation_retry: ClassVar[RetryPolicy] = RetryPolicy(attempts=5, backoff_s=1.0)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = snake(cls.__name__)

    @classmethod
    def is_remote(cls) -> bool:
        return issubclass(cls, RemoteStep)

    @classmethod
    def has_compensation(cls) -> bool:
        raise NotImplementedError


class LocalStep(Step[D]):
    """Runs inside the orchestrator's Postgres transaction."""

    async def action(self, conn: AsyncConnection, data: D) -> D | None:
        """Do the work; return new data (or None to keep it). Raise Refused to fail the step."""
        raise NotImplementedError

    async def compensate(self, conn: AsyncConnection, data: D) -> None:
        """Undo the action. Declared only when the step can be undone."""
        raise NotImplementedError

    @classmethod
    def has_compensation(cls) -> bool:
        return cls.compensate is not LocalStep.compensate


class RemoteStep(Step[D]):
    """Sends a command to a participant service and progresses on its reply.

    `reply` is the message a successful command answers with (read from the annotation of
    `on_reply`'s `reply` parameter when not set); `compensation_reply` the one a successful
    compensation answers with. A reply of another type is ignored and recorded, never taken
    for success."""

    participant: ClassVar[str] = ""
    reply: ClassVar[type[BaseModel] | None] = None
    compensation_reply: ClassVar[type[BaseModel] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("reply") is None and "on_reply" in cls.__dict__:
            cls.reply = _annotated_reply(cls)

    @classmethod
    def expected_reply(cls, phase: str) -> type[BaseModel] | None:
        return cls.reply if phase == "action" else cls.compensation_reply

    def command(self, data: D) -> BaseModel:
        raise NotImplementedError

    def on_reply(self, data: D, reply: Any) -> D:
        """New saga data from a success reply; by default the data stays as it was."""
        return data

    def compensation(self, data: D) -> BaseModel | None:
        """The command that undoes this step (None: nothing to undo for this data)."""
        raise NotImplementedError

    @classmethod
    def has_compensation(cls) -> bool:
        return cls.compensation is not RemoteStep.compensation


def _annotated_reply(step: type[RemoteStep[Any]]) -> type[BaseModel] | None:
    try:
        hint = get_type_hints(step.on_reply).get("reply")
    except Exception:  # an annotation that does not resolve: the step must say `reply = ...`
        return None
    return hint if isinstance(hint, type) and issubclass(hint, BaseModel) else None


def returned_models(function: Callable[..., Any]) -> list[type[BaseModel]]:
    """The message models a function's return annotation names (`X`, `X | None`, `X | Y`);
    none when it has no annotation or one that does not resolve: then only run time can tell."""
    try:
        hint = get_type_hints(function).get("return")
    except Exception:
        return []
    options = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
    return [t for t in options if isinstance(t, type) and issubclass(t, BaseModel) and t is not BaseModel]
