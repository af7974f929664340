"""What a deployment runs: its sagas, its message types, its participants' handlers.

The CLI finds it by import path (`--app examples.orders.app:app` or `SAGA_APP`).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from eventstore import Database
from outbox import KafkaConnection, MessageRegistry, Outbox
from saga._clock import Clock
from saga._definition import DefinitionError, Saga
from saga._orchestrator import Orchestrator
from saga._participant import CommandHandler, Participant
from saga._protocol import Topics
from saga._signal import send_signal
from saga._versions import Versions
from saga._wiring import (
    child_problems,
    handler_problems,
    message_problems,
    participant_problems,
    prefix_problems,
    raise_problems,
    saga_name_problems,
    unknown_service,
)


class AppLoadError(Exception):
    pass


@dataclass
class App:
    """Sagas, the message types they exchange, the participants this deployment serves
    (service -> {command class: handler}) and those another deployment serves
    (`external_participants`), and the topic prefix, set here only.

    Checked when created (so at every process start): each remote step's participant is
    served or external, and every message type a step uses is registered. All problems are
    reported at once in one DefinitionError."""

    sagas: Sequence[type[Saga[Any]]]
    messages: MessageRegistry
    participants: Mapping[str, Mapping[type[BaseModel], CommandHandler]] = field(default_factory=dict)
    external_participants: Collection[str] = ()
    topic_prefix: str = "saga"

    def __post_init__(self) -> None:
        if isinstance(self.external_participants, str):
            # ("bank") is a string, not a tuple: a name per character would be accepted.
            raise DefinitionError(
                f"App: external_participants must be a list of names, got the string {self.external_participants!r}"
            )
        sagas = [s for s in self.sagas if isinstance(s, type) and issubclass(s, Saga)]
        raise_problems(
            [
                *prefix_problems(self.topic_prefix),
                *saga_name_problems(self.sagas),
                *participant_problems(sagas, self.participants, self.external_participants),
                *message_problems(sagas, self.messages),
                *child_problems(sagas),
                *handler_problems(self.participants, self.messages),
            ],
            "App",
        )

    def with_topic_prefix(self, prefix: str) -> App:
        """The same app on topics of its own (a test, one demo run)."""
        return replace(self, topic_prefix=prefix)

    @property
    def versions(self) -> Versions:
        """The app's sagas by name and version (several versions of one saga run side by side)."""
        return Versions(self.sagas)

    def saga(self, name: str, version: int | None = None) -> type[Saga[Any]]:
        """The saga class of that name: its newest version, or the version given."""
        versions = self.versions.of(name)
        if not versions:
            known = ", ".join(self.versions.names()) or "none"
            raise AppLoadError(f"no saga named {name!r} in the app (it has: {known})")
        if version is None:
            return versions[max(versions)]
        if version not in versions:
            raise AppLoadError(
                f"the app has no version {version} of {name} (it has: {self.versions.describe(name)})"
            )
        return versions[version]

    def handlers(self, service: str) -> Mapping[type[BaseModel], CommandHandler]:
        """The handlers of a participant this app serves; AppLoadError naming the closest one."""
        try:
            return self.participants[service]
        except KeyError:
            raise AppLoadError(unknown_service(service, self.participants)) from None

    def orchestrator(self, database: Database, *, clock: Clock | None = None) -> Orchestrator:
        """An orchestrator for the app's sagas, on the app's topics (`clock`: a test's
        `VirtualClock`; the wall clock by default). Close it with `aclose()`."""
        return Orchestrator(database, self.sagas, self.messages, topic_prefix=self.topic_prefix, clock=clock)

    async def signal(
        self,
        conn: AsyncConnection,
        saga: type[Saga[Any]],
        message: BaseModel,
        *,
        saga_id: str | None = None,
        key: str | None = None,
    ) -> str:
        """Signal a saga (by `saga_id`, or the `key` it was started with) in the caller's
        transaction: one outbox row, sent if that commits. A `WaitFor` step of the saga takes
        it, now or once the saga gets there. Returns the saga's id."""
        outbox = Outbox(self.messages)
        topics = Topics(self.topic_prefix)
        return await send_signal(
            conn, "App", self.versions, outbox, topics, saga, message, saga_id=saga_id, key=key
        )

    def participant(
        self, database: Database, kafka: str | KafkaConnection, service: str, **consumer_options: Any
    ) -> Participant:
        """The worker of one participant service: `await p.start()` ... `await p.stop()`.
        `kafka`: the bootstrap servers of a PLAINTEXT broker, or a `KafkaConnection`."""
        return Participant(
            database,
            kafka,
            service=service,
            messages=self.messages,
            handlers=self.handlers(service),
            topic_prefix=self.topic_prefix,
            **consumer_options,
        )


def load_app(path: str) -> App:
    """`package.module:attribute` -> the App it names, with an error that says what went wrong."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise AppLoadError(f"app path {path!r} must look like 'package.module:attribute'")
    _importable_from_cwd()
    try:
        module = importlib.import_module(module_name)
    except DefinitionError as exc:
        raise AppLoadError(f"cannot load {module_name!r} (from app path {path!r}): {exc}") from exc
    except Exception as exc:
        raise AppLoadError(f"cannot import {module_name!r} (from app path {path!r}): {exc!r}") from exc
    if not hasattr(module, attribute):
        apps = sorted(name for name, value in vars(module).items() if isinstance(value, App))
        has = f"it has: {', '.join(apps)}" if apps else "it has no saga App"
        raise AppLoadError(f"module {module_name!r} has no attribute {attribute!r} ({has})")
    app = getattr(module, attribute)
    if not isinstance(app, App):
        raise AppLoadError(
            f"{path!r} is a {type(app).__qualname__}, not a saga App "
            "(point --app or SAGA_APP at the App instance)"
        )
    return app


def _importable_from_cwd() -> None:
    """The user's app lives in their project folder: `saga worker --app bookings.app:app` run
    there imports it, although a console script's sys.path does not hold the cwd."""
    cwd = os.getcwd()
    if not any(os.path.abspath(entry or os.curdir) == cwd for entry in sys.path):
        sys.path.insert(0, cwd)
