"""Fixtures on the real services.

The suite needs a running Postgres (DATABASE_URL) and Kafka broker (KAFKA_BOOTSTRAP_SERVERS);
`make test` starts both. When either is missing or unreachable the whole run stops at once
with a message that names the service and how to start it: nothing is skipped. Tests marked
`pure` (the decider's) need neither: a run that selects only those checks nothing.
"""

from __future__ import annotations

import asyncio
import compileall
import importlib.util
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from importlib.machinery import SourceFileLoader
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore import Database, create_engine, libpq_url, upgrade
from saga import all_migrations

# The testing kit's plugin is tested by running pytest on a user's test folder (tests/testing).
pytest_plugins = ("pytester",)

HOW_TO_START = (
    "`make test` starts local services when the variable is unset; or start them with `make services` "
    'and load their addresses with `eval "$(scripts/services env)"`.'
)


def _postgres_problem() -> str | None:
    url = os.environ.get("DATABASE_URL")
    if not url:
        return f"Postgres: DATABASE_URL is not set. {HOW_TO_START}"
    try:
        with psycopg.connect(libpq_url(url), connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"Postgres at DATABASE_URL={url} is unreachable: {exc}. {HOW_TO_START}"
    return None


async def _check_kafka(bootstrap: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await asyncio.wait_for(producer.start(), timeout=15)
    finally:
        await producer.stop()


def _kafka_problem() -> str | None:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        return f"Kafka: KAFKA_BOOTSTRAP_SERVERS is not set. {HOW_TO_START}"
    try:
        asyncio.run(_check_kafka(bootstrap))
    except Exception as exc:
        return f"Kafka at KAFKA_BOOTSTRAP_SERVERS={bootstrap} is unreachable: {exc!r}. {HOW_TO_START}"
    return None


ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """The processes tests start (`python -m saga` with the order example's app, the demo,
    chaos) import `examples` from the checkout: the library's wheel does not hold it."""
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    _compile_checkout()


# What the processes that tests start import from the checkout.
COMPILED = ("eventstore", "outbox", "saga", "examples", "chaos", "tests")


def _compile_checkout() -> None:
    """Byte-code for the checkout's modules, once per session: with PYTHONDONTWRITEBYTECODE set
    (as in some sandboxes and CI images) no process writes it, and each of the hundreds of
    processes the suite starts would compile the same modules again (a fifth of a CLI call's
    CPU). py_compile writes whatever that variable says; up-to-date files are left alone."""
    for package in COMPILED:
        compileall.compile_dir(ROOT / package, quiet=1, workers=1)


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    if all(item.get_closest_marker("pure") for item in items):
        return
    problems = [p for p in (_postgres_problem(), _kafka_problem()) if p]
    if problems:
        pytest.exit("\n".join(["The test suite needs real services:", *problems]), returncode=3)


# --- Postgres ---------------------------------------------------------------------------


def _with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def _admin_execute(sql: str) -> None:
    with psycopg.connect(libpq_url(os.environ["DATABASE_URL"]), autocommit=True) as conn:
        conn.execute(sql)


def _prepare_template(url: str) -> None:
    """Everything every test database starts with: the migrated schema."""

    async def migrate() -> None:
        engine = create_engine(url)
        try:
            await upgrade(engine, all_migrations())
        finally:
            await engine.dispose()

    asyncio.run(migrate())


@pytest.fixture(scope="session")
def template_database() -> Iterator[str]:
    """A migrated database, built once per run; each test clones it."""
    name = f"tmpl_{uuid.uuid4().hex[:12]}"
    _admin_execute(f"CREATE DATABASE {name}")
    try:
        _prepare_template(_with_database(os.environ["DATABASE_URL"], name))
        yield name
    finally:
        _admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def database_url(template_database: str) -> Iterator[str]:
    """A fresh database for one test, cloned from the migrated template."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    _admin_execute(f"CREATE DATABASE {name} TEMPLATE {template_database} STRATEGY FILE_COPY")
    try:
        yield _with_database(os.environ["DATABASE_URL"], name)
    finally:
        _admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    async with Database(database_url) as db:
        yield db


@pytest.fixture
def engine(database: Database) -> AsyncEngine:
    """The test database's engine (owned by the `database` fixture)."""
    return database.engine


# --- Kafka ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return os.environ["KAFKA_BOOTSTRAP_SERVERS"]


NewTopicFactory = Callable[..., Awaitable[str]]


@pytest.fixture
async def new_topic(kafka_bootstrap: str, request: pytest.FixtureRequest) -> AsyncIterator[NewTopicFactory]:
    """Create topics with names unique to this test: `await new_topic("orders", partitions=3)`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    created: list[str] = []

    async def create(label: str = "t", partitions: int = 1) -> str:
        name = f"{request.node.name[:40]}.{label}.{uuid.uuid4().hex[:8]}".replace("[", ".").replace("]", "")
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        created.append(name)
        return name

    try:
        yield create
    finally:
        if created:  # with the dead-letter topics consumers created beside them
            await admin.delete_topics([*created, *(f"{name}.dlq" for name in created)])
        await admin.close()


def load_services() -> Any:
    """The project's `scripts/services` as a module (its KafkaBroker class, say)."""
    path = Path(__file__).resolve().parents[1] / "scripts" / "services"
    loader = SourceFileLoader("project_services", str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def strict_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One broker for the run with auto-creation of topics off, as in production. Tests on it
    name their topics uniquely; one may stop and start it, and waits until it answers again."""
    broker = load_services().KafkaBroker(tmp_path_factory.mktemp("kafka-strict"), auto_create_topics=False)
    broker.up()
    try:
        yield broker
    finally:
        broker.down()


@pytest.fixture
async def private_broker(tmp_path: Path) -> AsyncIterator[Any]:
    """A broker of this test's own, which it may stop and start (the shared one stays up)."""
    broker = load_services().KafkaBroker(tmp_path / "kafka")
    await asyncio.to_thread(broker.up)
    try:
        yield broker
    finally:
        await asyncio.to_thread(broker.down)


@pytest.fixture(scope="session")
def kafka_secure_env() -> dict[str, str]:
    """The settings of this checkout's broker's SASL_SSL listener (`scripts/services env --secure`):
    KAFKA_BOOTSTRAP_SERVERS, SAGA_KAFKA_SECURITY_PROTOCOL, ..._SASL_*, SAGA_KAFKA_SSL_CAFILE."""
    services = load_services()
    settings: dict[str, str] | None = services.services.LocalServices(services.DIRS).kafka_secure_env()
    if settings is None:
        pytest.fail(
            f"this checkout's Kafka broker with its SASL_SSL listener is not running under {services.STATE}: "
            "`make services` (or `scripts/services up`) starts it, or adds the listener to a broker "
            "started before it existed"
        )
    return settings
