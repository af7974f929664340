"""What must hold of the decider, whatever it is fed: one check per invariant.

`check_decision` looks at one decision and the state it was taken on:
- a reply that is not awaited (another attempt, step or phase, or not the type the step
  expects) emits only ReplyIgnored: no command, no other change;
  a stale deadline changes nothing; a finished saga (completed, compensated) never changes;
- a changed deadline is the one the new state awaits (a retry when scheduled, a reply a
  timeout from now); each command has its request event and its attempt's message id.
`check_deadline_row`: the deadline row, as the orchestrator keeps it, names what is awaited.
`check_history` looks at everything the saga emitted since it started:
- the events fold into the decider's state;
- one command per attempt: no (step, phase, attempt) and no message id twice;
- attempts count 1, 2, 3, ... and stay within the retry policy (fresh after a resume);
- compensation undoes exactly the compensatable steps that took effect (a remote action
  that timed out counts), latest first, one after the other, never after the pivot succeeded;
- a saga completes only when every step succeeded.
The driver runs all of them after every input.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from saga import (
    ChildEnded,
    Deadline,
    DeadlineDue,
    Decision,
    RemoteStep,
    Reply,
    Saga,
    SagaState,
    SendCommand,
    StepKind,
    StepRefused,
    command_id,
    fold,
    saga_event_registry,
)
from saga._state import Awaiting

_REGISTRY = saga_event_registry()


@dataclass(frozen=True)
class Stored:
    """A saga event as the store keeps it: its type name and its fields."""

    type: str
    fields: dict[str, Any]

    @property
    def step(self) -> str:
        return str(self.fields["step"])

    @property
    def phase(self) -> str | None:
        return self.fields.get("phase")


def stored(event: BaseModel) -> Stored:
    return Stored(_REGISTRY.type_of(event).name, event.model_dump(mode="json"))


def names(events: Sequence[BaseModel]) -> list[str]:
    return [stored(e).type for e in events]


def awaits_this_reply(saga: type[Saga[Any]], state: SagaState, reply: Reply) -> bool:
    """The reply answers the attempt the saga awaits, with a refusal or the expected type."""
    waiting = state.waiting_on(reply.step) if reply.step is not None else None
    if state.terminal or waiting is None or waiting.kind != "reply":
        return False
    if (reply.phase, reply.attempt) != (waiting.phase, waiting.attempt):
        return False
    step = saga.step(waiting.step)
    expected = step.expected_reply(waiting.phase) if issubclass(step, RemoteStep) else None
    return isinstance(reply.message, StepRefused) or (
        expected is not None and isinstance(reply.message, expected)
    )


def awaits_this_deadline(state: SagaState, due: DeadlineDue) -> bool:
    waiting = state.waiting_on(due.step)
    return waiting is not None and (waiting.phase, waiting.attempt, waiting.kind) == (
        due.phase,
        due.attempt,
        due.kind,
    )


def expected_deadline(saga: type[Saga[Any]], waiting: Awaiting, now: datetime) -> Deadline | None:
    """A scheduled retry or a timer is due when set; a reply is due a step's timeout from now."""
    if waiting.kind != "reply":
        assert waiting.due_at is not None
        return Deadline(waiting.step, waiting.phase, waiting.attempt, waiting.kind, waiting.due_at)
    timeout = saga.step(waiting.step).timeout_s
    if timeout is None:
        return None
    return Deadline(waiting.step, waiting.phase, waiting.attempt, "reply", now + timedelta(seconds=timeout))


def unchanged_but_version(before: SagaState, after: SagaState, events: int) -> bool:
    return after == before.model_copy(update={"version": before.version + events})


# --- one decision ------------------------------------------------------------------------


def check_decision(
    saga: type[Saga[Any]], before: SagaState, given: object, decision: Decision, now: datetime
) -> None:
    _deadline_is_the_awaited_one(saga, decision, now)
    _each_command_is_requested_once(decision)
    if isinstance(given, Reply) and not awaits_this_reply(saga, before, given):
        what = f"a reply that is not awaited ({given.step}/{given.phase} #{given.attempt})"
        _only_ignored(before, decision, f"{what}, awaiting {before.awaiting}")
    if isinstance(given, DeadlineDue) and not awaits_this_deadline(before, given):
        assert decision == Decision(before), f"a stale deadline {given} changed the saga: {decision}"
    if before.terminal:
        _only_ignored(before, decision, f"an input {type(given).__name__} to a {before.status} saga")


