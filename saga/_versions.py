"""Versions of a saga: the definition's fingerprint, the versions an app deploys side by side,
and the migrations a newer version declares from older ones.

A saga runs to its end on the version it started with (`SagaStarted.saga_version`). The
fingerprint says what that version was when the saga started: `<shape>.<data>`, twelve hex
digits of a hash of its steps (order, kinds, what each one is, participants, message types,
child sagas) and eight of its data model's JSON schema. Code inside a step's methods is not in
it: changing how a step does its work is not a new shape. The deploy gate compares it with the
deployed class of that version, so a definition changed without a new `version` is caught.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel

from saga._language import ChildSaga, TimerStep, WaitStep
from saga._steps import DefinitionError, LocalStep, RemoteStep, Step, returned_models

if TYPE_CHECKING:
    from saga._definition import Saga

DataMigration = Callable[[dict[str, Any]], "dict[str, Any] | BaseModel"]


@dataclass(frozen=True)
class Migration:
    """How sagas of an older version move to the version that declares it:
    `migrations = (Migration(from_version=1, renames={"reserve_stock": "reserve_items"}),)`.

    `renames` maps an old step's name to the step of this version that takes its place (its
    history, attempts and awaited reply carry over); `dropped` names old steps that have no
    counterpart (refused for a step that took effect and has a compensation: say which step
    undoes it instead, with a rename); `data` turns the old data (JSON) into this version's
    data. `saga migrate` applies it, recorded as `saga.migrated`; nothing moves on its own."""

    from_version: int
    renames: Mapping[str, str] = field(default_factory=dict)
    dropped: Sequence[str] = ()
    data: DataMigration | None = None

    def __post_init__(self) -> None:
        if (
            isinstance(self.from_version, bool)
            or not isinstance(self.from_version, int)
            or self.from_version < 1
        ):
            raise DefinitionError(
                f"Migration: from_version must be a version number >= 1, got {self.from_version!r}"
            )
        if isinstance(self.dropped, str):
            raise DefinitionError(
                f"Migration: dropped must be a list of step names, got the string {self.dropped!r}"
            )
        both = sorted(set(self.renames) & set(self.dropped))
        if both:
            raise DefinitionError(f"Migration: {', '.join(both)} both renamed and dropped; keep one")
        if self.data is not None and not callable(self.data):
            raise DefinitionError(f"Migration: data must be a function of the old data, got {self.data!r}")


def _models(models: Iterable[type[BaseModel] | None]) -> list[str]:
    return sorted({m.__name__ for m in models if m is not None})


def _step_shape(step: type[Step[Any]]) -> dict[str, Any]:
    shape: dict[str, Any] = {"name": step.name, "kind": step.kind.value}
    if issubclass(step, RemoteStep):
        shape["remote"] = step.participant
        shape["messages"] = _models(
            [
                *returned_models(step.command),
                step.reply,
                *(returned_models(step.compensation) if step.has_compensation() else []),
                step.compensation_reply,
            ]
        )
    elif issubclass(step, LocalStep):
        shape["local"] = True
    elif issubclass(step, WaitStep):
        shape["wait"] = _models(step.signals)
    elif issubclass(step, TimerStep):
        shape["timer"] = True
    elif issubclass(step, ChildSaga):
        shape["child"] = f"{step.saga.name}@{step.saga.version}"
    shape["compensation"] = step.has_compensation()
    return shape


def _digest(value: Any, size: int) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()[:size]


def fingerprint(saga: type[Saga[Any]]) -> str:
    """`<shape>.<data>` of a saga class (see the module's docstring)."""
    shape = [[_step_shape(step) for step in node] for node in saga.nodes()]
    return f"{_digest(shape, 12)}.{_digest(saga.data_model.model_json_schema(), 8)}"


def shape_of(fingerprint_: str) -> str:
    """The steps part of a fingerprint ('' for a saga started before fingerprints)."""
    return fingerprint_.partition(".")[0]


class Versions:
    """The saga classes an app deploys, by name and version. New sagas start on the newest
    version of their name; a saga goes on with the class of the version it started with."""

    def __init__(self, sagas: Iterable[type[Saga[Any]]]) -> None:
        self._by_name: dict[str, dict[int, type[Saga[Any]]]] = {}
        for saga in sagas:
            self._by_name.setdefault(saga.name, {})[saga.version] = saga

    def names(self) -> list[str]:
        return list(self._by_name)

    def newest(self) -> dict[str, type[Saga[Any]]]:
        """Each name's newest version."""
        return {name: versions[max(versions)] for name, versions in self._by_name.items()}

    def of(self, name: str) -> dict[int, type[Saga[Any]]]:
        """The versions deployed of one saga name, oldest first ({} for a name not deployed)."""
        return dict(sorted(self._by_name.get(name, {}).items()))

    def get(self, name: str, version: int) -> type[Saga[Any]] | None:
        return self._by_name.get(name, {}).get(version)

    def has(self, saga: type[Saga[Any]]) -> bool:
        return self.get(saga.name, saga.version) is saga

    def migration_to(self, name: str, from_version: int) -> tuple[type[Saga[Any]], Migration] | None:
        """The newest deployed version declaring a migration from `from_version`, and that migration."""
        for version in sorted(self._by_name.get(name, {}), reverse=True):
            saga = self._by_name[name][version]
            for migration in saga.migrations:
                if migration.from_version == from_version:
                    return saga, migration
        return None

    def describe(self, name: str) -> str:
        versions = self.of(name)
        return ", ".join(f"{name}@{v}" for v in versions) or "none"


def version_problems(sagas: Sequence[type[Saga[Any]]]) -> list[str]:
    """Two classes of one name need different versions; a migration comes from an older one."""
    problems = []
    seen: dict[tuple[str, int], type[Saga[Any]]] = {}
    for saga in sagas:
        other = seen.setdefault((saga.name, saga.version), saga)
        if other is not saga:
            problems.append(
                f"two sagas are {saga.name} version {saga.version} ({other.__qualname__} and {saga.__qualname__}); "
                "give the newer one `version = <next number>` (several versions of a saga run side by side), "
                "or another `name = ...` if they are different sagas"
            )
    return problems


__all__ = ["DataMigration", "Migration", "Versions", "fingerprint", "shape_of", "version_problems"]
