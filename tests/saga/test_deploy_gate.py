"""The deploy gate (issue 15): Transfer sagas of version 1 stopped at known points in the real
database, checked against the apps a deploy might bring.

The sagas are moved by the orchestrator's own `handle_reply`, no worker runs: each test knows
exactly where every saga stands. Pure checks on states made by hand come last.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel

from eventstore import Database
from saga import App, Migration, Orchestrator, Saga, SagaState, StepRefused
from saga._deploy import DeployReport, check_deploy, running_states
from saga._events import InputDeferred
from saga._state import Awaiting
from tests.saga.versions_app import (
    PARTICIPANTS,
    Credited,
    CreditStep,
    Debited,
    DebitStep,
    Held,
    Refunded,
    RiskHoldStep,
    TransferData,
    TransferDataV3,
    TransferV1,
    add_currency,
    app_in_place,
    app_v1,
    app_v1_v2,
    app_v2,
    messages,
)

SUCCESS: dict[tuple[str, str], type[BaseModel]] = {
    ("debit", "action"): Debited,
    ("hold", "action"): Held,
    ("credit", "action"): Credited,
    ("debit", "compensation"): Refunded,
}
HAS = "(it has: debit, risk_hold, credit)"
SHAPE = "Transfer version 1 changed since the saga started (its steps differ)"


def picky(old: dict[str, Any]) -> dict[str, Any]:
    """A data migration that cannot move every saga: one it refuses, one it leaves invalid."""
    if old["transfer_id"] == "t-raise":
        raise ValueError("no exchange rate for t-raise")
    if old["amount"] >= 1000:
        return {key: value for key, value in old.items() if key != "account"}
    return old


class PickyTransferV2(Saga[TransferData]):
    name = "Transfer"
    version = 2
    steps = (DebitStep, RiskHoldStep, CreditStep)
    migrations = (Migration(from_version=1, renames={"hold": "risk_hold"}, data=picky),)


class TransferV3Only(Saga[TransferDataV3]):
    """Version 3 with a migration from 2 only: nothing covers version 1."""

    name = "Transfer"
    version = 3
    steps = (DebitStep, RiskHoldStep, CreditStep)
    migrations = (Migration(from_version=2, data=add_currency),)


def local_app(*sagas: type[Saga[Any]]) -> App:
    return App(sagas=list(sagas), messages=messages, participants=PARTICIPANTS, topic_prefix="transfers")


@pytest.fixture
async def v1(database: Database) -> AsyncIterator[Orchestrator]:
    orchestrator = app_v1.with_topic_prefix(f"v{uuid.uuid4().hex[:10]}").orchestrator(database)
    try:
        yield orchestrator
    finally:
        await orchestrator.aclose()


async def transfer(
    orchestrator: Orchestrator,
    key: str,
    *,
    until: str | None = None,
    refuse: str | None = None,
    amount: int = 10,
) -> str:
    """A Transfer@1 saga answered with success until it awaits `until`'s reply, or to its end;
    `refuse`: that step's command is refused (the saga compensates)."""
    data = TransferData(transfer_id=key, amount=amount, account="acc-1")
    async with orchestrator.engine.begin() as conn:
        saga_id = await orchestrator.start(conn, TransferV1, data, key=key)
    for _ in range(10):
        state = await orchestrator.load_raw(saga_id)
        waits = state.awaiting
        if state.terminal or waits is None or (waits.step, waits.phase) == (until, "action"):
            return saga_id
        reply: BaseModel
        if (waits.step, waits.phase) == (refuse, "action"):
            reply = StepRefused(reason=f"{key}: refused")
        else:
            reply = SUCCESS[(waits.step, waits.phase)](transfer_id=key)
        envelope = orchestrator.outbox.envelope(
            reply,
            saga_id=saga_id,
            saga_type="Transfer",
            step=waits.step,
            phase=waits.phase,
            attempt=waits.attempt,
        )
        async with orchestrator.engine.begin() as conn:
            await orchestrator.handle_reply(conn, reply, envelope)
    raise AssertionError(f"saga {key} did not stop after 10 replies")


