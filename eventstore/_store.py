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
from datetime import UTC, datetime, timedelta
from enum import Enum
from functools import lru_cache
from typing import Any, NamedTuple

import orjson
import psycopg
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from eventstore._database import Database
from eventstore._engine import driver_connection
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


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ is a third of a replay's cost
class RecordedEvent:
    """A stored event. Id, time and metadata are parsed on access: a replay that only folds
    events never pays for them."""

    position: int
    tx_id: int
    stream_id: str
    version: int
    type: str
    event: BaseModel
    raw_event_id: str = field(repr=False)
    recorded_us: int = field(repr=False)  # microseconds since the epoch, UTC
    raw_metadata: str = field(repr=False, compare=False)

    @property
    def event_id(self) -> uuid.UUID:
        return uuid.UUID(self.raw_event_id)

    @property
    def recorded_at(self) -> datetime:
        return _EPOCH + timedelta(microseconds=self.recorded_us)

    @property
    def metadata(self) -> Metadata:
        meta = orjson.loads(self.raw_metadata)
        return Metadata(
            event_id=self.event_id,
            correlation_id=meta.pop("correlation_id", None),
            causation_id=meta.pop("causation_id", None),
            extra=meta,
        )

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
class NewEvents:
    """One stream's part of `EventStore.append_many`."""

    stream_id: str
    events: Sequence[BaseModel]
    expected_version: ExpectedVersion
    correlation_id: str | None = None
    causation_id: str | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    stream_id: str
    version: int
    state: BaseModel


# psycopg-style parameters: these run on the driver connection (see _engine.driver_connection).
#
# An append is one statement: find the stream's last version, check the expectation, insert
# every event, and (with notify) queue the NOTIFY that is delivered at commit. Each event is a
# row of a VALUES list with scalar parameters; the statement text depends only on the number
# of events, so psycopg prepares it once per size.
@lru_cache(maxsize=64)
def _append_sql(n: int, notify: bool) -> str:
    rows = ",\n".join(f"({i}, %s::uuid, %s::text, %s::int, %s::jsonb)" for i in range(1, n + 1))
    wake = f", (SELECT pg_notify('{NOTIFY_CHANNEL}', '')) AS n" if notify else ""
    return f"""
    WITH last AS (
        SELECT version, tx_id FROM es_events WHERE stream_id = %s ORDER BY version DESC LIMIT 1
    ), cur AS (
        SELECT coalesce((SELECT version FROM last), 0) AS version,
               greatest(pg_current_xact_id()::text::bigint, coalesce((SELECT tx_id FROM last), 0)) AS tx_id,
               %s::text AS stream_id, %s::bigint AS expected, %s::jsonb AS metadata
    ), ins AS (
        INSERT INTO es_events (tx_id, stream_id, version, event_id, type, schema_version, data, metadata)
        SELECT cur.tx_id, cur.stream_id, cur.version + e.ord, e.event_id, e.type, e.schema_version, e.data,
               cur.metadata
        FROM cur, (VALUES {rows}) AS e(ord, event_id, type, schema_version, data)
        WHERE cur.expected IS NULL OR cur.version = cur.expected
        RETURNING position, version
    )
    SELECT position, version FROM ins{wake} ORDER BY version
    """


# Every stream has exactly one row at version 1: a range scan of the (stream_id, version)
# index lists each stream once, in order, without reading its other events. stream_id
# compares byte-wise (COLLATE "C", migration 0002), so [prefix, end of prefix) is exact.
@lru_cache(maxsize=4)
def _stream_ids_sql(bounded: bool, after: bool) -> str:
    upper = " AND stream_id < %(end)s" if bounded else ""
    later = " AND stream_id > %(after)s" if after else ""
    return f"""
    SELECT stream_id FROM es_events
    WHERE stream_id >= %(prefix)s{upper}{later} AND version = 1
    ORDER BY stream_id LIMIT %(limit)s
    """


def _prefix_end(prefix: str) -> str | None:
    """The smallest string above every string that starts with `prefix` (None: no bound)."""
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if code == 0xD800:  # surrogates are not characters: skip them
            code = 0xE000
        if code <= 0x10FFFF:
            return "".join(chars) + chr(code)
    return None


