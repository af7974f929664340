"""Fault exploration on an order paid from a wallet and shipped."""

from __future__ import annotations

from dataclasses import replace

import pytest

from saga.testing import System, open_system
from tests.testing.explore_app import (
    CARELESS_WALLET,
    SHOP,
    Order,
    PaidOrder,
    app,
    create_tables,
    paid_once_or_refunded,
)

saga_app = app
saga_schema = create_tables


async def test_a_correct_wallet_holds_under_every_fault(saga_system: System) -> None:
    exploration = await saga_system.explore(
        PaidOrder, Order(order_id="o1", amount=30), invariant=paid_once_or_refunded
    )
    print(exploration)
    assert not exploration.broken


async def test_explore_names_the_crash_that_charges_a_careless_wallet_twice(saga_system: System) -> None:
    config = replace(saga_system.config, handlers={"wallet": CARELESS_WALLET, "shop": SHOP})
    async with open_system(config) as careless:
        with pytest.raises(AssertionError) as raised:
            await careless.explore(
                PaidOrder,
                Order(order_id="o2", amount=30),
                invariant=paid_once_or_refunded,
                faults=lambda fault: fault.worker == "participant:wallet",
            )
    print(raised.value)
    assert "participant wallet killed at participant.before_commit, pass 1 (its handlers ran, nothing committed)" in str(raised.value)
