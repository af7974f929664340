"""The order example's processes (relay, worker, participants) on a fresh database per test,
and its warehouse in the test's process: it picks every order whose saga waits for the goods
(about half are picked as they are placed), so that no saga sits out the 30 s pick timeout."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from examples.orders.cluster import Cluster
from examples.orders.demo import ENDED, place
from examples.orders.invariants import check_invariants
from examples.orders.saga import OrderData
from examples.orders.shop import Warehouse
from saga import Orchestrator
from tests.helpers import wait_for
from tests.order_runs import CUSTOMERS, STOCK

CRASHED = 86


@dataclass
class Orders:
    """A running order system whose processes a test can crash and restart."""

    cluster: Cluster
    engine: AsyncEngine
    orchestrator: Orchestrator

    async def scalar(self, sql: str) -> Any:
        async with self.engine.connect() as conn:
            return (await conn.execute(text(sql))).scalar()

    async def place(self, orders: list[OrderData]) -> None:
        await place(self.engine, self.orchestrator, orders)

    async def ended(self) -> int:
        return int(await self.scalar(ENDED))

    def process(self, role: str) -> subprocess.Popen[bytes]:
        return self.cluster.processes[role]

    def start(self, role: str, env: Mapping[str, str] | None = None) -> None:
        self.cluster.start(role, env)

    def stop(self, role: str) -> None:
        """SIGTERM one process and wait: it must stop cleanly."""
        process = self.cluster.processes.pop(role)
        process.terminate()
        assert process.wait(timeout=60) == 0, self.log(role)

    def log(self, role: str) -> str:
        return self.cluster.log_path(role).read_text(errors="replace")

    async def wait_crashed(self, role: str, point: str, deadline_s: float = 120) -> None:
        """Until the role's process has exited; it must have exited at the crash point."""
        process = self.process(role)
        await wait_for(lambda: process.poll() is not None, deadline_s, f"{role} to reach {point}")
        assert process.returncode == CRASHED, f"{role} exited {process.returncode}:\n{self.log(role)[-3000:]}"
        assert f"crash point {point} reached: exiting" in self.log(role)

    async def wait_all_ended(self, orders: list[OrderData], deadline_s: float = 180) -> None:
        async def done() -> bool:
            return await self.ended() == len(orders) and await self.scalar("SELECT count(*) FROM outbox") == 0

        await wait_for(done, deadline_s, f"all {len(orders)} sagas to end and the outbox to drain")

    async def assert_invariants(self, orders: list[OrderData]) -> None:
        """The example's invariants, and no message dead-lettered (as `saga status` counts)."""
        checks = await check_invariants(self.engine, orders, STOCK)
        assert [name for name, holds in checks.items() if not holds] == []
        status = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "saga", "--json", "status", env=self.cluster.env(), stdout=subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(status.communicate(), timeout=60)
        assert status.returncode == 0
        assert orjson.loads(out)["dead_letters"] == {}

    def stop_all(self) -> None:
        codes = self.cluster.stop_all()
        assert codes == dict.fromkeys(codes, 0), codes


@pytest.fixture
async def orders_system(kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[Orders]:
    cluster = Cluster(os.environ["DATABASE_URL"], kafka_bootstrap, log_dir=tmp_path)
    database = await cluster.prepare(CUSTOMERS, Decimal(400), STOCK)
    engine = database.engine
    orchestrator = cluster.app.orchestrator(database)
    warehouse = asyncio.create_task(Warehouse(orchestrator).run(engine))
    try:
        yield Orders(cluster, engine, orchestrator)
    finally:
        warehouse.cancel()
        await asyncio.gather(warehouse, return_exceptions=True)
        cluster.kill_all()
        await orchestrator.aclose()
        await database.aclose()
        await cluster.drop()