_STREAM_VERSION = "SELECT coalesce(max(version), 0) FROM es_events WHERE stream_id = %(stream_id)s"
_STREAM_VERSIONS = "SELECT stream_id, max(version) FROM es_events WHERE stream_id = ANY(%(stream_ids)b::text[]) GROUP BY stream_id"


# Many streams in one statement, all or nothing: the same steps as a single append, per
# stream; if any stream's expectation fails nothing is inserted and the statement returns the
# failing streams (position NULL) instead. Arrays keep the text the same for any batch size.
@lru_cache(maxsize=2)
def _append_many_sql(notify: bool) -> str:
    wake = f", (SELECT pg_notify('{NOTIFY_CHANNEL}', '')) AS n" if notify else ""
    return f"""
    WITH s AS (
        SELECT * FROM unnest(%b::text[], %b::bigint[], %b::jsonb[]) AS s(stream_id, expected, metadata)
    ), cur AS (
        SELECT s.stream_id, s.expected, s.metadata, coalesce(l.version, 0) AS version,
               greatest(pg_current_xact_id()::text::bigint, coalesce(l.tx_id, 0)) AS tx_id
        FROM s LEFT JOIN LATERAL (
            SELECT version, tx_id FROM es_events WHERE es_events.stream_id = s.stream_id
            ORDER BY version DESC LIMIT 1
        ) l ON true
    ), bad AS (
        SELECT stream_id, version FROM cur WHERE expected IS NOT NULL AND version <> expected
    ), ins AS (
        INSERT INTO es_events (tx_id, stream_id, version, event_id, type, schema_version, data, metadata)
        SELECT cur.tx_id, cur.stream_id, cur.version + e.ord, e.event_id, e.type, e.schema_version, e.data,
               cur.metadata
        FROM unnest(%b::text[], %b::int[], %b::uuid[], %b::text[], %b::int[], %b::jsonb[]) WITH ORDINALITY
             AS e(stream_id, ord, event_id, type, schema_version, data, n)
        JOIN cur ON cur.stream_id = e.stream_id
        WHERE NOT EXISTS (SELECT FROM bad)
        ORDER BY e.n
        RETURNING stream_id, position, version
    )
    SELECT ins.stream_id, ins.position, ins.version FROM ins{wake}
    UNION ALL
    SELECT stream_id, NULL, version FROM bad
    """


# Text and integers only: uuid and timestamptz values would cost the driver more to load
# than the rest of the row, and most readers never look at them.
_COLUMNS = (
    "position, tx_id, stream_id, version, event_id::text, type, schema_version, data::text, metadata::text,"
    " (extract(epoch FROM recorded_at) * 1000000)::bigint"
)

_READ_STREAM = f"""
    SELECT {_COLUMNS} FROM es_events
    WHERE stream_id = %(stream_id)s AND version >= %(from_version)s AND version <= %(to_version)s
    ORDER BY version LIMIT %(limit)s
"""

_LOAD_MANY = f"""
    SELECT {_COLUMNS} FROM es_events WHERE stream_id = ANY(%(stream_ids)b::text[]) ORDER BY stream_id, version
"""

# Rows below the xmin line only; see the module docstring.
_READ_ALL = f"""
    SELECT {_COLUMNS} FROM es_events
    WHERE (tx_id, position) > (%(tx_id)s, %(position)s)
      AND tx_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
    ORDER BY tx_id, position LIMIT %(limit)s
"""

_SAVE_SNAPSHOT = """
    INSERT INTO es_snapshots (stream_id, version, type, schema_version, data)
    VALUES (%(stream_id)s, %(version)s, %(type)s, %(schema_version)s, %(data)s::jsonb)
    ON CONFLICT (stream_id) DO UPDATE
        SET version = excluded.version, type = excluded.type, schema_version = excluded.schema_version,
            data = excluded.data, recorded_at = now()
        WHERE es_snapshots.version < excluded.version
    RETURNING version
"""

_LOAD_SNAPSHOT = (
    "SELECT version, type, schema_version, data::text FROM es_snapshots WHERE stream_id = %(stream_id)s"
)

_FEED_LAG = (
    "SELECT count(*) FROM es_events WHERE tx_id >= pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
)

_CLUSTER = "SELECT (SELECT max(tx_id) FROM es_events), pg_snapshot_xmax(pg_current_snapshot())::text::bigint"


_PAGE = 1000
# Four parameters an event; Postgres takes at most 65,535 in one statement.
MAX_BATCH = 10_000
_ANY_RETRIES = 10  # every round lets at least one of the colliding appenders through


