"""Local steps: run inside the orchestrator's transaction, between two decisions."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from eventstore import ErrorKind, classify_error
from outbox import log_context
from saga._decision import LocalDone, LocalFailed, RunLocal
from saga._definition import LocalStep, Refused, Saga
from saga._savepoint import StepSavepoint
from saga._state import SagaState


async def run_local(
    conn: AsyncConnection,
    savepoint: StepSavepoint,
    saga: type[Saga[Any]],
    state: SagaState,
    run: RunLocal,
) -> LocalDone | LocalFailed:
    """Run a local step's action or compensation in a savepoint of the decision's transaction:
    its failure rolls back its own writes only, and becomes the decider's LocalFailed."""
    step = saga.step(run.step)
    assert issubclass(step, LocalStep)
    data = saga.data_model.model_validate(state.data)
    await savepoint.take()  # a failing step leaves none of its writes
    try:
        with log_context(step=run.step, phase=run.phase, attempt=run.attempt):  # the lines the step logs
            if run.phase == "action":
                new = await step().action(conn, data)
            else:
                await step().compensate(conn, data)
                new = None
    except Exception as exc:
        # A collision with another transaction or a lost connection is not the step's
        # failure: the whole decision reruns (the consumer or the caller retries it).
        if classify_error(exc) in (ErrorKind.CONTENTION, ErrorKind.CONNECTION_LOST):
            raise
        await savepoint.roll_back()
        reason = exc.reason if isinstance(exc, Refused) else f"{type(exc).__name__}: {exc}"
        return LocalFailed(run.step, run.phase, run.attempt, reason)
    return LocalDone(run.step, run.phase, run.attempt, None if new is None else new.model_dump(mode="json"))
