"""What goes into the event store and what comes out: expectations, positions, records."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, NamedTuple

import orjson
import psycopg
from pydantic import BaseModel

# Four parameters an event; Postgres takes at most 65,535 in one statement.
MAX_BATCH = 10_000


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


# A stream id is a btree key: Postgres refuses index entries over about 2,700 bytes.
MAX_STREAM_ID_BYTES = 1000


def check_stream_id(stream_id: str) -> None:
    if not isinstance(stream_id, str) or not stream_id:
        raise ValueError(f"a stream id is a non-empty string, got {stream_id!r}")
    if "\x00" in stream_id:
        raise ValueError(
            f"stream id {stream_id[:100]!r}: contains a NUL character (\\x00), which Postgres cannot store"
        )
    if len(stream_id.encode()) > MAX_STREAM_ID_BYTES:
        raise ValueError(
            f"stream id {stream_id[:100]!r}...: {len(stream_id.encode())} bytes, over the {MAX_STREAM_ID_BYTES} allowed"
        )


def check_append(
    stream_id: str,
    events: Sequence[BaseModel],
    expected_version: ExpectedVersion,
    event_ids: Sequence[uuid.UUID] | None,
) -> None:
    check_stream_id(stream_id)
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


def expected_number(expected_version: ExpectedVersion) -> int | None:
    """The version the statement checks against: None for ANY, 0 for NO_STREAM."""
    if expected_version is ANY:
        return None
    if expected_version is NO_STREAM:
        return 0
    assert isinstance(expected_version, int)
    return expected_version


def metadata_of(
    correlation_id: str | None, causation_id: str | None, extra: dict[str, Any] | None
) -> dict[str, Any]:
    meta: dict[str, Any] = dict(extra or {})
    if correlation_id is not None:
        meta["correlation_id"] = correlation_id
    if causation_id is not None:
        meta["causation_id"] = causation_id
    return meta


def conflicting_stream(exc: psycopg.Error, batch: Sequence[NewEvents]) -> str:
    """The stream a unique violation on (stream_id, version) names, from the error's detail."""
    detail = (exc.diag.message_detail if exc.diag else None) or ""
    for b in batch:
        if f"=({b.stream_id}, " in detail:
            return b.stream_id
    return ", ".join(b.stream_id for b in batch)
