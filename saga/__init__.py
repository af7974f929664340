"""Saga orchestration on an event-sourced Postgres store and Kafka.

DefinitionError        a saga declared wrongly (raised when the class is created)
Refused                a business refusal: a failure reply, never retried
SagaError              base of the runtime's own errors
├── UnknownSagaError   no such saga id or saga type
├── SagaDataError      a saga's stored data no longer fits its data model
├── HookFailed         a saga's end hook raised (the ending is not committed, and is tried again)
└── MetricsPortError   /metrics cannot be served on the port given
"""

from eventstore import Migration as SchemaMigration
from eventstore import eventstore_migrations, load_migrations
from outbox import outbox_migrations
from saga._app import App, AppLoadError, load_app
from saga._clock import Clock, SystemClock
from saga._decide import decide
from saga._decision import (
    CompensateRequest,
    Deadline,
    DeadlineDue,
    Decision,
    LocalDone,
    LocalFailed,
    Migrate,
    Reply,
    Resume,
    RunLocal,
    SendCommand,
    Signal,
    Start,
    StartChild,
)
from saga._definition import (
    DefinitionError,
    LocalStep,
    Refused,
    RemoteStep,
    RetryPolicy,
    Saga,
    Step,
    StepKind,
)
from saga._errors import HookFailed, SagaDataError, SagaError, UnknownSagaError
from saga._events import ParentRef, saga_event_registry
from saga._language import ChildSaga, Delay, Parallel, TimerStep, Until, WaitFor, WaitForAny, WaitStep
from saga._metrics import MetricsPortError, record_metrics, serve_metrics
from saga._migrate import MigrationPlan
from saga._orchestrator import Orchestrator
from saga._participant import Participant
from saga._protocol import (
    ChildEnded,
    CompensateSaga,
    StepRefused,
    Topics,
    child_id_for,
    command_id,
    saga_id_for,
    stream_of,
)
from saga._repository import instance_row
from saga._settings import Settings, SettingsError
from saga._state import SagaState, fold
from saga._typed import TypedSagaState
from saga._versions import Migration
from saga._worker import OrchestratorWorker, fire_due_deadlines, take_up_parked


def all_migrations() -> list[SchemaMigration]:
    """Every schema migration of the product, in the order `saga db upgrade` applies them."""
    return [*eventstore_migrations(), *outbox_migrations(), *load_migrations("saga", "saga")]


__all__ = [
    "App",
    "AppLoadError",
    "ChildEnded",
    "ChildSaga",
    "Clock",
    "CompensateRequest",
    "CompensateSaga",
    "Deadline",
    "DeadlineDue",
    "Decision",
    "DefinitionError",
    "Delay",
    "HookFailed",
    "LocalDone",
    "LocalFailed",
    "LocalStep",
    "MetricsPortError",
    "Migrate",
    "Migration",
    "MigrationPlan",
    "Orchestrator",
    "OrchestratorWorker",
    "Parallel",
    "ParentRef",
    "Participant",
    "Refused",
    "RemoteStep",
    "Reply",
    "Resume",
    "RetryPolicy",
    "RunLocal",
    "Saga",
    "SagaDataError",
    "SagaError",
    "SagaState",
    "SendCommand",
    "Settings",
    "SettingsError",
    "Signal",
    "Start",
    "StartChild",
    "Step",
    "StepKind",
    "StepRefused",
    "SystemClock",
    "TimerStep",
    "Topics",
    "TypedSagaState",
    "UnknownSagaError",
    "Until",
    "WaitFor",
    "WaitForAny",
    "WaitStep",
    "all_migrations",
    "child_id_for",
    "command_id",
    "decide",
    "fire_due_deadlines",
    "fold",
    "instance_row",
    "load_app",
    "record_metrics",
    "saga_event_registry",
    "saga_id_for",
    "serve_metrics",
    "stream_of",
    "take_up_parked",
]
