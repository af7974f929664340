"""The app of `bench/parallel.py`: the same three remote steps run one after another by
`SequenceSaga` and as one parallel group by `ParallelSaga`. Each participant answers after
a fixed wait of its own (100, 200 and 300 ms), as a slow remote service would.

Its processes get the run's topic prefix from BENCH_RUN (like examples.orders.run_app's
ORDERS_RUN): `SAGA_APP=bench.parallel_app:app BENCH_RUN=<run> saga worker`.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from outbox import Envelope, MessageRegistry
from saga import App, Parallel, RemoteStep, Saga

WAIT_MS = {"fast": 100, "medium": 200, "slow": 300}

messages = MessageRegistry()


@messages.message("bench.work")
class Work(BaseModel):
    run: str


@messages.message("bench.worked")
class Worked(BaseModel):
    by: str


@messages.message("bench.undo")
class Undo(BaseModel):
    run: str


@messages.message("bench.undone")
class Undone(BaseModel):
    by: str


class BenchData(BaseModel):
    run: str


class _Work(RemoteStep[BenchData]):
    reply = Worked
    compensation_reply = Undone
    timeout_s = 30.0

    def command(self, data: BenchData) -> Work:
        return Work(run=data.run)

    def compensation(self, data: BenchData) -> Undo:
        return Undo(run=data.run)


class Fast(_Work):
    participant = "fast"


class Medium(_Work):
    participant = "medium"


class Slow(_Work):
    participant = "slow"


class SequenceSaga(Saga[BenchData]):
    steps = (Fast, Medium, Slow)


class ParallelSaga(Saga[BenchData]):
    steps = (Parallel(Fast, Medium, Slow),)


def _handlers(service: str) -> dict[type[BaseModel], Any]:
    wait_s = WAIT_MS[service] / 1000

    async def work(conn: AsyncConnection, command: Work, envelope: Envelope) -> Worked:
        await asyncio.sleep(wait_s)  # the remote service's own work: the time being measured
        return Worked(by=service)

    async def undo(conn: AsyncConnection, command: Undo, envelope: Envelope) -> Undone:
        return Undone(by=service)

    return {Work: work, Undo: undo}


bench_app = App(
    sagas=[SequenceSaga, ParallelSaga],
    messages=messages,
    participants={service: _handlers(service) for service in WAIT_MS},
    topic_prefix="bench-parallel",
)


def __getattr__(name: str) -> App:
    # `app` only on demand: `make bench` runs every bench/*.py as a script, this one too.
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    run = os.environ.get("BENCH_RUN")
    if not run:
        raise RuntimeError("bench.parallel_app:app needs BENCH_RUN, the run's name (its topic prefix)")
    return bench_app.with_topic_prefix(run)
