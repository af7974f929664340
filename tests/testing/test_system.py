"""The testing kit's running system, through the plugin's fixtures, on a gift card saga."""

from __future__ import annotations

import pytest

from saga import stream_of
from saga.testing import System
from tests.testing.giftcards import Confirmed, Delayed, GiftCard, Purchase, Retried, app, create_tables

saga_app = app
saga_schema = create_tables


async def test_a_purchase_never_confirmed_times_out_after_an_hour_of_virtual_time(
    saga_system: System,
) -> None:
    """The one-hour timeout, without waiting an hour."""
    saga_id = await saga_system.start(GiftCard, Purchase(purchase_id="p1", customer="alice", amount=30))
    await saga_system.wait(saga_id, step="wait_for_confirmed")
    await saga_system.clock.advance(3599)
    assert (await saga_system.state(saga_id)).status == "running"  # not a second early
    await saga_system.clock.advance(1)
    state = await saga_system.wait(saga_id, "compensated")
    assert state.data.customer == "alice"
    assert await saga_system.scalar("SELECT balance FROM wallets WHERE customer = 'alice'") == 100
    assert await saga_system.scalar("SELECT sum(amount) FROM charges WHERE purchase_id = 'p1'") == 0


async def test_run_moves_the_clock_through_a_day_long_delay(saga_system: System) -> None:
    before = saga_system.clock.now()
    state = await saga_system.run(Delayed, Purchase(purchase_id="p2", customer="alice", amount=10))
    assert state.status == "completed"
    assert state.data.code == "GC-p2"
    assert (saga_system.clock.now() - before).total_seconds() >= 24 * 3600


async def test_a_refused_charge_fails_the_purchase_and_takes_nothing(saga_system: System) -> None:
    state = await saga_system.run(GiftCard, Purchase(purchase_id="p3", customer="bob", amount=30))
    assert state.status == "compensated"
    assert await saga_system.scalar("SELECT balance FROM wallets WHERE customer = 'bob'") == 5


async def test_a_confirmed_purchase_completes_with_the_card_code(saga_system: System) -> None:
    saga_id = await saga_system.start(GiftCard, Purchase(purchase_id="p4", customer="alice", amount=30))
    await saga_system.signal(GiftCard, Confirmed(purchase_id="p4"), saga_id=saga_id)
    state = await saga_system.wait(saga_id, "completed")
    assert state.data.code == "GC-p4"
    assert await saga_system.scalar("SELECT balance FROM wallets WHERE customer = 'alice'") == 70


async def test_wait_names_where_the_saga_is_when_it_does_not_get_there(saga_system: System) -> None:
    saga_id = await saga_system.start(GiftCard, Purchase(purchase_id="p5", customer="alice", amount=30))
    await saga_system.wait(saga_id, step="wait_for_confirmed")
    with pytest.raises(
        AssertionError, match=r"is running after 0.5s, not completed; it waits for: wait_for_confirmed"
    ):
        await saga_system.wait(saga_id, "completed", deadline_s=0.5)


async def test_a_paused_wallet_leaves_the_charge_unanswered_until_it_runs_again(saga_system: System) -> None:
    async with saga_system.paused("participant:wallet"):
        saga_id = await saga_system.start(GiftCard, Purchase(purchase_id="p6", customer="alice", amount=40))
        await saga_system.settle()
        with pytest.raises(AssertionError, match="it waits for: charge/action"):
            await saga_system.wait(saga_id, step="wait_for_confirmed", deadline_s=0.3)
    await saga_system.wait(saga_id, step="wait_for_confirmed")
    assert await saga_system.scalar("SELECT balance FROM wallets WHERE customer = 'alice'") == 60
    with pytest.raises(ValueError, match="no worker 'wallet' in this system; it runs: relay, orchestrator"):
        async with saga_system.paused("wallet"):
            pass


async def test_advance_fires_what_falls_due_on_the_way_each_at_its_own_time(saga_system: System) -> None:
    """A wallet silent past every attempt: one advance runs each timeout at its own time (60 s
    after the attempt before it was sent, three times), and the saga compensates."""
    async with saga_system.paused("participant:wallet"):
        saga_id = await saga_system.start(Retried, Purchase(purchase_id="p7", customer="alice", amount=40))
        await saga_system.wait(saga_id, step="charge")
        await saga_system.clock.advance(200)
        await saga_system.wait(saga_id, "compensating", step="charge")
        events = [
            type(e.event).__name__ for e in await saga_system.orchestrator.store.load(stream_of(saga_id))
        ]
        assert (events.count("StepRequested"), events.count("StepTimedOut")) == (3 + 1, 3)  # + the refund
    state = await saga_system.wait(saga_id, "compensated")  # the wallet is back: the refund runs
    assert state.data.customer == "alice"


async def test_wait_can_move_the_clock_for_a_saga_the_test_started(saga_system: System) -> None:
    """As run does, for a saga started some other way (here `start`; often the test's own
    transaction): wait(skip_time=True) jumps the day-long delay."""
    before = saga_system.clock.now()
    saga_id = await saga_system.start(Delayed, Purchase(purchase_id="p8", customer="alice", amount=10))
    state = await saga_system.wait(saga_id, "completed", skip_time=True)
    assert state.data.code == "GC-p8"
    assert (saga_system.clock.now() - before).total_seconds() >= 24 * 3600
