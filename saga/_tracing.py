"""A saga's spans: `saga.start {Saga}` as it starts, then `saga.step {Saga}.{step}` (or
`saga.compensate {Saga}.{step}`) for each step it asks for, with `saga.id`, `saga.type`,
`saga.step` and `saga.attempt`.

No span stays open while a saga waits: each one ends as its decision is made. A step's span
is the child of the span that processed the message it was decided on (or of the start, for
the first steps), and links to the start, whose context `saga.started` keeps: a saga that
runs for days is a chain of short traces joined by links, not one span days long. Replaying
or showing a saga only folds its events and makes no span. Without a tracer provider
(see `outbox.tracing_on`) nothing here makes a span.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span

from outbox import Envelope, context_of, ended, link_to, traceparent_of, tracer, tracing_on
from saga._decision import Input, RunLocal, SendCommand, Start
from saga._state import SagaState


def traced_start(given: Input, saga_type: str, saga_id: str, cause: Envelope | None) -> Input:
    """A start with the context of its `saga.start` span, for `saga.started` to keep."""
    if not isinstance(given, Start) or not tracing_on():
        return given
    span = tracer().start_span(
        f"saga.start {saga_type}",
        context=context_of(cause.traceparent) if cause else None,
        attributes={"saga.id": saga_id, "saga.type": saga_type},
    )
    span.end()
    return dataclasses.replace(given, traceparent=traceparent_of(span))


def step_traceparents(
    state: SagaState, commands: Sequence[SendCommand], cause: Envelope | None, given: Input
) -> list[str | None]:
    """One span per command a decision sends; the traceparents the commands carry."""
    if not tracing_on():
        return [None] * len(commands)
    traceparents = []
    for command in commands:
        span = _step_span(state, command.step, command.phase, command.attempt, cause, given)
        traceparents.append(traceparent_of(span))
        span.end()
    return traceparents


@contextmanager
def local_step_span(
    state: SagaState, local: RunLocal, cause: Envelope | None, given: Input
) -> Iterator[None]:
    """Around a local step's run: what it logs or sends is in its span."""
    if not tracing_on():
        yield
        return
    span = _step_span(state, local.step, local.phase, local.attempt, cause, given)
    with trace.use_span(span, end_on_exit=False):
        try:
            yield
        except BaseException as exc:
            ended(span, exc)
            raise
    ended(span)


def _step_span(
    state: SagaState, step: str, phase: str, attempt: int, cause: Envelope | None, given: Input
) -> Span:
    kind = "compensate" if phase == "compensation" else "step"
    parent: Context | None = context_of(cause.traceparent) if cause else None
    from_start = parent is None and isinstance(given, Start)
    if from_start:
        parent = context_of(state.traceparent)
    return tracer().start_span(
        f"saga.{kind} {state.saga_type}.{step}",
        context=parent,
        links=[] if from_start else link_to(state.traceparent),
        attributes={
            "saga.id": state.saga_id,
            "saga.type": state.saga_type,
            "saga.step": step,
            "saga.phase": phase,
            "saga.attempt": attempt,
        },
    )
