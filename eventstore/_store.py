"""The event store: append-only streams on one Postgres table, and a gap-free global feed.

How the global feed stays gap-free while writers run side by side, and what that costs:
see the docstring of `_queries.py`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

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
from eventstore._queries import (
    CLUSTER,
    FEED_LAG,
    LOAD_MANY,
    LOAD_MANY_AFTER,
    LOAD_SNAPSHOT,
    READ_ALL,
    READ_STREAM,
    SAVE_SNAPSHOT,
    STREAM_VERSION,
    STREAM_VERSIONS,
    append_many_sql,
    append_sql,
    prefix_end,
    stream_ids_sql,
)
from eventstore._records import (
    ANY,
    FEED_START,
    MAX_BATCH,
    AppendResult,
    ExpectedVersion,
    FeedPosition,
    NewEvents,
    RecordedEvent,
    Snapshot,
    check_append,
    conflicting_stream,
    expected_number,
    metadata_of,
)
from eventstore._registry import EventRegistry

_PAGE = 1000
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
        """The psycopg connection to run one statement on: the caller's driver connection, in
        the caller's transaction, or else one of the database's autocommit connections. Every
        operation of the store is a single statement, atomic on its own."""
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
                    # Every statement here returns rows (`cur.description` is unknown in a pipeline).
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
        check_append(stream_id, events, expected_version, event_ids)
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
            check_append(b.stream_id, b.events, b.expected_version, None)
            streams.append(b.stream_id)
            expected.append(expected_number(b.expected_version))
            metadata.append(orjson.dumps(metadata_of(b.correlation_id, b.causation_id, None)).decode())
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
            rows = await self._fetch(conn, append_many_sql(self.notify), params)
        except psycopg.errors.UniqueViolation as exc:
            if constraint_name(exc) == "es_events_event_id":
                raise DuplicateEventError(f"append_many: an event id was appended before: {exc}") from exc
            # A concurrent transaction appended to one of the streams and committed first.
            raise ConcurrencyError(conflicting_stream(exc, batch), "as given", None) from exc
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
        meta = metadata_of(correlation_id, causation_id, extra_metadata)
        expected = expected_number(expected_version)
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
            rows = await self._fetch(conn, append_sql((len(params) - 4) // 4, self.notify), params)
        except psycopg.errors.UniqueViolation as exc:
            if constraint_name(exc) == "es_events_event_id":
                raise DuplicateEventError(
                    f"stream {stream_id!r}: an event id was appended before: {exc}"
                ) from exc
            # A concurrent transaction appended the same version and committed first.
            raise ConcurrencyError(stream_id, expected_version, None) from exc
        if not rows:
            actual = (await self._fetch(conn, STREAM_VERSION, {"stream_id": stream_id}))[0][0]
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
            rows = await self._fetch(conn, READ_STREAM, params)
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
        self,
        stream_ids: Sequence[str],
        *,
        conn: AsyncConnection | None = None,
        after: Mapping[str, int] | None = None,
    ) -> dict[str, list[RecordedEvent]]:
        """Several whole streams in one query; a stream with no events maps to []. With
        `after` (stream id -> a version the caller holds), a stream's events after that version."""
        loaded: dict[str, list[RecordedEvent]] = {s: [] for s in stream_ids}
        params = {"stream_ids": list(loaded), "after": [(after or {}).get(s, 0) for s in loaded]}
        for row in await self._fetch(conn, LOAD_MANY_AFTER if after else LOAD_MANY, params):
            loaded[row[2]].append(self._decode(row))
        return loaded

    async def stream_version(self, stream_id: str, *, conn: AsyncConnection | None = None) -> int:
        """The stream's current version; 0 when it has no events."""
        return int((await self._fetch(conn, STREAM_VERSION, {"stream_id": stream_id}))[0][0])

    async def stream_versions(
        self, stream_ids: Sequence[str], *, conn: AsyncConnection | None = None
    ) -> dict[str, int]:
        """`stream_version` of several streams in one query (0 for those with no events)."""
        versions = dict.fromkeys(stream_ids, 0)
        for stream_id, version in await self._fetch(conn, STREAM_VERSIONS, {"stream_ids": list(versions)}):
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
        end = prefix_end(prefix)
        params = {"prefix": prefix, "end": end, "after": after, "limit": limit}
        rows = await self._fetch(conn, stream_ids_sql(end is not None, after is not None), params)
        return [row[0] for row in rows]

    async def read_all(
        self, after: FeedPosition = FEED_START, limit: int = _PAGE, *, conn: AsyncConnection | None = None
    ) -> list[RecordedEvent]:
        """Up to `limit` events of the global feed strictly after `after`, in feed order."""
        rows = await self._fetch(
            conn, READ_ALL, {"tx_id": after.tx_id, "position": after.position, "limit": limit}
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
        await self._fetch(conn, SAVE_SNAPSHOT, params)

    async def load_snapshot(self, stream_id: str, *, conn: AsyncConnection | None = None) -> Snapshot | None:
        rows = await self._fetch(conn, LOAD_SNAPSHOT, {"stream_id": stream_id})
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
        return int((await self._fetch(conn, FEED_LAG, {}))[0][0])

    async def check_cluster(self, *, conn: AsyncConnection | None = None) -> None:
        """Raise SchemaError when stored transaction ids are ahead of this cluster's (a restore)."""
        stored, current = (await self._fetch(conn, CLUSTER, {}))[0]
        if stored is not None and stored >= current:
            raise SchemaError(
                f"es_events holds transaction id {stored} but this cluster is at {current}: the data was "
                "restored from another cluster; the global feed cannot be followed until it catches up"
            )
