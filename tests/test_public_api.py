"""The public names of each package, pinned: a change here is a change of the API."""

from __future__ import annotations

import importlib

import pytest

EXPORTED = {
    "eventstore": {
        "ANY",
        "AppendResult",
        "ConcurrencyError",
        "ConnectionRefusal",
        "CrashPointError",
        "Database",
        "DatabaseConfigError",
        "DatabaseUnreachableError",
        "DuplicateEventError",
        "ErrorKind",
        "EventDecodeError",
        "EventRegistry",
        "EventStore",
        "EventStoreError",
        "EventType",
        "EventTypeError",
        "ExpectedVersion",
        "FEED_START",
        "FeedPosition",
        "Metadata",
        "Migration",
        "NewEvents",
        "NO_STREAM",
        "OutageLog",
        "RecordedEvent",
        "Refusal",
        "SchemaError",
        "Snapshot",
        "StoreUnavailableError",
        "StreamState",
        "Subscription",
        "TypeRegistry",
        "Worker",
        "check_database",
        "check_schema",
        "classify_error",
        "connection_refusal",
        "crash_point",
        "create_engine",
        "database_service",
        "driver_connection",
        "eventstore_migrations",
        "is_retriable",
        "libpq_url",
        "load_checkpoint",
        "load_migrations",
        "save_checkpoint",
        "sqlalchemy_url",
        "translate_errors",
        "upgrade",
    },
    "outbox": {
        "BatchHandler",
        "BrokerUnavailableError",
        "Consumer",
        "ConsumerStats",
        "DeadLetter",
        "DeadLetterError",
        "DeadLetterReader",
        "DeadLetterTopic",
        "Delivery",
        "Envelope",
        "Handler",
        "KafkaLogThrottle",
        "MessageDecodeError",
        "MessageRegistry",
        "MessageTypeError",
        "Outbox",
        "OutboxError",
        "Outgoing",
        "PartitionRange",
        "PendingMessage",
        "PublishError",
        "Redrive",
        "Relay",
        "RelayLag",
        "RelayStats",
        "child_traceparent",
        "new_traceparent",
        "outbox_migrations",
        "parse_ref",
        "quiet_kafka_logs",
    },
    "saga": {
        "App",
        "AppLoadError",
        "ChildEnded",
        "ChildSaga",
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
        "saga_event_registry",
        "saga_id_for",
        "stream_of",
    },
}


@pytest.mark.parametrize("package", sorted(EXPORTED))
def test_exported_names_are_pinned_and_resolve(package: str) -> None:
    module = importlib.import_module(package)
    assert set(module.__all__) == EXPORTED[package]
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"


def test_layers_import_only_downwards() -> None:
    """eventstore imports neither outbox nor saga; outbox does not import saga."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parent.parent
    forbidden = {"eventstore": ("outbox", "saga"), "outbox": ("saga",)}
    for package, above in forbidden.items():
        for path in (root / package).rglob("*.py"):
            for line in path.read_text().splitlines():
                match = re.match(r"\s*(?:from|import)\s+(\w+)", line)
                assert not (match and match[1] in above), f"{path.relative_to(root)}: {line.strip()}"
