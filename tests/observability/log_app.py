"""A small app whose participant and local step log lines of their own: `saga participant
billing` and `saga worker` of it run in test_logs.py with SAGA_LOG_FORMAT=json.

Billing charges an order; an order named `fail-...` fails every time (so the consumer runtime
logs its retries and dead-letters the command). The note step, local, runs on the reply.
Its topic prefix comes from LOG_APP_PREFIX, unique per test run.
"""

from __future__ import annotations

import logging
import os

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from outbox import Envelope, MessageRegistry
from saga import App, LocalStep, RemoteStep, Saga, StepKind

messages = MessageRegistry()


@messages.message("logs.charge")
class Charge(BaseModel):
    order: str


@messages.message("logs.charged")
class Charged(BaseModel):
    order: str


class Order(BaseModel):
    order: str
    noted: bool = False


class ChargeStep(RemoteStep[Order]):
    name = "charge"
    participant = "billing"
    kind = StepKind.PIVOT

    def command(self, data: Order) -> Charge:
        return Charge(order=data.order)

    def on_reply(self, data: Order, reply: Charged) -> Order:
        return data


class NoteStep(LocalStep[Order]):
    name = "note"
    kind = StepKind.RETRIABLE

    async def action(self, conn: AsyncConnection, data: Order) -> Order:
        logging.getLogger("log_app.note").info("noting order %s ✓", data.order)
        return data.model_copy(update={"noted": True})


class LoggedSaga(Saga[Order]):
    steps = (ChargeStep, NoteStep)


class CardDeclinedByTest(Exception):
    retriable = True  # tried again by the consumer runtime, then dead-lettered


async def charge(conn: AsyncConnection, command: Charge, envelope: Envelope) -> Charged:
    logging.getLogger("log_app.billing").info("charging order %s", command.order)
    if command.order.startswith("fail-"):
        raise CardDeclinedByTest(f"order {command.order} cannot be charged")
    return Charged(order=command.order)


app = App(
    sagas=[LoggedSaga],
    messages=messages,
    participants={"billing": {Charge: charge}},
    topic_prefix=os.environ.get("LOG_APP_PREFIX", "logs"),
)
