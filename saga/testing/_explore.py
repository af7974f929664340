"""Fault exploration: run a saga once per fault, each time on a fresh system, and check the
user's invariant after each run.

The faults come from a first run without any (the baseline): each command and each reply it
sent, delivered twice; each step with a timeout whose participant runs here, timing out
while its command is held, which then arrives late; each worker killed at each crash point,
at each pass the baseline made there. After the saga ends, the run waits until the system is
quiet (nothing left to publish, every consumer group caught up) so that a late effect is seen
by the invariant.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from outbox import Outbox
from saga import Saga, TypedSagaState
from saga.testing._faults import Fault, FaultFilter, selected
from saga.testing._injections import Baseline, Injection, injection_for
from saga.testing._skipping import waits_of
from saga.testing._system import ENDED, System, SystemConfig, open_system
from saga.testing._wire import Wire

# The user's check, after each run: raise (AssertionError) when the run broke it.
Invariant = Callable[[System, TypedSagaState[Any]], Awaitable[None] | None]
Outcome = Literal["ok", "broken", "not hit"]
# Systems of their own run side by side: one's setup overlaps the other's Kafka waits.
RUNS_AT_ONCE = 2


@dataclass(frozen=True)
class FaultRun:
    """One run: its fault (None for the baseline), how it went, why it broke, and the
    status the saga ended in. `not hit`: the fault never happened in this run (the run took
    another path)."""

    fault: Fault | None
    outcome: Outcome
    message: str = ""
    status: str = ""

    @property
    def broken(self) -> bool:
        return self.outcome == "broken"

    @property
    def what(self) -> str:
        return "no fault (the baseline)" if self.fault is None else str(self.fault)


@dataclass(frozen=True)
class Exploration:
    """Every run of one exploration; `broken` those that broke the invariant."""

    saga: str
    runs: tuple[FaultRun, ...]

    @property
    def broken(self) -> list[FaultRun]:
        return [run for run in self.runs if run.broken]

    def summary(self) -> str:
        missed = sum(run.outcome == "not hit" for run in self.runs)
        return f"{self.saga} explored: {len(self.runs)} runs, {len(self.broken)} broken" + (
            f", {missed} whose fault did not happen" if missed else ""
        )

    def __str__(self) -> str:
        lines = [self.summary()]
        for run in self.runs:
            outcome = run.outcome.upper() if run.broken else run.outcome
            lines.append(f"  {outcome:<8} {run.status or '-':<12} {run.what}")
            if run.message:
                lines.extend(f"{'':24}{line}" for line in run.message.splitlines())
        return "\n".join(lines)

    def failure(self) -> str:
        """The AssertionError's message: each fault that broke the invariant, and the table."""
        which = "\n".join(f"- {run.what}: {run.message}" for run in self.broken)
        if self.runs[0].broken:
            which += "\n(it broke without any fault, so no fault was tried: make the plain run hold first)"
        return (
            f"{len(self.broken)} of {len(self.runs)} runs of {self.saga} broke the invariant:\n"
            f"{which}\n\n{self}"
        )


async def explore(
    config: SystemConfig,
    saga: type[Saga[Any]],
    data: BaseModel,
    invariant: Invariant,
    *,
    faults: FaultFilter | None = None,
    check: bool = True,
    deadline_s: float = 30.0,
) -> Exploration:
    """Run `saga` with `data` once without faults and once per fault, each on a fresh system
    of `config`, awaiting `invariant(system, state)` after each. With `check`, raise
    AssertionError naming each fault whose run broke it; else return the report."""
    selected([], faults)  # a wrong kind fails before anything runs
    if not callable(invariant):
        raise TypeError(
            f"explore: invariant must be a function (system, state) that raises AssertionError when the "
            f"run broke it, got {invariant!r}"
        )
    baseline = Baseline()
    first = await _run(config, saga, data, invariant, baseline, deadline_s)
    runs = [first]
    if not first.broken:
        limit = asyncio.Semaphore(RUNS_AT_ONCE)

        async def run(fault: Fault) -> FaultRun:
            async with limit:
                return await _run(config, saga, data, invariant, injection_for(fault), deadline_s)

        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(run(fault)) for fault in selected(baseline.faults, faults)]
        runs.extend(task.result() for task in tasks)
    exploration = Exploration(saga.name, tuple(runs))
    if check and exploration.broken:
        raise AssertionError(exploration.failure())
    return exploration


async def _run(
    config: SystemConfig,
    saga: type[Saga[Any]],
    data: BaseModel,
    invariant: Invariant,
    injection: Injection,
    deadline_s: float,
) -> FaultRun:
    async with open_system(injection.configure(config)) as system:
        wire = Wire(config.services.kafka_bootstrap, system.topic_names(), injection.seen)
        await wire.start()
        try:
            injection.arm(system)
            saga_id = await system.start(saga, data)
            message = await _attempt(system, wire, saga_id, invariant, injection, deadline_s)
            injection.after(system)
            status = (await system.orchestrator.load_raw(saga_id)).status
        finally:
            injection.release()
            await wire.stop()
    if message:
        return FaultRun(injection.fault, "broken", message, status)
    return FaultRun(injection.fault, "ok" if injection.hit else "not hit", status=status)


async def _attempt(
    system: System,
    wire: Wire,
    saga_id: str,
    invariant: Invariant,
    injection: Injection,
    deadline_s: float,
) -> str:
    """The run of the started saga; what broke, or "" when nothing did."""
    try:
        await injection.drive(system, saga_id, deadline_s)
        await _finish(system, saga_id, deadline_s)
        await _quiet(system, wire, deadline_s)
        held = invariant(system, await system.state(saga_id))
        if inspect.isawaitable(held):  # an async invariant, or a plain function
            await held
    except AssertionError as exc:
        return str(exc) or "AssertionError"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return ""


async def _finish(system: System, saga_id: str, deadline_s: float) -> None:
    """Wait until the saga ends, moving the clock when only time can move it."""
    try:
        await system._until(saga_id, ENDED, None, deadline_s, skip_time=True)
    except AssertionError:
        state = await system.orchestrator.load_raw(saga_id)
        if state.status in ENDED or system._failures:
            raise
        waits = waits_of(state)
        raise AssertionError(
            f"did not end: {state.status} after {deadline_s:g}s, waits for {waits}; "
            f"last error: {state.last_error or 'none'}"
        ) from None


async def _quiet(system: System, wire: Wire, deadline_s: float) -> None:
    """Wait until nothing is left to publish and every consumer group has caught up (a
    duplicate or late command included), so the invariant sees every effect."""
    topics = system.orchestrator.topics
    groups = {topics.orchestrator_group(): system.orchestrator.reply_topics()}
    groups.update({topics.participant_group(s): [topics.commands(s)] for s in system.handlers})
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while True:
        await system.settle(deadline_s)
        caught_up = await wire.caught_up()
        lags = await wire.lags(groups)
        if caught_up and not any(lags.values()) and not (await Outbox.counts(system.database)).pending:
            return
        if loop.time() > deadline:
            behind = ", ".join(f"{group} {lag}" for group, lag in lags.items() if lag) or "none"
            raise AssertionError(
                f"the system did not go quiet within {deadline_s:g}s after the saga ended: "
                f"records not consumed per group: {behind}"
            )
        await asyncio.sleep(0.05)


__all__ = ["Exploration", "Fault", "FaultRun", "Invariant", "explore"]
