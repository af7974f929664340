"""The order example as separate processes (relay, worker, three participants), each with
the environment a test gives its role: SAGA_METRICS_PORT, SAGA_TELEMETRY_SETUP, ..."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from eventstore import Database
from examples.orders.cluster import Cluster
from examples.orders.demo import ENDED
from examples.orders.saga import OrderData
from examples.orders.shop import place_orders
from saga import Orchestrator
from tests.helpers import wait_for
from tests.order_runs import CUSTOMERS, STOCK


def free_port() -> int:
    """A port nobody listens on now (the OS's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class OrdersCluster:
    cluster: Cluster
    database: Database
    orchestrator: Orchestrator

    @property
    def roles(self) -> tuple[str, ...]:
        return self.cluster.roles

    def group(self, role: str) -> str:
        """The consumer group of the worker or a participant."""
        topics = self.orchestrator.topics
        return topics.orchestrator_group() if role == "worker" else topics.participant_group(role)

    def start(self, env: Mapping[str, Mapping[str, str]] | None = None) -> None:
        """Every role's process, each with its own extra environment (by role)."""
        for role in self.roles:
            self.cluster.start(role, (env or {}).get(role))

    async def place(self, orders: list[OrderData]) -> list[str]:
        """The orders and their sagas in one transaction; every order picked at once (the
        warehouse's signal waits in the saga), so no saga waits on the warehouse."""
        async with self.database.begin() as conn:
            return await place_orders(conn, self.orchestrator, orders, pick_at_once=lambda _: True)

    async def scalar(self, sql: str, **params: Any) -> Any:
        async with self.database.connect() as conn:
            return (await conn.execute(text(sql), params)).scalar()

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        async with self.database.connect() as conn:
            return [tuple(row) for row in await conn.execute(text(sql))]

    async def wait_ended(self, count: int, deadline_s: float = 120) -> None:
        async def done() -> bool:
            ended = int(await self.scalar(ENDED))
            return ended == count and int(await self.scalar("SELECT count(*) FROM outbox")) == 0

        await wait_for(done, deadline_s, f"{count} sagas to end and the outbox to drain")

    def log(self, role: str) -> str:
        return self.cluster.log_path(role).read_text(errors="replace")

    def stop_all(self) -> None:
        codes = self.cluster.stop_all()
        assert codes == dict.fromkeys(codes, 0), codes


@pytest.fixture
async def orders_cluster(kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[OrdersCluster]:
    """A fresh database and topics for the order example; the test starts the processes
    (`orders_cluster.start({"worker": {...}, ...})`)."""
    cluster = Cluster(os.environ["DATABASE_URL"], kafka_bootstrap, log_dir=tmp_path)
    database = await cluster.prepare(CUSTOMERS, Decimal(400), STOCK)
    orchestrator = cluster.app.orchestrator(database)
    try:
        yield OrdersCluster(cluster, database, orchestrator)
    finally:
        cluster.kill_all()
        await orchestrator.aclose()
        await database.aclose()
        await cluster.drop()
