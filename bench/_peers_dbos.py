"""DBOS Transact's side of bench/peers.py, in a process of its own (so that its CPU is counted
apart, as each of our processes is): the order saga (bench/_peers_orders.py) as one workflow
whose four steps are DBOS datasource transactions, and compensating transactions on a refusal.

    python bench/_peers_dbos.py APP_URL SYSTEM_URL --sagas N --window W [--api sync|async]

`--api sync` (the default: the cheaper of the two here) runs the workflows on W threads, with
DBOS's `SQLAlchemyDatasource`; `--api async` runs them as W concurrent coroutines with its
`AsyncSQLAlchemyDatasource` and our own async transactions.

Talks to bench/peers.py over stdin and stdout, one line each way at a time: it launches DBOS,
warms up, prints `ready`; on `go` runs the N workflows, at most W at once, and prints their
figures as one JSON line; on `stop` shuts DBOS down.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, TypeVar

import orjson
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dbos import DBOS, AsyncSQLAlchemyDatasource, DBOSConfig, SetWorkflowID, SQLAlchemyDatasource

from bench import _peers_orders as orders
from bench._peers_orders import Declined, Order

WARM_UP = 20
# Our participants' transactions run at READ COMMITTED, Postgres' default; DBOS's default is
# SERIALIZABLE. The same level on both sides.
ISOLATION: Literal["READ COMMITTED"] = "READ COMMITTED"

S = TypeVar("S")


def saga_steps(steps: dict[str, S]) -> tuple[list[tuple[S, S | None]], S]:
    """The remote steps with their compensations, in order, and the local step."""
    return [
        (steps["reserve_credit"], steps["release_credit"]),
        (steps["reserve_stock"], steps["release_stock"]),
        (steps["charge_payment"], None),
    ], steps["approve_order"]


# --- sync: DBOS's SQLAlchemyDatasource, the statements of bench/_peers_orders.py ---------------


def _reserve_credit(conn: Connection, o: Order) -> None:
    params = {"o": o.order_id, "c": o.customer_id, "a": o.amount}
    new = conn.execute(orders.NEW_CREDIT, params).first() is not None
    if new and conn.execute(orders.TAKE_CREDIT, params).rowcount == 0:
        raise Declined(f"insufficient credit for customer {o.customer_id}")


def _release_credit(conn: Connection, o: Order) -> None:
    row = conn.execute(orders.RELEASE_CREDIT, {"o": o.order_id}).first()
    if row is not None:
        conn.execute(orders.GIVE_CREDIT, {"c": row[0], "a": row[1]})


def _reserve_stock(conn: Connection, o: Order) -> None:
    params = {"o": o.order_id, "s": o.sku, "q": o.quantity}
    new = conn.execute(orders.NEW_STOCK, params).first() is not None
    if new and conn.execute(orders.TAKE_STOCK, params).rowcount == 0:
        raise Declined(f"sku {o.sku} is out of stock")


def _release_stock(conn: Connection, o: Order) -> None:
    row = conn.execute(orders.RELEASE_STOCK, {"o": o.order_id}).first()
    if row is not None:
        conn.execute(orders.GIVE_STOCK, {"s": row[0], "q": row[1]})


def _charge_payment(conn: Connection, o: Order) -> None:
    if not conn.execute(orders.CARD_OK, {"c": o.customer_id}).scalar_one():
        raise Declined(f"the card of customer {o.customer_id} was declined")
    conn.execute(orders.CHARGE, {"o": o.order_id, "c": o.customer_id, "a": o.amount})


def _approve_order(conn: Connection, o: Order) -> None:
    conn.execute(orders.APPROVE, {"o": o.order_id})


SYNC = {
    "reserve_credit": _reserve_credit,
    "release_credit": _release_credit,
    "reserve_stock": _reserve_stock,
    "release_stock": _release_stock,
    "charge_payment": _charge_payment,
    "approve_order": _approve_order,
}
SyncStep = Callable[[Order], None]


def build_sync(app_url: str, pool_size: int) -> Callable[[Order], str]:
    datasource = SQLAlchemyDatasource.create(
        app_url, engine_kwargs={"pool_size": pool_size, "max_overflow": 0}
    )

    def transaction(name: str, body: Callable[[Connection, Order], None]) -> SyncStep:
        @datasource.transaction(name=name, isolation_level=ISOLATION)
        def run(order: Order) -> None:
            body(datasource.sql_session().connection(), order)

        return run

    remote, approve = saga_steps({name: transaction(name, body) for name, body in SYNC.items()})

    @DBOS.workflow(name="order_saga")
    def order_saga(order: Order) -> str:
        done: list[SyncStep] = []
        for action, compensation in remote:
            try:
                action(order)
            except Declined:
                for undo in reversed(done):  # in reverse order, as our saga compensates
                    undo(order)
                return "compensated"
            if compensation is not None:
                done.append(compensation)
        approve(order)
        return "approved"

    return order_saga


# --- async: DBOS's AsyncSQLAlchemyDatasource, the transactions of bench/_peers_orders.py --------

ASYNC = {
    "reserve_credit": orders.reserve_credit,
    "release_credit": orders.release_credit,
    "reserve_stock": orders.reserve_stock,
    "release_stock": orders.release_stock,
    "charge_payment": orders.charge_payment,
    "approve_order": orders.approve_order,
}
AsyncStep = Callable[[Order], Awaitable[None]]


async def build_async(app_url: str, pool_size: int) -> Callable[[Order], Awaitable[str]]:
    datasource = await AsyncSQLAlchemyDatasource.create(
        app_url, engine_kwargs={"pool_size": pool_size, "max_overflow": 0}
    )

    def transaction(name: str, body: Callable[[AsyncConnection, Order], Awaitable[None]]) -> AsyncStep:
        @datasource.transaction(name=name, isolation_level=ISOLATION)
        async def run(order: Order) -> None:
            await body(await datasource.sql_session().connection(), order)

        return run

    remote, approve = saga_steps({name: transaction(name, body) for name, body in ASYNC.items()})

    @DBOS.workflow(name="order_saga")
    async def order_saga(order: Order) -> str:
        done: list[AsyncStep] = []
        for action, compensation in remote:
            try:
                await action(order)
            except Declined:
                for undo in reversed(done):
                    await undo(order)
                return "compensated"
            if compensation is not None:
                done.append(compensation)
        await approve(order)
        return "approved"

    return order_saga


def runner(args: argparse.Namespace) -> Callable[[list[Order]], Counter[str]]:
    """Configures DBOS, registers the workflow and launches; returns what runs a list of
    orders' workflows, at most `args.window` at once, and counts their outcomes."""
    config: DBOSConfig = {
        "name": "peers",
        "system_database_url": args.system_url,
        "sys_db_pool_size": args.pool_size,
        "log_level": "WARNING",
    }
    DBOS(config=config)
    if args.api == "sync":
        sync_workflow = build_sync(args.app_url, args.pool_size)
        DBOS.launch()
        threads = ThreadPoolExecutor(args.window)

        def start(order: Order) -> str:
            with SetWorkflowID(order.order_id):  # idempotent on the order, as our sagas' keys are
                return sync_workflow(order)

        return lambda planned: Counter(threads.map(start, planned))

    loop = asyncio.new_event_loop()
    async_workflow = loop.run_until_complete(build_async(args.app_url, args.pool_size))
    DBOS.launch()

    async def run_all(planned: list[Order]) -> Counter[str]:
        gate = asyncio.Semaphore(args.window)

        async def one(order: Order) -> str:
            async with gate:
                with SetWorkflowID(order.order_id):
                    return await async_workflow(order)

        return Counter(await asyncio.gather(*(one(o) for o in planned)))

    return lambda planned: loop.run_until_complete(run_all(planned))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("app_url")
    parser.add_argument("system_url")
    parser.add_argument("--sagas", type=int, required=True)
    parser.add_argument("--window", type=int, required=True)
    parser.add_argument("--api", choices=["sync", "async"], default="sync")
    parser.add_argument("--pool-size", type=int, default=20)
    args = parser.parse_args()
    run = runner(args)
    try:
        warm_up = run(orders.orders(WARM_UP, prefix="w"))
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            return
        started = time.monotonic()
        ended = run(orders.orders(args.sagas))
        elapsed = time.monotonic() - started
        print(orjson.dumps({"elapsed_s": elapsed, "ended": ended, "warm_up": warm_up}).decode(), flush=True)
        sys.stdin.readline()  # `stop`, once the caller has taken its CPU sample
    finally:
        DBOS.destroy()


if __name__ == "__main__":
    main()
