"""What the wiring tests share: the travel app's messages without some of them, an App built
from the travel app with some parts replaced (its DefinitionError text), and a step whose
participant is a typo."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from outbox import MessageRegistry
from saga import App, DefinitionError
from tests.saga.travel import HANDLERS, ReserveHotelStep, TravelSaga, messages

NOWHERE = "postgresql://nobody@127.0.0.1:1/nothing"  # a valid setting; never connected to


def registry_without(*models: type[BaseModel]) -> MessageRegistry:
    registry = MessageRegistry()
    for model in messages.models():
        if model not in models:
            registry.register(model, messages.type_of_model(model).name)
    return registry


def app_error(**app: Any) -> str:
    with pytest.raises(DefinitionError) as raised:
        App(**{"sagas": [TravelSaga], "messages": messages, "participants": HANDLERS, **app})
    return str(raised.value)


class HotelTypo(ReserveHotelStep):
    name = "reserve_hotel"
    participant = "hotel"
