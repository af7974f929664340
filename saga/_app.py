"""What a deployment runs: its sagas, its message types, its participants' handlers.

The CLI finds it by import path (`--app examples.orders.app:app` or `SAGA_APP`).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from outbox import MessageRegistry
from saga._definition import Saga
from saga._participant import CommandHandler


class AppLoadError(Exception):
    pass


@dataclass
class App:
    sagas: Sequence[type[Saga[Any]]]
    messages: MessageRegistry
    participants: Mapping[str, Mapping[type[BaseModel], CommandHandler]] = field(default_factory=dict)

    def saga(self, name: str) -> type[Saga[Any]]:
        for saga in self.sagas:
            if saga.name == name:
                return saga
        known = ", ".join(s.name for s in self.sagas) or "none"
        raise AppLoadError(f"no saga named {name!r} in the app (it has: {known})")


def load_app(path: str) -> App:
    """`package.module:attribute` -> the App it names, with an error that says what went wrong."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise AppLoadError(f"app path {path!r} must look like 'package.module:attribute'")
    try:
        module = importlib.import_module(module_name)
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
