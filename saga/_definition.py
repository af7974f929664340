"""Declaring sagas: a `Saga[Data]` subclass lists `Step` classes; the definition is checked
when the class is created, so a mistake fails at import with the saga and step named.

Step kinds (the usual saga vocabulary):
- compensatable: may fail; once it took effect, its compensation undoes it.
- pivot: the point of no return; if it succeeds the saga completes, so it needs no
  compensation and every step after it must be retriable.
- retriable: comes after the pivot and is retried until it succeeds; it has no compensation.
"""

from __future__ import annotations

import enum
import inspect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar, get_args, get_origin, get_type_hints

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


def _snake(name: str) -> str:
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
            cls.name = _snake(cls.__name__)

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


class Saga(Generic[D]):
    """Subclass as `class OrderSaga(Saga[OrderData]): steps = [ReserveCredit, ...]`."""

    name: ClassVar[str] = ""
    data_model: ClassVar[type[BaseModel]]
    steps: ClassVar[Sequence[type[Step[Any]]]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__
        if "data_model" not in cls.__dict__:
            for base in getattr(cls, "__orig_bases__", ()):
                if get_origin(base) is Saga and get_args(base):
                    cls.data_model = get_args(base)[0]
        check_definition(cls)

    # End hooks: run in the transaction of the decision that ends the saga (see saga._hooks).
    async def on_completed(self, conn: AsyncConnection, data: D) -> None:
        """The saga completed."""

    async def on_compensated(self, conn: AsyncConnection, data: D, reason: str) -> None:
        """The saga was compensated; `reason` says why its compensation began."""

    async def on_failed(self, conn: AsyncConnection, data: D, reason: str) -> None:
        """The saga stopped in `failed` or `compensation_failed` (an operator may resume it)."""

    @classmethod
    def step_index(cls, name: str) -> int:
        for i, step in enumerate(cls.steps):
            if step.name == name:
                return i
        raise KeyError(f"saga {cls.name}: no step named {name!r}")

    @classmethod
    def step(cls, name: str) -> type[Step[Any]]:
        return cls.steps[cls.step_index(name)]

    @classmethod
    def pivot_index(cls) -> int | None:
        for i, step in enumerate(cls.steps):
            if step.kind is StepKind.PIVOT:
                return i
        return None


def check_definition(saga: type[Saga[Any]]) -> None:
    """Raise DefinitionError for every mistake we can see before the saga ever runs."""
    who = f"saga {saga.name}"
    data_model = getattr(saga, "data_model", None)
    if not (isinstance(data_model, type) and issubclass(data_model, BaseModel)):
        raise DefinitionError(f"{who}: declare its data as a pydantic model: class {saga.name}(Saga[MyData])")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,80}", saga.name):
        raise DefinitionError(
            f"{who}: the name must be 1 to 80 letters, digits, '_' or '-' (it names the topic <prefix>.<name>.replies)"
        )
    if not saga.steps:
        raise DefinitionError(f"{who}: no steps declared")
    _check_hooks(saga, who)
    for step in saga.steps:
        if not (isinstance(step, type) and issubclass(step, (LocalStep, RemoteStep))):
            raise DefinitionError(f"{who}: {step!r} is not a LocalStep or RemoteStep class")
    seen: set[str] = set()
    pivots = [s.name for s in saga.steps if s.kind is StepKind.PIVOT]
    if len(pivots) > 1:
        raise DefinitionError(f"{who}: more than one pivot step ({', '.join(pivots)})")
    after_pivot = False
    for step in saga.steps:
        where = f"{who}: step {step.name}"
        if step.name in seen:
            raise DefinitionError(f"{where}: duplicate step name")
        seen.add(step.name)
        if step.timeout_s is not None and step.timeout_s <= 0:
            raise DefinitionError(f"{where}: timeout_s must be > 0, got {step.timeout_s}")
        if issubclass(step, RemoteStep):
            if not step.participant:
                raise DefinitionError(f"{where}: a remote step must name its participant service")
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,80}", step.participant):
                raise DefinitionError(
                    f"{where}: participant {step.participant!r} must be 1 to 80 letters, digits, '_' or '-' "
                    "(it names the topic <prefix>.<participant>.commands)"
                )
            if step.command is RemoteStep.command:
                raise DefinitionError(f"{where}: a remote step must define command()")
            _check_replies(step, where)
        elif issubclass(step, LocalStep) and step.action is LocalStep.action:
            raise DefinitionError(f"{where}: a local step must define action()")
        if step.kind is StepKind.PIVOT:
            if step.has_compensation():
                raise DefinitionError(f"{where}: the pivot step cannot have a compensation")
            after_pivot = True
            continue
        if after_pivot:
            if step.kind is not StepKind.RETRIABLE:
                raise DefinitionError(
                    f"{where}: steps after the pivot must be retriable (kind = StepKind.RETRIABLE)"
                )
            if step.has_compensation():
                raise DefinitionError(f"{where}: a retriable step after the pivot cannot have a compensation")
        else:
            if step.kind is StepKind.RETRIABLE:
                raise DefinitionError(f"{where}: a retriable step must come after a pivot step")
            if not step.has_compensation():
                raise DefinitionError(f"{where}: a step before the pivot needs a compensation")


def _check_replies(step: type[RemoteStep[Any]], where: str) -> None:
    """A reply's type is what tells a success from a stray message: each must be known."""
    for attribute, declared in (("reply", step.reply), ("compensation_reply", step.compensation_reply)):
        if declared is not None and not (isinstance(declared, type) and issubclass(declared, BaseModel)):
            raise DefinitionError(f"{where}: {attribute} must be a pydantic model class, got {declared!r}")
    if step.reply is None:
        raise DefinitionError(
            f"{where}: say which reply its command gets: set `reply = MyReply` on the step, or "
            "annotate on_reply's `reply` parameter with the reply model"
        )
    if step.has_compensation() and step.compensation_reply is None:
        raise DefinitionError(
            f"{where}: say which reply its compensation gets: set `compensation_reply = MyUndoneReply`"
        )


_HOOK_PARAMETERS = {
    "on_completed": ("conn", "data"),
    "on_compensated": ("conn", "data", "reason"),
    "on_failed": ("conn", "data", "reason"),
}


def _check_hooks(saga: type[Saga[Any]], who: str) -> None:
    """An end hook is awaited with these arguments in the orchestrator's transaction."""
    for name, parameters in _HOOK_PARAMETERS.items():
        hook = getattr(saga, name)
        if hook is getattr(Saga, name):
            continue
        wanted = f"`async def {name}(self, {', '.join(parameters)}) -> None`"
        if not inspect.iscoroutinefunction(hook):
            raise DefinitionError(f"{who}: hook {name} must be {wanted}, got {hook!r}")
        try:
            inspect.signature(hook).bind("self", *parameters)
        except TypeError as exc:
            raise DefinitionError(f"{who}: hook {name} must be {wanted}: {exc}") from None
