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

CUSTOMERS = 5
STOCK = {"widget": 1_000_000, "scarce": 0}


def plan(n: int) -> list[OrderData]:
    """Mostly good orders; order 3 is declined by payments and order 5 is out of stock, so
    both ways of compensating run too (as tests/crash plans them)."""
    return [
        OrderData(
            order_id=f"o{i:03d}",
            customer_id="declined" if i % 10 == 3 else f"c{i % CUSTOMERS}",
            sku="scarce" if i % 7 == 5 else "widget",
            quantity=1 + i % 3,
            amount=Decimal(5 + i % 40),
        )
        for i in range(n)
    ]


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
        for process in cluster.processes.values():
            process.kill()
            process.wait()
        cluster.processes.clear()
        await orchestrator.aclose()
        await database.aclose()
        await cluster.drop()
