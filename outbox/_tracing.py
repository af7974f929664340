"""Traces: the W3C trace context in the record headers, and OpenTelemetry spans for sending
and processing messages, after the OpenTelemetry messaging semantic conventions.

Only the OpenTelemetry API is used; the SDK and its exporter are the user's choice. Until a
tracer provider is set (`opentelemetry.trace.set_tracer_provider`), no span is made: each
batch costs one check, and the `traceparent` header carries on as before (same trace id, a
new span id per hop), so a trace can still be followed by its id in the logs.

With a provider: a message put in the outbox carries the context of the span it was put in
(`current_traceparent`); the relay's `send {topic}` span (PRODUCER) is that context's child,
and its own context replaces the header's; a consumer's `process {topic}` span (CONSUMER) is
the child of the header's context, and the envelope its handler gets carries the process
span's context, so what the handler sends is that span's child.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from outbox._message import child_traceparent, parse_traceparent

if TYPE_CHECKING:
    from outbox._delivery import Delivery

_tracer = trace.get_tracer("saga-es")


def tracing_on() -> bool:
    """Whether a tracer provider is set, so spans are recorded somewhere."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def tracer() -> trace.Tracer:
    return _tracer


def context_of(traceparent: str | None) -> Context | None:
    """The context whose parent is the span `traceparent` names (None: none, or malformed)."""
    span_context = _span_context(traceparent)
    if span_context is None:
        return None
    return trace.set_span_in_context(NonRecordingSpan(span_context))


def _span_context(traceparent: str | None) -> SpanContext | None:
    found = parse_traceparent(traceparent)
    if found is None:
        return None
    return SpanContext(
        trace_id=int(found.trace_id, 16),
        span_id=int(found.span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(int(found.flags, 16)),
    )


def link_to(traceparent: str | None) -> list[Link]:
    """A link to the span `traceparent` names, for a span that is not its child."""
    context = context_of(traceparent)
    if context is None:
        return []
    return [Link(trace.get_current_span(context).get_span_context())]


def traceparent_of(span: Span) -> str | None:
    c = span.get_span_context()
    if not c.is_valid:
        return None
    return f"00-{c.trace_id:032x}-{c.span_id:016x}-{c.trace_flags:02x}"


def current_traceparent() -> str | None:
    """The W3C context of the span the caller is in, if any (a web request's, say)."""
    return traceparent_of(trace.get_current_span())


def caused_by(traceparent: str | None) -> str:
    """The traceparent of a message sent while handling one that carried `traceparent`: with
    tracing on, that context itself (the handler's process span is the parent); off, the same
    trace with a new span id."""
    if traceparent and tracing_on() and context_of(traceparent) is not None:
        return traceparent
    return child_traceparent(traceparent)


@contextmanager
def in_context(traceparent: str | None) -> Iterator[None]:
    """Run the block in the context `traceparent` names (with tracing on): a handler's own
    spans are children of its process span, and what it puts in the outbox carries it."""
    context = context_of(traceparent) if tracing_on() else None
    if context is None:
        yield
        return
    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)


def ended(span: Span, error: BaseException | None = None) -> None:
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.record_exception(error)
    span.end()


# --- the relay ---------------------------------------------------------------------------------


def start_send(topic: str, key: str, headers: dict[str, str]) -> Span:
    """A `send {topic}` span, child of the header's context, which it then replaces."""
    span = _tracer.start_span(
        f"send {topic}",
        context=context_of(headers.get("traceparent")),
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.destination.name": topic,
            "messaging.kafka.message.key": key,
            "messaging.message.id": headers.get("message_id", ""),
        },
    )
    traceparent = traceparent_of(span)
    if traceparent:
        headers["traceparent"] = traceparent
    return span


def end_send(span: Span, metadata: Any, error: BaseException | None) -> None:
    """After Kafka answered: where the record went (a RecordMetadata), or why it did not."""
    if metadata is not None:
        span.set_attribute("messaging.destination.partition.id", str(metadata.partition))
        span.set_attribute("messaging.kafka.offset", int(metadata.offset))
    ended(span, error)


# --- consumers ---------------------------------------------------------------------------------


class ProcessSpans:
    """The `process {topic}` spans of one transaction's deliveries, ended when it has ended."""

    def __init__(self, group_id: str) -> None:
        self.group_id = group_id
        self.on = tracing_on()
        self.spans: list[Span] = []

    def start(self, deliveries: Sequence[Delivery]) -> list[Delivery]:
        """The deliveries as their handlers see them: each envelope carrying its span's context."""
        if not self.on:
            return list(deliveries)
        traced = []
        for d in deliveries:
            span = self._start(d)
            self.spans.append(span)
            envelope = d.envelope.model_copy(update={"traceparent": traceparent_of(span)})
            traced.append(dataclasses.replace(d, envelope=envelope))
        return traced

    def _start(self, d: Delivery) -> Span:
        record = d.record
        topic = record.topic if record is not None else ""
        attributes: dict[str, str | int] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": topic,
            "messaging.consumer.group.name": self.group_id,
            "messaging.message.id": str(d.envelope.message_id),
        }
        if record is not None:
            attributes["messaging.destination.partition.id"] = str(record.partition)
            attributes["messaging.kafka.offset"] = int(record.offset)
            if record.key is not None:
                attributes["messaging.kafka.message.key"] = record.key.decode(errors="replace")
        return _tracer.start_span(
            f"process {topic}",
            context=context_of(d.envelope.traceparent),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        )

    def fail_last(self, error: BaseException) -> None:
        """The latest delivery's handler failed (the ones before it stand)."""
        if self.on and self.spans:
            ended(self.spans.pop(), error)

    def end(self, error: BaseException | None = None) -> None:
        """The transaction committed (`error` None) or did not."""
        spans, self.spans = self.spans, []
        for span in spans:
            ended(span, error)


class SendSpans:
    """The relay's `send {topic}` spans of one batch, by outbox row id."""

    def __init__(self) -> None:
        self.on = tracing_on()
        self.spans: dict[int, Span] = {}

    def start(self, row_id: int, topic: str, key: str, headers: dict[str, str]) -> None:
        if self.on:
            self.spans[row_id] = start_send(topic, key, headers)

    def failed(self, row_id: int, error: BaseException) -> None:
        span = self.spans.pop(row_id, None)
        if span is not None:
            ended(span, error)

    def answered(self, row_id: int, future: Any) -> None:
        """Kafka's answer, a done future; or none yet (`future` not done: no ack in time)."""
        span = self.spans.pop(row_id, None)
        if span is None:
            return
        if not future.done() or future.cancelled():
            ended(span, TimeoutError("no ack in time"))
        elif future.exception() is not None:
            ended(span, future.exception())
        else:
            end_send(span, future.result(), None)
