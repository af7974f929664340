"""The topics an app needs, without Kafka: commands of every participant it sends to or serves,
replies of every saga type (a child's too), a dead-letter topic beside each topic it reads."""

from __future__ import annotations

import types

import pytest

from saga import App, ChildSaga, Saga, StepKind
from saga._topics_plan import TopicNumbers, app_topics
from tests.saga.travel import HANDLERS, ReserveHotelStep, TravelSaga, TripData, messages

pytestmark = pytest.mark.pure


class PayByBank(ReserveHotelStep):
    name = "pay_by_bank"
    participant = "bank"


class BookTravel(ChildSaga[TripData]):
    saga = TravelSaga
    kind = StepKind.PIVOT

    def start(self, data: TripData) -> TripData:
        return data


def test_an_app_needs_commands_replies_and_a_dead_letter_topic_beside_each_topic_it_reads() -> None:
    trip = types.new_class(
        "Trip", (Saga[TripData],), exec_body=lambda ns: ns.update(steps=(PayByBank, BookTravel))
    )
    app = App(
        sagas=[TravelSaga, trip],
        messages=messages,
        participants=HANDLERS,
        external_participants=["bank"],
        topic_prefix="t",
    )
    specs = app_topics(app, TopicNumbers(partitions=4, replication_factor=3, min_insync_replicas=2))
    assert [(s.name, s.partitions_like) for s in specs] == [
        ("t.TravelSaga.replies", None),
        ("t.TravelSaga.replies.dlq", "t.TravelSaga.replies"),
        ("t.Trip.replies", None),
        ("t.Trip.replies.dlq", "t.Trip.replies"),
        ("t.bank.commands", None),  # sent to, served elsewhere: its dead-letter topic is that deployment's
        ("t.flights.commands", None),
        ("t.flights.commands.dlq", "t.flights.commands"),
        ("t.hotels.commands", None),
        ("t.hotels.commands.dlq", "t.hotels.commands"),
        ("t.payments.commands", None),
        ("t.payments.commands.dlq", "t.payments.commands"),
    ]
    assert {(s.partitions, s.replication_factor, s.min_insync_replicas) for s in specs} == {(4, 3, 2)}
