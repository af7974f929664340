"""Append-only event store on Postgres: streams, a gap-free global feed, snapshots, subscriptions."""

from eventstore._crash import CrashPointError, crash_point
from eventstore._engine import (
    AutocommitConnections,
    create_engine,
    driver_connection,
    libpq_url,
    sqlalchemy_url,
)
from eventstore._errors import (
    ConcurrencyError,
    DuplicateEventError,
    EventDecodeError,
    EventStoreError,
    EventTypeError,
    SchemaError,
    StoreUnavailableError,
)
from eventstore._migrations import Migration, check_schema, eventstore_migrations, load_migrations, upgrade
from eventstore._registry import EventRegistry, EventType, TypeRegistry
from eventstore._store import (
    ANY,
    FEED_START,
    NO_STREAM,
    AppendResult,
    EventStore,
    ExpectedVersion,
    FeedPosition,
    Metadata,
    NewEvents,
    RecordedEvent,
    Snapshot,
    StreamState,
)
from eventstore._subscription import Subscription, load_checkpoint, save_checkpoint

__all__ = [
    "ANY",
    "FEED_START",
    "NO_STREAM",
    "AppendResult",
    "AutocommitConnections",
    "ConcurrencyError",
    "CrashPointError",
    "DuplicateEventError",
    "EventDecodeError",
    "EventRegistry",
    "EventStore",
    "EventStoreError",
    "EventType",
    "EventTypeError",
    "ExpectedVersion",
    "FeedPosition",
    "Metadata",
    "Migration",
    "NewEvents",
    "RecordedEvent",
    "SchemaError",
    "Snapshot",
    "StoreUnavailableError",
    "StreamState",
    "Subscription",
    "TypeRegistry",
    "check_schema",
    "crash_point",
    "create_engine",
    "driver_connection",
    "eventstore_migrations",
    "libpq_url",
    "load_checkpoint",
    "load_migrations",
    "save_checkpoint",
    "sqlalchemy_url",
    "upgrade",
]
