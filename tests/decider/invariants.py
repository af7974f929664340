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
from collections.abc import Callable, Sequence
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
    LocalDone,
    RemoteStep,
    Reply,
    Saga,
    SagaState,
    SendCommand,
    Signal,
    StepKind,
    StepRefused,
    TimerStep,
    WaitStep,
    child_id_for,
    command_id,
    fold,
    saga_event_registry,
)
from saga._events import (
    SignalConsumed,
    SignalIgnored,
    SignalReceived,
    StepFailed,
    StepRequested,
    StepSucceeded,
    WaitCancelled,
)
from saga._state import Awaiting, apply

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
        _each_event_in_its_place(saga, before, given, decision, now)
    if isinstance(given, Reply) and not awaits_this_reply(saga, before, given):
        what = f"a reply that is not awaited ({given.step}/{given.phase} #{given.attempt})"
        _only_ignored(before, decision, f"{what}, awaiting {before.waiting}")
    if isinstance(given, DeadlineDue) and not awaits_this_deadline(before, given):
        assert decision == Decision(before), f"a stale deadline {given} changed the saga: {decision}"
    if isinstance(given, Signal) and before.status != "running":
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


# --- each event, on the state it met -----------------------------------------------------


@dataclass(frozen=True)
class _At:
    """Where an event of a decision stands: the state it met, the input, its neighbours."""

    saga: type[Saga[Any]]
    state: SagaState
    given: object
    now: datetime
    previous: BaseModel | None
    following: BaseModel | None


def _each_event_in_its_place(
    saga: type[Saga[Any]], before: SagaState, given: object, decision: Decision, now: datetime
) -> None:
    state, events = before, decision.events
    for i, event in enumerate(events):
        check = _IN_PLACE.get(type(event))
        if check is not None:
            previous = events[i - 1] if i else None
            following = events[i + 1] if i + 1 < len(events) else None
            check(_At(saga, state, given, now, previous, following), event)
        state = apply(state, event)
    if state.status == "compensating":
        stay = [w.step for w in state.waiting if issubclass(saga.step(w.step), WaitStep | TimerStep)]
        assert not stay, f"{stay} still wait while their group is compensated"
    if state.status == "running":
        for waiting in state.waiting:
            kept = [k.message_id for k in state.signals if waiting.step in k.takers]
            assert not kept, f"{waiting.step} waits while the signals it takes are kept: {kept}"


def _compensation_requested(at: _At, e: StepRequested) -> None:
    """Undone one at a time; earlier steps only once no member of a group is in flight."""
    if e.phase != "compensation":
        return
    assert at.state.status == "compensating", f"{e.step} undone while {at.state.status}"
    others = [w.step for w in at.state.waiting if w.phase == "compensation" and w.step != e.step]
    assert not others, f"{e.step} undone while {others} are being undone"
    node = at.saga.step_index(e.step)
    in_flight = [
        w.step for w in at.state.waiting if w.phase == "action" and at.saga.step_index(w.step) != node
    ]
    assert not in_flight, f"{e.step} undone while {in_flight} are in flight"


def _succeeded_for_a_cause(at: _At, e: StepSucceeded) -> None:
    """A step succeeds on what it waits for: a wait on the signal it took, a timer when due,
    a child step on its child's completion, a remote step on its reply, a local step when run."""
    step, given = at.saga.step(e.step), at.given
    waiting = at.state.waiting_on(e.step)
    assert waiting is not None, f"{e.step} succeeded, awaiting nothing"
    assert waiting.phase == "action", f"{e.step} succeeded awaiting {waiting}"
    if issubclass(step, WaitStep):
        consumed = isinstance(at.previous, SignalConsumed) and at.previous.step == e.step
        assert consumed, f"the wait {e.step} succeeded without a signal (after {at.previous})"
    elif issubclass(step, TimerStep):
        # Its deadline row fired (the deadline loop fires a row once due), or it was due when set.
        due = waiting.due_at if waiting.kind == "timer" else None
        assert due is not None, f"the timer {e.step} succeeded awaiting {waiting}"
        fired = isinstance(given, DeadlineDue) and (given.step, given.kind, given.attempt) == (
            e.step,
            "timer",
            waiting.attempt,
        )
        assert fired or due <= at.now, f"the timer {e.step} succeeded at {at.now} on {given}, due at {due}"
    elif issubclass(step, ChildSaga):
        _child_ended(at, e.step, "completed")
    elif issubclass(step, RemoteStep):
        assert isinstance(given, Reply), f"{e.step} succeeded on {given}"
        assert given.step == e.step, f"{e.step} succeeded on a reply to {given.step}"
        assert not isinstance(given.message, StepRefused), f"{e.step} succeeded on a refusal"
    else:
        assert isinstance(given, LocalDone), f"{e.step} succeeded on {given}"
        assert given.step == e.step, f"{e.step} succeeded on the result of {given.step}"


