"""Drives the decider the way the orchestrator does, checking every invariant after every input.

`Run` keeps what a saga emitted, the commands it sent, the children it started, the replies
and signals it got and its deadline rows. The `*_input` functions draw the next input from a
Hypothesis data object: what the saga awaits (any waiting step's reply, a child's end, a
signal for a wait now or ahead, any deadline), or noise (duplicates, late and stale-attempt
replies, late ends of children, replies for the wrong step or phase, signals of any type,
stale deadlines, operator resumes). A fake clock moves forward between inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from hypothesis import strategies as st
from pydantic import BaseModel

from saga import (
    ChildEnded,
    ChildSaga,
    CompensateRequest,
    Deadline,
    DeadlineDue,
    Decision,
    LocalDone,
    LocalFailed,
    LocalStep,
    ParentRef,
    RemoteStep,
    Reply,
    Resume,
    RunLocal,
    Saga,
    SagaError,
    SagaState,
    SendCommand,
    Signal,
    Start,
    StartChild,
    Step,
    StepRefused,
    WaitStep,
    decide,
)
from saga._state import Awaiting
from tests.decider.definitions import (
    CHILD,
    CHILD_DATA,
    SIGNALS,
    Data,
    Done,
    Stray,
    reply_type,
    signal_type,
    with_step,
)
from tests.decider.invariants import check_deadline_row, check_decision, check_history

SAGA_ID = "saga-1"
PARENT = ParentRef(saga_id="parent-1", saga_type="Parent", step="fulfil", phase="action", attempt=1)
EPOCH = datetime(2030, 1, 1, tzinfo=UTC)
LocalAnswer = Callable[[SagaState, RunLocal], LocalDone | LocalFailed]
STOPPED = ("completed", "compensated", "failed", "compensation_failed")


def local_succeeds(state: SagaState, run: RunLocal) -> LocalDone:
    if run.phase == "compensation":
        return LocalDone(run.step, run.phase, run.attempt)
    data = with_step(Data.model_validate(state.data), run.step)
    return LocalDone(run.step, run.phase, run.attempt, data.model_dump(mode="json"))


def local_fails(state: SagaState, run: RunLocal) -> LocalFailed:
    return LocalFailed(run.step, run.phase, run.attempt, "local step refused")


@dataclass
class Run:
    saga: type[Saga[Any]]
    parent: ParentRef | None = None  # set: the run is a child saga of this parent's step
    now: datetime = EPOCH
    state: SagaState = field(default_factory=lambda: SagaState(saga_id=SAGA_ID))
    events: list[BaseModel] = field(default_factory=list)
    commands: list[SendCommand] = field(default_factory=list)
    children: list[StartChild] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
    signals: list[Signal] = field(default_factory=list)  # every signal sent, in order
    made_signals: int = 0
    requests: int = 0  # a parent's requests to compensate
    deadlines: list[Deadline] = field(default_factory=list)  # every deadline row ever set
    rows: dict[str, Deadline] = field(default_factory=dict)  # the saga's deadline rows, by step

    @property
    def row(self) -> Deadline | None:
        """The earliest of the saga's deadline rows."""
        return min(self.rows.values(), key=lambda d: d.due_at, default=None)

    def start(self, answer_local: LocalAnswer = local_succeeds) -> Decision:
        decision = self.feed(self.start_input(), answer_local)
        assert decision is not None
        return decision

    def start_input(self) -> Start:
        return Start(self.saga.name, Data().model_dump(mode="json"), parent=self.parent)

    def compensate_request(self) -> CompensateRequest:
        """The parent asks this child to undo itself (each time as a new attempt of its step)."""
        assert self.parent is not None
        self.requests += 1
        return CompensateRequest("the parent compensates", self.parent.step, "compensation", self.requests)

    def feed(self, given: Any, answer_local: LocalAnswer = local_succeeds) -> Decision | None:
        """Decide on `given` and on every local step it asks for, like the orchestrator; None
        when the decider refused a resume (only a finished saga may refuse one)."""
        if isinstance(given, Reply):
            self.replies.append(given)
        if isinstance(given, Signal):
            self.signals.append(given)
        before = self.state
        try:
            decision = self._decide(before, given)
        except SagaError:
            assert may_refuse(before, given), f"a {before.status} saga refused {given}"
            return None
        while decision.local is not None:
            result = answer_local(decision.state, decision.local)
            decision = decision.then(self._decide(decision.state, result))
        check_decision(self.saga, before, given, decision, self.now, merged=True)
        self.state = decision.state
        self.events += decision.events
        self.commands += decision.commands
        self.children += decision.children
        for step in decision.cleared:
            self.rows.pop(step, None)
        for deadline in decision.deadlines:
            self.rows[deadline.step] = deadline
            self.deadlines.append(deadline)
        check_deadline_row(self.saga, self.state, self.rows)
        check_history(self.saga, self.state, self.events, self.commands)
        return decision

    def _decide(self, state: SagaState, given: Any) -> Decision:
        decision = decide(self.saga, state, given, self.now)
        check_decision(self.saga, state, given, decision, self.now)
        return decision

    def awaited(self, kind: type[Step[Any]]) -> list[Awaiting]:
        """The replies the saga awaits from steps of this kind (several while a group is in flight)."""
        if self.state.terminal:
            return []
        return [
            w for w in self.state.waiting if w.kind == "reply" and issubclass(self.saga.step(w.step), kind)
        ]

    def awaited_commands(self) -> list[SendCommand]:
        """The commands whose replies the saga awaits."""
        keys = {(w.step, w.phase, w.attempt) for w in self.awaited(RemoteStep)}
        return [c for c in self.commands if (c.step, c.phase, c.attempt) in keys]

    def awaited_remote(self) -> SendCommand | None:
        """The first command whose reply the saga awaits, if it awaits one."""
        return next(iter(self.awaited_commands()), None)

    def child_ended(self, waiting: Awaiting, outcome: Literal["completed", "compensated"]) -> Reply:
        """The end of the child saga a child step awaits, as its parent gets it."""
        child = self.state.children[waiting.step]
        return child_end(child, outcome, waiting.step, waiting.phase, waiting.attempt)

    def signal(self, model: type[BaseModel]) -> Signal:
        """A new signal (its own message id) of this type."""
        self.made_signals += 1
        message = model(note=f"#{self.made_signals}")
        return Signal(signal_type(model), message, f"signal-{self.made_signals}")

    def taken_ahead(self) -> list[type[BaseModel]]:
        """The signal types some wait not passed yet takes (whether or not it waits already)."""
        if self.state.status != "running":
            return []
        done = set(self.state.done)
        waits = [s for s in self.saga.all_steps() if issubclass(s, WaitStep) and s.name not in done]
        return [m for m in SIGNALS if any(m in w.signals for w in waits)]

    def fire(self, deadline: Deadline) -> DeadlineDue:
        """The deadline loop's input for a deadline; the clock reaches it."""
        self.now = max(self.now, deadline.due_at)
        return DeadlineDue(deadline.step, deadline.phase, deadline.attempt, deadline.kind)

    def answer(self) -> Any:
        """An input that moves the saga forward: success for what it awaits first, a signal
        for a wait, or the deadline of a retry or a timer; None when it awaits nothing."""
        for waiting in self.state.waiting:
            step = self.saga.step(waiting.step)
            if waiting.kind != "reply":
                return self.fire(self.rows[waiting.step])
            if issubclass(step, WaitStep):
                return self.signal(step.signals[0])
            if issubclass(step, ChildSaga):
                return self.child_ended(waiting, "completed" if waiting.phase == "action" else "compensated")
            command = next(c for c in self.awaited_commands() if c.step == waiting.step)
            return success(command)
        return None


