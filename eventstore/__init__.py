"""Append-only event store on Postgres: streams, a gap-free global feed, snapshots, subscriptions."""

from eventstore._after_commit import after_commit
from eventstore._crash import CRASH_POINTS, CrashHook, CrashPointError, crash_point, set_crash_hook
from eventstore._database import Database
from eventstore._engine import create_engine, driver_connection, libpq_url, sqlalchemy_url
from eventstore._errors import (
    ConcurrencyError,
    ConnectionRefusal,
    DatabaseConfigError,
    DatabaseUnreachableError,
    DuplicateEventError,
    ErrorKind,
    EventDecodeError,
    EventStoreError,
    EventTypeError,
    Refusal,
    SchemaError,
    StoreUnavailableError,
    classify_error,
    connection_refusal,
    is_retriable,
    translate_errors,
)
from eventstore._metrics import GaugeRefresher, QueriedGauge, refresh_feed_lag
from eventstore._migrations import Migration, check_schema, eventstore_migrations, load_migrations, upgrade
from eventstore._outage import OutageLog
from eventstore._preflight import check_database, database_service
from eventstore._records import (
    ANY,
    FEED_START,
    NO_STREAM,
    AppendResult,
    ExpectedVersion,
    FeedPosition,
    Metadata,
    NewEvents,
    RecordedEvent,
    Snapshot,
    StreamState,
)
from eventstore._registry import EventRegistry, EventType, TypeRegistry
from eventstore._store import EventStore
from eventstore._subscription import Subscription, load_checkpoint, save_checkpoint
from eventstore._worker import Worker

__all__ = [
    "ANY",
    "CRASH_POINTS",
    "FEED_START",
    "NO_STREAM",
    "AppendResult",
    "ConcurrencyError",
    "ConnectionRefusal",
    "CrashHook",
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
    "FeedPosition",
    "GaugeRefresher",
    "Metadata",
    "Migration",
    "NewEvents",
    "OutageLog",
    "QueriedGauge",
    "RecordedEvent",
    "Refusal",
    "SchemaError",
    "Snapshot",
    "StoreUnavailableError",
    "StreamState",
    "Subscription",
    "TypeRegistry",
    "Worker",
    "after_commit",
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
    "refresh_feed_lag",
    "save_checkpoint",
    "set_crash_hook",
    "sqlalchemy_url",
    "translate_errors",
    "upgrade",
]