def _only_ignored(before: SagaState, decision: Decision, what: str) -> None:
    kinds = names(decision.events)
    assert set(kinds) <= {"saga.reply_ignored"}, f"{what} emitted {kinds}"
    assert not decision.commands, f"{what} sent {decision.commands}"
    assert decision.local is None, f"{what} asked to run {decision.local}"
    assert not decision.deadlines, f"{what} set deadlines {decision.deadlines}"
    assert not decision.cleared, f"{what} cleared deadlines {decision.cleared}"
    assert unchanged_but_version(before, decision.state, len(decision.events)), (
        f"{what} changed the state:\n{before}\n{decision.state}"
    )


def _deadline_is_the_awaited_one(saga: type[Saga[Any]], decision: Decision, now: datetime) -> None:
    """Each deadline set is the one its step now awaits; a cleared one awaits none with a time."""
    state = decision.state
    for deadline in decision.deadlines:
        waiting = state.waiting_on(deadline.step)
        expected = None if waiting is None else expected_deadline(saga, waiting, now)
        assert deadline == expected, f"deadline {deadline}, but the state awaits {expected}"
    for step in decision.cleared:
        waiting = state.waiting_on(step)
        assert waiting is None or expected_deadline(saga, waiting, now) is None, (
            f"the deadline of {step} cleared while the saga awaits {waiting}"
        )


def _each_command_is_requested_once(decision: Decision) -> None:
    requested = {
        (e.step, e.phase, e.fields["attempt"], e.fields["message_id"])
        for e in map(stored, decision.events)
        if e.type == "saga.step_requested" and e.fields["message_id"] is not None
    }
    sent = {(c.step, c.phase, c.attempt, str(c.message_id)) for c in decision.commands if not _to_parent(c)}
    assert sent == requested, f"commands {sorted(sent)} but requests {sorted(requested)}"
    for c in decision.commands:
        if not _to_parent(c):
            assert c.message_id == command_id(decision.state.saga_id, c.step, c.phase, c.attempt), c


def _to_parent(command: SendCommand) -> bool:
    return isinstance(command.message, ChildEnded)


def check_deadline_row(saga: type[Saga[Any]], state: SagaState, rows: dict[str, Deadline]) -> None:
    """The deadline rows, as the orchestrator keeps them, name what the saga awaits: one for
    each wait that has a time, none for anything else."""
    timed = {w.step: w for w in state.waiting if w.kind != "reply" or saga.step(w.step).timeout_s}
    assert set(rows) == set(timed), f"deadline rows {sorted(rows)} while the saga awaits {state.waiting}"
    for step, row in rows.items():
        waiting = timed[step]
        named = (row.phase, row.attempt, row.kind)
        assert named == (waiting.phase, waiting.attempt, waiting.kind), f"{row} vs {waiting}"


# --- the whole run -----------------------------------------------------------------------


def check_history(
    saga: type[Saga[Any]], state: SagaState, events: Sequence[BaseModel], commands: Sequence[SendCommand]
) -> None:
    folded = fold(state.saga_id, events)
    assert folded == state, f"the events fold into\n{folded}\nbut the decider said\n{state}"
    history = [stored(e) for e in events]
    _one_command_per_attempt(commands)
    _attempts_count_up(history)
    _attempts_within_the_retry_budget(saga, history)
    _compensations_undo_what_took_effect(saga, history)
    _completes_only_when_every_step_succeeded(saga, history)


def _one_command_per_attempt(commands: Sequence[SendCommand]) -> None:
    attempts = Counter((c.step, c.phase, c.attempt) for c in commands)
    again = [key for key, n in attempts.items() if n > 1]
    assert not again, f"sent more than once: {again}"
    ids = Counter(c.message_id for c in commands)
    assert all(n == 1 for n in ids.values()), f"a message id used twice: {ids.most_common(1)}"