def may_refuse(state: SagaState, given: Any) -> bool:
    """Inputs the decider refuses with SagaError: a resume of a finished saga, a second
    start, the result of a local step that is not running."""
    if isinstance(given, Resume):
        return state.terminal
    if isinstance(given, Start):
        return state.version > 0
    if isinstance(given, LocalDone | LocalFailed):
        waiting = state.waiting_on(given.step)
        return waiting is None or (waiting.phase, waiting.attempt) != (given.phase, given.attempt)
    return False


def success(command: SendCommand) -> Reply:
    message = reply_type(command.phase)(step=command.step)
    return Reply(f"test.{type(message).__name__}", message, command.step, command.phase, command.attempt)


def wrong_type(command: SendCommand) -> Reply:
    """A reply to the command, but not of the type its step expects for that phase."""
    other = reply_type("compensation" if command.phase == "action" else "action")
    message = other(step=command.step)
    return Reply(f"test.{other.__name__}", message, command.step, command.phase, command.attempt)


def refusal(command: SendCommand) -> Reply:
    refused = StepRefused(reason=f"{command.step} refused")
    return Reply("saga.step_refused", refused, command.step, command.phase, command.attempt)


# --- drawing inputs ----------------------------------------------------------------------


def drawn_local(data: st.DataObject) -> LocalAnswer:
    """A local step that succeeds, or fails one time in three."""

    def answer(state: SagaState, run: RunLocal) -> LocalDone | LocalFailed:
        fails = data.draw(st.integers(0, 2), label=f"local {run.step}/{run.phase} fails") == 0
        return local_fails(state, run) if fails else local_succeeds(state, run)

    return answer


