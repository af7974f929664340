"""What a worker process sets up before it works: its logs, the user's OpenTelemetry SDK, and
its Prometheus `/metrics` endpoint (`saga relay`, `saga worker`, `saga participant`)."""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from saga._errors import SagaError
from saga._metrics import MetricsPortError, serve_metrics
from saga._settings import Settings

log = logging.getLogger(__name__)


class TelemetrySetupError(SagaError):
    """SAGA_TELEMETRY_SETUP names no function that can be called, or the function failed."""


def prepare_process(settings: Settings) -> None:
    """Call the user's telemetry setup, if named; then serve metrics, if a port is given."""
    if settings.telemetry_setup:
        run_telemetry_setup(settings.telemetry_setup)
    if settings.metrics_port is not None:
        try:
            serve_metrics(settings.metrics_port)
        except MetricsPortError as exc:
            raise TelemetrySetupError(str(exc)) from exc


def metrics_interval(settings: Settings) -> float | None:
    """How often the process refreshes the gauges that need a query: None when not served."""
    return settings.metrics_interval_s if settings.metrics_port is not None else None


def run_telemetry_setup(path: str) -> None:
    """Import `package.module:function` and call it with no arguments: the user sets up the
    OpenTelemetry SDK (a tracer provider and its exporter) there, before any work starts."""
    setup = _find(path)
    try:
        setup()
    except Exception as exc:
        raise TelemetrySetupError(f"SAGA_TELEMETRY_SETUP {path!r} failed: {exc!r}") from exc


def _find(path: str) -> Callable[[], Any]:
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise TelemetrySetupError(f"SAGA_TELEMETRY_SETUP {path!r} must look like 'package.module:function'")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # the user's project folder, as for SAGA_APP
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise TelemetrySetupError(f"SAGA_TELEMETRY_SETUP: cannot import {module_name!r}: {exc!r}") from exc
    setup = getattr(module, attribute, None)
    if setup is None or not callable(setup):
        raise TelemetrySetupError(
            f"SAGA_TELEMETRY_SETUP {path!r}: module {module_name!r} has no function {attribute!r}"
        )
    if inspect.iscoroutinefunction(setup):
        raise TelemetrySetupError(
            f"SAGA_TELEMETRY_SETUP {path!r} is async; it must be a plain function taking no arguments"
        )
    found: Callable[[], Any] = setup
    return found
