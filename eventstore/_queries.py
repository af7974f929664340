"""The event store's SQL, in one place; `_store.py` runs it on the driver connection.

psycopg-style parameters (see `_engine.driver_connection`).

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

from functools import lru_cache

NOTIFY_CHANNEL = "es_events"


# An append is one statement: find the stream's last version, check the expectation, insert
# every event, and (with notify) queue the NOTIFY that is delivered at commit. Each event is a
# row of a VALUES list with scalar parameters; the statement text depends only on the number
# of events, so psycopg prepares it once per size.
@lru_cache(maxsize=64)
def append_sql(n: int, notify: bool) -> str:
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
def stream_ids_sql(bounded: bool, after: bool) -> str:
    upper = " AND stream_id < %(end)s" if bounded else ""
    later = " AND stream_id > %(after)s" if after else ""
    return f"""
    SELECT stream_id FROM es_events
    WHERE stream_id >= %(prefix)s{upper}{later} AND version = 1
    ORDER BY stream_id LIMIT %(limit)s
    """


def prefix_end(prefix: str) -> str | None:
    """The smallest string above every string that starts with `prefix` (None: no bound)."""
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if code == 0xD800:  # surrogates are not characters: skip them
            code = 0xE000
        if code <= 0x10FFFF:
            return "".join(chars) + chr(code)
    return None


STREAM_VERSION = "SELECT coalesce(max(version), 0) FROM es_events WHERE stream_id = %(stream_id)s"
STREAM_VERSIONS = "SELECT stream_id, max(version) FROM es_events WHERE stream_id = ANY(%(stream_ids)b::text[]) GROUP BY stream_id"


# Many streams in one statement, all or nothing: the same steps as a single append, per
# stream; if any stream's expectation fails nothing is inserted and the statement returns the
# failing streams (position NULL) instead. Arrays keep the text the same for any batch size.
@lru_cache(maxsize=2)
def append_many_sql(notify: bool) -> str:
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
COLUMNS = (
    "position, tx_id, stream_id, version, event_id::text, type, schema_version, data::text, metadata::text,"
    " (extract(epoch FROM recorded_at) * 1000000)::bigint"
)

READ_STREAM = f"""
    SELECT {COLUMNS} FROM es_events
    WHERE stream_id = %(stream_id)s AND version >= %(from_version)s AND version <= %(to_version)s
    ORDER BY version LIMIT %(limit)s
"""

LOAD_MANY = f"""
    SELECT {COLUMNS} FROM es_events WHERE stream_id = ANY(%(stream_ids)b::text[]) ORDER BY stream_id, version
"""
# The events of each stream after a version the caller holds already.
LOAD_MANY_AFTER = f"""
    SELECT {COLUMNS} FROM es_events
    JOIN unnest(%(stream_ids)b::text[], %(after)b::bigint[]) AS held(held_stream, held_version)
      ON stream_id = held_stream AND version > held_version
    ORDER BY stream_id, version
"""

# Rows below the xmin line only; see the docstring of _store.py.
READ_ALL = f"""
    SELECT {COLUMNS} FROM es_events
    WHERE (tx_id, position) > (%(tx_id)s, %(position)s)
      AND tx_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
    ORDER BY tx_id, position LIMIT %(limit)s
"""

SAVE_SNAPSHOT = """
    INSERT INTO es_snapshots (stream_id, version, type, schema_version, data)
    VALUES (%(stream_id)s, %(version)s, %(type)s, %(schema_version)s, %(data)s::jsonb)
    ON CONFLICT (stream_id) DO UPDATE
        SET version = excluded.version, type = excluded.type, schema_version = excluded.schema_version,
            data = excluded.data, recorded_at = now()
        WHERE es_snapshots.version < excluded.version
    RETURNING version
"""

LOAD_SNAPSHOT = (
    "SELECT version, type, schema_version, data::text FROM es_snapshots WHERE stream_id = %(stream_id)s"
)

FEED_LAG = (
    "SELECT count(*) FROM es_events WHERE tx_id >= pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
)

CLUSTER = "SELECT (SELECT max(tx_id) FROM es_events), pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
