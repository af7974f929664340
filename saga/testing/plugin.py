"""The pytest plugin of `saga.testing`, loaded by pytest on its own (entry point `saga`).

A test module names its app and, if it has tables of its own, its schema:

    saga_app = app                  # the App, or "package.module:attribute"
    saga_schema = create_tables     # async def create_tables(conn) -> None (optional)

(or `saga_app = package.module:app` and `saga_schema = ...` under [tool.pytest.ini_options]),
and takes the `saga_system` fixture: the app running in-process on a fresh database.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

try:
    import pytest_asyncio
except ImportError:  # the plugin loads wherever the library is installed; its async fixture needs it
    pytest_asyncio = None  # type: ignore[assignment]

from saga import App, AppLoadError, load_app
from saga.testing._databases import SchemaHook, create_template, drop_database
from saga.testing._local_services import ServiceDirs
from saga.testing._services import Services, ServicesError, find_services
from saga.testing._system import System, SystemConfig, open_system

NAME_THE_APP = (
    "saga.testing: name the App your sagas' tests run. In the test module: `saga_app = app` (the App "
    'object, or "package.module:attribute"); or for every module, under [tool.pytest.ini_options] in '
    'pyproject.toml: saga_app = "package.module:attribute"'
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("saga_app", "saga.testing: the App the tests run, as package.module:attribute")
    parser.addini(
        "saga_schema",
        "saga.testing: async function (conn) -> None creating the app's own tables, as package.module:attribute",
    )


class Templates:
    """One migrated template database per schema hook, made on first use, dropped at the end."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.made: dict[int, tuple[SchemaHook | None, str]] = {}

    async def get(self, schema: SchemaHook | None) -> str:
        key = id(schema)
        if key not in self.made:
            self.made[key] = (schema, await create_template(self.services.database_url, schema))
        return self.made[key][1]

    def drop_all(self) -> None:
        for _, name in self.made.values():
            asyncio.run(drop_database(self.services.database_url, name))


@pytest.fixture(scope="session")
def saga_services(request: pytest.FixtureRequest) -> Services:
    """The Postgres and Kafka the tests use: DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS, else local
    ones under .cache/saga-services of the rootdir (left running); the test fails, naming what
    to do, without them."""
    config = request.config
    try:
        return find_services(ServiceDirs.default(config.rootpath), report=_to_terminal(config))
    except ServicesError as exc:
        pytest.fail(str(exc), pytrace=False)


def _to_terminal(config: pytest.Config) -> Callable[[str], None]:
    """Lines the user sees even while output is captured (which services started, how to stop them)."""

    def write(message: str) -> None:
        capture = config.pluginmanager.getplugin("capturemanager")
        reporter = config.pluginmanager.getplugin("terminalreporter")
        if capture is None or reporter is None:
            print(message, file=sys.stderr)
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(message)

    return write


@pytest.fixture(scope="session")
def saga_templates(saga_services: Services) -> Iterator[Templates]:
    templates = Templates(saga_services)
    try:
        yield templates
    finally:
        templates.drop_all()


@pytest.fixture
def saga_app(request: pytest.FixtureRequest) -> App:
    """The module's `saga_app`, else the ini option."""
    where = f"saga_app in {request.module.__name__}"
    value: Any = getattr(request.module, "saga_app", None)
    if value is None:
        value, where = request.config.getini("saga_app") or None, "the saga_app ini option"
    if value is None:
        pytest.fail(NAME_THE_APP, pytrace=False)
    if isinstance(value, App):
        return value
    if not isinstance(value, str):
        pytest.fail(
            f"saga.testing: {where} is a {type(value).__name__}, not a saga App nor a "
            '"package.module:attribute" path to one',
            pytrace=False,
        )
    try:
        return load_app(value)
    except AppLoadError as exc:
        pytest.fail(f"saga.testing: {where}: {exc}", pytrace=False)


@pytest.fixture
def saga_schema(request: pytest.FixtureRequest) -> SchemaHook | None:
    """The module's `saga_schema`, else the ini option, else None (no tables of its own)."""
    where = f"saga_schema in {request.module.__name__}"
    value: Any = getattr(request.module, "saga_schema", None)
    if value is None:
        value, where = request.config.getini("saga_schema") or None, "the saga_schema ini option"
    if value is None:
        return None
    if isinstance(value, str):
        value = _import(value, where)
    if not inspect.iscoroutinefunction(value):
        pytest.fail(
            f"saga.testing: {where} must be an async function taking a connection "
            f"(async def create_tables(conn) -> None), got {value!r}",
            pytrace=False,
        )
    hook: SchemaHook = value
    return hook


def _import(path: str, where: str) -> Any:
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        pytest.fail(
            f"saga.testing: {where}: {path!r} must look like 'package.module:attribute'", pytrace=False
        )
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"saga.testing: {where}: cannot load {path!r}: {exc}", pytrace=False)


async def _saga_system(
    saga_app: App, saga_schema: SchemaHook | None, saga_services: Services, saga_templates: Templates
) -> AsyncIterator[System]:
    """The app running in-process (relay, orchestrator worker, its participants) on a fresh
    database with the schema, topics of its own and a virtual clock."""
    template = await saga_templates.get(saga_schema)
    async with open_system(SystemConfig(saga_app, saga_services, template)) as system:
        yield system


if pytest_asyncio is not None:
    saga_system = pytest_asyncio.fixture(_saga_system, name="saga_system")
else:

    @pytest.fixture(name="saga_system")
    def _no_asyncio() -> None:
        pytest.fail(
            "saga.testing: the saga_system fixture needs pytest-asyncio: pip install pytest-asyncio "
            "(the library's [testing] extra brings it)",
            pytrace=False,
        )
