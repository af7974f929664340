"""Issue 15 item 4, the planner alone: `plan_migration` over states folded by the decider from
the Transfer saga of `tests/saga/versions_app.py`. A plan carries what the saga did to the new
step names; it refuses what would strand the saga or leave a step that took effect undone;
its notes say what the operator may not expect. After `saga.migrated`, a reply to the step's
old name moves the saga under the new version.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import reduce
from typing import Any

import pytest
from pydantic import BaseModel

from saga import (
    Decision,
    Migrate,
    Migration,
    RemoteStep,
    Reply,
    Saga,
    SagaState,
    SendCommand,
    Start,
    StepKind,
    decide,
)
from saga._events import InputDeferred, SagaMigrated, SagaParked, StepSucceeded
from saga._migrate import migrated, migrated_event, plan_migration
from saga._state import apply
from tests.saga.versions_app import (
    Credited,
    CreditStep,
    Debited,
    DebitStep,
    Held,
    HoldStep,
    RiskHoldStep,
    TransferData,
    TransferV1,
    TransferV2,
    TransferV3,
)

pytestmark = pytest.mark.pure
NOW = datetime(2030, 1, 1, tzinfo=UTC)
SAGA_ID = "transfer-1"
RENAME = Migration(from_version=1, renames={"hold": "risk_hold"})
REPLIES: dict[str, tuple[str, type[BaseModel]]] = {
    "debit": ("ledger.debited", Debited),
    "hold": ("risk.held", Held),
    "risk_hold": ("risk.held", Held),
    "credit": ("payee.credited", Credited),
}


class ScreenStep(HoldStep):
    name = "screen"


class TransferV2Screened(Saga[TransferData]):
    """Version 2 with a new step before `hold`'s place: sagas past it never ran it."""

    name = "Transfer"
    version = 2
    steps = (DebitStep, ScreenStep, RiskHoldStep, CreditStep)


class UnheldStep(RemoteStep[TransferData]):
    """`risk_hold` without a compensation (after the pivot, so the definition is valid)."""

    name = "risk_hold"
    participant = "risk"
    kind = StepKind.RETRIABLE

    def command(self, data: TransferData) -> BaseModel:
        return HoldStep().command(data)

    def on_reply(self, data: TransferData, reply: Held) -> TransferData:
        return data


class TransferV2Unheld(Saga[TransferData]):
    name = "Transfer"
    version = 2
    steps = (DebitStep, CreditStep, UnheldStep)


def started(saga: type[Saga[Any]] = TransferV1) -> Decision:
    data = TransferData(transfer_id="t1", amount=100, account="acc-1").model_dump(mode="json")
    if saga.version == 3:
        data["currency"] = "EUR"
    return decide(saga, SagaState(saga_id=SAGA_ID), Start(saga.name, data, key="t1"), NOW)


def answered(saga: type[Saga[Any]], state: SagaState, step: str, attempt: int = 1) -> Decision:
    message_type, model = REPLIES[step]
    reply = Reply(message_type, model(transfer_id="t1"), step, "action", attempt, f"m-{step}-{attempt}")
    return decide(saga, state, reply, NOW)


def awaiting(step: str, saga: type[Saga[Any]] = TransferV1) -> SagaState:
    """A saga of `saga` that got the replies of the steps before `step`, and awaits it."""
    state = started(saga).state
    for before in [s.name for s in saga.all_steps()]:
        if before == step:
            break
        state = answered(saga, state, before).state
    assert [w.step for w in state.waiting] == [step]
    return state


def test_a_rename_carries_done_waiting_attempts_children_and_the_renamed_map() -> None:
    state = awaiting("hold").model_copy(update={"children": {"hold": "child-1"}})
    assert state.attempts == {"action:debit": 1, "action:hold": 1}

    plan = plan_migration(TransferV1, TransferV2, state, RENAME)
    assert plan.ok, plan.problems
    assert (plan.from_version, plan.to_version, plan.renamed, plan.dropped) == (
        1,
        2,
        {"hold": "risk_hold"},
        [],
    )
    assert plan.data is None  # the data fits version 2 as it is
    assert plan.notes == []

    moved = migrated(state, TransferV2, plan, note="rename")
    assert (moved.saga_version, moved.fingerprint) == (2, TransferV2.fingerprint())
    assert moved.done == ["debit"]
    assert [(w.step, w.phase, w.attempt) for w in moved.waiting] == [("risk_hold", "action", 1)]
    assert moved.attempts == {"action:debit": 1, "action:risk_hold": 1}
    assert moved.children == {"risk_hold": "child-1"}
    assert moved.renamed == {"hold": "risk_hold"}
    assert moved.status == "running"


