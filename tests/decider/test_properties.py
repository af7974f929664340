"""Properties of the decider: random valid definitions (steps local and remote, parallel
groups, waits for signals, timers, child sagas; tests/decider/definitions.py), random input
sequences, every invariant (tests/decider/invariants.py) checked after every input.

Examples (the `ci` profile, see conftest.py): 600 for the first property, 300 for each of
the other two (and for the parking property), the same on every run; the whole of
tests/decider takes well under a minute. HYPOTHESIS_PROFILE=deep runs 5,000 a property.

Mutations of the saga language tried to see these fail (never committed), and what caught
each (the first property and tests/decider/test_language.py):
- compensate earlier steps while a member of the group is in flight (`may_undo_now` always
  true): "s0 undone while ['s1b'] are in flight" (all four properties).
- a signal taken twice (the fold keeps a consumed signal, so the next wait of its type takes
  it again): "signal signal-1: consumed or ignored 1x, kept 1x".
- a member that answers while its group is compensated not undone (no `CompensationAdded`):
  "s0b took effect while compensating: it is not undone".
- a signal for a wait the saga has not reached yet ignored (only a waiting wait takes it):
  "test.Sig1 kept for ['s0']; the waits ahead: ['s0', 's1']".
- a timer that succeeds when set: "the timer s0 succeeded at ... due at ...".
- a child step that succeeds on its child's compensation: "s0: completed on a child that
  compensated".
- waits and timers of a group being compensated not cancelled: "['s1b'] still wait while
  their group is compensated" (before that invariant, no property saw it: the saga still
  ended compensated, only later; the example test did).
Bugs these found in the decider (fixed, each with an example test in test_language.py): a
signal moved a saga whose definition lacks a step it needs (it ran a renamed step again);
a failed saga dropped a signal for a wait ahead; a member that answered while a sibling's
undo had failed for good was never undone; a resumed failed saga skipped a member that
timed out after the failure and completed without it.

Mutations tried before the saga language, and what caught each (all three properties unless
said):
- compensate in forward order: "compensating ['s0', 's1']; what took effect, latest first".
- compensate the pivot (in the plan when it took effect): NotImplementedError, the remote
  pivot's missing compensation called (only a remote pivot can take effect without success).
- compensate after the pivot (a retriable step that fails for good): "compensation began
  after the pivot succeeded".
- a pivot's timeout compensates instead of failing: the same (first and second).
- a stale-attempt reply not ignored (attempt not compared): "a reply that is not awaited ...
  emitted ['saga.step_failed', ...]" (first property).
- a reply of another type than the step expects taken for success: the same (first).
- a duplicate reply re-sends the awaited command: "commands [...] but requests []" (first).
- an event not folded into the state (StepTimedOut): "the events fold into ... but the
  decider said".
- a timed-out action not counted as done (in the fold): "compensating []; what took effect,
  latest first: ['s0']".
- one retry more than the policy allows: "s0/action: try 2 of 1".
- the deadline not renewed when only the attempt or phase changes: "deadline None, but the
  state awaits ..." and the deadline row names another attempt than the one awaited.
- a reply deadline without the timeout added: "deadline ..., but the state awaits ...".
- resume of a completed saga sends its last step: "an input Resume to a completed saga
  emitted [...]" (first and third).
- resume of a failed saga goes on past the step that stopped it (the first bug these found
  in saga._decide, now fixed): "completed, yet these steps never succeeded".
- resume while a retry waits skips that attempt (the second, fixed): "('s1', 'action')
  attempt 3 after 1" (first property).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from saga import Resume, Saga
from tests.decider.definitions import sagas
from tests.decider.driver import (
    PARENT,
    STOPPED,
    Run,
    awaited_input,
    drawn_local,
    local_succeeds,
    noisy_input,
    tick,
)
from tests.decider.invariants import names

pytestmark = pytest.mark.pure

# Enough for every step to use up its retry budgets (1..3) in both directions, twice resumed.
MAX_INPUTS = 300


@settings(max_examples=2 * settings().max_examples)
@given(saga=sagas(), data=st.data())
def test_any_input_sequence_keeps_every_invariant(saga: type[Saga[Any]], data: st.DataObject) -> None:
    """Awaited replies, child ends, signals and deadlines mixed with duplicates, late and
    stale-attempt replies, late child ends, replies for the wrong step or phase, signals of
    any type, stale deadlines, resumes, second starts; a saga without a pivot may run as a
    child saga, whose parent asks it to compensate at any time."""
    as_child = saga.pivot_index() is None and data.draw(st.booleans(), label="a child saga")
    run = Run(saga, parent=PARENT if as_child else None)
    run.start(drawn_local(data))
    for _ in range(data.draw(st.integers(1, 40), label="inputs")):
        tick(data, run)
        run.feed(noisy_input(data, run), drawn_local(data))
    event(f"ends {run.state.status}")


@given(saga=sagas(), data=st.data())
def test_answering_what_the_saga_awaits_brings_it_to_a_stop(
    saga: type[Saga[Any]], data: st.DataObject
) -> None:
    """No saga gets stuck: answered, it completes, compensates or stops for an operator, who
    can resume it; a resumed saga goes on at once."""
    run = Run(saga)
    run.start(drawn_local(data))
    resumes = 0
    for _ in range(MAX_INPUTS):
        if run.state.status in STOPPED:
            if run.state.terminal or resumes == 2 or not data.draw(st.booleans(), label="resume"):
                break
            resumes += 1
            resumed = run.feed(Resume("operator"), drawn_local(data))
            assert resumed is not None
            assert names(resumed.events)[0] == "saga.operator_resumed"
            assert len(resumed.events) > 1, "a resumed saga goes on at once"
            continue
        tick(data, run)
        given_ = awaited_input(data, run)
        assert given_ is not None, (
            f"a {run.state.status} saga awaits {run.state.awaiting}: nothing can move it"
        )
        run.feed(given_, drawn_local(data))
    assert run.state.status in STOPPED, f"still {run.state.status} after {MAX_INPUTS} inputs"
    event(f"ends {run.state.status} after {resumes} resume(s)")


@given(saga=sagas(), data=st.data())
def test_a_finished_saga_never_changes(saga: type[Saga[Any]], data: st.DataObject) -> None:
    """Every saga can be brought to completed or compensated; after that, whatever comes
    (noise, resumes) sends nothing and changes nothing."""
    run = Run(saga)
    run.start(drawn_local(data))
    _finish(run, data)
    final, sent = run.state, len(run.commands)
    for _ in range(data.draw(st.integers(1, 20), label="inputs after the end")):
        tick(data, run)
        run.feed(noisy_input(data, run), drawn_local(data))
    assert run.state == final.model_copy(update={"version": run.state.version})
    assert len(run.commands) == sent


def _finish(run: Run, data: st.DataObject) -> None:
    """Answer what the saga awaits and resume it when it stops, until it completes or is
    compensated; after two resumes every answer moves it forward (a success, a signal, a
    child's end, a retry or timer due)."""
    resumes = 0
    for _ in range(MAX_INPUTS):
        if run.state.terminal:
            return
        if run.state.status in STOPPED:
            resumes += 1
            run.feed(Resume("operator"), drawn_local(data))
            continue
        tick(data, run)
        if resumes < 2:
            run.feed(awaited_input(data, run), drawn_local(data))
        else:
            run.feed(run.answer(), local_succeeds)
    raise AssertionError(f"still {run.state.status} after {MAX_INPUTS} inputs")
