"""Event types: pydantic models registered under a stable type name and schema version.

Stored payloads are JSON text made by orjson. On read, a payload of the current schema
version is validated straight from JSON by pydantic; an older one is first parsed and
passed through the upcasters registered for its type, one version step at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from eventstore._errors import EventDecodeError, EventTypeError

M = TypeVar("M", bound=type[BaseModel])
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class EventType:
    name: str
    version: int
    model: type[BaseModel]
    upcasters: dict[int, Upcaster] = field(default_factory=dict)  # from version -> to version + 1


class TypeRegistry:
    """Which model a stored type name means. Pass one instance around; no global state."""

    kind = "event"
    type_error: type[Exception] = EventTypeError
    decode_error: type[Exception] = EventDecodeError

    def __init__(self) -> None:
        self._by_name: dict[str, EventType] = {}
        self._by_model: dict[type[BaseModel], EventType] = {}

    def register(self, model: type[BaseModel], name: str, version: int = 1) -> None:
        if version < 1:
            raise self.type_error(f"{self.kind} type {name!r}: schema version must be >= 1, got {version}")
        if name in self._by_name and self._by_name[name].model is not model:
            raise self.type_error(
                f"{self.kind} type {name!r} is already registered to {self._by_name[name].model.__qualname__}"
            )
        if model in self._by_model and self._by_model[model].name != name:
            raise self.type_error(
                f"{model.__qualname__} is already registered as {self._by_model[model].name!r}"
            )
        entry = EventType(name, version, model)
        self._by_name[name] = entry
        self._by_model[model] = entry

    def event(self, name: str, version: int = 1) -> Callable[[M], M]:
        """Class decorator: `@registry.event("order.placed", version=2)`."""

        def decorate(model: M) -> M:
            self.register(model, name, version)
            return model

        return decorate

    def upcaster(self, name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Register a function turning a payload of `from_version` into `from_version + 1`."""

        def decorate(fn: Upcaster) -> Upcaster:
            entry = self.get(name)
            if not 1 <= from_version < entry.version:
                raise self.type_error(
                    f"{self.kind} type {name!r}: upcaster from version {from_version} is outside 1..{entry.version - 1}"
                )
            entry.upcasters[from_version] = fn
            return fn

        return decorate

    def get(self, name: str) -> EventType:
        try:
            return self._by_name[name]
        except KeyError:
            raise self.type_error(
                f"unknown {self.kind} type {name!r}: register it with {type(self).__name__}"
            ) from None

    def type_of(self, event: BaseModel) -> EventType:
        return self.type_of_model(type(event))

    def type_of_model(self, model: type[BaseModel]) -> EventType:
        try:
            return self._by_model[model]
        except KeyError:
            raise self.type_error(
                f"{model.__qualname__} is not a registered {self.kind} type: register it with {type(self).__name__}"
            ) from None

    def models(self) -> list[type[BaseModel]]:
        return list(self._by_model)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def encode(self, event: BaseModel) -> tuple[EventType, str]:
        entry = self.type_of(event)
        return entry, event.model_dump_json()

    def decode(self, name: str, version: int, payload: str | bytes, where: Callable[[], str]) -> BaseModel:
        """Payload JSON -> model. `where()` names the event's place, for error messages only."""
        entry = self._by_name.get(name)
        if entry is not None and version == entry.version:
            # The hot path of every replay: straight from JSON text to the model, in Rust.
            try:
                return entry.model.__pydantic_validator__.validate_json(payload)  # type: ignore[no-any-return]
            except ValidationError as exc:
                raise self.decode_error(
                    f"invalid payload for {self.kind} type {name!r} at {where()}: {exc}"
                ) from exc
        return self._decode_other(entry, name, version, payload, where)

    def _decode_other(
        self, entry: EventType | None, name: str, version: int, payload: str | bytes, where: Callable[[], str]
    ) -> BaseModel:
        if entry is None:
            raise self.decode_error(
                f"unknown {self.kind} type {name!r} at {where()}: register it with {type(self).__name__}"
            )
        if version > entry.version:
            raise self.decode_error(
                f"{self.kind} type {name!r} at {where()} has schema version {version}, newer than the "
                f"registered {entry.version}: deploy the newer code"
            )
        try:
            data = orjson.loads(payload)
            for step in range(version, entry.version):
                upcast = entry.upcasters.get(step)
                if upcast is None:
                    raise self.decode_error(
                        f"{self.kind} type {name!r} at {where()}: no upcaster from schema version {step} to {step + 1}"
                    )
                data = upcast(data)
            return entry.model.model_validate(data)
        except ValidationError as exc:
            raise self.decode_error(
                f"invalid payload for {self.kind} type {name!r} at {where()}: {exc}"
            ) from exc
        except orjson.JSONDecodeError as exc:
            raise self.decode_error(
                f"payload of {self.kind} type {name!r} at {where()} is not JSON: {exc}"
            ) from exc


class EventRegistry(TypeRegistry):
    """The event types of a store."""

    def encode(self, event: BaseModel) -> tuple[EventType, str]:
        """Events are stored as jsonb, which has no place for a NUL character."""
        entry, payload = super().encode(event)
        if "\\u0000" in payload:
            raise ValueError(
                f"event {entry.name}: a string in it contains a NUL character (\\x00), which Postgres "
                "cannot store in JSON; remove it before appending"
            )
        return entry, payload