def test_a_rename_of_a_step_the_saga_never_named_is_left_out_of_the_plan() -> None:
    plan = plan_migration(TransferV1, TransferV2, started().state, RENAME)
    # Awaiting debit: `hold` is not named in its history yet, and version 2 runs risk_hold.
    assert plan.ok, plan.problems
    assert plan.renamed == {}


def test_dropping_a_done_step_with_a_compensation_is_refused_with_what_to_do() -> None:
    state = awaiting("hold")
    plan = plan_migration(
        TransferV1,
        TransferV2,
        state,
        Migration(from_version=1, renames={"hold": "risk_hold"}, dropped=["debit"]),
    )
    assert not plan.ok
    assert plan.problems == [
        "step 'debit' took effect and has a compensation: dropping it would leave it undone if the saga "
        "compensates; rename it to the step of the new version that undoes it (--map debit=<step>)"
    ]


def test_mapping_a_done_compensatable_step_to_a_step_without_compensation_is_refused() -> None:
    state = awaiting("credit")
    assert state.done == ["debit", "hold"]
    plan = plan_migration(TransferV1, TransferV2Unheld, state, RENAME)
    assert not plan.ok
    assert plan.problems == [
        "step 'hold' took effect and has a compensation, but 'risk_hold' (renamed from 'hold') in Transfer@2 "
        "has none: if the saga compensates it would stay done; map it to a step that undoes it"
    ]


def test_an_in_flight_step_cannot_be_dropped() -> None:
    plan = plan_migration(
        TransferV1, TransferV2, awaiting("hold"), Migration(from_version=1, dropped=["hold"])
    )
    assert plan.problems == ["step 'hold' is in flight: it cannot be dropped until it answers"]


def test_a_step_the_new_version_lacks_is_refused_naming_the_flags_that_fix_it() -> None:
    plan = plan_migration(TransferV1, TransferV2, awaiting("hold"), Migration(from_version=1))
    assert plan.problems == [
        "step 'hold' is not in Transfer@2: rename it to one of that version's steps (--map hold=<step>) "
        "or drop it (--drop hold)"
    ]


def test_data_that_does_not_fit_the_new_model_is_refused_naming_the_field() -> None:
    state = awaiting("risk_hold", TransferV2)
    plan = plan_migration(TransferV2, TransferV3, state, Migration(from_version=2))
    assert plan.problems == [
        "its data does not fit TransferDataV3: currency: Field required "
        "(give the migration a data function: --data module:function)"
    ]


def test_the_declared_data_function_gives_the_new_data() -> None:
    state = awaiting("risk_hold", TransferV2)
    migration = next(m for m in TransferV3.migrations if m.from_version == 2)
    plan = plan_migration(TransferV2, TransferV3, state, migration)
    assert plan.ok, plan.problems
    assert plan.data == {"transfer_id": "t1", "amount": 100, "account": "acc-1", "currency": "EUR"}
    assert migrated(state, TransferV3, plan).data == plan.data


def test_a_data_function_that_raises_is_refused_with_its_error() -> None:
    def broken(old: dict[str, Any]) -> dict[str, Any]:
        return {**old, "currency": old["region"]}

    plan = plan_migration(
        TransferV2, TransferV3, awaiting("risk_hold", TransferV2), Migration(2, data=broken)
    )
    assert plan.problems == ["the data migration raised KeyError: 'region'"]


def test_a_data_function_that_returns_no_dict_is_refused() -> None:
    plan = plan_migration(
        TransferV2,
        TransferV3,
        awaiting("risk_hold", TransferV2),
        Migration(2, data=lambda old: None),  # type: ignore[arg-type,return-value]
    )
    assert plan.problems == ["the data migration must return a dict or the new data model, got NoneType"]


def test_a_new_step_before_where_the_saga_is_gets_a_note() -> None:
    plan = plan_migration(TransferV1, TransferV2Screened, awaiting("hold"), RENAME)
    assert plan.ok, plan.problems
    assert plan.notes == ["step 'screen' is new before where the saga is: it runs when the saga moves on"]
    # A saga not yet past it runs it in its turn: nothing to say.
    assert plan_migration(TransferV1, TransferV2Screened, started().state, RENAME).notes == []


