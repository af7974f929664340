"""The event store's Prometheus metric, and the periodic refresh that gauges needing a query use."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from eventstore._store import EventStore

log = logging.getLogger(__name__)


class QueriedGauge(Collector):
    """A gauge that a periodic query sets (see `GaugeRefresher`). Until it is set it has no
    sample: a process that does not refresh it shows no value rather than a misleading 0."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry = REGISTRY) -> None:
        self.name = name
        self.documentation = documentation
        self._value: float | None = None
        registry.register(self)

    def set(self, value: float) -> None:
        self._value = float(value)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation)
        if self._value is not None:
            family.add_metric([], self._value)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self.name, self.documentation)


FEED_LAG = QueriedGauge(
    "saga_eventstore_feed_lag_events",
    "Committed events held back from feed readers by a transaction still open",
)


async def refresh_feed_lag(store: EventStore) -> None:
    FEED_LAG.set(await store.feed_lag())


class GaugeRefresher:
    """Runs `refresh` every `interval_s` in a task of its own, from `start()` to `stop()`
    (both safe to call twice). A failing refresh is logged once, until one succeeds again;
    it never ends the task, nor the worker that owns it."""

    def __init__(self, name: str, refresh: Callable[[], Awaitable[None]], interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError(f"{name}: metrics interval must be > 0, got {interval_s}")
        self.name = name
        self.refresh = refresh
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"{self.name}-metrics")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        failing = False
        while True:
            try:
                await self.refresh()
            except Exception as exc:
                if not failing:
                    log.warning(
                        "%s: refreshing metrics failed (%r); trying again every %.1fs",
                        self.name,
                        exc,
                        self.interval_s,
                    )
                failing = True
            else:
                if failing:
                    log.info("%s: refreshing metrics works again", self.name)
                failing = False
            await asyncio.sleep(self.interval_s)
