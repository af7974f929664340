"""Sagas that use every construct of the saga language, for `saga graph` and `saga show`.

`ShopSaga` has them all: a wait with a timeout, a parallel group of two remote steps, a
wait for any of two signals and a child saga, the pivot, a group after it with a timer, a
timer until a date and a local step. `PackSaga` and `CrateSaga` are small enough to drive by
hand in a test: a group of a remote step, a child saga and a wait, then a wait for a second
signal; a group of two remote steps and a wait.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from outbox import MessageRegistry
from saga import (
    ChildSaga,
    Delay,
    LocalStep,
    Parallel,
    RemoteStep,
    RetryPolicy,
    Saga,
    StepKind,
    Until,
    WaitFor,
    WaitForAny,
)

messages = MessageRegistry()


@messages.message("lang.do")
class Do(BaseModel):
    order_id: str
    what: str


@messages.message("lang.done")
class Done(BaseModel):
    what: str


@messages.message("lang.undo")
class Undo(BaseModel):
    order_id: str
    what: str


@messages.message("lang.undone")
class Undone(BaseModel):
    what: str


@messages.message("lang.picked")
class Picked(BaseModel):
    picker: str


@messages.message("lang.approved")
class Approved(BaseModel):
    by: str


@messages.message("lang.rejected")
class Rejected(BaseModel):
    by: str


class ShopData(BaseModel):
    order_id: str
    picker: str | None = None


class PaymentData(BaseModel):
    order_id: str


class _Remote(RemoteStep[ShopData]):
    """A remote step that asks its participant to do `name` (and to undo it)."""

    reply = Done
    compensation_reply = Undone

    def command(self, data: ShopData) -> Do:
        return Do(order_id=data.order_id, what=self.name)

    def compensation(self, data: ShopData) -> Undo:
        return Undo(order_id=data.order_id, what=self.name)


class Reserve(_Remote):
    participant = "stock"
    timeout_s = 30.0


class Pack(_Remote):
    participant = "warehouse"


class Label(_Remote):
    participant = "labels"
    retry = RetryPolicy(attempts=3)


class Authorize(RemoteStep[PaymentData]):
    participant = "payments"
    reply = Done
    compensation_reply = Undone

    def command(self, data: PaymentData) -> Do:
        return Do(order_id=data.order_id, what="authorize")

    def compensation(self, data: PaymentData) -> Undo:
        return Undo(order_id=data.order_id, what="authorize")


class PaymentSaga(Saga[PaymentData]):
    """A child: no pivot, so its parent can undo it once it completed."""

    steps = (Authorize,)


class Pay(ChildSaga[ShopData]):
    saga = PaymentSaga

    def start(self, data: ShopData) -> PaymentData:
        return PaymentData(order_id=data.order_id)


class Charge(RemoteStep[ShopData]):
    participant = "payments"
    kind = StepKind.PIVOT
    reply = Done

    def command(self, data: ShopData) -> Do:
        return Do(order_id=data.order_id, what="charge")


class _After(RemoteStep[ShopData]):
    kind = StepKind.RETRIABLE
    reply = Done

    def command(self, data: ShopData) -> Do:
        return Do(order_id=data.order_id, what=self.name)


class Ship(_After):
    participant = "warehouse"


class Invoice(_After):
    participant = "billing"


class Approve(LocalStep[ShopData]):
    kind = StepKind.RETRIABLE

    async def action(self, conn: AsyncConnection, data: ShopData) -> None:
        return None


def ship_date(data: ShopData) -> datetime:
    return datetime(2030, 1, 1, tzinfo=UTC)


class TakePicked(WaitFor(Picked, timeout_s=60)):  # type: ignore[misc]
    name = "wait_for_picked"

    def on_signal(self, data: ShopData, signal: Picked) -> ShopData:
        return data.model_copy(update={"picker": signal.picker})


class ShopSaga(Saga[ShopData]):
    steps = (
        Reserve,
        TakePicked,
        Parallel(Pack, Label, WaitForAny(Approved, Rejected, timeout_s=30), Pay),
        Charge,
        Parallel(Ship, Invoice, Delay(5)),
        Until(ship_date),
        Approve,
    )


class PackSaga(Saga[ShopData]):
    steps = (Parallel(Pack, Pay, WaitFor(Picked, timeout_s=600)), WaitFor(Approved))


class CrateSaga(Saga[ShopData]):
    steps = (Parallel(Pack, Label, WaitFor(Picked, timeout_s=600)),)
