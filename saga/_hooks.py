"""Running a saga's end hooks (`Saga.on_completed`, `on_compensated`, `on_failed`).

A hook runs in the transaction of the decision that ends the saga, after the decider and
before the flush: the user's writes and the ending event commit together, or neither does.
A hook that raises fails that decision; whatever brought it (a reply, a deadline, a start, an
operator's resume) is tried again by the machinery that brings it, so the ending is never
lost and never committed without the hook. Replays and rebuilds fold events and never decide,
so they never run a hook.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from eventstore import ErrorKind, classify_error, is_retriable
from saga._definition import Saga
from saga._errors import HookFailed
from saga._events import CompensationFailed, SagaCompensated, SagaCompleted, SagaFailed
from saga._state import SagaState
from saga._typed import typed_data

_HOOK_OF: dict[type[BaseModel], str] = {
    SagaCompleted: "on_completed",
    SagaCompensated: "on_compensated",
    SagaFailed: "on_failed",
    CompensationFailed: "on_failed",
}


async def run_end_hooks(
    conn: AsyncConnection, saga: type[Saga[Any]], events: Iterable[BaseModel], state: SagaState
) -> None:
    """Run the hook of each ending event among `events` (at most one per decision), which
    fold into `state`."""
    for event in events:
        name = _HOOK_OF.get(type(event))
        if name is None or getattr(saga, name) is getattr(Saga, name):
            continue
        await _run(conn, saga, name, state)


async def _run(conn: AsyncConnection, saga: type[Saga[Any]], name: str, state: SagaState) -> None:
    data = typed_data(saga, state)
    instance = saga()
    try:
        if name == "on_completed":
            await instance.on_completed(conn, data)
        elif name == "on_compensated":
            await instance.on_compensated(conn, data, state.compensation_reason or "")
        else:
            await instance.on_failed(conn, data, state.last_error or "")
    except Exception as exc:
        # Contention and a lost connection rerun the whole decision, as anywhere else.
        if classify_error(exc) in (ErrorKind.CONTENTION, ErrorKind.CONNECTION_LOST):
            raise
        raise HookFailed(
            f"saga {state.saga_id} ({saga.name}): {name} raised {type(exc).__name__}: {exc}; the saga "
            f"stays {_before(state)} until the hook succeeds (what ended it is tried again)",
            retriable=is_retriable(exc),
        ) from exc


def _before(state: SagaState) -> str:
    return "compensating" if state.status in ("compensated", "compensation_failed") else "running"
