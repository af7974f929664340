"""What a log line is about: the saga, step and trace of the message or saga being handled.

The runtime sets it around each message (and each saga decided on) with `log_context`, so
that every line logged meanwhile, the user's handlers' own lines too, can carry it; a
formatter reads it with `current_log_context`. Setting it is a contextvar set and reset:
with plain text logs, nobody reads it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextvars import ContextVar, Token
from types import TracebackType
from typing import TypeAlias

from opentelemetry import trace

from outbox._message import Envelope, parse_traceparent

Fields: TypeAlias = Mapping[str, str | int]
# An envelope is kept as it is and read only when a line is formatted (JSON logs).
Source: TypeAlias = "Fields | Envelope"

_current: ContextVar[tuple[Source, ...]] = ContextVar("outbox_log_context", default=())

# The envelope headers a line about a message carries, and their types.
_HEADER_FIELDS = {
    "saga_id": str,
    "saga_type": str,
    "step": str,
    "phase": str,
    "attempt": int,
    "message_id": str,
}


class LogContext:
    """`with log_context(saga_id=..., step=...):` the fields are added to the current ones for
    the block (a field set again inside wins) and are gone after it."""

    __slots__ = ("_source", "_token")

    def __init__(self, source: Source) -> None:
        self._source = source
        self._token: Token[tuple[Source, ...]] | None = None

    def __enter__(self) -> None:
        self._token = _current.set((*_current.get(), self._source))

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None


def log_context(**fields: str | int | None) -> LogContext:
    """The given fields, None values left out."""
    return LogContext({name: value for name, value in fields.items() if value is not None})


def log_context_of(envelope: Envelope) -> LogContext:
    """The saga, step, attempt, message id and trace of a message, from its envelope."""
    return LogContext(envelope)


def _envelope_fields(envelope: Envelope) -> dict[str, str | int]:
    fields: dict[str, str | int] = {
        "saga_id": envelope.saga_id or "",
        "saga_type": envelope.saga_type or "",
        "step": envelope.step or "",
        "phase": envelope.phase or "",
        "message_id": str(envelope.message_id),
    }
    fields = {name: value for name, value in fields.items() if value}
    if envelope.attempt is not None:
        fields["attempt"] = envelope.attempt
    fields.update(trace_fields(envelope.traceparent))
    return fields


def log_context_of_headers(headers: Sequence[tuple[str, bytes]] | Mapping[str, str]) -> LogContext:
    """As `log_context_of`, from raw headers (a record that may not decode, an outbox row's):
    what can be read is taken, the rest left out."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    fields: dict[str, str | int] = {}
    traceparent = None
    for name, raw in items:
        kind = _HEADER_FIELDS.get(name)
        if kind is None and name != "traceparent":
            continue
        value = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        if name == "traceparent":
            traceparent = value
        elif kind is int:
            if value.isdigit():
                fields[name] = int(value)
        else:
            fields[name] = value
    fields.update(trace_fields(traceparent))
    return LogContext(fields)


def trace_fields(traceparent: str | None) -> dict[str, str]:
    """trace_id and span_id of a W3C traceparent (version-traceid-spanid-flags); none when
    it is missing or malformed."""
    found = parse_traceparent(traceparent)
    if found is None:
        return {}
    return {"trace_id": found.trace_id, "span_id": found.span_id}


def current_log_context() -> Fields:
    """The fields set around the running code; without a trace of the message's, the current
    OpenTelemetry span's when there is a valid one."""
    fields: dict[str, str | int] = {}
    for source in _current.get():
        fields.update(_envelope_fields(source) if isinstance(source, Envelope) else source)
    if "trace_id" in fields:
        return fields
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        fields["trace_id"] = format(span.trace_id, "032x")
        fields["span_id"] = format(span.span_id, "016x")
    return fields
