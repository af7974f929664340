"""Snapshots, upcasting of old schema versions, and clear errors for bad stored data."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore import ANY, NO_STREAM, EventDecodeError, EventRegistry, EventStore, EventTypeError
from tests.eventstore.events import AccountState, Deposited, Noted, Renamed, Withdrawn, fold


async def test_snapshot_plus_tail_equals_full_replay(store: EventStore) -> None:
    for i in range(1, 121):
        event = Deposited(amount=Decimal(i)) if i % 4 else Withdrawn(amount=Decimal(i) / 2)
        await store.append("acct", [event], ANY)

    state = AccountState()
    async for recorded in store.read_stream("acct", to_version=75):
        state = fold(state, recorded.event)
    await store.save_snapshot("acct", 75, state)
    await store.save_snapshot("acct", 40, AccountState())  # older: must not replace the newer

    snapshot = await store.load_snapshot("acct")
    assert snapshot is not None
    assert snapshot.version == 75
    from_snapshot = snapshot.state
    assert isinstance(from_snapshot, AccountState)
    async for recorded in store.read_stream("acct", from_version=snapshot.version + 1):
        from_snapshot = fold(from_snapshot, recorded.event)

    full = AccountState()
    async for recorded in store.read_stream("acct"):
        full = fold(full, recorded.event)
    assert from_snapshot == full
    assert full.operations == 120
    assert await store.load_snapshot("nothing-here") is None


async def _insert_raw(
    engine: AsyncEngine, stream: str, type_name: str, schema_version: int, data: str
) -> int:
    async with engine.begin() as conn:
        return int(
            (
                await conn.execute(
                    text(
                        "INSERT INTO es_events (stream_id, version, event_id, type, schema_version, data, metadata) "
                        "VALUES (:s, 1, :id, :t, :v, CAST(:d AS jsonb), '{}') RETURNING position"
                    ),
                    {"s": stream, "id": uuid.uuid4(), "t": type_name, "v": schema_version, "d": data},
                )
            ).scalar_one()
        )


async def test_old_schema_versions_are_upcast_on_read(engine: AsyncEngine, store: EventStore) -> None:
    await _insert_raw(engine, "p-1", "person.renamed", 1, '{"name": "Ada Lovelace"}')
    await _insert_raw(engine, "p-2", "person.renamed", 2, '{"first": "Alan", "last": "Turing"}')
    await store.append("p-3", [Renamed(first="Grace", last="Hopper", title="RAdm")], NO_STREAM)
    people = [(await store.load(f"p-{i}"))[0].event for i in (1, 2, 3)]
    assert people == [
        Renamed(first="Ada", last="Lovelace", title=""),
        Renamed(first="Alan", last="Turing", title=""),
        Renamed(first="Grace", last="Hopper", title="RAdm"),
    ]


async def test_unknown_type_on_read_names_type_and_position(engine: AsyncEngine, store: EventStore) -> None:
    position = await _insert_raw(engine, "odd", "ghost.event", 1, "{}")
    with pytest.raises(EventDecodeError) as info:
        await store.load("odd")
    assert str(info.value) == (
        f"unknown event type 'ghost.event' at position {position} (stream 'odd' version 1): "
        "register it with EventRegistry"
    )
    async with engine.connect() as conn:  # nothing was lost: the row is still there
        assert (await conn.execute(text("SELECT count(*) FROM es_events"))).scalar_one() == 1


async def test_invalid_payload_and_future_version_are_named(engine: AsyncEngine, store: EventStore) -> None:
    position = await _insert_raw(engine, "bad", "test.noted", 1, '{"writer": "not a number", "seq": 1}')
    with pytest.raises(
        EventDecodeError, match=rf"invalid payload for event type 'test.noted' at position {position}"
    ):
        await store.load("bad")
    future = await _insert_raw(engine, "future", "test.noted", 9, '{"writer": 1, "seq": 1}')
    with pytest.raises(
        EventDecodeError, match=rf"'test.noted' at position {future} .* schema version 9, newer"
    ):
        await store.load("future")


def test_registry_rejects_conflicting_registrations() -> None:
    registry = EventRegistry()
    registry.register(Noted, "test.noted")
    registry.register(Noted, "test.noted")  # the same again is harmless
    with pytest.raises(EventTypeError, match=r"'test.noted' is already registered to Noted"):
        registry.register(Deposited, "test.noted")
    with pytest.raises(EventTypeError, match=r"Noted is already registered as 'test.noted'"):
        registry.register(Noted, "other.name")
    with pytest.raises(EventTypeError, match=r"upcaster from version 1 is outside 1..0"):
        registry.upcaster("test.noted", from_version=1)(lambda d: d)
    with pytest.raises(EventTypeError, match="unknown event type 'nope'"):
        registry.get("nope")
    registry.register(Renamed, "person.renamed", version=3)
    with pytest.raises(EventDecodeError, match="no upcaster from schema version 1 to 2"):
        registry.decode("person.renamed", 1, '{"name": "x y"}', lambda: "somewhere")