@pytest.fixture
async def sagas(v1: Orchestrator) -> dict[str, str]:
    """Where each Transfer@1 saga stands -> its id: four running, two ended."""
    return {
        "awaiting debit": await transfer(v1, "t-debit", until="debit"),
        "awaiting hold": await transfer(v1, "t-hold-1", until="hold"),
        "awaiting hold too": await transfer(v1, "t-hold-2", until="hold"),
        "awaiting credit": await transfer(v1, "t-credit", until="credit"),
        "completed": await transfer(v1, "t-done"),
        "compensated": await transfer(v1, "t-undone", refuse="hold"),
    }


async def gate(database: Database, app: App) -> DeployReport:
    states, _ = await running_states(database)
    report = check_deploy(app, states)
    shuffled = random.Random(7).sample(states, len(states))
    assert check_deploy(app, shuffled) == report  # whatever order the sagas come in
    return report


def rows(report: DeployReport) -> set[tuple[str, str]]:
    return {(p.saga_id, p.problem) for p in report.problems}


async def test_running_states_are_the_sagas_not_ended(database: Database, sagas: dict[str, str]) -> None:
    states, _ = await running_states(database)
    assert {s.saga_id for s in states} == {sagas[k] for k in sagas if k not in ("completed", "compensated")}
    by_id = {s.saga_id: s for s in states}
    assert by_id[sagas["awaiting credit"]].done == ["debit", "hold"]
    assert all(s.fingerprint == TransferV1.fingerprint() for s in states)


async def test_a_step_renamed_in_place_flags_exactly_the_running_sagas(
    database: Database, sagas: dict[str, str]
) -> None:
    report = await gate(database, app_in_place)

    missing = f"is not in Transfer@1 {HAS}"
    assert rows(report) == {
        (sagas["awaiting debit"], SHAPE),
        (sagas["awaiting hold"], SHAPE),
        (sagas["awaiting hold"], f"step 'hold' (awaited) {missing}"),
        (sagas["awaiting hold too"], SHAPE),
        (sagas["awaiting hold too"], f"step 'hold' (awaited) {missing}"),
        (sagas["awaiting credit"], SHAPE),
        (sagas["awaiting credit"], f"step 'hold' (done) {missing}"),
    }
    assert (report.ok, report.checked, report.broken) == (False, 4, 4)
    assert report.by_version == {"Transfer@1": 4}
    assert report.counts() == {
        SHAPE: 4,
        f"step 'hold' (awaited) {missing}": 2,
        f"step 'hold' (done) {missing}": 1,
    }
    first = next(p for p in report.problems if p.saga_id == sagas["awaiting hold"])
    assert (first.saga_type, first.saga_version, first.status, first.step) == (
        "Transfer",
        1,
        "running",
        "hold",
    )
    assert first.fix == "give the changed class a new `version` and keep the old one registered as Transfer@1"
    # One saga's rows stay together, and the sagas come by id.
    order = [p.saga_id for p in report.problems]
    assert order == sorted(order)


async def test_the_old_version_kept_beside_the_new_one_flags_nothing(
    database: Database, sagas: dict[str, str]
) -> None:
    report = await gate(database, app_v1_v2)
    assert report == DeployReport(checked=4, problems=[], by_version={"Transfer@1": 4}, migrations={})
    assert report.ok


async def test_a_migration_covers_a_removed_version_unless_it_would_fail(
    database: Database, v1: Orchestrator, sagas: dict[str, str]
) -> None:
    covered = await gate(database, app_v2)
    assert covered.ok, covered.problems
    assert covered.migrations == {"Transfer@1 -> Transfer@2": 4}

    big = await transfer(v1, "t-big", until="hold", amount=1000)
    raising = await transfer(v1, "t-raise", until="credit")
    report = await gate(database, local_app(PickyTransferV2))

    fails = "version 1 of Transfer is not in the new app and its migration to Transfer@2 fails"
    assert rows(report) == {
        (big, f"{fails}: its data does not fit TransferData: account: Field required"),
        (raising, f"{fails}: the data migration raised ValueError: no exchange rate for t-raise"),
    }
    assert (report.checked, report.broken) == (6, 2)
    assert report.migrations == {"Transfer@1 -> Transfer@2": 4}
    assert {p.fix for p in report.problems} == {
        "fix Migration(from_version=1) of Transfer@2, or keep the class of version 1 registered until its sagas end"
    }


