"""The order saga deployed with its second step renamed (reserve_stock -> reserve_inventory)
while sagas wait on it: same saga name, same messages, same participants (issue 13 item 4).

`app` is what the CLI loads for it (`--app tests.saga.renamed:app`, on the topics ORDERS_RUN
names when set); `examples.orders.run_app:app` is the definition that has the step.
"""

from __future__ import annotations

import os
from dataclasses import replace

from examples.orders.app import app as shop
from examples.orders.saga import (
    ApproveOrderStep,
    ChargePaymentStep,
    IssueInvoiceStep,
    OrderData,
    ReserveCreditStep,
    ReserveStockStep,
    ShipOrderStep,
    WaitForPicked,
)
from saga import Parallel, Saga


class ReserveInventoryStep(ReserveStockStep):
    name = "reserve_inventory"


class RenamedOrderSaga(Saga[OrderData]):
    name = "OrderSaga"
    steps = (
        ReserveCreditStep,
        ReserveInventoryStep,
        WaitForPicked,
        ChargePaymentStep,
        Parallel(ShipOrderStep, IssueInvoiceStep),
        ApproveOrderStep,
    )


app = replace(shop, sagas=[RenamedOrderSaga])
if run := os.environ.get("ORDERS_RUN"):  # on a run's topics, as examples.orders.run_app
    app = app.with_topic_prefix(run)


def park_reason(saga_id: str) -> str:
    """What a saga of the old definition that waits on reserve_stock shows under this one."""
    return (
        "step 'reserve_stock' of OrderSaga is not in the deployed definition "
        "(it has: reserve_credit, reserve_inventory, wait_for_picked, charge_payment, ship_order, "
        "issue_invoice, approve_order); "
        f"deploy a definition that has it, then `saga resume {saga_id} --note ...`"
    )
