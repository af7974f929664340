"""The order saga deployed with its second step renamed (reserve_stock -> reserve_inventory)
while sagas wait on it: same saga name, same messages, same participants (issue 13 item 4).

`app` is what the CLI loads for it (`--app tests.saga.renamed:app`);
`examples.orders.app:app` is the definition that has the step.
"""

from __future__ import annotations

from examples.orders.messages import messages
from examples.orders.saga import (
    ApproveOrderStep,
    ChargePaymentStep,
    OrderData,
    ReserveCreditStep,
    ReserveStockStep,
)
from examples.orders.services import HANDLERS
from saga import App, Saga

OLD_STEP, NEW_STEP = "reserve_stock", "reserve_inventory"


class ReserveInventoryStep(ReserveStockStep):
    name = NEW_STEP


class RenamedOrderSaga(Saga[OrderData]):
    name = "OrderSaga"
    steps = (ReserveCreditStep, ReserveInventoryStep, ChargePaymentStep, ApproveOrderStep)


app = App(sagas=[RenamedOrderSaga], messages=messages, participants=HANDLERS)


def park_reason(saga_id: str) -> str:
    """What a saga of the old definition that waits on reserve_stock shows under this one."""
    return (
        "step 'reserve_stock' of OrderSaga is not in the deployed definition "
        "(it has: reserve_credit, reserve_inventory, charge_payment, approve_order); "
        f"deploy a definition that has it, then `saga resume {saga_id} --note ...`"
    )