class EventStore:
    """Streams of typed events in Postgres.

    Every method takes an optional `conn`: given, the work joins that connection's open
    transaction (the caller commits); omitted, the store runs it on one of the database's
    autocommit connections (every operation is one statement). The store holds no
    connection of its own: the database is the caller's, and so is closing it.
    """

    def __init__(
        self,
        database: Database,
        registry: EventRegistry,
        *,
        notify: bool = True,
        page_size: int = _PAGE,
    ) -> None:
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        self.database = database
        self.registry = registry
        self.notify = notify
        self.page_size = page_size

    @asynccontextmanager
    async def _driver(self, conn: AsyncConnection | None) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """The psycopg connection to run one statement on.

        With the caller's connection: its driver connection, inside the caller's transaction.
        Without: one of the database's autocommit connections. Every operation of the store
        is a single statement, atomic on its own.
        """
        if conn is not None:
            if not conn.in_transaction():
                # As SQLAlchemy's own execute would: begin, so the caller's commit covers us.
                await conn.begin()
            yield await driver_connection(conn)
            return
        async with self.database.autocommit() as own:
            yield own

    async def _fetch(
        self, conn: AsyncConnection | None, sql: str, params: dict[str, Any] | list[Any]
    ) -> list[tuple[Any, ...]]:
        async with self._driver(conn) as driver:
            with translate_errors():
                async with driver.cursor() as cur:
                    await cur.execute(sql, params)
                    # Every statement passed here returns rows. (Asking `cur.description` first
                    # would not do: in a pipeline it is unknown until the results come back.)
                    return await cur.fetchall()

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
        _check_append(stream_id, events, expected_version, event_ids)
        params = self._append_params(
            stream_id, events, expected_version, correlation_id, causation_id, event_ids, extra_metadata
        )
        attempts = _ANY_RETRIES if (expected_version is ANY and conn is None) else 1
        for attempt in range(attempts):
            try:
                return await self._append_once(conn, stream_id, expected_version, params)
            except ConcurrencyError:
                if attempt + 1 == attempts:
                    raise
        raise AssertionError("unreachable")

    async def append_many(
        self, batch: Sequence[NewEvents], *, conn: AsyncConnection | None = None
    ) -> list[AppendResult]:
        """Append to several streams in one statement: all of it, or (on any stream's failed
        expectation) none of it. Results come in the order of `batch`.

        Raises ConcurrencyError naming the first stream whose expectation failed.
        """
        if not batch:
            return []
        if sum(len(b.events) for b in batch) > MAX_BATCH:
            raise ValueError(f"append_many: more than {MAX_BATCH} events in one call (split the batch)")
        if len({b.stream_id for b in batch}) != len(batch):
            raise ValueError("append_many: a stream appears twice in one batch (merge its events)")
        streams: list[str] = []
        expected: list[int | None] = []
        metadata: list[str] = []
        columns: tuple[list[Any], ...] = ([], [], [], [], [], [])
        for b in batch:
            _check_append(b.stream_id, b.events, b.expected_version, None)
            streams.append(b.stream_id)
            expected.append(_expected_number(b.expected_version))
            metadata.append(orjson.dumps(_metadata(b.correlation_id, b.causation_id, None)).decode())
            for ord_, event in enumerate(b.events, 1):
                entry, payload = self.registry.encode(event)
                for column, value in zip(
                    columns,
                    (b.stream_id, ord_, uuid.uuid4(), entry.name, entry.version, payload),
                    strict=True,
                ):
                    column.append(value)
        params = [streams, expected, metadata, *columns]
        try:
            rows = await self._fetch(conn, _append_many_sql(self.notify), params)
        except psycopg.errors.UniqueViolation as exc:
            if constraint_name(exc) == "es_events_event_id":
                raise DuplicateEventError(f"append_many: an event id was appended before: {exc}") from exc
            # A concurrent transaction appended to one of the streams and committed first.
            raise ConcurrencyError(_conflicting_stream(exc, batch), "as given", None) from exc
        conflicts = {stream: version for stream, position, version in rows if position is None}
        for b in batch:
            if b.stream_id in conflicts:
                raise ConcurrencyError(b.stream_id, b.expected_version, conflicts[b.stream_id])
        written: dict[str, list[tuple[int, int]]] = {}
        for stream, position, version in rows:
            written.setdefault(stream, []).append((version, position))
        results = []
        for b in batch:
            mine = sorted(written[b.stream_id])
            results.append(AppendResult(b.stream_id, mine[0][0], mine[-1][0], [p for _, p in mine]))
        return results

    def _append_params(
        self,
        stream_id: str,
        events: Sequence[BaseModel],
        expected_version: ExpectedVersion,
        correlation_id: str | None,
        causation_id: str | None,
        event_ids: Sequence[uuid.UUID] | None,
        extra_metadata: dict[str, Any] | None,
    ) -> list[Any]:
        meta = _metadata(correlation_id, causation_id, extra_metadata)
        expected = _expected_number(expected_version)
        params: list[Any] = [stream_id, stream_id, expected, orjson.dumps(meta).decode()]
        for i, event in enumerate(events):
            entry, payload = self.registry.encode(event)
            params += (
                event_ids[i] if event_ids is not None else uuid.uuid4(),
                entry.name,
                entry.version,
                payload,
            )
        return params

    async def _append_once(
        self,
        conn: AsyncConnection | None,
        stream_id: str,
        expected_version: ExpectedVersion,
        params: list[Any],
    ) -> AppendResult:
        try:
            rows = await self._fetch(conn, _append_sql((len(params) - 4) // 4, self.notify), params)
        except psycopg.errors.UniqueViolation as exc:
            if constraint_name(exc) == "es_events_event_id":
                raise DuplicateEventError(
                    f"stream {stream_id!r}: an event id was appended before: {exc}"
                ) from exc
            # A concurrent transaction appended the same version and committed first.
            raise ConcurrencyError(stream_id, expected_version, None) from exc
        if not rows:
            actual = (await self._fetch(conn, _STREAM_VERSION, {"stream_id": stream_id}))[0][0]
            raise ConcurrencyError(stream_id, expected_version, actual)
        return AppendResult(stream_id, rows[0][1], rows[-1][1], [r[0] for r in rows])

    # --- reading -----------------------------------------------------------------------

    def _decode(self, row: tuple[Any, ...]) -> RecordedEvent:
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
        event = self.registry.decode(
            type_name,
            schema_version,
            data,
            lambda: f"position {position} (stream {stream_id!r} version {version})",
        )
        return RecordedEvent(
            position, tx_id, stream_id, version, type_name, event, event_id, recorded_at, metadata
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
        params: dict[str, Any] = {
            "stream_id": stream_id,
            "from_version": from_version,
            "to_version": last,
            "limit": self.page_size,
        }
        while params["from_version"] <= last:
            rows = await self._fetch(conn, _READ_STREAM, params)
            for row in rows:
                yield self._decode(row)
            if len(rows) < self.page_size:
                return
            params["from_version"] = rows[-1][3] + 1

    async def load(
        self, stream_id: str, *, conn: AsyncConnection | None = None, to_version: int | None = None
    ) -> list[RecordedEvent]:
        return [e async for e in self.read_stream(stream_id, to_version=to_version, conn=conn)]

    async def load_many(
        self, stream_ids: Sequence[str], *, conn: AsyncConnection | None = None
    ) -> dict[str, list[RecordedEvent]]:
        """Several whole streams in one query; a stream with no events maps to []."""
        loaded: dict[str, list[RecordedEvent]] = {s: [] for s in stream_ids}
        for row in await self._fetch(conn, _LOAD_MANY, {"stream_ids": list(loaded)}):
            loaded[row[2]].append(self._decode(row))
        return loaded

    async def stream_version(self, stream_id: str, *, conn: AsyncConnection | None = None) -> int:
        """The stream's current version; 0 when it has no events."""
        return int((await self._fetch(conn, _STREAM_VERSION, {"stream_id": stream_id}))[0][0])

    async def stream_versions(
        self, stream_ids: Sequence[str], *, conn: AsyncConnection | None = None
    ) -> dict[str, int]:
        """`stream_version` of several streams in one query (0 for those with no events)."""
        versions = dict.fromkeys(stream_ids, 0)
        for stream_id, version in await self._fetch(conn, _STREAM_VERSIONS, {"stream_ids": list(versions)}):
            versions[stream_id] = int(version)
        return versions

    async def stream_ids(
        self,
        prefix: str,
        *,
        after: str | None = None,
        limit: int | None = None,
        conn: AsyncConnection | None = None,
    ) -> list[str]:
        """The ids of the streams that start with `prefix`, in order; `after` and `limit` page."""
        end = _prefix_end(prefix)
        params = {"prefix": prefix, "end": end, "after": after, "limit": limit}
        rows = await self._fetch(conn, _stream_ids_sql(end is not None, after is not None), params)
        return [row[0] for row in rows]

    async def read_all(
        self, after: FeedPosition = FEED_START, limit: int = _PAGE, *, conn: AsyncConnection | None = None
    ) -> list[RecordedEvent]:
        """Up to `limit` events of the global feed strictly after `after`, in feed order."""
        rows = await self._fetch(
            conn, _READ_ALL, {"tx_id": after.tx_id, "position": after.position, "limit": limit}
        )
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
        params = {
            "stream_id": stream_id,
            "version": version,
            "type": entry.name,
            "schema_version": entry.version,
            "data": payload,
        }
        await self._fetch(conn, _SAVE_SNAPSHOT, params)

    async def load_snapshot(self, stream_id: str, *, conn: AsyncConnection | None = None) -> Snapshot | None:
        rows = await self._fetch(conn, _LOAD_SNAPSHOT, {"stream_id": stream_id})
        if not rows:
            return None
        version, type_name, schema_version, data = rows[0]
        state = self.registry.decode(
            type_name, schema_version, data, lambda: f"snapshot of {stream_id!r} v{version}"
        )
        return Snapshot(stream_id, version, state)

    # --- health ------------------------------------------------------------------------

    async def feed_lag(self, *, conn: AsyncConnection | None = None) -> int:
        """How many committed events are held back from readers by an open transaction."""
        return int((await self._fetch(conn, _FEED_LAG, {}))[0][0])

    async def check_cluster(self, *, conn: AsyncConnection | None = None) -> None:
        """Raise SchemaError when stored transaction ids are ahead of this cluster's (a restore)."""
        stored, current = (await self._fetch(conn, _CLUSTER, {}))[0]
        if stored is not None and stored >= current:
            raise SchemaError(
                f"es_events holds transaction id {stored} but this cluster is at {current}: the data was "
                "restored from another cluster; the global feed cannot be followed until it catches up"
            )


def _check_append(
    stream_id: str,
    events: Sequence[BaseModel],
    expected_version: ExpectedVersion,
    event_ids: Sequence[uuid.UUID] | None,
) -> None:
    if not events:
        raise ValueError(f"append to {stream_id!r}: no events given")
    if len(events) > MAX_BATCH:
        raise ValueError(
            f"append to {stream_id!r}: {len(events)} events in one append; at most {MAX_BATCH} (split the batch)"
        )
    valid = isinstance(expected_version, StreamState) or (
        type(expected_version) is int and expected_version >= 1
    )
    if not valid:
        raise ValueError(
            f"append to {stream_id!r}: expected_version must be an int >= 1, NO_STREAM or ANY; "
            f"got {expected_version!r}"
        )
    if event_ids is not None:
        if len(event_ids) != len(events):
            raise ValueError(f"append to {stream_id!r}: {len(event_ids)} event ids for {len(events)} events")
        if len(set(event_ids)) != len(event_ids):
            raise ValueError(f"append to {stream_id!r}: the same event id twice in one append")


def _conflicting_stream(exc: psycopg.Error, batch: Sequence[NewEvents]) -> str:
    """The stream a unique violation on (stream_id, version) names, from the error's detail."""
    detail = (exc.diag.message_detail if exc.diag else None) or ""
    for b in batch:
        if f"=({b.stream_id}, " in detail:
            return b.stream_id
    return ", ".join(b.stream_id for b in batch)


def _expected_number(expected_version: ExpectedVersion) -> int | None:
    """The version the statement checks against: None for ANY, 0 for NO_STREAM."""
    if expected_version is ANY:
        return None
    if expected_version is NO_STREAM:
        return 0
    assert isinstance(expected_version, int)
    return expected_version


def _metadata(
    correlation_id: str | None, causation_id: str | None, extra: dict[str, Any] | None
) -> dict[str, Any]:
    meta: dict[str, Any] = dict(extra or {})
    if correlation_id is not None:
        meta["correlation_id"] = correlation_id
    if causation_id is not None:
        meta["causation_id"] = causation_id
    return meta
