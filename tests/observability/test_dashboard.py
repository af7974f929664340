"""The Grafana dashboard is valid JSON, queries through its Prometheus datasource variable,
and every metric it queries is one the library defines."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

import saga  # noqa: F401  (imports eventstore and outbox: every metric is registered)

DASHBOARD = Path(__file__).parents[2] / "contrib" / "grafana" / "saga-dashboard.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def library_series() -> set[str]:
    return {f.name + suffix for f in REGISTRY.collect() for suffix in SUFFIXES.get(f.type, ())}


def metrics_only(expr: str) -> str:
    """The expression without its label matchers and groupings (`saga_type` is a label)."""
    return re.sub(r"\{[^}]*\}|\bby \([^)]*\)", "", expr)


def test_every_metric_the_dashboard_queries_exists() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    targets = [t for panel in dashboard["panels"] for t in panel["targets"]]
    assert all(t["datasource"]["uid"] == "${datasource}" for t in targets)
    queried = {name for t in targets for name in re.findall(r"\bsaga_[a-z_]+", metrics_only(t["expr"]))}
    assert queried - library_series() == set()
    # what the issue lists, on the dashboard
    assert {
        "saga_started_total",
        "saga_finished_total",
        "saga_step_duration_seconds_bucket",
        "saga_compensations_total",
        "saga_outbox_pending_messages",
        "saga_outbox_oldest_age_seconds",
        "saga_relay_published_total",
        "saga_dlq_messages_total",
        "saga_deadlines_due",
        "saga_eventstore_feed_lag_events",
    } <= queried
