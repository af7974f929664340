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

from outbox._message import Envelope

Fields: TypeAlias = Mapping[str, str | int]

_NONE: Fields = {}
_current: ContextVar[Fields] = ContextVar("outbox_log_context", default=_NONE)

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
    the block (None values are left out) and are gone after it."""

    __slots__ = ("_fields", "_token")

    def __init__(self, fields: Fields) -> None:
        self._fields = fields
        self._token: Token[Fields] | None = None

    def __enter__(self) -> None:
        outer = _current.get()
        self._token = _current.set({**outer, **self._fields} if outer else self._fields)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None


def log_context(**fields: str | int | None) -> LogContext:
    return LogContext({name: value for name, value in fields.items() if value is not None})


def log_context_of(envelope: Envelope) -> LogContext:
    """The saga, step, attempt, message id and trace of a message, from its envelope."""
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
    return LogContext(fields)


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
    parts = traceparent.split("-") if traceparent else ()
    if len(parts) == 4 and len(parts[1]) == 32 and len(parts[2]) == 16:
        return {"trace_id": parts[1], "span_id": parts[2]}
    return {}


def current_log_context() -> Fields:
    """The fields set around the running code; without a trace of the message's, the current
    OpenTelemetry span's when there is a valid one."""
    fields = _current.get()
    if "trace_id" in fields:
        return fields
    span = trace.get_current_span().get_span_context()
    if not span.is_valid:
        return fields
    return {**fields, "trace_id": format(span.trace_id, "032x"), "span_id": format(span.span_id, "016x")}
