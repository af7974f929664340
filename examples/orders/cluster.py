"""Runs the order system as separate OS processes: relay, orchestrator worker, participants.

Used by the demo and the end-to-end benchmark. Every process is the `saga` CLI, exactly what
an operator would start by hand (see the README).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import ClassVar

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import make_url

from eventstore import Database, libpq_url, upgrade
from examples.orders.app import app as shop
from examples.orders.services import create_schema
from saga import App, all_migrations

ROLES = ("relay", "worker", "customers", "inventory", "payments")


@dataclass
class Cluster:
    roles: ClassVar[tuple[str, ...]] = ROLES  # relay, worker, then the participants
    server_url: str
    bootstrap: str
    name: str = field(default_factory=lambda: f"orders_{uuid.uuid4().hex[:8]}")
    log_dir: Path = Path(".cache/demo")
    partitions: int = 4  # of each topic: the most processes of one role that all get work
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return make_url(self.server_url).set(database=self.name).render_as_string(hide_password=False)

    @property
    def app(self) -> App:
        """The order app on this run's topics: what `examples.orders.run_app` gives its processes."""
        return shop.with_topic_prefix(self.name)

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": self.url,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "SAGA_APP": "examples.orders.run_app:app",
            "ORDERS_RUN": self.name,
            "SAGA_LOG_LEVEL": "WARNING",
            "SAGA_RELAY_POLL_INTERVAL_S": "0.5",
        }

    async def prepare(self, customers: int, credit: Decimal, stock: dict[str, int]) -> Database:
        """A fresh database: migrated, the example's tables, customers and stock. The caller closes it."""
        with psycopg.connect(libpq_url(self.server_url), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {self.name}")
        database = Database(self.url, pool_size=20)
        engine = database.engine
        await upgrade(engine, all_migrations())
        await create_schema(engine)
        async with engine.begin() as conn:
            for c in range(customers):
                await conn.execute(
                    text("INSERT INTO customers VALUES (:c, :l, 0)"), {"c": f"c{c}", "l": credit}
                )
            await conn.execute(text("INSERT INTO customers VALUES ('declined', 1000000, 0)"))
            for sku, available in stock.items():
                await conn.execute(text("INSERT INTO stock VALUES (:s, :a)"), {"s": sku, "a": available})
        await self.create_topics()
        return database

    def topic_names(self) -> list[str]:
        """The run's topics: its sagas' replies and its participants' commands."""
        return [f"{self.name}.OrderSaga.replies"] + [f"{self.name}.{s}.commands" for s in self.roles[2:]]

    async def create_topics(self, partitions: int | None = None) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        partitions = partitions or self.partitions
        topics = self.topic_names()
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in topics]
            )
        finally:
            await admin.close()

    def log_path(self, name: str) -> Path:
        """Where a process's stdout and stderr go (each start appends)."""
        return self.log_dir / f"{self.name}.{name}.log"

    def start(self, role: str, extra_env: Mapping[str, str] | None = None, *, instance: int = 1) -> str:
        """Start a role's process; `extra_env` goes to its environment only (`SAGA_CRASH_AT`).
        Returns its name in `processes`: the role, or `role#2`... for the role's later instances."""
        if role not in self.roles:
            raise ValueError(f"no role {role!r} in this cluster (it has: {', '.join(self.roles)})")
        name = role if instance == 1 else f"{role}#{instance}"
        args = ["participant", role] if role in self.roles[2:] else [role]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path(name).open("ab") as log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "saga", *args],
                env={**self.env(), **(extra_env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return name

    def start_all(
        self, counts: Mapping[str, int] | None = None, extra_env: Mapping[str, str] | None = None
    ) -> None:
        """Every role's processes: `counts[role]` of it (default one each)."""
        for role in self.roles:
            for instance in range(1, (counts or {}).get(role, 1) + 1):
                self.start(role, extra_env, instance=instance)

    @staticmethod
    def role_of(name: str) -> str:
        """The role of a process named in `processes` (`worker#2` is a worker)."""
        return name.split("#", 1)[0]

    def kill_all(self) -> None:
        """SIGKILL every process still running, and wait for each (a test's clean-up)."""
        for process in self.processes.values():
            process.kill()
            process.wait()
        self.processes.clear()

    def kill(self, role: str) -> None:
        """SIGKILL: no clean shutdown, the way a crashed host looks."""
        process = self.processes.pop(role)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def stop_all(self) -> dict[str, int]:
        """SIGTERM everything; returns the exit codes (0 = clean)."""
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        codes = {}
        for role, process in self.processes.items():
            try:
                codes[role] = process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[role] = process.wait()
        self.processes.clear()
        return codes

    async def drop(self) -> None:
        """Remove the database and every topic of this run (dead-letter topics too)."""
        from aiokafka.admin import AIOKafkaAdminClient

        with psycopg.connect(libpq_url(self.server_url), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            ours = [t for t in await admin.list_topics() if t.startswith(f"{self.name}.")]
            if ours:
                await admin.delete_topics(ours)
        finally:
            await admin.close()
