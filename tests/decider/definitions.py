"""Saga definitions made from a small data model, and a Hypothesis strategy for valid ones.

A `SagaSpec` says what a saga looks like: its nodes, each a step (`StepSpec`: local or remote,
a wait for signals, a timer, or a child saga; kind, retry budgets, timeout) or a parallel group
of steps (`GroupSpec`). `build` turns it into real `Saga` and `Step` classes with `type(...)`
and the language's own constructors (`WaitFor`, `WaitForAny`, `Delay`, `Parallel`), so the
definition is checked when the class is created, as a user's would be.

Signals are the models `Sig1`, `Sig2`, `Sig3`; `Stray` is one no wait takes. A child step
starts `CHILD`, a small fixed saga with no pivot; the driver never runs it, it answers for it
with a `ChildEnded` reply.
"""

from __future__ import annotations

from typing import Any, Literal, cast

from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncConnection

from saga import (
    ChildSaga,
    Delay,
    LocalStep,
    Parallel,
    RemoteStep,
    RetryPolicy,
    Saga,
    Step,
    StepKind,
    WaitFor,
    WaitForAny,
)

PARTICIPANT = "svc"
Construct = Literal["step", "wait", "timer", "child"]


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


class Sig1(BaseModel):
    note: str = ""


class Sig2(BaseModel):
    note: str = ""


class Sig3(BaseModel):
    note: str = ""


class Stray(BaseModel):
    """A signal of a type no wait takes."""

    note: str = ""


SIGNALS: tuple[type[BaseModel], ...] = (Sig1, Sig2, Sig3)


def signal_type(model: type[BaseModel]) -> str:
    """The message type name a signal model travels under."""
    return f"test.{model.__name__}"


def reply_type(phase: str) -> type[Done | Undone]:
    return Done if phase == "action" else Undone


class StepSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    remote: bool = True  # for what "step": a remote step, else a local one
    what: Construct = "step"
    kind: StepKind = StepKind.COMPENSATABLE
    attempts: int = Field(default=1, ge=1)
    compensation_attempts: int = Field(default=1, ge=1)
    timeout_s: float | None = None
    nothing_to_undo: bool = False  # a remote compensation() that returns None
    signals: tuple[int, ...] = (1,)  # a wait's signal models: 1 is Sig1 ...
    delay_s: float = 5.0  # a timer's delay


class GroupSpec(BaseModel):
    """A parallel group: its members start in one decision."""

    model_config = ConfigDict(frozen=True)

    members: list[StepSpec]


class SagaSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str = "Drawn"
    steps: list[StepSpec | GroupSpec]

    def leaves(self) -> list[StepSpec]:
        """Every step, group members included, in order."""
        return [s for node in self.steps for s in (node.members if isinstance(node, GroupSpec) else [node])]

    def renamed(self, old: str, new: str) -> SagaSpec:
        """The same saga with one step (a group member too) named otherwise."""

        def rename(s: StepSpec) -> StepSpec:
            return s.model_copy(update={"name": new}) if s.name == old else s

        nodes = [
            GroupSpec(members=[rename(m) for m in n.members]) if isinstance(n, GroupSpec) else rename(n)
            for n in self.steps
        ]
        return self.model_copy(update={"steps": nodes})


def with_step(data: Data, step: str) -> Data:
    return data.model_copy(update={"trail": [*data.trail, step]})


def build(spec: SagaSpec) -> type[Saga[Data]]:
    nodes = tuple(
        Parallel(*(_step_class(m) for m in n.members)) if isinstance(n, GroupSpec) else _step_class(n)
        for n in spec.steps
    )
    return cast(type[Saga[Data]], type(spec.name, (Saga,), {"data_model": Data, "steps": nodes}))


