"""Traces across processes: one order saga crosses the shop (which starts it), the relay, the
orchestrator worker and the participants, each a process of its own exporting its spans with
the OpenTelemetry SDK to a file. Put together by trace id, the spans must form the tree the
messages took, and each step's span must link to the saga's start."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from examples.orders.cluster import Cluster
from tests.helpers import wait_for
from tests.observability.conftest import OrdersCluster
from tests.observability.spans_to_file import read_spans

Span = dict[str, Any]
TELEMETRY = "tests.observability.spans_to_file:setup"
REMOTE = {
    "reserve_credit": "customers",
    "reserve_stock": "inventory",
    "charge_payment": "payments",
    "ship_order": "inventory",
    "issue_invoice": "payments",
}


@pytest.fixture
def spans(orders_cluster: OrdersCluster, tmp_path: Path) -> Path:
    """The order system, every process with the SDK writing its spans to `<folder>/<role>.jsonl`."""
    folder = tmp_path / "spans"
    folder.mkdir()
    orders_cluster.start({role: _telemetry(folder, role) for role in orders_cluster.roles})
    return folder


def _telemetry(folder: Path, role: str) -> dict[str, str]:
    return {
        "SAGA_TELEMETRY_SETUP": TELEMETRY,
        "SAGA_TEST_SPANS": str(folder / f"{role}.jsonl"),
        "OTEL_SERVICE_NAME": role,
    }


async def _start(cluster: Cluster, folder: Path, *orders: str) -> list[str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.observability.start_traced",
        *orders,
        env={**cluster.env(), **_telemetry(folder, "shop")},
        stdout=subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0
    ids: list[str] = orjson.loads(out)
    return ids


async def test_one_saga_is_one_tree_across_processes_linked_to_its_start(
    orders_cluster: OrdersCluster, spans: Path
) -> None:
    cluster, folder = orders_cluster.cluster, spans
    good, short = await _start(cluster, folder, "o1:widget", "o2:scarce")
    prefix = cluster.name

    def problems() -> list[str]:
        spans = read_spans(folder)
        return [
            *check_saga(spans, good, prefix, steps=[*REMOTE, "approve_order"], compensated=[]),
            *check_saga(
                spans,
                short,
                prefix,
                steps=["reserve_credit", "reserve_stock"],
                compensated=["reserve_credit"],
            ),
        ]

    # Spans reach their files as they end: wait until the trees are whole, then say what is not.
    with contextlib.suppress(AssertionError):
        await wait_for(lambda: not problems(), 90, "both sagas' traces to be whole")
    assert problems() == []
    orders_cluster.stop_all()  # each process stops cleanly


def check_saga(
    spans: list[Span], saga_id: str, prefix: str, steps: list[str], compensated: list[str]
) -> list[str]:
    """What is wrong with the trace of one saga (empty when it is the expected tree)."""
    start = [
        s for s in spans if s["name"] == "saga.start OrderSaga" and s["attributes"]["saga.id"] == saga_id
    ]
    if len(start) != 1:
        return [f"{saga_id}: {len(start)} saga.start spans"]
    trace = [s for s in spans if s["trace_id"] == start[0]["trace_id"]]
    by_id = {s["span_id"]: s for s in trace}
    problems = []
    checkout = by_id.get(start[0]["parent_id"] or "")
    if checkout is None or checkout["name"] != "checkout" or checkout["service"] != "shop":
        problems.append(f"{saga_id}: saga.start is not the child of the shop's checkout span")
    for span in trace:
        if span["parent_id"] and span["parent_id"] not in by_id:
            problems.append(f"{saga_id}: {span['name']} ({span['service']}) has a parent not in the trace")
    wanted = [("step", s) for s in steps] + [("compensate", s) for s in compensated]
    for kind, step in wanted:
        name = f"saga.{kind} OrderSaga.{step}"
        found = [s for s in trace if s["name"] == name and s["attributes"]["saga.id"] == saga_id]
        if len(found) != 1:
            problems.append(f"{saga_id}: {len(found)} {name} spans in its trace")
            continue
        span = found[0]
        if span["attributes"]["saga.attempt"] != 1 or span["attributes"]["saga.step"] != step:
            problems.append(f"{saga_id}: {name} has attributes {span['attributes']}")
        is_first = step == steps[0] and kind == "step"
        if not is_first and start[0]["span_id"] not in span["links"]:
            problems.append(f"{saga_id}: {name} does not link to the saga's start")
        if is_first and span["parent_id"] != start[0]["span_id"]:
            problems.append(f"{saga_id}: the first step is not the start's child")
        if step in REMOTE:
            problems += _round_trip(trace, span, prefix, REMOTE[step])
    return problems


def _round_trip(trace: list[Span], step: Span, prefix: str, participant: str) -> list[str]:
    """step -> send command (relay) -> process command (participant) -> send reply (relay)
    -> process reply (worker)."""
    chain = [
        ("relay", "PRODUCER", f"send {prefix}.{participant}.commands"),
        (participant, "CONSUMER", f"process {prefix}.{participant}.commands"),
        ("relay", "PRODUCER", f"send {prefix}.OrderSaga.replies"),
        ("worker", "CONSUMER", f"process {prefix}.OrderSaga.replies"),
    ]
    parent = step
    for service, kind, name in chain:
        # A try that failed (and was rolled back) has a span of its own, with status ERROR.
        children = [
            s
            for s in trace
            if s["parent_id"] == parent["span_id"] and s["name"] == name and s["status"] != "ERROR"
        ]
        if len(children) != 1 or children[0]["service"] != service or children[0]["kind"] != kind:
            return [f"{step['name']}: {len(children)} {name!r} children, wanted one {kind} from {service}"]
        parent = children[0]
        attributes = parent["attributes"]
        if attributes["messaging.system"] != "kafka" or "messaging.message.id" not in attributes:
            return [f"{step['name']}: {name} lacks the messaging attributes: {attributes}"]
        if kind == "CONSUMER" and (
            "messaging.kafka.offset" not in attributes or "messaging.consumer.group.name" not in attributes
        ):
            return [f"{step['name']}: {name} lacks offset or consumer group: {attributes}"]
    return []