def tick(data: st.DataObject, run: Run) -> None:
    run.now += timedelta(seconds=data.draw(st.integers(0, 10), label="seconds pass"))


def awaited_input(data: st.DataObject, run: Run) -> Any:
    """What the saga awaits: any waiting step's reply (success or refusal), a child's end, a
    signal for a wait (one that waits, or one ahead: kept until the saga gets there), any of
    its deadlines; None when nothing."""
    makers: list[tuple[str, Callable[[], Any]]] = []
    for command in run.awaited_commands():
        makers += [(f"success {command.step}", _bind(success, command))]
        makers += [(f"refusal {command.step}", _bind(refusal, command))]
    for waiting in run.awaited(ChildSaga):
        outcomes: list[Literal["completed", "compensated"]] = ["compensated"]
        if waiting.phase == "action":
            outcomes.append("completed")
        for outcome in outcomes:
            makers.append((f"child of {waiting.step} {outcome}", _bind(run.child_ended, waiting, outcome)))
    for model in run.taken_ahead():
        makers.append((f"signal {model.__name__}", _bind(run.signal, model)))
    for deadline in run.rows.values():
        makers.append((f"deadline {deadline.step} {deadline.kind}", _bind(run.fire, deadline)))
    if not makers:
        return None
    _, make = data.draw(st.sampled_from(makers), label="awaited")
    return make()


