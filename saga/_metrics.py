"""The sagas' Prometheus metrics: started, finished by outcome, step durations, compensations,
deadlines due; and the `/metrics` endpoint a process serves them on.

Saga metrics come from the events a transaction's decisions write (`record_decisions`, called
by `flush_decisions`) and are counted once that transaction commits: a rolled-back start, or
a decision in a savepoint that was rolled back, counts nothing. They are recorded only in a
process that serves or asked for metrics (`serve_metrics`, `record_metrics`): elsewhere a
decision pays nothing for them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Histogram, start_http_server
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from eventstore import (
    GaugeRefresher,
    QueriedGauge,
    RecordedEvent,
    after_commit,
    driver_connection,
    refresh_feed_lag,
)
from saga import _repository as repo
from saga._clock import table_time
from saga._errors import SagaError
from saga._events import (
    CompensationFailed,
    CompensationStarted,
    SagaCompensated,
    SagaCompleted,
    SagaFailed,
    SagaStarted,
    StepCompensated,
    StepFailed,
    StepRequested,
    StepSucceeded,
    StepTimedOut,
    TimerSet,
)

if TYPE_CHECKING:
    from saga._orchestrator import Orchestrator
    from saga._outgoing import Pending

STARTED = Counter("saga_started", "Sagas started (child sagas too)", ["saga_type"])
FINISHED = Counter(
    "saga_finished",
    "Sagas that ended: completed, compensated, failed or compensation_failed (a saga an operator "
    "resumes from failed or compensation_failed ends again, and counts again)",
    ["saga_type", "outcome"],
)
COMPENSATIONS = Counter("saga_compensations", "Compensations begun", ["saga_type"])
STEP_DURATION = Histogram(
    "saga_step_duration_seconds",
    "From a step's request to its outcome (succeeded, failed, timed out, compensated); 0 for a "
    "step requested and answered in one transaction (a local step)",
    ["saga_type", "step", "phase"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600),
)
DEADLINES_DUE = QueriedGauge(
    "saga_deadlines_due", "Deadlines (timeouts, retries, timers) due and not fired yet"
)

_ENDS: dict[type[BaseModel], str] = {
    SagaCompleted: "completed",
    SagaCompensated: "compensated",
    SagaFailed: "failed",
    CompensationFailed: "compensation_failed",
}
_STEP_OUTCOMES = (StepSucceeded, StepFailed, StepTimedOut, StepCompensated)
_recording = False


class MetricsPortError(SagaError):
    """The /metrics port cannot be listened on (in use, or not ours to take)."""


def record_metrics() -> None:
    """Count saga metrics in this process, for a registry served some other way than
    `serve_metrics` (say, by the web framework of the app that starts sagas)."""
    global _recording
    _recording = True


def serve_metrics(port: int, addr: str = "0.0.0.0") -> None:
    """Serve this process's metrics (prometheus_client's default registry) on
    http://addr:port/metrics from a thread, and count saga metrics from now on."""
    try:
        start_http_server(port, addr)
    except OSError as exc:
        raise MetricsPortError(
            f"SAGA_METRICS_PORT {port}: cannot serve /metrics on {addr}:{port} ({exc.strerror or exc}); "
            "choose a free port, or unset SAGA_METRICS_PORT"
        ) from exc
    record_metrics()


@dataclass
class _Counts:
    """What one transaction's decisions add, applied once it commits."""

    started: list[str] = field(default_factory=list)
    finished: list[tuple[str, str]] = field(default_factory=list)
    compensations: list[str] = field(default_factory=list)
    steps: list[tuple[str, str, str, float]] = field(default_factory=list)

    def apply(self) -> None:
        for saga_type in self.started:
            STARTED.labels(saga_type).inc()
        for saga_type, outcome in self.finished:
            FINISHED.labels(saga_type, outcome).inc()
        for saga_type in self.compensations:
            COMPENSATIONS.labels(saga_type).inc()
        for saga_type, step, phase, seconds in self.steps:
            STEP_DURATION.labels(saga_type, step, phase).observe(seconds)


def record_decisions(conn: AsyncConnection, pending: Iterable[Pending]) -> None:
    """Count what the decisions' events say, once `conn`'s transaction commits."""
    if not _recording:
        return
    counts = _Counts()
    now = time.time()
    for entry in pending:
        _count(counts, entry.decision.state.saga_type, entry.decision.events, entry.history, now)
    if counts.started or counts.finished or counts.compensations or counts.steps:
        after_commit(conn, counts.apply)


def _count(
    counts: _Counts, saga_type: str, events: Sequence[BaseModel], history: Sequence[RecordedEvent], now: float
) -> None:
    for i, event in enumerate(events):
        if isinstance(event, SagaStarted):
            counts.started.append(event.saga_type)
        elif type(event) in _ENDS:
            counts.finished.append((saga_type, _ENDS[type(event)]))
        elif isinstance(event, CompensationStarted):
            counts.compensations.append(saga_type)
        elif isinstance(event, _STEP_OUTCOMES):
            phase = _phase(event)
            if any(_asks(e, event.step, phase, event.attempt) for e in events[:i]):
                counts.steps.append((saga_type, event.step, phase, 0.0))
                continue
            asked = next(
                (r for r in reversed(history) if _asks(r.event, event.step, phase, event.attempt)), None
            )
            if asked is not None:
                counts.steps.append((saga_type, event.step, phase, max(0.0, now - asked.recorded_us / 1e6)))


def _phase(event: Any) -> str:
    if isinstance(event, StepSucceeded):
        return "action"
    if isinstance(event, StepCompensated):
        return "compensation"
    return str(event.phase)


def _asks(event: BaseModel, step: str, phase: str, attempt: int) -> bool:
    """Whether `event` requested that attempt of the step (a timer is its own request)."""
    if isinstance(event, StepRequested):
        return event.step == step and event.phase == phase and event.attempt == attempt
    return (
        isinstance(event, TimerSet) and phase == "action" and event.step == step and event.attempt == attempt
    )


async def refresh_worker_gauges(orchestrator: Orchestrator) -> None:
    """Deadlines due, and the event store's feed lag: what an orchestrator worker refreshes."""
    async with orchestrator.engine.connect() as conn:
        due = await repo.count_due(await driver_connection(conn), table_time(orchestrator.clock))
        await conn.rollback()
    DEADLINES_DUE.set(due)
    await refresh_feed_lag(orchestrator.store)


def worker_gauges(orchestrator: Orchestrator, interval_s: float) -> GaugeRefresher:
    return GaugeRefresher("orchestrator", lambda: refresh_worker_gauges(orchestrator), interval_s)
