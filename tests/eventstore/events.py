"""Event types shared by the event store tests."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from eventstore import EventRegistry


class Deposited(BaseModel):
    amount: Decimal
    currency: str = "EUR"


class Withdrawn(BaseModel):
    amount: Decimal


class Noted(BaseModel):
    writer: int
    seq: int


def noted(event: BaseModel) -> Noted:
    assert isinstance(event, Noted), f"expected a Noted event, got {type(event).__name__}"
    return event


class Renamed(BaseModel):
    """Version 3: `name` became `first` + `last` (v2), then gained `title` (v3)."""

    first: str
    last: str
    title: str


class AccountState(BaseModel):
    balance: Decimal = Decimal(0)
    operations: int = 0


def make_registry() -> EventRegistry:
    registry = EventRegistry()
    registry.register(Deposited, "account.deposited")
    registry.register(Withdrawn, "account.withdrawn")
    registry.register(Noted, "test.noted")
    registry.register(Renamed, "person.renamed", version=3)
    registry.register(AccountState, "account.state")

    @registry.upcaster("person.renamed", from_version=1)
    def split_name(data: dict[str, Any]) -> dict[str, Any]:
        first, _, last = data.pop("name").partition(" ")
        return {**data, "first": first, "last": last}

    @registry.upcaster("person.renamed", from_version=2)
    def add_title(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "title": ""}

    return registry


def fold(state: AccountState, event: BaseModel) -> AccountState:
    if isinstance(event, Deposited):
        return AccountState(balance=state.balance + event.amount, operations=state.operations + 1)
    if isinstance(event, Withdrawn):
        return AccountState(balance=state.balance - event.amount, operations=state.operations + 1)
    return state