def _bind(f: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    return lambda: f(*args)


def noisy_input(data: st.DataObject, run: Run) -> Any:
    """Any input at all, what the saga awaits among them."""
    makers: dict[str, Callable[[], Any]] = {}
    awaited = run.awaited_commands()
    makers["awaited"] = lambda: awaited_input(data, run) or Resume("operator")
    if awaited:
        makers["wrong type"] = lambda: wrong_type(data.draw(st.sampled_from(awaited), label="wrong type to"))
    if run.replies:
        makers["duplicate"] = lambda: data.draw(st.sampled_from(run.replies), label="duplicate")
    if run.commands:
        makers["late"] = lambda: _late_reply(data, run)
    if run.children:
        makers["late child end"] = lambda: _late_child_end(data, run)
    if run.deadlines:
        makers["stale deadline"] = lambda: run.fire(data.draw(st.sampled_from(run.deadlines)))
    any_type: list[type[BaseModel]] = [*SIGNALS, Stray]
    makers["any signal"] = lambda: run.signal(data.draw(st.sampled_from(any_type), label="signal"))
    makers["wrong"] = lambda: _wrong_reply(data, run)
    makers["random deadline"] = lambda: _random_deadline(data, run)
    makers["resume"] = lambda: Resume("operator")
    makers["start again"] = run.start_input
    if run.parent is not None:
        makers["parent asks to compensate"] = run.compensate_request
    if any(issubclass(s, LocalStep) for s in run.saga.all_steps()):
        makers["stray local result"] = lambda: _stray_local_result(data, run)
    choice = data.draw(st.sampled_from(list(makers)), label="input")
    return makers[choice]()


def child_end(
    child: str,
    outcome: Literal["completed", "compensated"],
    step: str | None,
    phase: str | None,
    attempt: int | None,
) -> Reply:
    data = CHILD_DATA if outcome == "completed" else Data().model_dump(mode="json")
    reason = "c0 refused" if outcome == "compensated" else None
    ended = ChildEnded(child_id=child, saga_type=CHILD.name, outcome=outcome, data=data, reason=reason)
    return Reply("saga.child_ended", ended, step, phase, attempt)


def _late_child_end(data: st.DataObject, run: Run) -> Reply:
    """A child's end for any child started so far, answering any of its parent's requests;
    or the end of a saga that is no child of this one."""
    start = data.draw(st.sampled_from(run.children), label="late end of")
    outcome = data.draw(st.sampled_from(_OUTCOMES), label="outcome")
    phase = data.draw(st.sampled_from(_PHASES), label="phase")
    child = start.child_id if data.draw(st.booleans(), label="its child") else "not-a-child"
    return child_end(child, outcome, start.step, phase, start.attempt)


def _late_reply(data: st.DataObject, run: Run) -> Reply:
    """A reply to any command sent so far: a late one, or one to an earlier attempt."""
    command = data.draw(st.sampled_from(run.commands), label="late reply to")
    return data.draw(st.sampled_from([success, refusal, wrong_type]))(command)


def _wrong_reply(data: st.DataObject, run: Run) -> Reply:
    steps = [s.name for s in run.saga.all_steps()]
    step = data.draw(st.sampled_from([*steps, "no_such_step", None]), label="step")
    phase = data.draw(st.sampled_from(["action", "compensation", "sideways", None]), label="phase")
    attempt = data.draw(st.none() | st.integers(0, 4), label="attempt")
    return Reply("test.done", Done(step=str(step)), step, phase, attempt)


def _stray_local_result(data: st.DataObject, run: Run) -> LocalDone | LocalFailed:
    """A local step's result when none runs (the orchestrator never sends one, nor one for a
    step that is not local)."""
    local = [s.name for s in run.saga.all_steps() if issubclass(s, LocalStep)]
    step = data.draw(st.sampled_from(local), label="step")
    phase = data.draw(st.sampled_from(_PHASES), label="phase")
    asked = RunLocal(step, phase, data.draw(st.integers(1, 4), label="attempt"))
    if data.draw(st.booleans(), label="stray result fails"):
        return local_fails(run.state, asked)
    return local_succeeds(run.state, asked)


_PHASES: list[Literal["action", "compensation"]] = ["action", "compensation"]
_OUTCOMES: list[Literal["completed", "compensated"]] = ["completed", "compensated"]
_KINDS: list[Literal["reply", "retry", "timer"]] = ["reply", "retry", "timer"]


def _random_deadline(data: st.DataObject, run: Run) -> DeadlineDue:
    step = data.draw(st.sampled_from([s.name for s in run.saga.all_steps()]), label="step")
    phase = data.draw(st.sampled_from(_PHASES), label="phase")
    kind = data.draw(st.sampled_from(_KINDS), label="kind")
    return DeadlineDue(step, phase, data.draw(st.integers(1, 4), label="attempt"), kind)
