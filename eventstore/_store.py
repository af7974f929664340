"""The event store: append-only streams on one Postgres table, and a gap-free global feed.

Ordering the global feed
------------------------
Positions come from an identity sequence, which hands out numbers at insert time, not at
commit time: a transaction that inserted position 10 may commit after one that inserted 11.
A reader that simply followed positions would pass 10 while it was invisible and never come
back. Serializing writers behind a table lock fixes that but caps the store at one writer.

Instead each row records the id of its writing transaction (`tx_id`), and readers only take
rows whose `tx_id` is below the xmin of their snapshot: every transaction with a smaller id has
ended, so no row can still appear below that line. Readers order by (tx_id, position), which
is a total order that never changes once a row is below the line, and resume strictly after
the last (tx_id, position) they saw. So nothing is skipped and nothing is seen twice.

The costs, and what we do about them:
- A long-running write transaction anywhere in the cluster holds xmin back, and readers wait
  for it (they do not skip). Keep write transactions short, set
  `idle_in_transaction_session_timeout` (e.g. 60s) on the application's role, and watch
  `pg_stat_activity` for old `xact_start`s. `EventStore.feed_lag()` reports how far the line
  trails the newest event.
- Transaction ids belong to a cluster. Restored into a new cluster (pg_dump/restore), the old
  rows carry ids the new cluster has not reached yet. `EventStore.check_cluster()` detects it;
  until the new cluster's ids pass the stored ones, subscribers must be rebuilt from scratch.
- A transaction gets its id at its first write. If it wrote something else before appending,
  its id can be smaller than that of a transaction that appended to the same stream after it
  started but committed first; the feed would then show the stream's versions out of order.
  The append therefore records `greatest(own id, tx_id of the stream's previous event)`: never
  smaller than its own id (so the reasoning above still holds) and never out of stream order.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, NamedTuple

import orjson
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventstore._errors import (
    ConcurrencyError,
    DuplicateEventError,
    SchemaError,
    constraint_name,
    translate_errors,
)
from eventstore._registry import EventRegistry

NOTIFY_CHANNEL = "es_events"


class StreamState(Enum):
    ANY = "any"
    NO_STREAM = "no stream"

    def __str__(self) -> str:
        return self.value


ANY = StreamState.ANY
NO_STREAM = StreamState.NO_STREAM
ExpectedVersion = int | StreamState


class FeedPosition(NamedTuple):
    """A place in the global feed: read_all(after=...) returns what comes strictly after it."""

    tx_id: int
    position: int


FEED_START = FeedPosition(0, 0)


@dataclass(frozen=True, slots=True)
class Metadata:
    event_id: uuid.UUID
    correlation_id: str | None = None
    causation_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    position: int
    tx_id: int
    stream_id: str
    version: int
    type: str
    event: BaseModel
    metadata: Metadata
    recorded_at: datetime

    @property
    def feed_position(self) -> FeedPosition:
        return FeedPosition(self.tx_id, self.position)


@dataclass(frozen=True, slots=True)
class AppendResult:
    stream_id: str
    first_version: int
    last_version: int
    positions: list[int]


@dataclass(frozen=True, slots=True)
class Snapshot:
    stream_id: str
    version: int
    state: BaseModel


_APPEND = text(
    """
    WITH last AS (
        SELECT version, tx_id FROM es_events
        WHERE stream_id = :stream_id ORDER BY version DESC LIMIT 1
    ), cur AS (
        SELECT coalesce((SELECT version FROM last), 0) AS version,
               greatest(pg_current_xact_id()::text::bigint, coalesce((SELECT tx_id FROM last), 0)) AS tx_id
    )
    INSERT INTO es_events (tx_id, stream_id, version, event_id, type, schema_version, data, metadata)
    SELECT cur.tx_id, :stream_id, cur.version + e.ord, e.event_id, e.type, e.schema_version,
           e.data::jsonb, e.metadata::jsonb
    FROM cur,
         unnest(CAST(:event_ids AS uuid[]), CAST(:types AS text[]), CAST(:schema_versions AS int[]),
                CAST(:datas AS text[]), CAST(:metadatas AS text[]))
             WITH ORDINALITY AS e(event_id, type, schema_version, data, metadata, ord)
    WHERE CAST(:expected AS bigint) IS NULL OR cur.version = CAST(:expected AS bigint)
    RETURNING position, version
    """
)

_NOTIFY = text(f"SELECT pg_notify('{NOTIFY_CHANNEL}', '')")

_STREAM_VERSION = text("SELECT coalesce(max(version), 0) FROM es_events WHERE stream_id = :stream_id")

_COLUMNS = "position, tx_id, stream_id, version, event_id, type, schema_version, data::text, metadata::text, recorded_at"

_READ_STREAM = text(
    f"""
    SELECT {_COLUMNS} FROM es_events
    WHERE stream_id = :stream_id AND version >= :from_version AND version <= :to_version
    ORDER BY version LIMIT :limit
    """
)

# Rows below the xmin line only; see the module docstring.
_READ_ALL = text(
    f"""
    SELECT {_COLUMNS} FROM es_events
    WHERE (tx_id, position) > (:tx_id, :position)
      AND tx_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
    ORDER BY tx_id, position LIMIT :limit
    """
)

_SAVE_SNAPSHOT = text(
    """
    INSERT INTO es_snapshots (stream_id, version, type, schema_version, data)
    VALUES (:stream_id, :version, :type, :schema_version, CAST(:data AS jsonb))
    ON CONFLICT (stream_id) DO UPDATE
        SET version = excluded.version, type = excluded.type, schema_version = excluded.schema_version,
            data = excluded.data, recorded_at = now()
        WHERE es_snapshots.version < excluded.version
    """
)

_LOAD_SNAPSHOT = text(
    "SELECT version, type, schema_version, data::text FROM es_snapshots WHERE stream_id = :stream_id"
)

_PAGE = 1000
_ANY_RETRIES = 5


class EventStore:
    """Streams of typed events in Postgres.

    Every method takes an optional `conn`: given, the work joins that connection's open
    transaction (the caller commits); omitted, the store runs its own transaction.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        registry: EventRegistry,
        *,
        notify: bool = True,
        page_size: int = _PAGE,
    ) -> None:
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        self.engine = engine
        self.registry = registry
        self.notify = notify
        self.page_size = page_size

    @asynccontextmanager
    async def _connection(self, conn: AsyncConnection | None) -> AsyncIterator[AsyncConnection]:
        if conn is not None:
            yield conn
            return
        with translate_errors():
            async with self.engine.begin() as own:
                yield own

    # --- writing -----------------------------------------------------------------------

    async def append(
        self,
        stream_id: str,
        events: Sequence[BaseModel],
        expected_version: ExpectedVersion,
        *,
        conn: AsyncConnection | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        event_ids: Sequence[uuid.UUID] | None = None,
        extra_metadata: dict[str, Any] | None = None,
    ) -> AppendResult:
        """Append events atomically in one round trip, checking the stream's version.

        `expected_version`: the stream's current version (an int >= 1), NO_STREAM, or ANY.
        Raises ConcurrencyError naming stream, expected and actual versions.
        """
        if not events:
            raise ValueError(f"append to {stream_id!r}: no events given")
        if isinstance(expected_version, int) and (expected_version < 1 or isinstance(expected_version, bool)):
            raise ValueError(
                f"append to {stream_id!r}: expected_version must be >= 1, NO_STREAM or ANY; got {expected_version!r}"
            )
        if event_ids is not None and len(event_ids) != len(events):
            raise ValueError(f"append to {stream_id!r}: {len(event_ids)} event ids for {len(events)} events")
        params = self._append_params(
            stream_id, events, expected_version, correlation_id, causation_id, event_ids, extra_metadata
        )
        attempts = _ANY_RETRIES if (expected_version is ANY and conn is None) else 1
        for attempt in range(attempts):
            try:
                async with self._connection(conn) as c:
                    return await self._append_once(c, stream_id, expected_version, params)
            except ConcurrencyError:
                if attempt + 1 == attempts:
                    raise
        raise AssertionError("unreachable")

    def _append_params(
        self,
        stream_id: str,
        events: Sequence[BaseModel],
        expected_version: ExpectedVersion,
        correlation_id: str | None,
        causation_id: str | None,
        event_ids: Sequence[uuid.UUID] | None,
        extra_metadata: dict[str, Any] | None,
    ) -> dict[str, Any]:
        ids = list(event_ids) if event_ids is not None else [uuid.uuid4() for _ in events]
        meta: dict[str, Any] = dict(extra_metadata or {})
        if correlation_id is not None:
            meta["correlation_id"] = correlation_id
        if causation_id is not None:
            meta["causation_id"] = causation_id
        meta_json = orjson.dumps(meta).decode()
        types, versions, datas = [], [], []
        for event in events:
            entry, payload = self.registry.encode(event)
            types.append(entry.name)
            versions.append(entry.version)
            datas.append(payload)
        if expected_version is ANY:
            expected: int | None = None
        elif expected_version is NO_STREAM:
            expected = 0
        else:
            assert isinstance(expected_version, int)
            expected = expected_version
        return {
            "stream_id": stream_id,
            "event_ids": ids,
            "types": types,
            "schema_versions": versions,
            "datas": datas,
            "metadatas": [meta_json] * len(events),
            "expected": expected,
        }

    async def _append_once(
        self, conn: AsyncConnection, stream_id: str, expected_version: ExpectedVersion, params: dict[str, Any]
    ) -> AppendResult:
        try:
            with translate_errors():
                rows = (await conn.execute(_APPEND, params)).all()
        except IntegrityError as exc:
            if constraint_name(exc) == "es_events_event_id":
                raise DuplicateEventError(
                    f"stream {stream_id!r}: an event id was appended before: {exc.orig}"
                ) from exc
            if constraint_name(exc) == "es_events_stream_version":
                # A concurrent transaction appended the same version and committed first.
                raise ConcurrencyError(stream_id, expected_version, None) from exc
            raise
        if not rows:
            actual = (await conn.execute(_STREAM_VERSION, {"stream_id": stream_id})).scalar_one()
            raise ConcurrencyError(stream_id, expected_version, actual)
        if self.notify:
            await conn.execute(_NOTIFY)
        return AppendResult(stream_id, rows[0].version, rows[-1].version, [r.position for r in rows])

    # --- reading -----------------------------------------------------------------------

    def _decode(self, row: Any) -> RecordedEvent:
        (
            position,
            tx_id,
            stream_id,
            version,
            event_id,
            type_name,
            schema_version,
            data,
            metadata,
            recorded_at,
        ) = row
        where = f"position {position} (stream {stream_id!r} version {version})"
        event = self.registry.decode(type_name, schema_version, data, where)
        meta = orjson.loads(metadata)
        return RecordedEvent(
            position=position,
            tx_id=tx_id,
            stream_id=stream_id,
            version=version,
            type=type_name,
            event=event,
            metadata=Metadata(
                event_id=event_id,
                correlation_id=meta.pop("correlation_id", None),
                causation_id=meta.pop("causation_id", None),
                extra=meta,
            ),
            recorded_at=recorded_at,
        )

    async def read_stream(
        self,
        stream_id: str,
        from_version: int = 1,
        to_version: int | None = None,
        *,
        conn: AsyncConnection | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """The stream's events from `from_version` to `to_version` (inclusive), page by page."""
        last = to_version if to_version is not None else 2**62
        next_version = from_version
        while next_version <= last:
            async with self._connection(conn) as c:
                with translate_errors():
                    rows = (
                        await c.execute(
                            _READ_STREAM,
                            {
                                "stream_id": stream_id,
                                "from_version": next_version,
                                "to_version": last,
                                "limit": self.page_size,
                            },
                        )
                    ).all()
            for row in rows:
                yield self._decode(row)
            if len(rows) < self.page_size:
                return
            next_version = rows[-1].version + 1

    async def load(
        self, stream_id: str, *, conn: AsyncConnection | None = None, to_version: int | None = None
    ) -> list[RecordedEvent]:
        return [e async for e in self.read_stream(stream_id, to_version=to_version, conn=conn)]

    async def stream_version(self, stream_id: str, *, conn: AsyncConnection | None = None) -> int:
        """The stream's current version; 0 when it has no events."""
        async with self._connection(conn) as c:
            with translate_errors():
                return int((await c.execute(_STREAM_VERSION, {"stream_id": stream_id})).scalar_one())

    async def read_all(
        self, after: FeedPosition = FEED_START, limit: int = _PAGE, *, conn: AsyncConnection | None = None
    ) -> list[RecordedEvent]:
        """Up to `limit` events of the global feed strictly after `after`, in feed order."""
        async with self._connection(conn) as c:
            with translate_errors():
                rows = (
                    await c.execute(
                        _READ_ALL, {"tx_id": after.tx_id, "position": after.position, "limit": limit}
                    )
                ).all()
        return [self._decode(row) for row in rows]

    async def iter_all(
        self, after: FeedPosition = FEED_START, *, conn: AsyncConnection | None = None
    ) -> AsyncIterator[RecordedEvent]:
        """The whole feed after `after`, page by page, up to what is visible now."""
        while True:
            page = await self.read_all(after, self.page_size, conn=conn)
            for event in page:
                yield event
            if len(page) < self.page_size:
                return
            after = page[-1].feed_position

    # --- snapshots ---------------------------------------------------------------------

    async def save_snapshot(
        self, stream_id: str, version: int, state: BaseModel, *, conn: AsyncConnection | None = None
    ) -> None:
        """Remember the stream's state as of `version`; an older snapshot never replaces a newer one."""
        entry, payload = self.registry.encode(state)
        async with self._connection(conn) as c:
            with translate_errors():
                await c.execute(
                    _SAVE_SNAPSHOT,
                    {
                        "stream_id": stream_id,
                        "version": version,
                        "type": entry.name,
                        "schema_version": entry.version,
                        "data": payload,
                    },
                )

    async def load_snapshot(self, stream_id: str, *, conn: AsyncConnection | None = None) -> Snapshot | None:
        async with self._connection(conn) as c:
            with translate_errors():
                row = (await c.execute(_LOAD_SNAPSHOT, {"stream_id": stream_id})).first()
        if row is None:
            return None
        version, type_name, schema_version, data = row
        state = self.registry.decode(type_name, schema_version, data, f"snapshot of {stream_id!r} v{version}")
        return Snapshot(stream_id, version, state)

    # --- health ------------------------------------------------------------------------

    async def feed_lag(self, *, conn: AsyncConnection | None = None) -> int:
        """How many committed events are held back from readers by an open transaction."""
        async with self._connection(conn) as c:
            with translate_errors():
                return int(
                    (
                        await c.execute(
                            text(
                                "SELECT count(*) FROM es_events "
                                "WHERE tx_id >= pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
                            )
                        )
                    ).scalar_one()
                )

    async def check_cluster(self, *, conn: AsyncConnection | None = None) -> None:
        """Raise SchemaError when stored transaction ids are ahead of this cluster's (a restore)."""
        async with self._connection(conn) as c:
            with translate_errors():
                row = (
                    await c.execute(
                        text(
                            "SELECT (SELECT max(tx_id) FROM es_events), "
                            "pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
                        )
                    )
                ).one()
        stored, current = row
        if stored is not None and stored >= current:
            raise SchemaError(
                f"es_events holds transaction id {stored} but this cluster is at {current}: the data was "
                "restored from another cluster; the global feed cannot be followed until it catches up"
            )
