"""What a deployment runs: its sagas, its message types, its participants' handlers.

The CLI finds it by import path (`--app examples.orders.app:app` or `SAGA_APP`).
"""

from __future__ import annotations

import importlib
import os
import sys
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
    _importable_from_cwd()
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise AppLoadError(f"cannot import {module_name!r} (from app path {path!r}): {exc!r}") from exc
    app = getattr(module, attribute, None)
    if not isinstance(app, App):
        raise AppLoadError(f"{path!r} is {type(app).__name__}, not a saga App")
    return app


def _importable_from_cwd() -> None:
    """The user's app lives in their project folder: `saga worker --app bookings.app:app` run
    there imports it, although a console script's sys.path does not hold the cwd."""
    cwd = os.getcwd()
    if not any(os.path.abspath(entry or os.curdir) == cwd for entry in sys.path):
        sys.path.insert(0, cwd)
