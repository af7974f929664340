"""When a running system waits only for time, how far to move its clock."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import text

from outbox import Outbox
from saga import ChildSaga, RemoteStep, SagaState

if TYPE_CHECKING:
    from saga.testing._system import System

_RUNNING = "SELECT saga_id FROM saga_instances WHERE status IN ('running', 'compensating')"
_NEXT_DUE = "SELECT min(due_at) FROM saga_deadlines WHERE parked_at IS NULL"


async def next_skip(system: System, state: SagaState) -> float | None:
    """Seconds to the next deadline when nothing but time can move the system: nothing waits
    to be published, and no running saga waits for a participant that runs here (or for
    anything but a retry, a timer, a signal, a child, or a participant nobody runs here).
    None otherwise."""
    if state.status not in ("running", "compensating") or not state.waiting:
        return None
    if (await Outbox.counts(system.database)).pending:
        return None
    async with system.engine.connect() as conn:
        running = list((await conn.execute(text(_RUNNING))).scalars())
        due: datetime | None = (await conn.execute(text(_NEXT_DUE))).scalar()
    if due is None:
        return None
    for saga_id in running:
        if not _only_time(system, await system.orchestrator.load_raw(saga_id)):
            return None
    return max((due - system.clock.now()).total_seconds(), 0.0) + 0.001


def _only_time(system: System, state: SagaState) -> bool:
    saga = system.orchestrator.definition_of(state)
    if saga is None:
        return False
    for waiting in state.waiting:
        if waiting.kind != "reply" or not saga.has_step(waiting.step):
            continue
        step = saga.step(waiting.step)
        if issubclass(step, ChildSaga):
            continue  # the child's own waits are looked at with the other running sagas
        if issubclass(step, RemoteStep) and step.participant in system.handlers:
            return False
    return True


def waits_of(state: SagaState) -> str:
    """What the saga waits for, for a message: `charge/action (reply), ...` or `nothing`."""
    return ", ".join(f"{w.step}/{w.phase} ({w.kind})" for w in state.waiting) or "nothing"
