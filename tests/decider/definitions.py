"""Saga definitions made from a small data model, and a Hypothesis strategy for valid ones.

A `SagaSpec` says what a saga looks like (steps: local or remote, kind, retry budgets,
timeout); `build` turns it into real `Saga` and `Step` classes with `type(...)`, so the
definition is checked when the class is created, as a user's would be.
"""

from __future__ import annotations

from typing import Any, cast

from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncConnection

from saga import LocalStep, RemoteStep, RetryPolicy, Saga, StepKind

PARTICIPANT = "svc"


class Data(BaseModel):
    """The saga's data: each step that succeeds adds its name."""

    trail: list[str] = []


class Do(BaseModel):
    """The command a remote step sends (action or compensation)."""

    step: str
    phase: str


class Done(BaseModel):
    """A participant's success reply to an action."""

    step: str


class Undone(BaseModel):
    """A participant's success reply to a compensation."""

    step: str


def reply_type(phase: str) -> type[Done | Undone]:
    return Done if phase == "action" else Undone


class StepSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    remote: bool = True
    kind: StepKind = StepKind.COMPENSATABLE
    attempts: int = Field(default=1, ge=1)
    compensation_attempts: int = Field(default=1, ge=1)
    timeout_s: float | None = None
    nothing_to_undo: bool = False  # a remote compensation() that returns None


class SagaSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str = "Drawn"
    steps: list[StepSpec]


def with_step(data: Data, step: str) -> Data:
    return data.model_copy(update={"trail": [*data.trail, step]})


def build(spec: SagaSpec) -> type[Saga[Data]]:
    steps = tuple(_step_class(s) for s in spec.steps)
    return cast(type[Saga[Data]], type(spec.name, (Saga,), {"data_model": Data, "steps": steps}))


def _step_class(spec: StepSpec) -> type:
    namespace: dict[str, Any] = {
        "name": spec.name,
        "kind": spec.kind,
        "timeout_s": spec.timeout_s,
        "retry": RetryPolicy(attempts=spec.attempts, backoff_s=1.0),
        "compensation_retry": RetryPolicy(attempts=spec.compensation_attempts, backoff_s=1.0),
    }
    undoable = spec.kind is StepKind.COMPENSATABLE
    if spec.remote:
        namespace.update(
            participant=PARTICIPANT, reply=Done, command=_command(spec), on_reply=_on_reply(spec)
        )
        if undoable:
            namespace.update(compensation_reply=Undone, compensation=_compensation(spec))
        return type(f"Remote_{spec.name}", (RemoteStep,), namespace)
    namespace["action"] = _local_action
    if undoable:
        namespace["compensate"] = _local_compensate
    return type(f"Local_{spec.name}", (LocalStep,), namespace)


def _command(spec: StepSpec) -> Any:
    def command(self: RemoteStep[Data], data: Data) -> Do:
        return Do(step=spec.name, phase="action")

    return command


def _on_reply(spec: StepSpec) -> Any:
    def on_reply(self: RemoteStep[Data], data: Data, reply: Done) -> Data:
        return with_step(data, spec.name)

    return on_reply


def _compensation(spec: StepSpec) -> Any:
    def compensation(self: RemoteStep[Data], data: Data) -> Do | None:
        return None if spec.nothing_to_undo else Do(step=spec.name, phase="compensation")

    return compensation


# The decider never runs a local step (the orchestrator does); the driver answers for it.
async def _local_action(self: LocalStep[Data], conn: AsyncConnection, data: Data) -> Data:
    raise AssertionError("the decider must not run a local step")


async def _local_compensate(self: LocalStep[Data], conn: AsyncConnection, data: Data) -> None:
    raise AssertionError("the decider must not run a local step")


@st.composite
def _shapes(draw: st.DrawFn) -> StepSpec:
    """A step with everything but its name and kind (those depend on where it stands)."""
    return StepSpec(
        name="",
        remote=draw(st.booleans()),
        attempts=draw(st.integers(1, 3)),
        compensation_attempts=draw(st.integers(1, 3)),
        timeout_s=draw(st.sampled_from([None, 5.0, 30.0])),
        nothing_to_undo=draw(st.booleans()),
    )


@st.composite
def saga_specs(draw: st.DrawFn) -> SagaSpec:
    """1..6 steps: compensatable ones, then optionally a pivot followed by retriable ones."""
    shapes = draw(st.lists(_shapes(), min_size=1, max_size=6))
    pivot = draw(st.none() | st.integers(0, len(shapes) - 1))
    steps = []
    for i, shape in enumerate(shapes):
        if pivot is None or i < pivot:
            kind = StepKind.COMPENSATABLE
        else:
            kind = StepKind.PIVOT if i == pivot else StepKind.RETRIABLE
        undo_none = shape.nothing_to_undo and shape.remote and kind is StepKind.COMPENSATABLE
        steps.append(shape.model_copy(update={"name": f"s{i}", "kind": kind, "nothing_to_undo": undo_none}))
    return SagaSpec(steps=steps)


def sagas() -> st.SearchStrategy[type[Saga[Data]]]:
    return saga_specs().map(build)
