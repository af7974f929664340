"""The inbox table: the messages each consumer group has handled, and how long they stay.

A row (consumer group, message id) is written in the transaction that handles the message, so
a copy that comes again (after a crash, a rebalance, or a relay that published twice) finds it
and is skipped. Rows older than the consumer's retention are deleted in small batches: a copy
arriving after that would be handled again, so the retention must exceed the longest time a
copy can still arrive (the topics' Kafka retention, the relay's redeliveries).

This module holds all the SQL on the inbox table.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg

from eventstore import Database, ErrorKind, classify_error
from outbox._delivery import ConsumerStats

log = logging.getLogger(__name__)

CLAIM = (
    "INSERT INTO inbox (consumer_group, message_id, message_type) "
    "SELECT %s, * FROM unnest(%b::uuid[], %b::text[]) ON CONFLICT DO NOTHING RETURNING message_id"
)

# One small batch per statement, in its own transaction: row locks are held for milliseconds.
# SKIP LOCKED: the group's other consumers run the same deletion, and none waits for another.
_DELETE_OLD = """
    DELETE FROM inbox WHERE (consumer_group, message_id) IN (
        SELECT consumer_group, message_id FROM inbox
        WHERE consumer_group = %s AND handled_at < now() - make_interval(secs => %s)
        LIMIT %s
        FOR UPDATE SKIP LOCKED
    )
"""

RETENTION_BATCH = 1000
TRIM_EVERY_S = 60.0


async def delete_old_rows(
    database: Database, group_id: str, retention_s: float, *, batch: int = RETENTION_BATCH
) -> int:
    """Delete the group's inbox rows older than `retention_s`, `batch` rows a statement, until
    none is left. Returns how many were deleted."""
    deleted = 0
    while True:
        async with database.autocommit() as conn:
            count = await _delete_batch(conn, group_id, retention_s, batch)
        deleted += count
        if count < batch:
            return deleted


async def _delete_batch(
    conn: psycopg.AsyncConnection[Any], group_id: str, retention_s: float, batch: int
) -> int:
    cur = await conn.execute(_DELETE_OLD, (group_id, retention_s, batch))
    return cur.rowcount


async def keep_trimmed(
    database: Database,
    group_id: str,
    retention_s: float,
    stats: ConsumerStats,
    *,
    every_s: float = TRIM_EVERY_S,
) -> None:
    """Delete the group's old inbox rows now and every `every_s`, until cancelled. Postgres
    being away only skips a round (the consumer itself says so)."""
    while True:
        try:
            deleted = await delete_old_rows(database, group_id, retention_s)
        except Exception as exc:
            if classify_error(exc) is not ErrorKind.CONNECTION_LOST:
                log.exception("consumer %s: deleting old inbox rows failed; trying again later", group_id)
        else:
            stats.inbox_rows_deleted += deleted
            if deleted:
                log.info(
                    "consumer %s: %d inbox row(s) older than %.0fs deleted", group_id, deleted, retention_s
                )
        await asyncio.sleep(every_s)
