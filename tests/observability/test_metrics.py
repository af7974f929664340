"""Must show: after N sagas through the order example run as separate processes, each
process's /metrics (scraped over HTTP) counts what the database and Kafka say happened.

The sagas are started by this test's process: its saga_started_total is checked in-process
(prometheus_client's default registry), not over HTTP."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from examples.orders.saga import OrderSaga
from saga import record_metrics
from tests.helpers import wait_for
from tests.observability.conftest import OrdersCluster, free_port
from tests.order_runs import plan

Samples = list[tuple[str, dict[str, str], float]]
QUERIED = {"saga_outbox_pending_messages", "saga_deadlines_due", "saga_eventstore_feed_lag_events"}
STEP_OUTCOMES = "('saga.step_succeeded', 'saga.step_failed', 'saga.step_timed_out', 'saga.step_compensated')"


def _get(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body: bytes = response.read()
        return body.decode()


async def scrape(port: int) -> Samples:
    text = await asyncio.to_thread(_get, port)
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of a sample over the label sets that have `labels`."""
    return sum(v for n, ls, v in samples if n == name and labels.items() <= ls.items())


async def messages_in(bootstrap: str, topics: list[str]) -> int:
    """How many records the topics hold: what the relay sent."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await producer.start()
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in await producer.partitions_for(t)]
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()
        await producer.stop()


async def settled(port: int, check: Callable[[Samples], dict[str, tuple[float, float]]]) -> None:
    """Until every (scraped, expected) pair `check` gives agrees: a participant counts its
    batch just after it commits, which may be after the saga it answered has ended."""
    last: dict[str, tuple[float, float]] = {}

    async def agree() -> bool:
        nonlocal last
        last = check(await scrape(port))
        return all(got == want for got, want in last.values())

    try:
        await wait_for(agree, 30, f"/metrics on port {port} to agree")
    except AssertionError:
        assert {k: v for k, v in last.items() if v[0] != v[1]} == {}, "(scraped, expected)"


def started_here() -> float:
    return REGISTRY.get_sample_value("saga_started_total", {"saga_type": OrderSaga.name}) or 0.0


async def test_each_process_serves_metrics_that_count_what_happened(orders_cluster: OrdersCluster) -> None:
    system = orders_cluster
    ports = {role: free_port() for role in system.roles}
    system.start(
        {
            role: {"SAGA_METRICS_PORT": str(port), "SAGA_METRICS_INTERVAL_S": "0.2"}
            for role, port in ports.items()
        }
    )
    record_metrics()
    before = started_here()
    orders = plan(6)  # o003 declined by payments, o005 out of stock: both compensate
    await system.place(orders)
    assert started_here() - before == len(orders)
    await system.wait_ended(len(orders))

    outcomes = dict(await system.rows("SELECT status, count(*) FROM saga_instances GROUP BY status"))
    assert outcomes == {"completed": 4, "compensated": 2}
    steps_done = await system.scalar(f"SELECT count(*) FROM es_events WHERE type IN {STEP_OUTCOMES}")
    compensations = await system.scalar(
        "SELECT count(*) FROM es_events WHERE type = 'saga.compensation_started'"
    )
    handled = dict(await system.rows("SELECT consumer_group, count(*) FROM inbox GROUP BY consumer_group"))
    sent = await messages_in(system.cluster.bootstrap, system.cluster.topic_names())
    assert sent == sum(handled.values())

    def worker(s: Samples) -> dict[str, tuple[float, float]]:
        return {
            **{
                f"finished {outcome}": (total(s, "saga_finished_total", outcome=outcome), float(count))
                for outcome, count in outcomes.items()
            },
            "finished": (total(s, "saga_finished_total"), float(len(orders))),
            "started (by the test, not here)": (total(s, "saga_started_total"), 0.0),
            "compensations": (
                total(s, "saga_compensations_total", saga_type=OrderSaga.name),
                float(compensations),
            ),
            "steps": (total(s, "saga_step_duration_seconds_count"), float(steps_done)),
            "handled": (
                total(s, "saga_consumer_handled_total", group=system.group("worker")),
                float(handled[system.group("worker")]),
            ),
            "deadlines due": (total(s, "saga_deadlines_due"), 0.0),
            "feed lag": (total(s, "saga_eventstore_feed_lag_events"), 0.0),
        }

    def relay(s: Samples) -> dict[str, tuple[float, float]]:
        return {
            "published": (total(s, "saga_relay_published_total"), float(sent)),
            "pending": (total(s, "saga_outbox_pending_messages"), 0.0),
            "oldest age": (total(s, "saga_outbox_oldest_age_seconds"), 0.0),
        }

    def participant(role: str) -> Callable[[Samples], dict[str, tuple[float, float]]]:
        group = system.group(role)
        return lambda s: {
            "handled": (total(s, "saga_consumer_handled_total", group=group), float(handled[group])),
            "dead letters": (total(s, "saga_dlq_messages_total"), 0.0),
            "no saga metrics": (total(s, "saga_finished_total"), 0.0),
            "gauges it does not refresh, sampled": (sum(n in QUERIED for n, _, _ in s), 0.0),
        }

    await settled(ports["worker"], worker)
    await settled(ports["relay"], relay)
    for role in system.roles[2:]:
        await settled(ports[role], participant(role))
    system.stop_all()
