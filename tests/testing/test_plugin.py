"""The plugin as a user meets it: pytest run on a user's test folder in a subprocess, where the
plugin loads through its `pytest11` entry point (pytester)."""

from __future__ import annotations

import socket
import textwrap

import pytest

URL, BOOTSTRAP = "DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"

# A user's whole app: one local step that writes to a table of the app's own schema.
GREET_APP = """
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from outbox import MessageRegistry
from saga import App, LocalStep, Saga, StepKind


class Greeting(BaseModel):
    name: str
    text: str = ""


class Greet(LocalStep[Greeting]):
    name = "greet"
    kind = StepKind.PIVOT  # the one step: nothing before it to undo

    async def action(self, conn: AsyncConnection, data: Greeting) -> Greeting:
        await conn.execute(text("INSERT INTO greetings VALUES (:name)"), {"name": data.name})
        return data.model_copy(update={"text": f"hello {data.name}"})


class GreetSaga(Saga[Greeting]):
    name = "Greet"
    steps = (Greet,)


async def create_tables(conn: AsyncConnection) -> None:
    await conn.execute(text("CREATE TABLE greetings (name text NOT NULL)"))


app = App(sagas=[GreetSaga], messages=MessageRegistry(), topic_prefix="greet")
"""

GREET_TEST = """
from greet import Greeting, GreetSaga, app, create_tables

saga_app = app
saga_schema = create_tables


async def test_greet(saga_system):
    state = await saga_system.run(GreetSaga, Greeting(name="ada"))
    assert state.status == "completed"
    assert state.data.text == "hello ada"
    assert await saga_system.scalar("SELECT name FROM greetings") == "ada"
"""

USES_THE_SYSTEM = """
async def test_uses_the_system(saga_system):
    pass
"""

PURE_TEST = """
def test_pure():
    assert 1 + 1 == 2
"""


def user_project(pytester: pytest.Pytester, **modules: str) -> None:
    """A user's folder: the app, their test modules, asyncio tests on (as the README says)."""
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(greet=GREET_APP, **{name: textwrap.dedent(text) for name, text in modules.items()})


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_module_naming_its_app_and_schema_runs_its_saga_and_naming_mistakes_fail_saying_what_to_do(
    pytester: pytest.Pytester,
) -> None:
    user_project(
        pytester,
        test_greet=GREET_TEST,
        test_unnamed=USES_THE_SYSTEM,
        test_wrong_path='saga_app = "nope.module:app"\n' + USES_THE_SYSTEM,
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_uses_the_system*",
            "*saga.testing: name the App your sagas' tests run. In the test module: `saga_app = app`*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*saga.testing: saga_app in test_wrong_path: cannot import 'nope.module' (from app path 'nope.module:app')*"
        ]
    )


def test_an_unreachable_postgres_fails_the_test_naming_postgres_and_what_to_do(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = closed_port()
    monkeypatch.setenv(URL, f"postgresql://postgres@127.0.0.1:{port}/postgres")
    user_project(pytester, test_greet=GREET_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            f"*Postgres at postgresql://postgres@127.0.0.1:{port}/postgres is unreachable: *refused*",
            f"*(from {URL}). Start that server, or point {URL} at one that runs, or unset {URL}*",
        ]
    )
    assert "skipped" not in result.stdout.str()


def test_without_any_services_a_pure_test_passes_and_one_needing_them_fails_naming_what_is_missing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No variables, and no java on PATH: nothing starts, the local services' folder would be
    the rootdir's .cache/saga-services."""
    monkeypatch.delenv(URL)
    monkeypatch.delenv(BOOTSTRAP)
    monkeypatch.delenv("SAGA_SERVICES_DIR", raising=False)
    (pytester.path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(pytester.path / "bin"))
    user_project(pytester, test_pure=PURE_TEST, test_greet=GREET_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    services = pytester.path / ".cache" / "saga-services"
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_greet*",
            f"*Kafka: {BOOTSTRAP} is not set and a local broker cannot start: `java` is not on PATH*",
            f"*Install what is missing (the tests then start local services under {services} *",
            f"*or set {URL} and {BOOTSTRAP} to a Postgres server*",
        ]
    )
    assert not services.exists()  # nothing was started
