"""Issue 13 item 10: the CLI finds sagas by key, prints whole ids and columns, takes its output
options after the command, and says clearly what is wrong. The CLI runs as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import click
import orjson
from sqlalchemy import text
from sqlalchemy.engine import make_url

from eventstore import Database
from examples.orders.messages import messages
from examples.orders.saga import OrderData, OrderSaga
from saga import Orchestrator, fire_due_deadlines, stream_of
from saga._cli import COMMAND_MODULES
from saga._cli_base import cli as saga_cli
from tests.cli.test_cli import (  # the helpers that make sagas in-process
    CLI_TIMEOUT_S,
    COMPLETED,
    ROOT,
    Cli,
    assert_clean_error,
    running_at,
    seed,
    start_order,
)
from tests.cli.two_types_app import ReorderSaga

TWO_TYPES_APP = "tests.cli.two_types_app:app"


# --- lookup by key -----------------------------------------------------------------------


async def test_item10_show_and_ls_find_a_saga_by_its_start_key_and_print_the_key(
    cli: Cli, orchestrator: Orchestrator, database: Database, topic_prefix: str
) -> None:
    order, other = await seed(orchestrator, [COMPLETED, COMPLETED])
    key = order.state.data["order_id"]
    assert order.state.key == key

    shown = (await cli("--json", "show", key)).json()
    assert shown["state"]["saga_id"] == order.saga_id
    assert shown["state"]["key"] == key
    plain = await cli("show", key)
    assert plain.code == 0, plain.describe()
    assert f"OrderSaga {order.saga_id}  key {key}  status completed" in plain.stdout
    by_id = (await cli("--json", "show", order.saga_id)).json()
    assert by_id == shown

    listed = (await cli("--json", "ls", "--key", key)).json()
    assert [(r["saga_id"], r["key"]) for r in listed] == [(order.saga_id, key)]
    table = await cli("ls")
    row = next(line for line in table.stdout.splitlines() if order.saga_id in line)
    assert key in row
    assert other.state.data["order_id"] not in row

    # The same key starts a saga of another type: `show KEY` asks which one.
    both = Orchestrator(database, [OrderSaga, ReorderSaga], messages, topic_prefix=topic_prefix)
    async with database.engine.begin() as conn:
        data = OrderData.model_validate(order.state.data)
        reorder_id = await both.start(conn, ReorderSaga, data, key=key)
    assert reorder_id != order.saga_id
    listed = (await cli("--json", "ls", "--key", key)).json()
    assert {(r["saga_type"], r["saga_id"]) for r in listed} == {
        ("OrderSaga", order.saga_id),
        ("ReorderSaga", reorder_id),
    }
    ambiguous = await cli("show", key, app=TWO_TYPES_APP)
    assert_clean_error(
        ambiguous, f"key {key!r} started 2 sagas", f"OrderSaga ({order.saga_id})", reorder_id, "--type"
    )
    picked = (await cli("--json", "show", key, "--type", "ReorderSaga", app=TWO_TYPES_APP)).json()
    assert picked["state"]["saga_id"] == reorder_id
    replayed = (await cli("--json", "replay", key, "--type", "OrderSaga", app=TWO_TYPES_APP)).json()
    assert replayed["saga_id"] == order.saga_id
    assert_clean_error(await cli("show", "no-such-key"), "no saga with id or key 'no-such-key'")
    assert_clean_error(
        await cli("show", key, "--type", "Nope", app=TWO_TYPES_APP),
        "no saga type 'Nope' in the app (it has: OrderSaga, ReorderSaga)",
    )


# --- whole ids and columns -----------------------------------------------------------------


async def test_item10_piped_output_keeps_whole_ids_and_wide_shows_whole_details(
    cli: Cli, orchestrator: Orchestrator
) -> None:
    (done,) = await seed(orchestrator, [COMPLETED])
    key = done.state.data["order_id"]
    timeline = (await cli("--json", "show", done.saga_id)).json()["timeline"]
    requested = [e["event"] for e in timeline if e["type"] == "saga.step_requested"]
    message_ids = [e["message_id"] for e in requested if e["message_id"] is not None]
    assert len(message_ids) == 5  # the remote steps' commands (the local step and the wait send none)

    # Piped, with no COLUMNS: nothing folded to 80 columns, every id whole on its row.
    listed = await cli("ls", columns=None)
    assert listed.code == 0, listed.describe()
    row = next(line for line in listed.stdout.splitlines() if done.saga_id in line)
    for cell in ("OrderSaga", key, "completed", "approve_order"):
        assert cell in row, listed.describe()
    shown = await cli("show", done.saga_id, columns=None)
    assert shown.code == 0, shown.describe()
    for message_id in message_ids:
        row = next(line for line in shown.stdout.splitlines() if message_id in line)
        assert "saga.step_requested" in row
    # Without --wide, a field too long for the row is left out whole, and counted.
    started = next(line for line in shown.stdout.splitlines() if "saga.started" in line)
    assert f"saga_type=OrderSaga key={key} saga_version=1 fingerprint=" in started
    assert started.rstrip(" │").endswith("(+1 more: --wide)")
    assert "order_id" not in started

    # In a terminal-sized console too, --wide prints every event's details whole.
    wide = await cli("show", done.saga_id, "--wide", columns="80")
    assert wide.code == 0, wide.describe()
    for event in timeline:
        assert orjson.dumps(event["event"]).decode() in wide.stdout, wide.describe()
    narrow = await cli("show", done.saga_id, columns="80")
    assert orjson.dumps(timeline[0]["event"]).decode() not in narrow.stdout


# --- --json after the command ----------------------------------------------------------------


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    found: list[tuple[tuple[str, ...], click.Command]] = []
    for name, command in group.commands.items():
        found.append(((*path, name), command))
        if isinstance(command, click.Group):
            found += _commands(command, (*path, name))
    return found


async def test_item10_json_is_accepted_after_the_command_on_every_command(
    cli: Cli, orchestrator: Orchestrator
) -> None:
    (done,) = await seed(orchestrator, [COMPLETED])
    for args in (
        ("ls",),
        ("ls", "--status", "completed"),
        ("show", done.saga_id),
        ("replay", done.saga_id, "--at", "2"),
        ("graph", "OrderSaga"),
        ("rebuild", "--verify"),
        ("db", "upgrade"),
    ):
        before = await cli("--json", *args)
        after = await cli(*args, "--json")
        assert after.code == 0, after.describe()
        assert orjson.loads(after.stdout) == before.json(), after.describe()
    status = (await cli("status", "--json")).json()
    assert status["sagas"] == {"completed": 1}

    # Every command, those of sub-groups included, takes the output options after its name.
    assert COMMAND_MODULES  # imported: every command is in the group
    commands = _commands(saga_cli)
    assert {path for path, _ in commands} >= {("ls",), ("worker",), ("participant",), ("db", "upgrade")}
    for path, command in commands:
        options = {opt for param in command.params for opt in getattr(param, "opts", ())}
        assert {"--json", "--wide"} <= options, path


# --- clear errors ----------------------------------------------------------------------------


async def test_item10_an_unknown_status_is_refused_listing_the_statuses(cli: Cli) -> None:
    result = await cli("ls", "--status", "runing")
    assert result.code == 2, result.describe()
    assert "Invalid value for '--status': 'runing' is not one of" in result.stderr
    for status in ("running", "compensating", "completed", "compensated", "compensation_failed", "failed"):
        assert f"'{status}'" in result.stderr
    assert "saga(s)" not in result.stdout


async def test_item10_replay_past_the_end_names_the_last_version(
    cli: Cli, orchestrator: Orchestrator
) -> None:
    (done,) = await seed(orchestrator, [COMPLETED])
    last = len(await orchestrator.store.load(stream_of(done.saga_id)))
    assert (await cli("--json", "replay", done.saga_id, "--at", str(last))).json()["status"] == "completed"
    for args in (("replay", done.saga_id, "--at", "99"), ("--json", "replay", done.saga_id, "--at", "99")):
        result = await cli(*args)
        assert_clean_error(
            result, f"saga {done.saga_id} has no version 99: its last version is {last}", f"--at 1 to {last}"
        )
        assert result.stdout == ""


async def _time_out_reply(orchestrator: Orchestrator, saga_id: str) -> None:
    """The saga's commands leave the outbox (as the relay deletes what it published: a timeout
    runs from then), and its reply deadline falls due."""
    async with orchestrator.engine.begin() as conn:
        await conn.execute(text("DELETE FROM outbox WHERE key = :s"), {"s": saga_id})
        await conn.execute(
            text(
                "UPDATE saga_deadlines SET due_at = now() - interval '1 second' "
                "WHERE saga_id = :s AND kind = 'reply'"
            ),
            {"s": saga_id},
        )
    assert await fire_due_deadlines(orchestrator) == 1


async def test_item10_replay_lists_a_timed_out_step_apart_from_the_done_ones(
    cli: Cli, orchestrator: Orchestrator
) -> None:
    (waiting,) = await seed(orchestrator, [running_at(2)])
    saga_id = waiting.saga_id
    await _time_out_reply(orchestrator, saga_id)
    events = await orchestrator.store.load(stream_of(saga_id))
    at = next(e.version for e in events if e.type == "saga.step_timed_out")

    replayed = (await cli("--json", "replay", saga_id, "--at", str(at))).json()
    assert replayed["done"] == ["reserve_credit"]
    assert replayed["timed_out"] == ["reserve_stock"]
    plain = await cli("show", saga_id)
    assert plain.code == 0, plain.describe()
    assert "done: reserve_credit\n" in plain.stdout
    assert "timed out, may have acted (compensation undoes them too): reserve_stock" in plain.stdout

    # What compensation undoes is unchanged: the step that may have acted, then the one before.
    state = await orchestrator.load(saga_id)
    assert state.status == "compensating"
    assert state.to_compensate == ["reserve_stock", "reserve_credit"]
    began = next(e.version for e in events if e.type == "saga.compensation_started")
    compensating = (await cli("--json", "replay", saga_id, "--at", str(began))).json()
    assert compensating["to_compensate"] == ["reserve_stock", "reserve_credit"]


async def test_item10_an_app_path_names_what_the_module_has_and_what_it_found(cli: Cli) -> None:
    missing = await cli("graph", "OrderSaga", app="examples.orders.app:ap")
    assert_clean_error(missing, "module 'examples.orders.app' has no attribute 'ap' (it has: app)")
    wrong_type = await cli("graph", "OrderSaga", app="examples.orders.messages:messages")
    assert_clean_error(wrong_type, "'examples.orders.messages:messages' is a MessageRegistry, not a saga App")


async def test_item10_a_misspelled_database_or_a_refused_login_is_named_not_unavailable(
    cli: Cli, database_url: str, orchestrator: Orchestrator
) -> None:
    await start_order(orchestrator, 1)
    name = f"nosuch_{uuid.uuid4().hex[:8]}"
    misspelled = make_url(database_url).set(database=name, password="s3cret-pw")
    url = misspelled.render_as_string(hide_password=False)
    for args in (("ls",), ("show", str(uuid.uuid4())), ("status",), ("rebuild", "--verify")):
        result = await cli(*args, database_url=url)
        assert_clean_error(
            result,
            f"Postgres at {misspelled.render_as_string(hide_password=True)}",
            f'database "{name}" does not exist',
            "check the database name",
        )
        assert "s3cret-pw" not in result.stderr
        assert "unavailable" not in result.stderr

    # The test server trusts every login: an unknown role is the refusal it can show.
    role = f"nobody_{uuid.uuid4().hex[:8]}"
    stranger = make_url(database_url).set(username=role).render_as_string(hide_password=False)
    result = await cli("ls", database_url=stranger)
    assert_clean_error(result, "authentication failed", f'role "{role}" does not exist', "user and password")

    # Only a server that does not answer is "unavailable".
    refused = await cli("ls", database_url="postgresql://x:pw@127.0.0.1:1/db")
    assert_clean_error(refused, "Postgres is unavailable at postgresql://x:***@127.0.0.1:1/db")


# --- issue 13 item 12 ----------------------------------------------------------------------


def test_item12_status_with_kafka_down_leaves_no_consumer_open(database_url: str) -> None:
    """The dead-letter count's consumer is stopped even when it never started."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "PYTHONWARNINGS": "always::ResourceWarning",
    }
    env.pop("SAGA_TOPIC_PREFIX", None)
    result = subprocess.run(
        [sys.executable, "-m", "saga", "--app", "examples.orders.app:app", "status"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr
    assert "dead letters: unavailable" in result.stdout
    assert "ResourceWarning" not in result.stderr, result.stderr
