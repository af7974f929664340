"""The deadline rows a decision sets or clears, and the jitter of retries. Pure."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from saga._decision import Deadline
from saga._definition import Saga
from saga._state import Awaiting


def deadline_for(saga: type[Saga[Any]], waiting: Awaiting, now: datetime) -> Deadline | None:
    """The deadline of one wait: a scheduled retry, a timer, or a reply with a timeout."""
    if waiting.kind != "reply":
        assert waiting.due_at is not None
        due = waiting.due_at
    else:
        timeout = saga.step(waiting.step).timeout_s if saga.has_step(waiting.step) else None
        if timeout is None:
            return None
        due = now + timedelta(seconds=timeout)
    return Deadline(waiting.step, waiting.phase, waiting.attempt, waiting.kind, due)


def deadline_changes(
    saga: type[Saga[Any]], before: Sequence[Awaiting], after: Sequence[Awaiting], now: datetime
) -> tuple[tuple[Deadline, ...], tuple[str, ...]]:
    """The rows to set (a wait that is new or changed) and the steps whose row goes; a wait
    that did not change keeps its row as it is (with any outage credit it got)."""
    if before is after:
        return (), ()
    old = {w.step: w for w in before}
    new = {w.step: w for w in after}
    deadlines: list[Deadline] = []
    cleared = [step for step, waiting in old.items() if step not in new and _had_row(saga, waiting)]
    for step, waiting in new.items():
        was = old.get(step)
        if was is waiting or was == waiting:
            continue
        deadline = deadline_for(saga, waiting, now)
        if deadline is not None:
            deadlines.append(deadline)
        elif step in old and _had_row(saga, old[step]):
            cleared.append(step)
    return tuple(deadlines), tuple(cleared)


def _had_row(saga: type[Saga[Any]], waiting: Awaiting) -> bool:
    """Whether a wait had a deadline row (a step the definition lacks may have had one)."""
    return (
        waiting.kind != "reply"
        or not saga.has_step(waiting.step)
        or saga.step(waiting.step).timeout_s is not None
    )


def jitter(saga_id: str, step: str, phase: str, attempt: int) -> float:
    """A number in [0, 1) fixed by the retry it spreads: pure, yet different per saga."""
    digest = hashlib.blake2b(f"{saga_id}\x00{step}\x00{phase}\x00{attempt}".encode(), digest_size=8)
    return int.from_bytes(digest.digest()) / 2**64
