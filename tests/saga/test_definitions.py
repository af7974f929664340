"""A saga declared wrongly fails when its class is created, naming the saga and the step."""

from __future__ import annotations

import re
import types
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from saga import DefinitionError, LocalStep, RemoteStep, RetryPolicy, Saga, StepKind


class Data(BaseModel):
    n: int = 0


class Reserved(BaseModel):
    pass


class Released(BaseModel):
    pass


class Reserve(RemoteStep[Data]):
    participant = "stock"
    reply = Reserved
    compensation_reply = Released

    def command(self, data: Data) -> BaseModel:
        return data

    def compensation(self, data: Data) -> BaseModel:
        return data


class Charge(RemoteStep[Data]):
    participant = "payments"
    kind = StepKind.PIVOT
    reply = Reserved

    def command(self, data: Data) -> BaseModel:
        return data


class Ship(LocalStep[Data]):
    kind = StepKind.RETRIABLE

    async def action(self, conn: AsyncConnection, data: Data) -> None:
        return None


class NoUndo(RemoteStep[Data]):
    participant = "stock"
    reply = Reserved

    def command(self, data: Data) -> BaseModel:
        return data


class UndoableShip(Ship):
    name = "ship"

    async def compensate(self, conn: AsyncConnection, data: Data) -> None:
        return None


def define(steps: tuple[Any, ...], name: str = "Broken") -> None:
    types.new_class(name, (Saga[Data],), exec_body=lambda ns: ns.update(steps=steps))


def test_a_good_definition_passes() -> None:
    class Good(Saga[Data]):
        steps = (Reserve, Charge, Ship)

    assert Good.data_model is Data
    assert [s.name for s in Good.steps] == ["reserve", "charge", "ship"]
    assert Good.pivot_index() == 1


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ((Reserve, Reserve), "saga Broken: step reserve: duplicate step name"),
        ((NoUndo, Charge), "saga Broken: step no_undo: a step before the pivot needs a compensation"),
        (
            (Reserve, Charge, UndoableShip),
            "saga Broken: step ship: a retriable step after the pivot cannot have a compensation",
        ),
        ((Reserve, Charge, NoUndo), "saga Broken: step no_undo: steps after the pivot must be retriable"),
        ((Reserve, Ship), "saga Broken: step ship: a retriable step must come after a pivot step"),
        ((Reserve, Charge, Charge), "saga Broken: more than one pivot step (charge, charge)"),
        ((), "saga Broken: no steps declared"),
        ((Reserve, int), "saga Broken: <class 'int'> is not a step: use a LocalStep or RemoteStep class"),
    ],
)
def test_mistakes_name_saga_and_step(steps: tuple[Any, ...], message: str) -> None:
    with pytest.raises(DefinitionError, match=re.escape(message)):
        define(steps)


def test_remote_steps_need_a_participant_and_a_command() -> None:
    class Nowhere(RemoteStep[Data]):
        def command(self, data: Data) -> BaseModel:
            return data

        def compensation(self, data: Data) -> BaseModel:
            return data

    with pytest.raises(
        DefinitionError, match="saga Broken: step nowhere: a remote step must name its participant"
    ):
        define((Nowhere,))

    class Mute(RemoteStep[Data]):
        participant = "x"

        def compensation(self, data: Data) -> BaseModel:
            return data

    with pytest.raises(DefinitionError, match="saga Broken: step mute: a remote step must define command"):
        define((Mute,))


def test_data_must_be_a_pydantic_model_and_timeouts_positive() -> None:
    with pytest.raises(DefinitionError, match=r"saga NoData: declare its data as a pydantic model"):
        types.new_class("NoData", (Saga,), exec_body=lambda ns: ns.update(steps=(Reserve,)))

    class Hasty(Reserve):
        timeout_s = 0

    with pytest.raises(DefinitionError, match="saga Broken: step hasty: timeout_s must be > 0, got 0"):
        define((Hasty,))
    with pytest.raises(DefinitionError, match="RetryPolicy: attempts must be >= 1, got 0"):
        RetryPolicy(attempts=0)


def test_remote_steps_name_their_replies() -> None:
    class Annotated(RemoteStep[Data]):
        participant = "stock"
        compensation_reply = Released

        def command(self, data: Data) -> BaseModel:
            return data

        def on_reply(self, data: Data, reply: Reserved) -> Data:
            return data

        def compensation(self, data: Data) -> BaseModel:
            return data

    assert Annotated.reply is Reserved  # read from on_reply's annotation
    assert Annotated.expected_reply("compensation") is Released

    class Unsaid(RemoteStep[Data]):
        participant = "stock"
        kind = StepKind.PIVOT

        def command(self, data: Data) -> BaseModel:
            return data

    with pytest.raises(DefinitionError, match="saga Broken: step unsaid: say which reply its command gets"):
        define((Unsaid,))

    class UndoUnsaid(Reserve):
        name = "undo_unsaid"
        compensation_reply = None  # type: ignore[assignment]

    with pytest.raises(
        DefinitionError, match="saga Broken: step undo_unsaid: say which reply its compensation gets"
    ):
        define((UndoUnsaid,))

    class NotAModel(Reserve):
        name = "not_a_model"
        reply = dict  # type: ignore[assignment]

    with pytest.raises(DefinitionError, match="step not_a_model: reply must be a pydantic model class"):
        define((NotAModel,))


def test_names_that_make_topics_are_checked() -> None:
    class Spaced(Reserve):
        name = "spaced"
        participant = "stock room"

    with pytest.raises(
        DefinitionError, match="step spaced: participant 'stock room' must be 1 to 80 letters"
    ):
        define((Spaced,))
    with pytest.raises(DefinitionError, match=r"saga Bad\.Name: the name must be 1 to 80 letters"):
        define((Reserve,), name="Bad.Name")
