"""The saga language beyond request and reply: parallel groups, child sagas, waits for signals,
and timers. Each is a step class (or, for a group, a node of steps) in `Saga.steps`:

    steps = (
        ReserveCredit,
        WaitFor(Picked, timeout_s=600),
        ChargePayment,
        Parallel(ShipOrder, IssueInvoice),
        Delay(3600),
    )

The rules for where each may stand are checked when the saga class is created (saga._checks).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

from saga._steps import D, DefinitionError, Step, StepKind, snake

if TYPE_CHECKING:
    from saga._definition import Saga


class Parallel:
    """A group of steps that start together in one decision. The group succeeds when every
    member succeeded; if one fails or times out, the members that succeeded are compensated
    (those still in flight once they answer or time out), then the earlier steps in reverse."""

    def __init__(self, *steps: type[Step[Any]]) -> None:
        if len(steps) < 2:
            raise DefinitionError(f"Parallel(...) needs at least two steps, got {len(steps)}")
        self.steps: tuple[type[Step[Any]], ...] = steps

    def __repr__(self) -> str:
        return f"Parallel({', '.join(getattr(s, 'name', repr(s)) for s in self.steps)})"


class WaitStep(Step[D]):
    """Waits for a signal (`App.signal`) of one of `signals`; with `timeout_s`, a wait that sees
    none in time fails like a failed step. A signal that came before the saga reached the wait
    was kept, and is taken at once. Subclass to set `on_signal`."""

    signals: ClassVar[tuple[type[BaseModel], ...]] = ()

    def on_signal(self, data: D, signal: Any) -> D:
        """New saga data from the signal taken; by default the data stays as it was."""
        return data

    @classmethod
    def has_compensation(cls) -> bool:
        return False  # waiting changes nothing to undo


class TimerStep(Step[D]):
    """Waits until `due(data, now)`, on the durable deadline table: it survives restarts."""

    def due(self, data: D, now: datetime) -> datetime:
        raise NotImplementedError

    @classmethod
    def has_compensation(cls) -> bool:
        return False


class ChildSaga(Step[D]):
    """Starts the saga `saga` with the data `start(data)` returns, in the parent's transaction,
    and moves on when the child ends: completed, the step succeeded (`on_child_completed` may
    take the child's data); compensated, the step failed.

    Compensating a completed child asks it to undo itself: it runs its own compensations in
    reverse. So a child step before the parent's pivot needs a child saga without a pivot (one
    past its pivot cannot be undone); checked when the parent class is created."""

    saga: ClassVar[type[Saga[Any]]]

    def start(self, data: D) -> BaseModel:
        raise NotImplementedError

    def on_child_completed(self, data: D, child: Any) -> D:
        """New saga data from the child's final data; by default the data stays as it was."""
        return data

    @classmethod
    def has_compensation(cls) -> bool:
        return cls.kind is StepKind.COMPENSATABLE


def WaitFor(
    signal: type[BaseModel], *, timeout_s: float | None = None, name: str | None = None
) -> type[WaitStep[Any]]:
    """A step that waits for one signal type: `WaitFor(Picked, timeout_s=600)`."""
    return _wait((signal,), timeout_s, name or f"wait_for_{snake(_named(signal, 'WaitFor'))}")


def WaitForAny(
    *signals: type[BaseModel], timeout_s: float | None = None, name: str | None = None
) -> type[WaitStep[Any]]:
    """A step that takes the first signal of any of these types; kept signals of the others
    are recorded as ignored."""
    if len(signals) < 2:
        raise DefinitionError(f"WaitForAny(...) needs at least two signal types, got {len(signals)}")
    names = [snake(_named(s, "WaitForAny")) for s in signals]
    if len(set(signals)) != len(signals):
        raise DefinitionError(f"WaitForAny({', '.join(names)}): a signal type is listed twice")
    return _wait(signals, timeout_s, name or f"wait_for_any_{'_'.join(names)}")


def Delay(seconds: float, *, name: str | None = None) -> type[TimerStep[Any]]:
    """A step that waits `seconds` after the saga reaches it."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
        raise DefinitionError(f"Delay(seconds): seconds must be a number > 0, got {seconds!r}")
    wait = timedelta(seconds=seconds)

    def due(self: Any, data: Any, now: datetime) -> datetime:
        return now + wait

    body = {"name": name or f"delay_{seconds:g}s", "due": due, "__doc__": f"Waits {seconds:g}s."}
    return type(f"Delay{seconds:g}s".replace(".", "_"), (TimerStep,), body)


def Until(when: Callable[[Any], datetime], *, name: str | None = None) -> type[TimerStep[Any]]:
    """A step that waits until `when(data)`, a timezone-aware datetime (one in the past: no wait)."""
    if not callable(when):
        raise DefinitionError(f"Until(when): when must be a function of the saga's data, got {when!r}")
    label = getattr(when, "__name__", "when")
    step_name = name or ("until" if label == "<lambda>" else f"until_{snake(label)}")

    def due(self: Any, data: Any, now: datetime) -> datetime:
        return when(data)

    body = {"name": step_name, "due": due, "__doc__": f"Waits until {label}(data)."}
    return type("Until", (TimerStep,), body)


def _wait(signals: tuple[type[BaseModel], ...], timeout_s: float | None, name: str) -> type[WaitStep[Any]]:
    body = {"name": name, "signals": signals, "timeout_s": timeout_s}
    return type(f"Wait_{name}", (WaitStep,), body)


def _named(signal: Any, what: str) -> str:
    if not (isinstance(signal, type) and issubclass(signal, BaseModel)):
        raise DefinitionError(f"{what}(...): a signal is a pydantic model class, got {signal!r}")
    return signal.__name__
