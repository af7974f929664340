"""What must hold of the decider, whatever it is fed: one check per invariant.

`check_decision` looks at one decision and the state it was taken on:
- a reply that is not awaited (another attempt, step or phase, not the type the step
  expects, not the end of the step's own child) emits only ReplyIgnored: no command, no
  other change; a stale deadline changes nothing; a finished saga (completed, compensated)
  never changes (a signal to it is received and ignored; only a parent's request to
  compensate re-opens a completed child); a signal to a saga going backward moves nothing;
- a changed deadline is the one its step now awaits (a retry or a timer when due, a reply a
  timeout from now), a cleared one awaits nothing with a time; each command has its request
  event and its attempt's message id, each child started its request and `child_id_for` id;
- a child saga that ends tells its parent once, answering the parent's request;
- each event in its place (tests/decider/event_invariants.py).
`check_deadline_row`: the deadline rows, as the orchestrator keeps them, one per step that
awaits something with a time, name what is awaited.
`check_history` looks at everything the saga emitted since it started:
- the events fold into the decider's state;
- one command per attempt: no (step, phase, attempt) and no message id twice;
- attempts count 1, 2, 3, ... and stay within the retry policy (fresh after a resume);
- compensation undoes exactly the steps with a compensation that took effect (a remote
  action that timed out counts; a group member that answers or times out while its group is
  compensated too, `CompensationAdded` right after), latest first, one at a time, never
  after the pivot succeeded;
- every signal received ends kept, consumed (once) or ignored: exactly one of them;
- a saga completes only when every step (every member of every group) succeeded.
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
    ChildSaga,
    CompensateRequest,
    Deadline,
    DeadlineDue,
    Decision,
    RemoteStep,
    Reply,
    Saga,
    SagaState,
    SendCommand,
    Signal,
    StepKind,
    StepRefused,
    child_id_for,
    command_id,
    fold,
    saga_event_registry,
)
from saga._state import Awaiting
from tests.decider.event_invariants import check_events

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
    """The reply answers the attempt the saga awaits: a remote step's refusal or reply of the
    expected type, or the end of a child step's child (any end while it acts; compensated when
    asked to undo itself)."""
    waiting = state.waiting_on(reply.step) if reply.step is not None else None
    if state.terminal or waiting is None or waiting.kind != "reply":
        return False
    if (reply.phase, reply.attempt) != (waiting.phase, waiting.attempt):
        return False
    step = saga.step(waiting.step)
    if issubclass(step, ChildSaga):
        ended = reply.message
        return (
            isinstance(ended, ChildEnded)
            and ended.child_id == state.children.get(step.name)
            and (waiting.phase == "action" or ended.outcome == "compensated")
        )
    expected = step.expected_reply(waiting.phase) if issubclass(step, RemoteStep) else None
    return issubclass(step, RemoteStep) and (
        isinstance(reply.message, StepRefused)
        or (expected is not None and isinstance(reply.message, expected))
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
    saga: type[Saga[Any]],
    before: SagaState,
    given: object,
    decision: Decision,
    now: datetime,
    merged: bool = False,
) -> None:
    """`merged`: the decision on `given` followed by those on local steps' results (each of
    them checked on its own before, event by event)."""
    _deadline_is_the_awaited_one(saga, decision, now)
    _each_command_is_requested_once(decision)
    _each_child_is_requested_once(decision)
    _a_child_that_ends_tells_its_parent(before, given, decision)
    if not merged:
        check_events(saga, before, given, decision, now)
    if isinstance(given, Reply) and not awaits_this_reply(saga, before, given):
        what = f"a reply that is not awaited ({given.step}/{given.phase} #{given.attempt})"
        _only_ignored(before, decision, f"{what}, awaiting {before.waiting}")
    if isinstance(given, DeadlineDue) and not awaits_this_deadline(before, given):
        assert decision == Decision(before), f"a stale deadline {given} changed the saga: {decision}"
    if isinstance(given, Signal) and before.status not in ("running", "failed"):
        _only_ignored(before, decision, f"a signal to a {before.status} saga", _SIGNAL_KEPT)
    if before.terminal and not (isinstance(given, CompensateRequest) and before.parent is not None):
        _only_ignored(before, decision, f"an input {type(given).__name__} to a {before.status} saga")
        assert decision.state.signals == before.signals, f"a {before.status} saga kept a signal"


_IGNORED = {"saga.reply_ignored", "saga.signal_received", "saga.signal_ignored"}
_SIGNAL_KEPT = {"saga.signal_received", "saga.signal_ignored"}


def _only_ignored(before: SagaState, decision: Decision, what: str, may: set[str] = _IGNORED) -> None:
    """Nothing moves: the input is recorded as ignored (a signal as received, then kept or
    ignored); no command, no deadline, no other change."""
    kinds = names(decision.events)
    assert set(kinds) <= may, f"{what} emitted {kinds}"
    assert not decision.commands, f"{what} sent {decision.commands}"
    assert not decision.children, f"{what} started {decision.children}"
    assert decision.local is None, f"{what} asked to run {decision.local}"
    assert not decision.deadlines, f"{what} set deadlines {decision.deadlines}"
    assert not decision.cleared, f"{what} cleared deadlines {decision.cleared}"
    kept = decision.state.signals
    assert unchanged_but_version(
        before, decision.state.model_copy(update={"signals": before.signals}), len(kinds)
    ), f"{what} changed the state:\n{before}\n{decision.state}"
    assert kept[: len(before.signals)] == before.signals, f"{what} dropped kept signals"


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


def _each_child_is_requested_once(decision: Decision) -> None:
    requested = {
        (e.step, e.fields["attempt"], e.fields["child_id"])
        for e in map(stored, decision.events)
        if e.type == "saga.step_requested" and e.fields["child_id"] is not None
    }
    started = {(c.step, c.attempt, c.child_id) for c in decision.children}
    assert started == requested, f"children {sorted(started)} but requests {sorted(requested)}"
    for c in decision.children:
        assert c.child_id == child_id_for(decision.state.saga_id, c.step, c.attempt), c
        assert (c.parent.saga_id, c.parent.step, c.parent.phase, c.parent.attempt) == (
            decision.state.saga_id,
            c.step,
            "action",
            c.attempt,
        ), c


def _a_child_that_ends_tells_its_parent(before: SagaState, given: object, decision: Decision) -> None:
    """A child saga that completes or is compensated (or is asked to undo itself once it was)
    tells its parent, once, on the parent's reply topic, answering the parent's request."""
    after, parent = decision.state, decision.state.parent
    told = [c for c in decision.commands if _to_parent(c)]
    ends = after.terminal and (after.status != before.status or isinstance(given, CompensateRequest))
    if parent is None or not ends:
        assert not told, f"told the parent {told} while {before.status} -> {after.status}"
        return
    [command] = told
    assert isinstance(command.message, ChildEnded)
    assert command.message.outcome == after.status, f"a {after.status} child told {command.message.outcome}"
    assert (command.to_saga, command.saga_id) == (parent.saga_type, parent.saga_id), command
    assert (command.step, command.phase, command.attempt) == (parent.step, parent.phase, parent.attempt), (
        command
    )


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
    _signals_end_once(history, state)
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


@dataclass
class _Undoing:
    """What compensation has left to undo (next first) and the step being undone now."""

    left: list[str]
    current: str | None = None


def _compensations_undo_what_took_effect(saga: type[Saga[Any]], history: Sequence[Stored]) -> None:
    """Compensation undoes exactly the steps with a compensation that took effect, latest
    first, one at a time; a group member that takes effect while compensating (it answered or
    timed out late) is undone next (`CompensationAdded` right after it); nothing is
    compensated once the pivot succeeded."""
    took_effect: list[str] = []
    pivot_succeeded = False
    plan: _Undoing | None = None
    undone: list[str] = []
    late: str | None = None  # took effect while compensating: CompensationAdded must follow
    for event in history:
        if late is not None:
            assert (event.type, event.fields.get("step")) == ("saga.compensation_added", late), (
                f"{late} took effect while compensating, then {event.type}, not its compensation_added"
            )
            assert plan is not None
            plan.left = [late, *(s for s in plan.left if s != late)]
            late = None
        elif _took_effect(event):
            step = saga.step(event.step)
            pivot_succeeded |= step.kind is StepKind.PIVOT and event.type == "saga.step_succeeded"
            if not step.has_compensation():
                continue
            assert event.step not in undone, f"{event.step} took effect after it was undone"
            if event.step not in took_effect:
                took_effect.append(event.step)
            if plan is not None:
                late = event.step
        elif event.type == "saga.compensation_started":
            assert not pivot_succeeded, "compensation began after the pivot succeeded"
            assert plan is None, "compensation began twice"
            plan = _Undoing(list(event.fields["steps"]))
            expected = took_effect[::-1]
            assert plan.left == expected, (
                f"compensating {plan.left}; what took effect, latest first: {expected}"
            )
        elif event.type == "saga.compensation_added":
            raise AssertionError(f"{event.step} added to compensate, yet it did not just take effect")
        elif _about_a_compensation(event):
            _one_compensation(event, plan, pivot_succeeded, undone)
        elif event.type == "saga.compensated":
            assert plan is not None, "compensated without compensating"
            assert not plan.left, f"compensated, yet {plan.left} are left to undo"
            assert sorted(undone) == sorted(took_effect), (
                f"compensated after undoing {undone}; these took effect: {took_effect}"
            )
    assert late is None, f"{late} took effect while compensating: it is not undone"


def _one_compensation(event: Stored, plan: _Undoing | None, pivot_succeeded: bool, undone: list[str]) -> None:
    what = f"{event.type} for {event.step}"
    assert not pivot_succeeded, f"{what} after the pivot succeeded"
    assert plan is not None, f"{what} before compensation began"
    if plan.current is None:
        assert plan.left, f"{what}: everything was undone already"
        assert event.step == plan.left[0], f"{what} while {plan.left[0]} is next to undo"
        plan.current = event.step
    assert event.step == plan.current, f"{what} while {plan.current} is being undone"
    if event.type == "saga.step_compensated":
        undone.append(event.step)
        plan.left.remove(event.step)
        plan.current = None
    elif event.type == "saga.compensation_failed":
        plan.current = None  # it stays next to undo, after an operator's resume


def _signals_end_once(history: Sequence[Stored], state: SagaState) -> None:
    """Every signal received ends kept, consumed (by one wait, once) or ignored: one of them."""
    received: list[str] = []
    ended: Counter[str] = Counter()
    for event in history:
        if event.type == "saga.signal_received":
            received.append(event.fields["message_id"])
        elif event.type in ("saga.signal_consumed", "saga.signal_ignored"):
            message_id = event.fields["message_id"]
            assert message_id in received, f"{event.type} {message_id} before it was received"
            ended[message_id] += 1
    kept = Counter(k.message_id for k in state.signals)
    for message_id in received:
        n = ended[message_id] + kept[message_id]
        assert n == 1, (
            f"signal {message_id}: consumed or ignored {ended[message_id]}x, kept {kept[message_id]}x"
        )


def _completes_only_when_every_step_succeeded(saga: type[Saga[Any]], history: Sequence[Stored]) -> None:
    succeeded = set()
    for event in history:
        if event.type == "saga.step_succeeded":
            succeeded.add(event.step)
        elif event.type == "saga.completed":
            missing = [s.name for s in saga.all_steps() if s.name not in succeeded]
            assert not missing, f"completed, yet these steps never succeeded: {missing}"