async def test_removing_a_version_that_still_has_running_sagas_is_flagged(
    database: Database, sagas: dict[str, str]
) -> None:
    report = await gate(database, local_app(TransferV3Only))

    problem = "version 1 of Transfer is not in the new app (it has: Transfer@3)"
    running = {sagas[k] for k in ("awaiting debit", "awaiting hold", "awaiting hold too", "awaiting credit")}
    assert rows(report) == {(saga_id, problem) for saga_id in running}
    assert report.counts() == {problem: 4}
    assert report.problems[0].fix == (
        "keep the class of version 1 registered until its sagas end, "
        "or declare Migration(from_version=1) on the newest"
    )


# --- pure: states made by hand -------------------------------------------------------------


def made(saga_id: str = "s1", **fields: Any) -> SagaState:
    """A Transfer@1 saga awaiting hold's reply, as `saga export` would carry it."""
    state: dict[str, Any] = {
        "saga_id": saga_id,
        "saga_type": "Transfer",
        "saga_version": 1,
        "fingerprint": TransferV1.fingerprint(),
        "data": {"transfer_id": saga_id, "amount": 5, "account": "acc-1"},
        "done": ["debit"],
        "waiting": [Awaiting(step="hold", phase="action", attempt=1)],
        "last_step": "hold",
        **fields,
    }
    return SagaState.model_validate(state)


def problems(*states: SagaState, app: App = app_v1) -> list[tuple[str, str]]:
    return [(p.problem, p.fix) for p in check_deploy(app, states).problems]


@pytest.mark.pure
def test_a_saga_that_fits_passes_and_an_ended_one_is_not_checked() -> None:
    report = check_deploy(app_v1, [made(), made("s2", status="completed", waiting=[])])
    assert (report.ok, report.checked, report.by_version) == (True, 1, {"Transfer@1": 1})
    assert check_deploy(app_in_place, [made(fingerprint="")]).counts() == {
        f"step 'hold' (awaited) is not in Transfer@1 {HAS}": 1  # no shape recorded: none compared
    }


@pytest.mark.pure
def test_a_saga_type_the_app_lacks() -> None:
    assert problems(made(saga_type="Payment")) == [
        (
            "saga type Payment is not in the new app (it has: Transfer)",
            "keep Payment registered in the app until its sagas end",
        )
    ]


@pytest.mark.pure
def test_data_the_version_refuses_names_the_fields() -> None:
    assert problems(made(data={"transfer_id": "s1", "amount": "lots"})) == [
        (
            "its data does not fit TransferData of Transfer@1 (amount: Input should be a valid integer, "
            "unable to parse string as an integer; account: Field required)",
            "keep TransferData accepting the data of running sagas (a new field needs a default), "
            "or change it in a new version with a Migration data function",
        )
    ]


@pytest.mark.pure
def test_a_missing_step_is_named_with_each_place_the_saga_uses_it() -> None:
    compensating = made(
        status="compensating",
        done=["debit", "hold"],
        to_compensate=["hold", "debit"],
        waiting=[Awaiting(step="hold", phase="compensation", attempt=1)],
    )
    assert [p for p, _ in problems(compensating, app=app_in_place)] == [
        SHAPE,
        f"step 'hold' (awaited, done, to compensate) is not in Transfer@1 {HAS}",
    ]


@pytest.mark.pure
def test_what_the_saga_awaits_must_still_be_awaitable() -> None:
    no_undo = made(status="compensating", waiting=[Awaiting(step="credit", phase="compensation", attempt=1)])
    timer = made(waiting=[Awaiting(step="debit", phase="action", attempt=1, kind="timer")])
    assert problems(no_undo, timer) == [
        (
            "the saga awaits the reply to its compensation on step 'credit' of Transfer@1, but it expects none",
            "keep the compensation and compensation_reply of step 'credit' of Transfer@1",
        ),
        (
            "the saga awaits a timer on step 'debit' of Transfer@1, but it is a remote step",
            "keep step 'debit' of Transfer@1 the kind of step it was; change it only in a new version",
        ),
    ]


@pytest.mark.pure
def test_a_kept_message_the_app_no_longer_registers() -> None:
    deferred = InputDeferred(kind="signal", message_type="fraud.flagged", message_id="m1", data={})
    kept = InputDeferred(kind="reply", message_type="risk.held", message_id="m2", data={"transfer_id": "s1"})
    assert problems(made(deferred=[deferred, kept])) == [
        (
            "message fraud.flagged that the saga keeps (deferred or a signal for a later wait) "
            "is not registered in the app's messages",
            "keep fraud.flagged registered in the app's MessageRegistry until these sagas end",
        )
    ]
