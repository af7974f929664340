"""Issue 13 item 4 at the command line (run as a subprocess): a saga parked because the
deployed definition lacks its step shows in `saga ls --stuck` and `saga show` with the
reason; `saga resume` refuses while the step is missing and takes it up once it is back."""

from __future__ import annotations

import orjson

from eventstore import Database
from examples.orders.messages import StockReserved
from saga import Orchestrator
from tests.cli.test_cli import APP, Cli, assert_clean_error, running_at, seed
from tests.saga.renamed import app as renamed_app
from tests.saga.renamed import park_reason

RENAMED_APP = "tests.saga.renamed:app"


def table_rows(stdout: str) -> dict[str, dict[str, str]]:
    """A rich table's rows by saga id, cells by column name, each cell's lines joined (long
    cells are folded)."""
    header: list[str] = []
    rows: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in stdout.splitlines():
        if line.startswith("┃") and not header:
            header = [cell.strip() for cell in line.strip("┃").split("┃")]
        if not line.startswith("│"):
            continue
        cells = [cell.strip() for cell in line.strip("│").split("│")]
        if cells[0]:
            current = rows.setdefault(cells[0], cells)
        elif current is not None:
            current[:] = [f"{have} {more}".strip() for have, more in zip(current, cells, strict=True)]
    return {saga_id: dict(zip(header, cells, strict=True)) for saga_id, cells in rows.items()}


def squeezed(text: str) -> str:
    return "".join(text.split())


async def park_by_reply(database: Database, topic_prefix: str, saga_id: str) -> None:
    """The reserve_stock reply reaches an orchestrator of the renamed definition."""
    renamed = renamed_app.with_topic_prefix(topic_prefix).orchestrator(database)
    reply = StockReserved(reservation_id="stock-1")
    envelope = renamed.outbox.envelope(
        reply, saga_id=saga_id, saga_type="OrderSaga", step="reserve_stock", phase="action", attempt=1
    )
    async with renamed.engine.begin() as conn:
        await renamed.handle_reply(conn, reply, envelope)
    assert (await renamed.load(saga_id)).status == "parked"


async def test_item4_ls_stuck_and_show_print_why_a_saga_is_parked_and_resume_takes_it_up(
    cli: Cli, orchestrator: Orchestrator, database: Database, topic_prefix: str
) -> None:
    by_reply, by_resume, done = await seed(orchestrator, [running_at(2), running_at(2), running_at(1)])
    await park_by_reply(database, topic_prefix, by_reply.saga_id)

    # A resume under the renamed definition parks a saga it cannot move, and says why.
    parked_now = await cli("resume", by_resume.saga_id, "--note", "go on", app=RENAMED_APP)
    assert_clean_error(parked_now, f"{by_resume.saga_id} is parked: {park_reason(by_resume.saga_id)}")
    assert parked_now.stderr.count("is not in the deployed definition") == 1, parked_now.describe()

    stuck = {r["saga_id"]: r for r in (await cli("--json", "ls", "--stuck")).json()}
    assert set(stuck) == {by_reply.saga_id, by_resume.saga_id}  # the running one is not stuck
    for saga_id in (by_reply.saga_id, by_resume.saga_id):
        assert (stuck[saga_id]["status"], stuck[saga_id]["last_error"]) == ("parked", park_reason(saga_id))
    table = await cli("ls", "--stuck")
    assert table.code == 0, table.describe()
    assert "2 saga(s)" in table.stdout
    rows = table_rows(table.stdout)
    for saga_id in (by_reply.saga_id, by_resume.saga_id):
        assert rows[saga_id]["status"] == "parked", table.describe()
        assert squeezed(rows[saga_id]["last_error"]) == squeezed(park_reason(saga_id)), table.describe()

    shown = await cli("show", by_reply.saga_id, app=RENAMED_APP)
    assert shown.code == 0, shown.describe()
    assert f"parked (was running): {park_reason(by_reply.saga_id)}" in shown.stdout, shown.describe()
    assert "saga.parked" in shown.stdout
    as_json = (await cli("--json", "show", by_reply.saga_id, app=RENAMED_APP)).json()
    assert as_json["state"]["status"] == "parked"
    assert as_json["state"]["parked"]["reason"] == park_reason(by_reply.saga_id)
    assert as_json["deadlines"] == []

    # While the step is still missing, resume refuses and changes nothing.
    version = as_json["state"]["version"]
    refused = await cli("resume", by_reply.saga_id, "--note", "try", app=RENAMED_APP)
    assert_clean_error(refused, f"saga {by_reply.saga_id} stays parked: {park_reason(by_reply.saga_id)}")
    assert (await orchestrator.load(by_reply.saga_id)).version == version

    # Under the definition that has reserve_stock, resume sends it again.
    for saga_id in (by_reply.saga_id, by_resume.saga_id):
        resumed = await cli("--json", "resume", saga_id, "--note", "reserve_stock is back", app=APP)
        state = resumed.json()
        assert state["status"] == "running"
        assert state["parked"] is None
        assert (state["awaiting"]["step"], state["awaiting"]["attempt"]) == ("reserve_stock", 2)
    assert (await cli("--json", "ls", "--stuck")).json() == []
    assert orjson.loads((await cli("--json", "ls", "--status", "parked")).stdout) == []
    assert (await orchestrator.load(done.saga_id)).status == "running"
