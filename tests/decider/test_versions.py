"""Issue 15 items 2 and 5, the decider and the fold alone: a saga records the version and
fingerprint it started on and is decided by that version's steps; a worker without that
version parks it once and keeps what comes for it; taken up (or migrated), it goes on as it
was. On the Transfer saga of tests/saga/versions_app (its definitions: test_version_definitions).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from saga import (
    CompensateRequest,
    DeadlineDue,
    Decision,
    Migrate,
    Reply,
    Resume,
    Saga,
    SagaError,
    SagaState,
    Signal,
    Start,
    decide,
)
from saga._events import InputDeferred, SagaParked
from saga._migrate import plan_migration
from saga._parking import absent_reason, park_for_version, revived
from saga._versions import Versions
from tests.saga.versions_app import (
    Credited,
    Debited,
    Held,
    TransferData,
    TransferV1,
    TransferV2,
)

pytestmark = pytest.mark.pure
NOW = datetime(2030, 1, 1, tzinfo=UTC)
DATA = TransferData(transfer_id="t-1", amount=10, account="acc-1")
REPLY_TYPES: dict[type[BaseModel], str] = {
    Debited: "ledger.debited",
    Held: "risk.held",
    Credited: "payee.credited",
}
SUCCESS: dict[str, BaseModel] = {
    "debit": Debited(transfer_id="t-1"),
    "hold": Held(transfer_id="t-1"),
    "risk_hold": Held(transfer_id="t-1"),
    "credit": Credited(transfer_id="t-1"),
}


def started(saga: type[Saga[Any]], saga_id: str = "s-1") -> SagaState:
    decision = decide(saga, SagaState(saga_id=saga_id), Start(saga.name, DATA.model_dump(mode="json")), NOW)
    return decision.state


def answer(state: SagaState, message: BaseModel) -> Reply:
    """The reply to what the saga awaits now."""
    assert state.awaiting is not None
    w = state.awaiting
    return Reply(REPLY_TYPES[type(message)], message, w.step, w.phase, w.attempt, f"m-{w.step}-{w.attempt}")


def awaiting_hold() -> SagaState:
    state = started(TransferV1)
    state = decide(TransferV1, state, answer(state, Debited(transfer_id="t-1")), NOW).state
    assert state.awaiting is not None
    assert state.awaiting.step == "hold"
    return state


def event_names(decision: Decision) -> list[str]:
    return [type(e).__name__ for e in decision.events]


# --- the version a saga runs on -----------------------------------------------------------


def test_a_started_saga_records_its_version_and_fingerprint() -> None:
    decision = decide(
        TransferV2, SagaState(saga_id="s-1"), Start("Transfer", DATA.model_dump(mode="json")), NOW
    )
    started_event = decision.events[0]
    assert started_event.model_dump()["saga_version"] == 2
    assert started_event.model_dump()["fingerprint"] == TransferV2.fingerprint()
    assert (decision.state.saga_version, decision.state.fingerprint) == (2, TransferV2.fingerprint())
    assert [c.step for c in decision.commands] == ["debit"]


def test_each_saga_is_decided_by_the_steps_of_its_own_version() -> None:
    """Two versions of one name side by side: each saga goes on with the class of the version it
    started on (what `Orchestrator.definition_of` picks), so v1 runs `hold`, v2 `risk_hold`."""
    versions = Versions([TransferV1, TransferV2])
    sagas = {"old": started(TransferV1, "old"), "new": started(TransferV2, "new")}
    requested: dict[str, list[str]] = {"old": ["debit"], "new": ["debit"]}
    for _ in range(3):
        for name, state in sagas.items():
            definition = versions.get(state.saga_type, state.saga_version)
            assert definition is not None
            assert state.awaiting is not None
            decision = decide(definition, state, answer(state, SUCCESS[state.awaiting.step]), NOW)
            requested[name] += [c.step for c in decision.commands]
            sagas[name] = decision.state
    assert requested == {"old": ["debit", "hold", "credit"], "new": ["debit", "risk_hold", "credit"]}
    assert {name: (s.status, s.saga_version) for name, s in sagas.items()} == {
        "old": ("completed", 1),
        "new": ("completed", 2),
    }


def test_deciding_a_v1_saga_with_the_v2_class_would_park_it() -> None:
    """Why the class must be the saga's own version's: v2 has no `hold`."""
    state = awaiting_hold()
    decision = decide(TransferV2, state, answer(state, Held(transfer_id="t-1")), NOW)
    assert event_names(decision) == ["SagaParked"]
    assert decision.events[0].model_dump()["missing"] == ["hold"]


# --- a worker without the saga's version -------------------------------------------------

REASON = absent_reason(Versions([TransferV2]), awaiting_hold())


def test_the_reason_names_the_version_and_both_fixes() -> None:
    assert REASON == (
        "version 1 of Transfer is not deployed on this worker (it has: Transfer@2); deploy Transfer "
        "version 1 beside the newest (a worker with it takes the saga up by itself), or move the saga: "
        "saga migrate Transfer@1 --to 2 --apply"
    )


def test_a_reply_parks_the_saga_once_and_is_kept() -> None:
    before = awaiting_hold()
    reply = answer(before, Held(transfer_id="t-1"))
    decision = park_for_version(before, reply, REASON)
    parked, deferred = decision.events
    assert parked == SagaParked(
        missing=[], cause="reply risk.held to hold/action #1", reason=REASON, saga_version=1
    )
    assert deferred == InputDeferred(
        kind="reply",
        message_type="risk.held",
        message_id="m-hold-1",
        data={"transfer_id": "t-1"},
        step="hold",
        phase="action",
        attempt=1,
    )
    assert not decision.commands
    assert decision.deadlines == ()
    state = decision.state
    assert (state.status, state.waiting, state.deferred) == ("parked", [], [deferred])
    assert state.parked is not None
    assert (state.parked.status, state.parked.waiting, state.parked.saga_version) == (
        "running",
        before.waiting,
        1,
    )
    # A second message adds only what it keeps: no second parking.
    again = park_for_version(
        state, Reply("risk.held", Held(transfer_id="t-1"), "hold", "action", 1, "m-2"), REASON
    )
    assert event_names(again) == ["InputDeferred"]
    assert [d.message_id for d in again.state.deferred] == ["m-hold-1", "m-2"]


def test_signals_and_a_parents_request_to_compensate_are_kept() -> None:
    state = park_for_version(awaiting_hold(), answer(awaiting_hold(), Held(transfer_id="t-1")), REASON).state
    signal = park_for_version(state, Signal("risk.held", Held(transfer_id="t-9"), "sig-1"), REASON)
    assert signal.events == (
        InputDeferred(
            kind="signal", message_type="risk.held", message_id="sig-1", data={"transfer_id": "t-9"}
        ),
    )
    request = CompensateRequest("the parent compensates", "fulfil", "compensation", 2)
    compensate = park_for_version(signal.state, request, REASON)
    assert compensate.events == (
        InputDeferred(
            kind="compensate",
            message_type="",
            message_id=None,
            data={
                "reason": "the parent compensates",
                "step": "fulfil",
                "phase": "compensation",
                "attempt": 2,
            },
        ),
    )
    kept = compensate.state.deferred
    assert [d.kind for d in kept] == ["reply", "signal", "compensate"]
    assert revived(kept[1], Held) == Signal("risk.held", Held(transfer_id="t-9"), "sig-1")
    assert revived(kept[2], None) == request


def test_a_due_deadline_parks_but_is_not_kept() -> None:
    before = awaiting_hold()
    due = DeadlineDue("hold", "action", 1, "reply")
    decision = park_for_version(before, due, REASON)
    assert decision.events == (
        SagaParked(missing=[], cause="reply deadline of hold/action #1", reason=REASON, saga_version=1),
    )
    assert decision.state.deferred == []
    assert park_for_version(decision.state, due, REASON).events == ()


def test_a_resume_or_a_migration_is_refused_with_the_reason() -> None:
    state = awaiting_hold()
    with pytest.raises(SagaError) as refused:
        park_for_version(state, Resume("go on"), REASON)
    assert str(refused.value) == f"saga s-1: {REASON}"


def test_an_ended_saga_is_not_parked() -> None:
    state = awaiting_hold().model_copy(update={"status": "completed", "waiting": []})
    decision = park_for_version(state, answer(awaiting_hold(), Held(transfer_id="t-1")), REASON)
    assert event_names(decision) == ["ReplyIgnored"]
    assert decision.events[0].model_dump()["reason"] == "the saga is completed"


def test_taken_up_the_saga_is_as_before_parking_and_decides_what_was_kept() -> None:
    before = awaiting_hold()
    reply = answer(before, Held(transfer_id="t-1"))
    parked = park_for_version(before, reply, REASON).state
    taken_up = decide(TransferV1, parked, Resume("version 1 is deployed here"), NOW)
    assert event_names(taken_up) == ["SagaUnparked"]
    # Its deadline is set again; what it awaited, its data and its steps are back.
    assert [d.step for d in taken_up.deadlines] == ["hold"]
    assert taken_up.state.model_dump(exclude={"version"}) == before.model_dump(exclude={"version"})
    [kept] = parked.deferred
    assert revived(kept, Held) == reply
    moved = decide(TransferV1, taken_up.state, revived(kept, Held), NOW)
    assert event_names(moved) == ["StepSucceeded", "StepRequested"]
    assert [c.step for c in moved.commands] == ["credit"]


def test_migrated_while_parked_for_its_version_it_goes_on_as_it_was() -> None:
    """Nothing is sent again: the kept reply to `hold` answers `risk_hold`, its new name."""
    before = awaiting_hold()
    reply = answer(before, Held(transfer_id="t-1"))
    parked = park_for_version(before, reply, REASON).state
    plan = plan_migration(TransferV1, TransferV2, parked, TransferV2.migrations[0])
    assert plan.ok, plan.problems
    moved = decide(TransferV2, parked, Migrate(plan, "hold is risk_hold"), NOW)
    assert event_names(moved) == ["SagaMigrated", "SagaUnparked"]
    assert not moved.commands
    assert [(d.step, d.attempt) for d in moved.deadlines] == [("risk_hold", 1)]
    assert (moved.state.status, moved.state.saga_version, moved.state.parked) == ("running", 2, None)
    [kept] = parked.deferred
    answered = decide(TransferV2, moved.state, revived(kept, Held), NOW)
    assert event_names(answered) == ["StepSucceeded", "StepRequested"]
    assert answered.state.done == ["debit", "risk_hold"]
