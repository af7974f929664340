"""Issue 15 items 1 and 2, the definitions alone: the fingerprint says what a version is made
of (its steps' shape and its data's schema, not what the steps' methods do); `Versions` finds a
saga's classes by name and number; the version checks refuse what cannot work; new sagas start
on the newest version only. On the Transfer saga of tests/saga/versions_app.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from saga import (
    App,
    DefinitionError,
    Migration,
    RemoteStep,
    Saga,
    SagaError,
    StepKind,
    UnknownSagaError,
)
from saga._starting import check_start
from saga._versions import Versions, shape_of, version_problems
from tests.saga.versions_app import (
    PARTICIPANTS,
    CreditStep,
    DebitStep,
    Held,
    Hold,
    HoldStep,
    RiskHoldStep,
    TransferData,
    TransferDataV3,
    TransferRenamedInPlace,
    TransferV1,
    TransferV2,
    TransferV3,
    messages,
)

pytestmark = pytest.mark.pure
DATA = TransferData(transfer_id="t-1", amount=10, account="acc-1")


# --- the fingerprint ----------------------------------------------------------------------


class Hold2(BaseModel):
    transfer_id: str


class HoldOtherRisk(HoldStep):
    name = "hold"
    participant = "fraud"


class HoldOtherCommand(HoldStep):
    name = "hold"

    def command(self, data: TransferData) -> Hold2:  # type: ignore[override]
        return Hold2(transfer_id=data.transfer_id)


class HoldOtherBody(HoldStep):
    name = "hold"

    def command(self, data: TransferData) -> Hold:
        raise AssertionError("never run: only the shape counts")

    def on_reply(self, data: TransferData, reply: Held) -> TransferData:
        return data.model_copy(update={"amount": data.amount + 1})


class HoldPivot(HoldStep):
    """The pivot moved to `hold` (a pivot has no compensation), `credit` after it retriable."""

    name = "hold"
    kind = StepKind.PIVOT
    compensation = RemoteStep.compensation  # type: ignore[assignment]
    compensation_reply = None  # type: ignore[assignment]


class CreditRetriable(CreditStep):
    name = "credit"
    kind = StepKind.RETRIABLE


class AuditStep(HoldStep):
    name = "audit"


class MoreData(TransferData):
    note: str = ""


def _transfer(*steps: type[RemoteStep[Any]], data: type[BaseModel] = TransferData) -> str:
    saga: type[Saga[Any]] = type(
        "Transfer", (Saga,), {"name": "Transfer", "steps": steps, "data_model": data}
    )
    return saga.fingerprint()


BASE = _transfer(DebitStep, HoldStep, CreditStep)


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param((DebitStep, TransferV2.steps[1], CreditStep), id="renamed"),
        pytest.param((DebitStep, HoldStep, AuditStep, CreditStep), id="added"),
        pytest.param((HoldStep, DebitStep, CreditStep), id="reordered"),
        pytest.param((DebitStep, HoldPivot, CreditRetriable), id="re-kinded"),
        pytest.param((DebitStep, HoldOtherRisk, CreditStep), id="another participant"),
        pytest.param((DebitStep, HoldOtherCommand, CreditStep), id="another message type"),
    ],
)
def test_the_fingerprints_shape_changes_with_the_steps(steps: tuple[type[RemoteStep[Any]], ...]) -> None:
    changed = _transfer(*steps)
    assert shape_of(changed) != shape_of(BASE)
    assert changed.partition(".")[2] == BASE.partition(".")[2]  # same data


def test_the_fingerprint_changes_with_the_data_schema_only_in_its_data_part() -> None:
    changed = _transfer(DebitStep, HoldStep, CreditStep, data=MoreData)
    assert shape_of(changed) == shape_of(BASE)
    assert changed != BASE
    assert TransferV3.fingerprint() != _transfer(DebitStep, TransferV2.steps[1], CreditStep)


def test_the_fingerprint_ignores_what_a_steps_methods_do() -> None:
    assert _transfer(DebitStep, HoldOtherBody, CreditStep) == BASE
    assert TransferV1.fingerprint() == BASE
    assert TransferRenamedInPlace.fingerprint() == TransferV2.fingerprint()
    assert len(shape_of(BASE)) == 12
    assert len(BASE.partition(".")[2]) == 8


# --- versions of a saga ------------------------------------------------------------------


def test_versions_by_name_and_number() -> None:
    versions = Versions([TransferV2, TransferV1, TransferV3])
    assert versions.names() == ["Transfer"]
    assert versions.newest() == {"Transfer": TransferV3}
    assert list(versions.of("Transfer").items()) == [(1, TransferV1), (2, TransferV2), (3, TransferV3)]
    assert versions.of("Nope") == {}
    assert (versions.get("Transfer", 2), versions.get("Transfer", 4)) == (TransferV2, None)
    assert versions.has(TransferV1)
    assert not versions.has(TransferRenamedInPlace)  # the name and number, not the class
    assert versions.migration_to("Transfer", 1) == (TransferV3, TransferV3.migrations[1])
    assert versions.migration_to("Transfer", 2) == (TransferV3, TransferV3.migrations[0])
    assert Versions([TransferV1, TransferV2]).migration_to("Transfer", 1) == (
        TransferV2,
        TransferV2.migrations[0],
    )
    assert versions.migration_to("Transfer", 3) is None
    assert versions.describe("Transfer") == "Transfer@1, Transfer@2, Transfer@3"
    assert versions.describe("Nope") == "none"


def test_one_name_and_version_twice_is_refused_naming_both_classes() -> None:
    [problem] = version_problems([TransferV1, TransferV2, TransferRenamedInPlace])
    assert "Transfer version 1 (TransferV1 and TransferRenamedInPlace)" in problem
    assert "version = <next number>" in problem
    with pytest.raises(DefinitionError) as refused:
        App(sagas=[TransferV1, TransferRenamedInPlace], messages=messages, participants=PARTICIPANTS)
    assert "TransferV1 and TransferRenamedInPlace" in str(refused.value)
    assert version_problems([TransferV1, TransferV2, TransferV3]) == []


def test_a_version_is_a_number_from_one() -> None:
    with pytest.raises(DefinitionError, match=r"saga Transfer: version must be a whole number >= 1, got 0"):

        class Zero(Saga[TransferData]):
            name = "Transfer"
            version = 0
            steps = (DebitStep,)


def test_a_migration_comes_from_an_older_version() -> None:
    with pytest.raises(DefinitionError, match=r"a migration comes from an older version than 2"):

        class FromNewer(Saga[TransferData]):
            name = "Transfer"
            version = 2
            steps = (DebitStep,)
            migrations = (Migration(from_version=3),)

    with pytest.raises(DefinitionError, match=r"from_version must be a version number >= 1, got 0"):
        Migration(from_version=0)


def test_a_migration_renames_to_a_step_the_version_has() -> None:
    with pytest.raises(DefinitionError) as refused:

        class RenamesToNothing(Saga[TransferDataV3]):
            name = "Transfer"
            version = 3
            steps = (DebitStep, CreditStep)
            migrations = (Migration(from_version=1, renames={"hold": "risk_hold"}),)

    assert str(refused.value) == (
        "saga Transfer version 3: Migration(from_version=1): renames to 'risk_hold', not a step of "
        "this version (it has: debit, credit)"
    )


def test_new_sagas_start_on_the_newest_version_only() -> None:
    versions = Versions([TransferV1, TransferV2])
    check_start(versions, TransferV2, [DATA], None)
    with pytest.raises(SagaError) as older:
        check_start(versions, TransferV1, [DATA], None)
    assert str(older.value) == (
        "new Transfer sagas start on its newest version, 2 (TransferV2), not version 1 (TransferV1): "
        "start TransferV2"
    )
    with pytest.raises(UnknownSagaError) as other:
        check_start(versions, TransferRenamedInPlace, [DATA], None)
    assert "TransferRenamedInPlace (saga Transfer version 1) is not registered" in str(other.value)
    assert "(it has: Transfer@1, Transfer@2)" in str(other.value)


def test_an_old_version_may_subclass_the_new_one_as_the_readme_shows() -> None:
    """README "Changing a saga safely": the old class subclasses the new, keeps its hooks and
    data model, declares its own steps, and does not inherit the new version's migrations."""

    class Hooked(Saga[TransferData]):
        version = 2
        name = "Transfer"
        # Typed wide, as the README says for mypy: the old version's subclass sets other steps.
        steps: ClassVar[Sequence[Any]] = (DebitStep, RiskHoldStep, CreditStep)
        migrations: ClassVar[Sequence[Migration]] = TransferV2.migrations

        async def on_completed(self, conn: Any, data: TransferData) -> None:
            """A hook both versions share."""

    class HookedV1(Hooked):
        name = "Transfer"
        version = 1
        steps = (DebitStep, HoldStep, CreditStep)

    assert Hooked.migrations == TransferV2.migrations
    assert HookedV1.migrations == ()
    assert HookedV1.data_model is TransferData
    assert HookedV1.on_completed is Hooked.on_completed
    assert HookedV1.fingerprint() == TransferV1.fingerprint()
    assert Hooked.fingerprint() == TransferV2.fingerprint()
    both = App(sagas=[Hooked, HookedV1], messages=messages, participants=PARTICIPANTS)
    assert both.saga("Transfer") is Hooked
    assert both.saga("Transfer", 1) is HookedV1