def _attempts_count_up(history: Sequence[Stored]) -> None:
    """A step's action (and its compensation) is requested as attempt 1, 2, 3, ...: none
    skipped (a skipped one would count against the retry budget), none twice."""
    last: dict[tuple[str, str | None], int] = {}
    for event in history:
        if event.type == "saga.step_requested":
            key = (event.step, event.phase)
            attempt = event.fields["attempt"]
            assert attempt == last.get(key, 0) + 1, f"{key} attempt {attempt} after {last.get(key, 0)}"
            last[key] = attempt


def _attempts_within_the_retry_budget(saga: type[Saga[Any]], history: Sequence[Stored]) -> None:
    """No more attempts than the step's retry policy allows; an operator's resume gives a fresh budget."""
    since_resume: Counter[tuple[str, str | None]] = Counter()
    for event in history:
        if event.type == "saga.operator_resumed":
            since_resume.clear()
        elif event.type == "saga.step_requested":
            since_resume[event.step, event.phase] += 1
            step = saga.step(event.step)
            policy = step.retry if event.phase == "action" else step.compensation_retry
            tries = since_resume[event.step, event.phase]
            assert tries <= policy.attempts, f"{event.step}/{event.phase}: try {tries} of {policy.attempts}"


_COMPENSATION_ALWAYS = {"saga.step_compensated", "saga.compensation_failed"}
_WITH_PHASE = {"saga.step_requested", "saga.step_failed", "saga.step_timed_out", "saga.retry_scheduled"}


def _about_a_compensation(event: Stored) -> bool:
    return event.type in _COMPENSATION_ALWAYS or (event.type in _WITH_PHASE and event.phase == "compensation")


def _took_effect(event: Stored) -> bool:
    """A step's action succeeded, or its reply never came (it may have acted)."""
    return event.type == "saga.step_succeeded" or (
        event.type == "saga.step_timed_out" and event.phase == "action"
    )


def _compensations_undo_what_took_effect(saga: type[Saga[Any]], history: Sequence[Stored]) -> None:
    """Compensation undoes exactly the compensatable steps that took effect, latest first,
    one after the other; nothing is compensated once the pivot succeeded."""
    took_effect: list[str] = []
    pivot_succeeded = False
    plan: list[str] | None = None
    undone: list[str] = []
    for event in history:
        if _took_effect(event):
            kind = saga.step(event.step).kind
            if kind is StepKind.COMPENSATABLE and event.step not in took_effect:
                took_effect.append(event.step)
            pivot_succeeded |= kind is StepKind.PIVOT and event.type == "saga.step_succeeded"
        elif event.type == "saga.compensation_started":
            assert not pivot_succeeded, "compensation began after the pivot succeeded"
            assert plan is None, "compensation began twice"
            plan = event.fields["steps"]
            expected = took_effect[::-1]
            assert plan == expected, f"compensating {plan}; what took effect, latest first: {expected}"
        elif _about_a_compensation(event):
            what = f"{event.type} for {event.step}"
            assert not pivot_succeeded, f"{what} after the pivot succeeded"
            assert plan is not None, f"{what} before compensation began"
            assert undone != plan, f"{what}: everything was undone already"
            assert event.step == plan[len(undone)], f"{what} while {plan[len(undone)]} is next to undo"
            if event.type == "saga.step_compensated":
                undone.append(event.step)
        elif event.type == "saga.compensated":
            assert plan is not None, "compensated without compensating"
            assert undone == plan, f"compensated after undoing {undone} of {plan}"


def _completes_only_when_every_step_succeeded(saga: type[Saga[Any]], history: Sequence[Stored]) -> None:
    succeeded = set()
    for event in history:
        if event.type == "saga.step_succeeded":
            succeeded.add(event.step)
        elif event.type == "saga.completed":
            missing = [s.name for s in saga.all_steps() if s.name not in succeeded]
            assert not missing, f"completed, yet these steps never succeeded: {missing}"