def _step_class(spec: StepSpec) -> type:
    namespace: dict[str, Any] = {
        "name": spec.name,
        "kind": spec.kind,
        "timeout_s": spec.timeout_s,
        "retry": RetryPolicy(attempts=spec.attempts, backoff_s=1.0),
        "compensation_retry": RetryPolicy(attempts=spec.compensation_attempts, backoff_s=1.0),
    }
    undoable = spec.kind is StepKind.COMPENSATABLE
    if spec.what == "wait":
        models = [SIGNALS[i - 1] for i in spec.signals]
        base = WaitFor(models[0], name=spec.name) if len(models) == 1 else WaitForAny(*models, name=spec.name)
        namespace["on_signal"] = _adds(spec.name)
        return type(f"Wait_{spec.name}", (base,), namespace)
    if spec.what == "timer":
        return type(f"Timer_{spec.name}", (Delay(spec.delay_s, name=spec.name),), namespace)
    if spec.what == "child":
        namespace.update(saga=CHILD, start=_child_data, on_child_completed=_adds(spec.name))
        return type(f"Child_{spec.name}", (ChildSaga,), namespace)
    if spec.remote:
        namespace.update(
            participant=PARTICIPANT, reply=Done, command=_command(spec), on_reply=_adds(spec.name)
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


def _adds(name: str) -> Any:
    """`on_reply`, `on_signal` or `on_child_completed`: the step adds its name to the trail."""

    def on_answer(self: Step[Data], data: Data, answer: Any) -> Data:
        return with_step(data, name)

    return on_answer


def _compensation(spec: StepSpec) -> Any:
    def compensation(self: RemoteStep[Data], data: Data) -> Do | None:
        return None if spec.nothing_to_undo else Do(step=spec.name, phase="compensation")

    return compensation


def _child_data(self: ChildSaga[Data], data: Data) -> Data:
    return Data()


# The decider never runs a local step (the orchestrator does); the driver answers for it.
async def _local_action(self: LocalStep[Data], conn: AsyncConnection, data: Data) -> Data:
    raise AssertionError("the decider must not run a local step")


async def _local_compensate(self: LocalStep[Data], conn: AsyncConnection, data: Data) -> None:
    raise AssertionError("the decider must not run a local step")


CHILD_SPEC = SagaSpec(name="Child", steps=[StepSpec(name="c0", timeout_s=5.0)])
CHILD = build(CHILD_SPEC)
CHILD_DATA = with_step(Data(), "c0").model_dump(mode="json")  # the child's data once it completed


# --- the strategy ------------------------------------------------------------------------

_CONSTRUCTS: list[Construct] = ["step", "step", "step", "wait", "timer", "child"]
_MEMBERS: list[Construct] = ["step", "step", "step", "step", "wait", "timer", "child"]


@st.composite
def _shapes(draw: st.DrawFn, constructs: list[Construct] = _CONSTRUCTS) -> StepSpec:
    """A step with everything but its name and kind (those depend on where it stands)."""
    construct = draw(st.sampled_from(constructs))
    signals = draw(st.sampled_from([(1,), (2,), (1, 2), (2, 3)]))
    return StepSpec(
        name="",
        what=construct,
        remote=draw(st.booleans()),
        attempts=draw(st.integers(1, 3)),
        compensation_attempts=draw(st.integers(1, 3)),
        timeout_s=draw(st.sampled_from([None, 5.0, 30.0])),
        nothing_to_undo=draw(st.booleans()),
        signals=signals if construct == "wait" else (1,),
    )


def _placed(shape: StepSpec, name: str, kind: StepKind, member: bool) -> StepSpec:
    remote = shape.remote or member  # no local step in a group
    undo_none = shape.nothing_to_undo and remote and shape.what == "step" and kind is StepKind.COMPENSATABLE
    return shape.model_copy(
        update={"name": name, "kind": kind, "remote": remote, "nothing_to_undo": undo_none}
    )


@st.composite
def saga_specs(draw: st.DrawFn, groups: bool = True) -> SagaSpec:
    """1..5 nodes: compensatable ones, then optionally a pivot followed by retriable ones. A
    node is a step (remote, local, wait, timer, child) or a group of 2-3 members (mostly
    remote; at most one wait, timer or child); a pivot is a remote, local or child step."""
    count = draw(st.integers(1, 5))
    grouped = [groups and draw(st.integers(0, 3)) == 0 for _ in range(count)]
    shapes = [draw(_shapes()) for _ in range(count)]
    may_pivot = [i for i in range(count) if not grouped[i] and shapes[i].what in ("step", "child")]
    pivot = draw(st.none() | st.sampled_from(may_pivot)) if may_pivot else None
    nodes: list[StepSpec | GroupSpec] = []
    for i, shape in enumerate(shapes):
        if pivot is None or i < pivot:
            kind = StepKind.COMPENSATABLE
        else:
            kind = StepKind.PIVOT if i == pivot else StepKind.RETRIABLE
        if not grouped[i]:
            nodes.append(_placed(shape, f"s{i}", kind, member=False))
            continue
        size = draw(st.integers(2, 3))
        others = draw(st.lists(_shapes(_MEMBERS), min_size=size - 1, max_size=size - 1))
        members, special = [], False
        for j, m in enumerate((shape, *others)):
            if m.what != "step":
                m = m.model_copy(update={"what": "step"}) if special else m
                special = True
            members.append(_placed(m, f"s{i}{'abc'[j]}", kind, member=True))
        nodes.append(GroupSpec(members=members))
    return SagaSpec(steps=nodes)


def sagas() -> st.SearchStrategy[type[Saga[Data]]]:
    return saga_specs().map(build)
