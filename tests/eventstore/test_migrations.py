"""Migrations build the expected schema, once, and tell when a database is behind."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore import Migration, SchemaError, check_schema, eventstore_migrations, upgrade


async def test_migrations_are_applied_once_and_build_the_schema(engine: AsyncEngine) -> None:
    # The template database was migrated already: a second run applies nothing.
    assert await upgrade(engine, eventstore_migrations()) == []
    async with engine.connect() as conn:
        columns = (
            await conn.execute(
                text(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_name = 'es_events' ORDER BY ordinal_position"
                )
            )
        ).all()
        indexes = (
            (
                await conn.execute(
                    text("SELECT indexname FROM pg_indexes WHERE tablename = 'es_events' ORDER BY 1")
                )
            )
            .scalars()
            .all()
        )
        collation = (
            await conn.execute(
                text(
                    "SELECT collation_name FROM information_schema.columns "
                    "WHERE table_name = 'es_events' AND column_name = 'stream_id'"
                )
            )
        ).scalar_one()
        versions = (
            await conn.execute(text("SELECT component, version, name FROM schema_migrations ORDER BY 1, 2"))
        ).all()
        await check_schema(conn, eventstore_migrations())
    assert [tuple(c) for c in columns] == [
        ("position", "bigint"),
        ("tx_id", "bigint"),
        ("stream_id", "text"),
        ("version", "bigint"),
        ("event_id", "uuid"),
        ("type", "text"),
        ("schema_version", "integer"),
        ("data", "jsonb"),
        ("metadata", "jsonb"),
        ("recorded_at", "timestamp with time zone"),
    ]
    assert indexes == ["es_events_event_id", "es_events_feed", "es_events_pkey", "es_events_stream_version"]
    assert collation == "C"  # stream ids compare byte-wise: prefix ranges use the index
    assert ("eventstore", 1, "events") in [tuple(v) for v in versions]
    assert ("eventstore", 2, "stream_id_collation") in [tuple(v) for v in versions]


async def test_a_database_behind_the_code_is_named(engine: AsyncEngine) -> None:
    ahead = [*eventstore_migrations(), Migration("eventstore", 99, "future", "SELECT 1")]
    async with engine.connect() as conn:
        with pytest.raises(
            SchemaError, match="eventstore migration 0099_future is not applied; run `saga db upgrade`"
        ):
            await check_schema(conn, ahead)
