"""What a deployment runs: its sagas, its message types, its participants' handlers.

The CLI finds it by import path (`--app examples.orders.app:app` or `SAGA_APP`).
"""

from __future__ import annotations

import importlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel

from eventstore import Database
from outbox import MessageRegistry
from saga._definition import DefinitionError, Saga
from saga._orchestrator import Orchestrator
from saga._participant import CommandHandler, Participant
from saga._wiring import (
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
                *handler_problems(self.participants, self.messages),
            ],
            "App",
        )

    def with_topic_prefix(self, prefix: str) -> App:
        """The same app on topics of its own (a test, one demo run)."""
        return replace(self, topic_prefix=prefix)

    def saga(self, name: str) -> type[Saga[Any]]:
        for saga in self.sagas:
            if saga.name == name:
                return saga
        known = ", ".join(s.name for s in self.sagas) or "none"
        raise AppLoadError(f"no saga named {name!r} in the app (it has: {known})")

    def handlers(self, service: str) -> Mapping[type[BaseModel], CommandHandler]:
        """The handlers of a participant this app serves; AppLoadError naming the closest one."""
        try:
            return self.participants[service]
        except KeyError:
            raise AppLoadError(unknown_service(service, self.participants)) from None

    def orchestrator(self, database: Database) -> Orchestrator:
        """An orchestrator for the app's sagas, on the app's topics. Close it with `aclose()`."""
        return Orchestrator(database, self.sagas, self.messages, topic_prefix=self.topic_prefix)

    def participant(
        self, database: Database, bootstrap_servers: str, service: str, **consumer_options: Any
    ) -> Participant:
        """The worker of one participant service: `await p.start()` ... `await p.stop()`."""
        return Participant(
            database,
            bootstrap_servers,
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
    try:
        module = importlib.import_module(module_name)
    except DefinitionError as exc:
        raise AppLoadError(f"cannot load {module_name!r} (from app path {path!r}): {exc}") from exc
    except Exception as exc:
        raise AppLoadError(f"cannot import {module_name!r} (from app path {path!r}): {exc!r}") from exc
    app = getattr(module, attribute, None)
    if not isinstance(app, App):
        raise AppLoadError(f"{path!r} is {type(app).__name__}, not a saga App")
    return app
