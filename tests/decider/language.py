"""Small sagas for the decider's example tests on the saga language, and helpers to drive them."""

from __future__ import annotations

from typing import Any

from saga import Reply, Saga, SendCommand
from tests.decider.definitions import GroupSpec, SagaSpec, StepSpec, build
from tests.decider.driver import Run


def saga_of(*nodes: StepSpec | GroupSpec) -> type[Saga[Any]]:
    return build(SagaSpec(steps=list(nodes)))


def remote(name: str, **fields: Any) -> StepSpec:
    return StepSpec(name=name, **fields)


def wait(name: str, *signals: int, **fields: Any) -> StepSpec:
    return StepSpec(name=name, what="wait", signals=signals or (1,), **fields)


def timer(name: str, seconds: float = 5.0, **fields: Any) -> StepSpec:
    return StepSpec(name=name, what="timer", delay_s=seconds, **fields)


def child(name: str, **fields: Any) -> StepSpec:
    return StepSpec(name=name, what="child", **fields)


def group(*members: StepSpec) -> GroupSpec:
    return GroupSpec(members=list(members))


def status(run: Run) -> str:
    return run.state.status


def sent(run: Run, step: str, phase: str = "action") -> SendCommand:
    """The latest command sent for a step's phase."""
    return next(c for c in reversed(run.commands) if (c.step, c.phase) == (step, phase))


def ended(run: Run, step: str, outcome: Any) -> Reply:
    waiting = run.state.waiting_on(step)
    assert waiting is not None
    return run.child_ended(waiting, outcome)
