"""Which steps a saga needs that a definition lacks, and the reason a parked saga shows.

A step renamed or removed while sagas run leaves their events naming a step the deployed
definition does not have. The decider parks such a saga (`SagaParked`) instead of guessing.
"""

from __future__ import annotations

from typing import Any

from saga._definition import Saga
from saga._state import SagaState


def missing_steps(saga: type[Saga[Any]], state: SagaState) -> list[str]:
    """The steps this saga awaits, has done, must undo or must run again that `saga` lacks."""
    before = state.parked
    waiting = before.waiting if before is not None else state.waiting
    status = before.status if before is not None else state.status
    wanted = [w.step for w in waiting]
    wanted += [*state.done, *state.to_compensate]
    if status == "failed" and state.last_step is not None:
        wanted.append(state.last_step)
    return list(dict.fromkeys(name for name in wanted if not saga.has_step(name)))


def park_reason(saga: type[Saga[Any]], state: SagaState, missing: list[str]) -> str:
    names = ", ".join(repr(name) for name in missing)
    which = f"step {names} of {saga.name} is" if len(missing) == 1 else f"steps {names} of {saga.name} are"
    has = ", ".join(step.name for step in saga.all_steps())
    them = "it" if len(missing) == 1 else "them"
    return (
        f"{which} not in the deployed definition (it has: {has}); "
        f"deploy a definition that has {them}, then `saga resume {state.saga_id} --note ...`"
    )
