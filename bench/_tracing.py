"""Tracing on, for the benchmark: the OpenTelemetry SDK with a batch span processor, as a
production setup would have, and an exporter that drops the spans (what an exporter costs
depends on where it sends them, so it is left out). `SAGA_TELEMETRY_SETUP=bench._tracing:setup`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

SETUP = "bench._tracing:setup"


class DropSpans(SpanExporter):
    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        # In the process's log (.cache/demo/<run>.<role>.log): the spans were made.
        print(f"tracing: {self.spans} spans made and dropped", file=sys.stderr)


def setup() -> None:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropSpans()))
    trace.set_tracer_provider(provider)
