"""Drives the decider the way the orchestrator does, checking every invariant after every input.

`Run` keeps what a saga emitted, the commands it sent, the replies it got and its deadline row.
The `*_input` functions draw the next input from a Hypothesis data object: what the saga
awaits, or noise (duplicates, late and stale-attempt replies, replies for the wrong step or
phase, stale deadlines, operator resumes). A fake clock moves forward between inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from hypothesis import strategies as st
from pydantic import BaseModel

from saga import (
    Deadline,
    DeadlineDue,
    Decision,
    LocalDone,
    LocalFailed,
    RemoteStep,
    Reply,
    Resume,
    RunLocal,
    Saga,
    SagaError,
    SagaState,
    SendCommand,
    Start,
    StepRefused,
    decide,
)
from tests.decider.definitions import Data, Done, reply_type, with_step
from tests.decider.invariants import check_deadline_row, check_decision, check_history

SAGA_ID = "saga-1"
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
    now: datetime = EPOCH
    state: SagaState = field(default_factory=lambda: SagaState(saga_id=SAGA_ID))
    events: list[BaseModel] = field(default_factory=list)
    commands: list[SendCommand] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
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
        return Start(self.saga.name, Data().model_dump(mode="json"))

    def feed(self, given: Any, answer_local: LocalAnswer = local_succeeds) -> Decision | None:
        """Decide on `given` and on every local step it asks for, like the orchestrator; None
        when the decider refused a resume (only a finished saga may refuse one)."""
        if isinstance(given, Reply):
            self.replies.append(given)
        before = self.state
        try:
            decision = self._decide(before, given)
        except SagaError:
            assert may_refuse(before, given), f"a {before.status} saga refused {given}"
            return None
        while decision.local is not None:
            result = answer_local(decision.state, decision.local)
            decision = decision.then(self._decide(decision.state, result))
        check_decision(self.saga, before, given, decision, self.now)
        self.state = decision.state
        self.events += decision.events
        self.commands += decision.commands
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

    def awaited_remote(self) -> SendCommand | None:
        """The command whose reply the saga awaits, if it awaits one."""
        waiting = self.state.awaiting
        if self.state.terminal or waiting is None or waiting.kind != "reply":
            return None
        if not issubclass(self.saga.step(waiting.step), RemoteStep):
            return None
        key = (waiting.step, waiting.phase, waiting.attempt)
        return next((c for c in self.commands if (c.step, c.phase, c.attempt) == key), None)

    def fire(self, deadline: Deadline) -> DeadlineDue:
        """The deadline loop's input for a deadline; the clock reaches it."""
        self.now = max(self.now, deadline.due_at)
        return DeadlineDue(deadline.step, deadline.phase, deadline.attempt, deadline.kind)


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
    """What the saga awaits: a reply (success or refusal) or its deadline; None when nothing."""
    command = run.awaited_remote()
    options: list[str] = []
    if command is not None:
        options += ["success", "refusal"]
    if run.row is not None:
        options.append("deadline")
    if not options:
        return None
    choice = data.draw(st.sampled_from(options), label="awaited")
    if choice == "deadline":
        assert run.row is not None
        return run.fire(run.row)
    assert command is not None
    return success(command) if choice == "success" else refusal(command)


def noisy_input(data: st.DataObject, run: Run) -> Any:
    """Any input at all, what the saga awaits among them."""
    makers: dict[str, Callable[[], Any]] = {}
    awaited = run.awaited_remote()
    if awaited is not None or run.row is not None:
        makers["awaited"] = lambda: awaited_input(data, run)
    if awaited is not None:
        makers["wrong type"] = lambda: wrong_type(awaited)
    if run.replies:
        makers["duplicate"] = lambda: data.draw(st.sampled_from(run.replies), label="duplicate")
    if run.commands:
        makers["late"] = lambda: _late_reply(data, run)
    if run.deadlines:
        makers["stale deadline"] = lambda: run.fire(data.draw(st.sampled_from(run.deadlines)))
    makers["wrong"] = lambda: _wrong_reply(data, run)
    makers["random deadline"] = lambda: _random_deadline(data, run)
    makers["resume"] = lambda: Resume("operator")
    makers["start again"] = run.start_input
    makers["stray local result"] = lambda: _stray_local_result(data, run)
    choice = data.draw(st.sampled_from(list(makers)), label="input")
    return makers[choice]()


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
    """A local step's result when none runs (the orchestrator never sends one)."""
    due = _random_deadline(data, run)
    asked = RunLocal(due.step, due.phase, due.attempt)
    if data.draw(st.booleans(), label="stray result fails"):
        return local_fails(run.state, asked)
    return local_succeeds(run.state, asked)


_PHASES: list[Literal["action", "compensation"]] = ["action", "compensation"]
_KINDS: list[Literal["reply", "retry"]] = ["reply", "retry"]


def _random_deadline(data: st.DataObject, run: Run) -> DeadlineDue:
    step = data.draw(st.sampled_from([s.name for s in run.saga.all_steps()]), label="step")
    phase = data.draw(st.sampled_from(_PHASES), label="phase")
    kind = data.draw(st.sampled_from(_KINDS), label="kind")
    return DeadlineDue(step, phase, data.draw(st.integers(1, 4), label="attempt"), kind)
