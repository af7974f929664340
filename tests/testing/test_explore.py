"""Fault exploration on an order paid from a wallet and shipped (tests/testing/explore_app.py)."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from saga import TypedSagaState
from saga.testing import Fault, System, open_system
from saga.testing._faults import selected
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

CAUGHT = (
    "participant wallet killed at participant.before_commit, pass 1 (its handlers ran, nothing committed)"
)


async def test_a_correct_wallet_holds_under_every_fault(saga_system: System) -> None:
    exploration = await saga_system.explore(
        PaidOrder, Order(order_id="o1", amount=30), invariant=paid_once_or_refunded
    )
    assert [run.outcome for run in exploration.runs] == ["ok"] * len(exploration.runs), str(exploration)
    tried = {run.what: run.status for run in exploration.runs}
    assert tried.pop("step charge timed out (its command arrived late)") == "compensated"
    assert (
        tried.pop("step ship timed out (its command arrived late)") == "completed"
    )  # sent again, shipped once
    for each in (
        "no fault (the baseline)",
        "command charge/action to wallet delivered twice",
        "command ship/action to shop delivered twice",
        "reply to charge/action delivered twice",
        "reply to ship/action delivered twice",
        CAUGHT,
    ):
        assert tried.pop(each) == "completed", str(exploration)
    killed = {run.fault.worker for run in exploration.runs if run.fault and run.fault.kind == "crash"}
    assert killed == {"relay", "orchestrator", "participant:wallet", "participant:shop"}
    assert set(tried.values()) == {"completed"}


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
    assert str(raised.value).startswith(
        f"1 of 3 runs of PaidOrder broke the invariant:\n- {CAUGHT}: order o2 completed: took 60 and "
        "shipped 1 time(s); expected to take 30 and ship 1 time(s)\n"
    )


async def test_a_command_delivered_twice_is_on_kafka_twice(saga_system: System) -> None:
    async def one_charge_command(system: System, state: TypedSagaState[Any]) -> None:
        topic = system.orchestrator.topics.commands("wallet")
        count = await records_on(system, topic)
        assert count == 1, f"{count} records on {topic}"

    exploration = await saga_system.explore(
        PaidOrder,
        Order(order_id="o3", amount=10),
        invariant=one_charge_command,
        faults=lambda fault: fault.kind == "command" and fault.service == "wallet",
        check=False,
    )
    assert [(run.what, run.outcome) for run in exploration.runs] == [
        ("no fault (the baseline)", "ok"),
        ("command charge/action to wallet delivered twice", "broken"),
    ]
    (broken,) = exploration.broken
    assert re.match(r"2 records on t\w+\.wallet\.commands\n", broken.message), broken.message
    assert "BROKEN   completed    command charge/action to wallet delivered twice" in str(exploration)


async def records_on(system: System, topic: str) -> int:
    bootstrap = system.config.services.kafka_bootstrap
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await producer.start()
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in await producer.partitions_for(topic)]
        return sum((await consumer.end_offsets(parts)).values())
    finally:
        await consumer.stop()
        await producer.stop()


@pytest.mark.pure
def test_faults_are_named_in_words() -> None:
    assert (
        str(Fault("reply", "charge", "action", saga_type="PaidOrder"))
        == "reply to charge/action delivered twice"
    )
    assert str(Fault("timeout", "charge", "compensation", "wallet")) == (
        "compensation of step charge timed out (its command arrived late)"
    )
    assert str(Fault("crash", worker="relay", point="relay.after_ack", nth=2)) == (
        "relay killed at relay.after_ack, pass 2 (Kafka has the batch, its outbox rows are not deleted)"
    )


@pytest.mark.pure
def test_faults_of_an_unknown_kind_are_refused_naming_the_kinds() -> None:
    faults = [Fault("reply", "a", "action"), Fault("crash", worker="relay", point="relay.after_ack", nth=1)]
    assert selected(faults, ["crash"]) == faults[1:]
    assert selected(faults, lambda f: f.kind == "reply") == faults[:1]
    with pytest.raises(ValueError, match=r"'crashes' is not a kind of fault; the kinds are command, reply"):
        selected(faults, ["crashes"])


async def test_a_plain_function_is_an_invariant_too_and_a_baseline_that_breaks_it_says_so(
    saga_system: System,
) -> None:
    def never_shipped(system: System, state: TypedSagaState[Any]) -> None:
        assert state.status != "completed", f"order {state.data.order_id} completed"

    with pytest.raises(AssertionError, match=r"no fault \(the baseline\).*order o5 completed"):
        await saga_system.explore(
            PaidOrder, Order(order_id="o5", amount=10), invariant=never_shipped, faults=lambda fault: False
        )
    with pytest.raises(TypeError, match="explore: invariant must be a function"):
        await saga_system.explore(PaidOrder, Order(order_id="o6", amount=10), invariant="completed")  # type: ignore[arg-type]
