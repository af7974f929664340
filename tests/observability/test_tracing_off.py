"""Without a tracer provider (this test process sets none), tracing makes no span and the
`traceparent` header still carries the trace from hop to hop."""

from __future__ import annotations

import pytest

from outbox import caused_by, context_of, current_traceparent, new_traceparent, tracing_on

pytestmark = pytest.mark.pure


def test_off_until_a_provider_is_set() -> None:
    assert not tracing_on()
    assert current_traceparent() is None


def test_a_message_sent_while_handling_one_stays_in_its_trace() -> None:
    incoming = new_traceparent()
    sent = caused_by(incoming)
    assert sent.split("-")[1] == incoming.split("-")[1]  # the same trace
    assert sent.split("-")[2] != incoming.split("-")[2]  # a span of its own


@pytest.mark.parametrize(
    "bad", [None, "", "garbage", "00-zz-yy-01", "00-" + "0" * 32 + "-" + "0" * 16 + "-01"]
)
def test_a_missing_or_malformed_traceparent_starts_a_new_trace(bad: str | None) -> None:
    assert context_of(bad) is None
    trace_id = caused_by(bad).split("-")[1]
    assert len(trace_id) == 32
    assert trace_id != "0" * 32