@pytest.mark.parametrize("end", ["completed", "compensated"])
def test_an_ended_saga_is_refused(end: str) -> None:
    state = awaiting("credit")
    if end == "completed":
        state = answered(TransferV1, state, "credit").state
    else:
        state = state.model_copy(update={"status": "compensated"})
    assert state.status == end
    plan = plan_migration(TransferV1, TransferV2, state, RENAME)
    assert plan.problems == [f"it is {end}: an ended saga stays on its version"]


def test_a_saga_on_another_version_than_the_migration_is_from_is_refused() -> None:
    state = awaiting("risk_hold", TransferV2)
    plan = plan_migration(
        TransferV2, TransferV3, state, next(m for m in TransferV3.migrations if m.from_version == 1)
    )
    assert plan.problems == ["it is on version 2, but the migration is from version 1"]
    same = plan_migration(TransferV2, TransferV2, state, Migration(from_version=2))
    assert same.problems == ["it is on version 2 already"]


def test_without_the_old_version_deployed_a_done_step_counts_as_having_a_compensation() -> None:
    # Version 1 is not deployed where the plan is made: what `hold` undoes is unknown, so the
    # worst is assumed.
    plan = plan_migration(None, TransferV2Unheld, awaiting("credit"), RENAME)
    assert len(plan.problems) == 1
    assert plan.problems[0].startswith("step 'hold' took effect and has a compensation, but 'risk_hold'")


def test_after_the_migration_a_reply_to_the_old_step_name_moves_the_saga_on_the_new_version() -> None:
    state = awaiting("hold")
    plan = plan_migration(TransferV1, TransferV2, state, RENAME)
    moved = migrated(state, TransferV2, plan, note="rename")

    decision = answered(TransferV2, moved, "hold")  # the request went out as `hold` #1
    succeeded = [e for e in decision.events if isinstance(e, StepSucceeded)]
    assert [(e.step, e.attempt) for e in succeeded] == [("risk_hold", 1)]
    assert [(c.step, c.participant) for c in decision.commands if isinstance(c, SendCommand)] == [
        ("credit", "payee")
    ]
    assert decision.state.done == ["debit", "risk_hold"]

    finished = answered(TransferV2, decision.state, "credit").state
    assert finished.status == "completed"
    assert finished.done == ["debit", "risk_hold", "credit"]


def test_the_migrated_event_records_the_plan_and_the_note() -> None:
    state = awaiting("hold")
    plan = plan_migration(TransferV1, TransferV2, state, RENAME)
    moved = migrated(state, TransferV2, plan, note="rename hold")
    assert moved.version == state.version + 1
    event = SagaMigrated(
        from_version=1,
        to_version=2,
        from_fingerprint=TransferV1.fingerprint(),
        to_fingerprint=TransferV2.fingerprint(),
        renamed={"hold": "risk_hold"},
        dropped=[],
        data=None,
        note="rename hold",
    )
    assert migrated_event(state, TransferV2, plan, "rename hold") == event


def test_a_saga_parked_for_its_version_goes_on_as_it_was_once_migrated() -> None:
    state = awaiting("hold")
    deferred = InputDeferred(
        kind="reply",
        message_type="risk.held",
        message_id="m-1",
        data={"transfer_id": "t1"},
        step="hold",
        phase="action",
        attempt=1,
    )
    parked = reduce(
        apply, [SagaParked(missing=[], cause="reply", reason="no v1", saga_version=1), deferred], state
    )
    plan = plan_migration(None, TransferV2, parked, RENAME)
    assert plan.ok, plan.problems

    decision = decide(TransferV2, parked, Migrate(plan, "move"), NOW)
    # No command is sent again: the reply it awaits was kept, and is decided next (saga._orchestrator).
    assert [type(e).__name__ for e in decision.events] == ["SagaMigrated", "SagaUnparked"]
    assert decision.commands == ()
    moved = decision.state
    assert (moved.status, moved.saga_version, moved.parked) == ("running", 2, None)
    assert [(w.step, w.attempt) for w in moved.waiting] == [("risk_hold", 1)]
    reply = Reply("risk.held", Held(transfer_id="t1"), deferred.step, "action", 1, "m-1")
    assert decide(TransferV2, moved, reply, NOW).state.done == ["debit", "risk_hold"]
