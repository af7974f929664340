"""`Outbox.put`: a message enters the outbox table inside the caller's transaction.

This module and the relay hold all the SQL on the outbox table; others ask `Outbox.pending`
and `Outbox.counts` instead of reading it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from eventstore import Database, Migration, driver_connection, load_migrations, translate_errors
from outbox._message import Envelope, MessageRegistry, new_traceparent
from outbox._tracing import current_traceparent

NOTIFY_CHANNEL = "outbox"
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")

# One statement: the row, and the NOTIFY that wakes a relay when the transaction commits.
_PUT = f"""
    WITH ins AS (
        INSERT INTO outbox (message_id, topic, key, value, headers)
        VALUES (%s, %s, %s, %s, %s::jsonb)
        RETURNING id
    )
    SELECT id, pg_notify('{NOTIFY_CHANNEL}', '') FROM ins
"""
# Many rows in one statement; ids follow the order given, which is the order they go out in.
_PUT_MANY = f"""
    WITH ins AS (
        INSERT INTO outbox (message_id, topic, key, value, headers)
        SELECT message_id, topic, key, value, headers
        FROM unnest(%b::uuid[], %b::text[], %b::text[], %b::bytea[], %b::jsonb[]) WITH ORDINALITY
             AS m(message_id, topic, key, value, headers, n)
        ORDER BY n
        RETURNING id
    )
    SELECT count(*), pg_notify('{NOTIFY_CHANNEL}', '') FROM ins
"""
# No index on key: the outbox holds what is not published yet, which is little when the relay runs.
_PENDING = (
    "SELECT message_id, topic, headers->>'message_type', headers->>'step', headers->>'attempt', created_at "
    "FROM outbox WHERE key = %s ORDER BY id"
)
LAG = "SELECT count(*), coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)::float8 FROM outbox"


@dataclass(frozen=True)
class RelayLag:
    """Rows waiting in the outbox, and the age of the oldest in seconds (0 when none)."""

    pending: int
    oldest_age_s: float


@dataclass(frozen=True, slots=True)
class PendingMessage:
    """A message in the outbox, not yet acknowledged by Kafka (from its row and headers)."""

    message_id: uuid.UUID
    topic: str
    message_type: str
    step: str | None
    attempt: int | None
    created_at: datetime


async def outbox_lag(driver: psycopg.AsyncConnection[Any]) -> RelayLag:
    row = await (await driver.execute(LAG)).fetchone()
    assert row is not None
    return RelayLag(int(row[0]), float(row[1]))


@asynccontextmanager
async def _driver(where: AsyncConnection | Database) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """The caller's transaction, or one of the database's autocommit connections."""
    if isinstance(where, Database):
        async with where.autocommit() as own:
            yield own
    else:
        if not where.in_transaction():
            await where.begin()  # as SQLAlchemy's own execute would: the caller's commit ends it
        with translate_errors():
            yield await driver_connection(where)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message for `Outbox.put_many`: what `put` takes, as one value."""

    message: BaseModel
    topic: str
    key: str
    envelope: Envelope | None = None


def outbox_migrations() -> list[Migration]:
    return load_migrations("outbox", "outbox")


class Outbox:
    """Writes messages for the relay to publish. Holds no connection of its own."""

    def __init__(self, registry: MessageRegistry, *, max_message_bytes: int = 900_000) -> None:
        self.registry = registry
        self.max_message_bytes = max_message_bytes

    def envelope(
        self,
        message: BaseModel,
        *,
        message_id: uuid.UUID | None = None,
        saga_id: str | None = None,
        saga_type: str | None = None,
        step: str | None = None,
        phase: str | None = None,
        attempt: int | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        reply_topic: str | None = None,
        traceparent: str | None = None,
    ) -> Envelope:
        entry = self.registry.type_of(message)
        return Envelope(
            message_id=message_id or uuid.uuid4(),
            message_type=entry.name,
            schema_version=entry.version,
            saga_id=saga_id,
            saga_type=saga_type,
            step=step,
            phase=phase,
            attempt=attempt,
            correlation_id=correlation_id,
            causation_id=causation_id,
            reply_topic=reply_topic,
            traceparent=traceparent or current_traceparent() or new_traceparent(),
        )

    async def put(
        self,
        conn: AsyncConnection,
        message: BaseModel,
        *,
        topic: str,
        key: str,
        envelope: Envelope | None = None,
    ) -> Envelope:
        """Insert `message` in the caller's open transaction; it is published after commit.

        Without an envelope a minimal one is made (new message id and trace). Returns it.
        """
        env, row = self._row(message, topic, key, envelope)
        driver = await driver_connection(conn)
        with translate_errors():
            await driver.execute(_PUT, row)
        return env

    async def put_many(self, conn: AsyncConnection, messages: Sequence[Outgoing]) -> list[Envelope]:
        """`put` for several messages in one statement, published in the order given."""
        if not messages:
            return []
        envelopes, rows = [], []
        for m in messages:
            env, row = self._row(m.message, m.topic, m.key, m.envelope)
            envelopes.append(env)
            rows.append(row)
        driver = await driver_connection(conn)
        with translate_errors():
            await driver.execute(_PUT_MANY, [list(column) for column in zip(*rows, strict=True)])
        return envelopes

    @staticmethod
    async def pending(where: AsyncConnection | Database, key: str) -> list[PendingMessage]:
        """The messages of `key` (a saga id) still waiting to be published, oldest first."""
        async with _driver(where) as driver:
            rows = await (await driver.execute(_PENDING, (key,))).fetchall()
        return [
            PendingMessage(
                message_id, topic, message_type, step, None if attempt is None else int(attempt), at
            )
            for message_id, topic, message_type, step, attempt, at in rows
        ]

    @staticmethod
    async def counts(where: AsyncConnection | Database) -> RelayLag:
        """How many messages wait to be published, and how long the oldest has waited."""
        async with _driver(where) as driver:
            return await outbox_lag(driver)

    def _row(
        self, message: BaseModel, topic: str, key: str, envelope: Envelope | None
    ) -> tuple[Envelope, tuple[Any, ...]]:
        """Check and encode one message: its envelope and its outbox row."""
        if not _TOPIC.match(topic) or topic in (".", ".."):
            raise ValueError(
                f"outbox.put: {topic!r} is not a valid Kafka topic name ([A-Za-z0-9._-], 1 to 249)"
            )
        env = envelope or self.envelope(message)
        if env.message_type != self.registry.type_of(message).name:
            raise ValueError(
                f"outbox.put: envelope says {env.message_type!r} but the message is "
                f"{self.registry.type_of(message).name!r}"
            )
        _, payload = self.registry.encode(message)
        if len(payload) > self.max_message_bytes:
            raise ValueError(
                f"outbox.put: {env.message_type} is {len(payload)} bytes, over the {self.max_message_bytes} "
                f"a record may have (max_message_bytes)"
            )
        return env, (env.message_id, topic, key, payload.encode(), orjson.dumps(env.to_headers()).decode())
