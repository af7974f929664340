"""Messages on the wire: a pydantic model as the record value, its envelope in the headers.

Kafka record: key = the saga id (all messages of one saga stay in order on one partition);
value = the message serialized as JSON; headers = the envelope below, each a UTF-8 string.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from eventstore import TypeRegistry
from outbox._errors import MessageDecodeError, MessageTypeError

M = TypeVar("M", bound=type[BaseModel])


class MessageRegistry(TypeRegistry):
    """The message types a service sends or handles, by stable name and schema version."""

    kind = "message"
    type_error = MessageTypeError
    decode_error = MessageDecodeError

    def message(self, name: str, version: int = 1) -> Callable[[M], M]:
        """Class decorator: `@registry.message("customers.reserve_credit")`."""
        return self.event(name, version)


def new_traceparent() -> str:
    """A W3C trace context header for a new trace: version-traceid-spanid-flags."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


class TraceParent(NamedTuple):
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    flags: str  # 2 hex digits


def parse_traceparent(value: str | None) -> TraceParent | None:
    """The parts of a W3C traceparent (version-traceid-spanid-flags); None when it is missing
    or malformed, its version is ff, or an id is all zeros."""
    found = _TRACEPARENT.fullmatch(value) if value else None
    if found is None or found[1] == "ff" or found[2] == "0" * 32 or found[3] == "0" * 16:
        return None
    return TraceParent(found[2], found[3], found[4])


def child_traceparent(parent: str | None) -> str:
    """Same trace as `parent`, new span; a new trace when `parent` is missing or malformed."""
    found = parse_traceparent(parent)
    if found is None:
        return new_traceparent()
    return f"00-{found.trace_id}-{secrets.token_hex(8)}-{found.flags}"


class Envelope(BaseModel):
    """What travels in the record headers beside the message."""

    model_config = ConfigDict(frozen=True)

    message_id: uuid.UUID
    message_type: str
    schema_version: int
    saga_id: str | None = None
    saga_type: str | None = None
    step: str | None = None
    phase: str | None = None
    attempt: int | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    reply_topic: str | None = None
    traceparent: str | None = None

    def to_headers(self) -> dict[str, str]:
        return {name: str(value) for name, value in self if value is not None}

    @classmethod
    def from_kafka(cls, headers: Sequence[tuple[str, bytes]]) -> Envelope:
        """Parse record headers; raise MessageDecodeError naming what is missing or wrong."""
        fields: dict[str, Any] = {}
        for name, raw in headers:
            if name in cls.model_fields:
                try:
                    fields[name] = raw.decode()
                except UnicodeDecodeError:
                    raise MessageDecodeError(f"header {name!r} is not UTF-8") from None
        for required in ("message_id", "message_type", "schema_version"):
            if required not in fields:
                raise MessageDecodeError(f"header {required!r} is missing")
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            raise MessageDecodeError(f"bad envelope headers: {exc}") from exc


def kafka_headers(headers: dict[str, str]) -> list[tuple[str, bytes]]:
    return [(name, value.encode()) for name, value in headers.items()]
