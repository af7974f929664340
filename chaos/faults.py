"""Injecting the planned faults, one after another, and recording when each began and when
the harness saw the system's side of it recover."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from chaos.plan import PlannedFault
from chaos.processes import ROLES, Supervisor
from chaos.records import RecordFaults, Sent
from chaos.services import Broker, PrivatePostgres, StopMode, kill_broker, restart_broker


@dataclass
class Injected:
    """One fault as it happened. `at`/`ended` are seconds since the run began; `since`/`until`
    the same moments as Unix time, to compare with the events' `recorded_at`."""

    kind: str
    at: float
    since: float
    ended: float = 0.0
    until: float = 0.0
    roles: tuple[str, ...] = ()  # processes the fault took down
    detail: str = ""
    sent: Sent | None = None
    error: str | None = None  # the harness could not inject it

    @property
    def participant_kill(self) -> bool:
        """A SIGKILL of participants only: their own outage, not the orchestrating side's."""
        return self.kind.startswith("kill-") and all(r not in ("relay", "worker") for r in self.roles)


@dataclass
class Injector:
    supervisor: Supervisor
    postgres: PrivatePostgres
    broker: Broker
    bootstrap: str
    records: RecordFaults
    started_at: float  # time.monotonic() when the run began
    done: list[Injected] = field(default_factory=list)

    def now(self) -> float:
        return time.monotonic() - self.started_at

    async def inject(self, fault: PlannedFault) -> Injected:
        record = Injected(fault.kind, self.now(), time.time(), roles=fault.roles)
        await self._handlers()[_family(fault.kind)](fault, record)
        record.ended, record.until = self.now(), time.time()
        self.done.append(record)
        what = f"{record.kind} {' '.join(record.roles)}".strip()
        outcome = f"FAILED TO INJECT: {record.error}" if record.error else record.detail
        print(f"-- {record.at:7.1f}s {what} ({record.ended - record.at:.1f}s) {outcome}", file=sys.stderr)
        return record

    def _handlers(self) -> dict[str, Callable[[PlannedFault, Injected], Awaitable[None]]]:
        return {
            "kill": self._kill,
            "pg": self._postgres,
            "kafka": self._kafka,
            "term-all": self._term_all_postgres_down,
            "records": self._records,
        }

    async def _kill(self, fault: PlannedFault, record: Injected) -> None:
        record.roles = tuple(self.supervisor.kill(fault.roles))
        await asyncio.sleep(fault.down_s)
        self.supervisor.ensure_started(record.roles)
        record.detail = f"down {fault.down_s:.1f}s"

    async def _postgres(self, fault: PlannedFault, record: Injected) -> None:
        mode: StopMode = "immediate" if fault.kind == "pg-immediate" else "fast"
        await asyncio.to_thread(self.postgres.stop, mode)
        await asyncio.sleep(fault.down_s)
        await asyncio.to_thread(self.postgres.start)
        record.detail = f"pg_ctl stop -m {mode}, down {fault.down_s:.1f}s"

    async def _kafka(self, fault: PlannedFault, record: Injected) -> None:
        if fault.kind == "kafka-kill":
            await asyncio.to_thread(kill_broker, self.broker)
            how = "SIGKILL"
        else:
            await asyncio.to_thread(self.broker.down)
            how = "SIGTERM"
        stopped = self.now()
        await asyncio.sleep(fault.down_s)
        await asyncio.to_thread(restart_broker, self.broker, self.bootstrap)
        record.detail = f"{how}, stopped in {stopped - record.at:.1f}s, down {fault.down_s:.1f}s"

    async def _term_all_postgres_down(self, fault: PlannedFault, record: Injected) -> None:
        """Postgres stops; every process gets SIGTERM meanwhile and must stop cleanly; all start
        again while Postgres is still down; then Postgres comes back."""
        await asyncio.to_thread(self.postgres.stop, "fast")
        await asyncio.sleep(1.0)
        record.roles = tuple(self.supervisor.running())
        asked = time.monotonic()
        codes = await self.supervisor.terminate(record.roles)
        stopped_in = time.monotonic() - asked
        self.supervisor.ensure_started(ROLES)
        await asyncio.sleep(fault.down_s)
        await asyncio.to_thread(self.postgres.start)
        unclean = {r: c for r, c in codes.items() if c != 0}
        record.detail = f"down {fault.down_s:.1f}s; all stopped in {stopped_in:.1f}s, exit codes: " + (
            ", ".join(f"{r}={c}" for r, c in unclean.items()) if unclean else "all 0"
        )

    async def _records(self, fault: PlannedFault, record: Injected) -> None:
        """A Kafka hiccup here is noted, not fatal: the run goes on without these records."""
        rng = random.Random(fault.seed)
        try:
            if fault.kind in ("duplicate", "replay"):
                sent = await self.records.copy_records(rng, recent=fault.kind == "duplicate")
            elif fault.kind == "poison":
                sent = await self.records.poison(rng)
            else:
                sent = await self.records.bad_reply_topic(rng)
        except Exception as exc:
            record.error = f"{type(exc).__name__}: {exc}"
            return
        record.sent = sent
        record.detail = f"{sent.records} records ({sent.detail})"


def _family(kind: str) -> str:
    if kind.startswith("kill-"):
        return "kill"
    if kind.startswith("term-all"):
        return "term-all"
    if kind.startswith(("pg-", "kafka-")):
        return kind.split("-", 1)[0]
    return "records"


async def run_schedule(injector: Injector, planned: list[PlannedFault]) -> None:
    """Each fault at its time, or as soon as the one before is over and every process has
    finished starting."""
    for fault in planned:
        wait = fault.at - injector.now()
        if wait > 0:
            await asyncio.sleep(wait)
        await injector.supervisor.settled()
        await injector.inject(fault)
