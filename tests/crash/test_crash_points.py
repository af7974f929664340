"""Each named crash point, in a real process of the order system: the process dies there
(os._exit, no cleanup), is restarted, and every saga still ends with nothing lost and nothing
done twice.

Orders go in two waves, the second once the first ended (or the process died), so a point
armed for its second pass is reached while sagas are in flight."""

from __future__ import annotations

import pytest

from examples.orders.cluster import ROLES
from saga import OrchestratorWorker
from tests.crash.conftest import Orders
from tests.helpers import wait_for
from tests.order_runs import plan

ORDERS = 20


async def crash_and_recover(system: Orders, role: str, crash_at: str) -> None:
    point = crash_at.partition("@")[0]
    orders = plan(ORDERS)
    for other in ROLES:
        if other != role:
            system.start(other)
    system.start(role, {"SAGA_CRASH_AT": crash_at})
    first, second = orders[: ORDERS // 2], orders[ORDERS // 2 :]
    await system.place(first)
    crashed = system.process(role)

    async def first_wave_over() -> bool:
        return crashed.poll() is not None or await system.ended() == len(first)

    await wait_for(first_wave_over, 120, "the first wave to end or the process to crash")
    await system.place(second)
    await system.wait_crashed(role, point)
    system.start(role)
    await system.wait_all_ended(orders)
    await system.assert_invariants(orders)
    system.stop_all()


@pytest.mark.slow
async def test_participant_crash_after_its_commit_before_the_offset_commit(orders_system: Orders) -> None:
    """The commands come again; the inbox skips them: no reservation or log row twice."""
    await crash_and_recover(orders_system, "customers", "participant.after_commit@2")


@pytest.mark.slow
async def test_participant_crash_before_its_commit(orders_system: Orders) -> None:
    """Handlers ran, replies were in the outbox: all of it rolled back, then done again once."""
    await crash_and_recover(orders_system, "payments", "participant.before_commit@2")


@pytest.mark.slow
async def test_orchestrator_crash_after_committing_decisions_on_replies(orders_system: Orders) -> None:
    """The replies come again; the inbox skips them: no command sent twice for one attempt."""
    await crash_and_recover(orders_system, "worker", "orchestrator.after_commit@2")


@pytest.mark.slow
async def test_relay_crash_after_the_kafka_ack_before_the_outbox_delete(orders_system: Orders) -> None:
    """The batch is published again; the consumers' inbox skips the copies."""
    await crash_and_recover(orders_system, "relay", "relay.after_ack@3")


@pytest.mark.slow
async def test_orchestrator_crash_after_committing_a_deadline(orders_system: Orders) -> None:
    """With no inventory service the sagas wait on reserve_stock until it times out. The
    replies up to there are handled by a worker in this process that fires no deadlines, so
    the worker process's first commit is a deadline's: it dies right after it. Restarted (and
    the inventory service with it), every saga is compensated, once."""
    system = orders_system
    orders = [o for o in plan(ORDERS // 2) if o.sku == "widget" and o.customer_id != "declined"]
    for role in ("relay", "customers", "payments"):
        system.start(role)
    replies_only = OrchestratorWorker(system.orchestrator, system.cluster.bootstrap, deadline_interval_s=3600)
    await replies_only.start()
    try:
        await system.place(orders)

        async def all_awaiting_stock() -> bool:
            waiting = await system.scalar("SELECT count(*) FROM saga_deadlines WHERE step = 'reserve_stock'")
            return bool(waiting == len(orders))

        await wait_for(all_awaiting_stock, 120, "every saga to wait on reserve_stock")
    finally:
        await replies_only.stop()
    system.start("worker", {"SAGA_CRASH_AT": "orchestrator.after_commit"})
    await system.wait_crashed("worker", "orchestrator.after_commit")
    # Committed before the crash: one saga timed out and began compensating, and no other.
    assert await system.scalar("SELECT count(*) FROM saga_instances WHERE status = 'compensating'") == 1
    system.start("worker")

    async def all_timed_out() -> bool:
        compensating = await system.scalar(
            "SELECT count(*) FROM saga_instances WHERE status = 'compensating'"
        )
        return bool(compensating == len(orders))

    await wait_for(all_timed_out, 60, "every saga to time out")
    system.start("inventory")
    await system.wait_all_ended(orders)
    await system.assert_invariants(orders)
    compensated = await system.scalar("SELECT count(*) FROM saga_instances WHERE status = 'compensated'")
    assert compensated == len(orders)
    system.stop_all()