def _failed_for_a_cause(at: _At, e: StepFailed) -> None:
    """A wait fails only when its time is up; a child step only when its child was compensated."""
    step, given = at.saga.step(e.step), at.given
    if e.phase != "action":
        return
    if issubclass(step, WaitStep):
        assert isinstance(given, DeadlineDue), f"the wait {e.step} failed on {given}"
        assert (given.step, given.kind) == (e.step, "reply"), f"the wait {e.step} failed on {given}"
    elif issubclass(step, ChildSaga):
        _child_ended(at, e.step, "compensated")


def _child_ended(at: _At, step: str, outcome: str) -> None:
    """The input is the end, with this outcome, of the child saga this step started."""
    ended = at.given.message if isinstance(at.given, Reply) else None
    assert isinstance(ended, ChildEnded), f"{step}: {outcome} on {at.given}"
    assert ended.outcome == outcome, f"{step}: {outcome} on a child that {ended.outcome}"
    assert ended.child_id == at.state.children[step], f"{step}: {outcome} on another saga's end"


def _ahead(saga: type[Saga[Any]], state: SagaState, model: str) -> list[str]:
    """The waits not passed yet that take a signal of this model."""
    done = set(state.done)
    return [
        s.name
        for s in saga.all_steps()
        if issubclass(s, WaitStep) and s.name not in done and model in (m.__name__ for m in s.signals)
    ]


def _received(at: _At, e: SignalReceived) -> None:
    given = at.given
    assert isinstance(given, Signal), f"{e} on {given}"
    assert given.message_id == e.message_id, f"{e} on {given}"
    ahead = _ahead(at.saga, at.state, type(given.message).__name__)
    assert set(e.takers) <= set(ahead), f"{e.message_type} kept for {e.takers}; the waits ahead: {ahead}"
    if at.state.status == "running":
        assert e.takers == ahead, f"{e.message_type} kept for {e.takers}; the waits ahead: {ahead}"


def _consumed(at: _At, e: SignalConsumed) -> None:
    """Taken by a wait that waits now and names its type, the oldest kept for it first."""
    step = at.saga.step(e.step)
    waiting = at.state.waiting_on(e.step)
    assert issubclass(step, WaitStep), f"{e.step} is no wait, yet took {e.message_type}"
    # A wait between two attempts (its retry scheduled) takes a signal at once, too.
    assert waiting is not None, f"{e.step} took {e.message_type} but does not wait"
    assert waiting.phase == "action", f"{e.step} took {e.message_type} awaiting {waiting}"
    kept = [k for k in at.state.signals if e.step in k.takers]
    assert kept, f"{e.step} took {e.message_id}, kept for no wait of its"
    assert kept[0].message_id == e.message_id, f"{e.step} took {e.message_id}, not the oldest kept {kept[0]}"
    assert kept[0].model in (m.__name__ for m in step.signals), f"{e.step} took a {kept[0].model}"
    following = at.following
    assert isinstance(following, StepSucceeded), f"{e.step} took it, then {following}"
    assert following.step == e.step, f"{e.step} took it, then {following}"


def _signal_ignored(at: _At, e: SignalIgnored) -> None:
    """Ignored only when no wait still ahead would take it (or the saga goes backward, or ended)."""
    kept = next((k for k in at.state.signals if k.message_id == e.message_id), None)
    assert kept is not None, f"{e.message_id} ignored but never received (or already gone)"
    if at.state.status in ("running", "failed"):
        ahead = _ahead(at.saga, at.state, kept.model)
        assert not ahead, f"{e.message_type} ignored while {ahead} would take it ({at.state.status})"


def _wait_cancelled(at: _At, e: WaitCancelled) -> None:
    step = at.saga.step(e.step)
    assert issubclass(step, WaitStep | TimerStep), f"{e.step} is no wait or timer, yet cancelled"
    assert at.state.status == "compensating", f"{e.step} cancelled while {at.state.status}"


_IN_PLACE: dict[type[BaseModel], Callable[[_At, Any], None]] = {
    StepRequested: _compensation_requested,
    StepSucceeded: _succeeded_for_a_cause,
    StepFailed: _failed_for_a_cause,
    SignalReceived: _received,
    SignalConsumed: _consumed,
    SignalIgnored: _signal_ignored,
    WaitCancelled: _wait_cancelled,
}


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
