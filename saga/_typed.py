"""A saga's state with its data as the saga's own model: what `Orchestrator.load` returns.

The fold (`saga._state`) keeps the data as stored, JSON; the model is applied here, once,
when a caller asks for the state, so the fold and the decider stay as they are, and a saga
whose stored data no longer fits its model still shows and replays.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, cast

from pydantic import ValidationError

from saga._definition import D, Saga
from saga._errors import SagaDataError, UnknownSagaError
from saga._state import SagaState, StateFields

# The statuses in which a saga waits for nobody: it ended, or it stopped for an operator.
ENDED: frozenset[str] = frozenset({"completed", "compensated", "failed", "compensation_failed", "parked"})
# `until_ended` looks again soon, then less often, at most this far apart.
FIRST_PAUSE_S = 0.02
MAX_PAUSE_S = 0.25


class TypedSagaState(StateFields, Generic[D]):
    """`SagaState` with `data` an instance of the saga's data model."""

    data: D


def class_for(
    sagas: Mapping[str, type[Saga[Any]]], state: SagaState, saga: type[Saga[Any]] | None
) -> type[Saga[Any]]:
    """The class to type `state` with: `saga` when given and right, else its registered type."""
    if saga is None:
        found = sagas.get(state.saga_type)
        if found is None:
            known = ", ".join(sagas) or "none"
            raise UnknownSagaError(
                f"saga {state.saga_id} is a {state.saga_type!r}, which this orchestrator does not "
                f"know (it has: {known}); add its class to the app's sagas"
            )
        return found
    if not (isinstance(saga, type) and issubclass(saga, Saga)):
        raise TypeError(
            f"load/wait(saga_id, saga): saga must be a Saga class, got {type(saga).__name__} "
            "(pass a connection as conn=...)"
        )
    if state.saga_type != saga.name:
        raise TypeError(f"saga {state.saga_id} is a {state.saga_type}, not a {saga.name}")
    return saga


def typed_data(saga: type[Saga[D]], state: SagaState) -> D:
    """The saga's data as its model; SagaDataError, naming the fields, when it does not fit."""
    try:
        return cast(D, saga.data_model.model_validate(state.data))
    except ValidationError as exc:
        raise SagaDataError(_misfit(saga, state, exc)) from None


def typed_state(saga: type[Saga[D]], state: SagaState) -> TypedSagaState[D]:
    fields = {name: getattr(state, name) for name in StateFields.model_fields if name != "data"}
    model: Any = TypedSagaState[saga.data_model]  # type: ignore[name-defined]
    return cast(TypedSagaState[D], model(**fields, data=typed_data(saga, state)))


def _misfit(saga: type[Saga[Any]], state: SagaState, exc: ValidationError) -> str:
    problems = []
    for error in exc.errors()[:5]:
        where = ".".join(str(part) for part in error["loc"]) or "(the data itself)"
        if error["type"] == "missing":
            problems.append(f"field {where!r} is missing (added to the model without a default?)")
        else:
            problems.append(f"field {where!r}: {error['msg']}")
    more = f" and {exc.error_count() - 5} more" if exc.error_count() > 5 else ""
    return (
        f"saga {state.saga_id} ({saga.name}): its stored data no longer fits "
        f"{saga.data_model.__name__}: {'; '.join(problems)}{more}. Give a field added since the saga "
        f"started a default (`name: str | None = None`) so that older sagas still load; "
        f"`saga show {state.saga_id}` prints the data as stored"
    )


async def until_ended(load: Callable[[], Awaitable[SagaState]], timeout_s: float) -> SagaState:
    """`load()` again until the saga has ended or stopped; TimeoutError naming its status."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout_s
    pause = FIRST_PAUSE_S
    while True:
        state = await load()
        if state.status in ENDED:
            return state
        left = give_up - loop.time()
        if left <= 0:
            raise TimeoutError(_not_ended(state, timeout_s))
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 2, MAX_PAUSE_S)


def _not_ended(state: SagaState, timeout_s: float) -> str:
    waiting = state.awaiting
    on = f", waiting on {waiting.step}/{waiting.phase} #{waiting.attempt} ({waiting.kind})" if waiting else ""
    return (
        f"saga {state.saga_id} ({state.saga_type}) has not ended within {timeout_s:g}s: it is "
        f"{state.status}{on}; `saga show {state.saga_id}` shows where it is"
    )
