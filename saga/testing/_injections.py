"""How each kind of fault is made to happen in a run of a fresh system.

A run calls, in order: `configure` (the system's config), `arm` (the system is up, the saga
not started), `seen` for each record on the system's topics (from the start, as they come),
`drive` (the saga started), `after` (the run is over, the system still up), `release`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

from aiokafka import ConsumerRecord
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from outbox import Envelope
from saga.testing._faults import Fault, Sent, faults_of, topics_of
from saga.testing._skipping import next_skip, waits_of
from saga.testing._system import ENDED, System, SystemConfig
from saga.testing._wire import Wire, header

Handler = Callable[[AsyncConnection, Any, Envelope], Awaitable[BaseModel]]


class Injection:
    """No fault: the run as it is."""

    fault: Fault | None = None
    hit = True  # whether the fault happened in the run

    def configure(self, config: SystemConfig) -> SystemConfig:
        return config

    def arm(self, system: System) -> None:
        pass

    async def seen(self, wire: Wire, record: ConsumerRecord[bytes, bytes]) -> None:
        pass

    async def drive(self, system: System, saga_id: str, deadline_s: float) -> None:
        pass

    def after(self, system: System) -> None:
        pass

    def release(self) -> None:
        pass


class Baseline(Injection):
    """No fault; reads the faults to try off what went over Kafka and the crash points each
    worker passed."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self.faults: list[Fault] = []
        self._kinds: dict[str, tuple[Any, str]] = {}

    def arm(self, system: System) -> None:
        self._kinds = dict(topics_of(system))

    async def seen(self, wire: Wire, record: ConsumerRecord[bytes, bytes]) -> None:
        kind, to = self._kinds.get(record.topic, (None, ""))
        step, phase = header(record, "step"), header(record, "phase")
        if kind is not None and step and phase:
            self.sent.append(Sent(kind, to, header(record, "saga_type") or "", step, phase))

    def after(self, system: System) -> None:
        self.faults = faults_of(system, self.sent, system.crashes.counts)


class Duplicate(Injection):
    """The first command (or reply) of the fault's step and phase is put on its topic again."""

    fault: Fault

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self.hit = False
        self._topic = ""

    def arm(self, system: System) -> None:
        topics, fault = system.orchestrator.topics, self.fault
        self._topic = (
            topics.commands(fault.service) if fault.kind == "command" else topics.replies(fault.saga_type)
        )

    async def seen(self, wire: Wire, record: ConsumerRecord[bytes, bytes]) -> None:
        fault = self.fault
        if self.hit or record.topic != self._topic:
            return
        if (header(record, "step"), header(record, "phase")) == (fault.step, fault.phase) and header(
            record, "saga_type"
        ) == fault.saga_type:
            self.hit = True
            await wire.send_again(record)


class Crash(Injection):
    """The fault's worker killed at its crash point, at its pass (the System replaces it)."""

    fault: Fault

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self.hit = False

    def arm(self, system: System) -> None:
        system.crashes.arm(self.fault.worker, self.fault.point, self.fault.nth)

    def after(self, system: System) -> None:
        self.hit = bool(system.crashes.kills)


class LateCommand(Injection):
    """The participant's handler holds the first attempt of the step's command until the
    clock has moved by the step's timeout and the saga has acted on it; then it runs."""

    fault: Fault

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self.hit = False
        self.held: Envelope | None = None
        self._gate = asyncio.Event()
        self._timeout_s = 0.0

    def configure(self, config: SystemConfig) -> SystemConfig:
        handlers = config.app.participants if config.handlers is None else config.handlers
        service = self.fault.service
        wrapped = {
            name: ({m: self._holding(h) for m, h in hs.items()} if name == service else hs)
            for name, hs in handlers.items()
        }
        return replace(config, handlers=wrapped)

    def arm(self, system: System) -> None:
        timeout = system.orchestrator.sagas[self.fault.saga_type].step(self.fault.step).timeout_s
        self._timeout_s = float(timeout or 0)

    def _holding(self, handler: Handler) -> Handler:
        async def held(conn: AsyncConnection, command: Any, envelope: Envelope) -> BaseModel:
            if not self._gate.is_set() and self._first_attempt(envelope):
                self.held = envelope  # held again when the consumer retries the record
                await self._gate.wait()
            return await handler(conn, command, envelope)

        return held

    def _first_attempt(self, envelope: Envelope) -> bool:
        fault = self.fault
        return (envelope.saga_type, envelope.step, envelope.phase, envelope.attempt) == (
            fault.saga_type,
            fault.step,
            fault.phase,
            1,
        )

    def release(self) -> None:
        self._gate.set()

    async def drive(self, system: System, saga_id: str, deadline_s: float) -> None:
        if not await self._reach_hold(system, saga_id, deadline_s):
            return
        held_saga = self.held.saga_id if self.held and self.held.saga_id else saga_id
        await system.clock.advance(self._timeout_s)
        await _poll(
            lambda: self._acted(system, held_saga),
            deadline_s,
            f"{self.fault} did not happen: after the clock moved {self._timeout_s:g}s the saga still "
            f"waits on the first attempt of {self.fault.step}/{self.fault.phase}",
        )
        self.hit = True
        self._gate.set()

    async def _reach_hold(self, system: System, saga_id: str, deadline_s: float) -> bool:
        """Wait until the command is held (moving the clock when only time moves the saga);
        False when the saga ended without sending it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        while self.held is None:
            state = await system.orchestrator.load_raw(saga_id)
            if state.status in ENDED:
                return False
            due = await next_skip(system, state)
            if due is not None:
                await system.clock.advance(due)
                continue
            if loop.time() > deadline:
                waits = waits_of(state)
                raise AssertionError(
                    f"did not end: {state.status} after {deadline_s:g}s, waits for {waits} (the first "
                    f"command of {self.fault.step}/{self.fault.phase} never reached {self.fault.service})"
                )
            await asyncio.sleep(0.02)
        return True

    async def _acted(self, system: System, saga_id: str) -> bool:
        state = await system.orchestrator.load_raw(saga_id)
        return not any(
            (w.step, w.phase, w.attempt, w.kind) == (self.fault.step, self.fault.phase, 1, "reply")
            for w in state.waiting
        )


async def _poll(condition: Callable[[], Awaitable[bool]], deadline_s: float, failure: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError(failure)
        await asyncio.sleep(0.02)


def injection_for(fault: Fault) -> Injection:
    makers: Mapping[str, Callable[[Fault], Injection]] = {
        "command": Duplicate,
        "reply": Duplicate,
        "timeout": LateCommand,
        "crash": Crash,
    }
    return makers[fault.kind](fault)
