"""The outbox's Prometheus metrics: what waits in the outbox, what the relay published, what
consumers handled and dead-lettered. Counters are counted after the work is committed."""

from __future__ import annotations

from prometheus_client import Counter

from eventstore import Database, QueriedGauge
from outbox._outbox import outbox_lag

PENDING = QueriedGauge("saga_outbox_pending_messages", "Messages waiting in the outbox for the relay")
OLDEST_AGE = QueriedGauge(
    "saga_outbox_oldest_age_seconds", "Age of the oldest message waiting in the outbox (0 when none)"
)
PUBLISHED = Counter("saga_relay_published", "Outbox messages the relay published, acknowledged by Kafka")
DEAD_LETTERED = Counter(
    "saga_dlq_messages",
    "Messages a consumer put in a dead-letter topic, by the topic they came from",
    ["topic"],
)
HANDLED = Counter("saga_consumer_handled", "Messages a consumer group handled (committed)", ["group"])
DUPLICATES = Counter(
    "saga_consumer_duplicates", "Messages a consumer group skipped: its inbox had them already", ["group"]
)


async def refresh_outbox_gauges(database: Database) -> None:
    async with database.autocommit() as driver:
        lag = await outbox_lag(driver)
    PENDING.set(lag.pending)
    OLDEST_AGE.set(lag.oldest_age_s)


def count_published(count: int) -> None:
    if count:
        PUBLISHED.inc(count)


def count_applied(group: str, handled: int, duplicates: int) -> None:
    if handled:
        HANDLED.labels(group).inc(handled)
    if duplicates:
        DUPLICATES.labels(group).inc(duplicates)


def count_dead_letter(topic: str) -> None:
    DEAD_LETTERED.labels(topic).inc()
