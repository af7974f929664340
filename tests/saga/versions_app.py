"""A money transfer saga in three versions, for the tests of versions, the deploy gate and
migrations (issue 15). Not the order saga: behaviour must hold for any saga.

- `TransferV1` (version 1): debit -> hold -> credit (the pivot).
- `TransferV2` (version 2): the hold step renamed `risk_hold`; declares the migration from 1.
- `TransferV3` (version 3): its data needs a `currency`; migrations from 1 and 2 fill it in.
- `TransferRenamedInPlace`: the mistake the gate catches, `hold` renamed without a new version.

Apps (all on the topic prefix "transfers"; tests give each run its own with
`with_topic_prefix`): `app_v1`, `app_v1_v2` (both side by side), `app_v2` (v1 removed),
`app_v2_v3`, `app_in_place`. Every participant answers with success.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from outbox import Envelope, MessageRegistry
from saga import App, Migration, RemoteStep, Saga, StepKind

messages = MessageRegistry()


@messages.message("ledger.debit")
class Debit(BaseModel):
    transfer_id: str
    amount: int


@messages.message("ledger.debited")
class Debited(BaseModel):
    transfer_id: str


@messages.message("ledger.refund")
class Refund(BaseModel):
    transfer_id: str


@messages.message("ledger.refunded")
class Refunded(BaseModel):
    transfer_id: str


@messages.message("risk.hold")
class Hold(BaseModel):
    transfer_id: str


@messages.message("risk.held")
class Held(BaseModel):
    transfer_id: str


@messages.message("risk.release")
class Release(BaseModel):
    transfer_id: str


@messages.message("risk.released")
class Released(BaseModel):
    transfer_id: str


@messages.message("payee.credit")
class Credit(BaseModel):
    transfer_id: str
    account: str


@messages.message("payee.credited")
class Credited(BaseModel):
    transfer_id: str


class TransferData(BaseModel):
    transfer_id: str
    amount: int
    account: str


class TransferDataV3(TransferData):
    currency: str


class DebitStep(RemoteStep[TransferData]):
    name = "debit"
    participant = "ledger"
    compensation_reply = Refunded
    timeout_s = 60

    def command(self, data: TransferData) -> Debit:
        return Debit(transfer_id=data.transfer_id, amount=data.amount)

    def on_reply(self, data: TransferData, reply: Debited) -> TransferData:
        return data

    def compensation(self, data: TransferData) -> Refund:
        return Refund(transfer_id=data.transfer_id)


class HoldStep(RemoteStep[TransferData]):
    name = "hold"
    participant = "risk"
    compensation_reply = Released
    timeout_s = 60

    def command(self, data: TransferData) -> Hold:
        return Hold(transfer_id=data.transfer_id)

    def on_reply(self, data: TransferData, reply: Held) -> TransferData:
        return data

    def compensation(self, data: TransferData) -> Release:
        return Release(transfer_id=data.transfer_id)


class RiskHoldStep(HoldStep):
    name = "risk_hold"


class CreditStep(RemoteStep[TransferData]):
    name = "credit"
    participant = "payee"
    kind = StepKind.PIVOT
    timeout_s = 60

    def command(self, data: TransferData) -> Credit:
        return Credit(transfer_id=data.transfer_id, account=data.account)

    def on_reply(self, data: TransferData, reply: Credited) -> TransferData:
        return data


class TransferV1(Saga[TransferData]):
    name = "Transfer"
    version = 1
    steps = (DebitStep, HoldStep, CreditStep)


class TransferV2(Saga[TransferData]):
    name = "Transfer"
    version = 2
    steps = (DebitStep, RiskHoldStep, CreditStep)
    migrations = (Migration(from_version=1, renames={"hold": "risk_hold"}),)


def add_currency(old: dict[str, Any]) -> dict[str, Any]:
    """Version 3's data: every transfer before it was in euros."""
    return {**old, "currency": "EUR"}


class TransferV3(Saga[TransferDataV3]):
    name = "Transfer"
    version = 3
    steps = (DebitStep, RiskHoldStep, CreditStep)
    migrations = (
        Migration(from_version=2, data=add_currency),
        Migration(from_version=1, renames={"hold": "risk_hold"}, data=add_currency),
    )


class TransferRenamedInPlace(Saga[TransferData]):
    """`hold` renamed while keeping version 1: what the deploy gate must stop."""

    name = "Transfer"
    steps = (DebitStep, RiskHoldStep, CreditStep)


REPLIES: dict[type[BaseModel], type[BaseModel]] = {
    Debit: Debited,
    Refund: Refunded,
    Hold: Held,
    Release: Released,
    Credit: Credited,
}


async def answer(conn: Any, command: Any, envelope: Envelope) -> BaseModel:
    """Every participant says yes: the reply type its command expects."""
    return REPLIES[type(command)](transfer_id=command.transfer_id)


PARTICIPANTS: dict[str, dict[type[BaseModel], Any]] = {
    "ledger": {Debit: answer, Refund: answer},
    "risk": {Hold: answer, Release: answer},
    "payee": {Credit: answer},
}


def _app(*sagas: type[Saga[Any]]) -> App:
    return App(sagas=list(sagas), messages=messages, participants=PARTICIPANTS, topic_prefix="transfers")


app_v1 = _app(TransferV1)
app_v1_v2 = _app(TransferV1, TransferV2)
app_v2 = _app(TransferV2)
app_v2_v3 = _app(TransferV2, TransferV3)
app_in_place = _app(TransferRenamedInPlace)
