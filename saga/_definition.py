"""Declaring sagas: a `Saga[Data]` subclass lists its steps; the definition is checked when
the class is created, so a mistake fails at import with the saga and step named.

Step kinds (the usual saga vocabulary):
- compensatable: may fail; once it took effect, its compensation undoes it.
- pivot: the point of no return; if it succeeds the saga completes, so it needs no
  compensation and every step after it must be retriable.
- retriable: comes after the pivot and is retried until it succeeds; it has no compensation.

Beyond single steps, `steps` may hold parallel groups, child sagas, waits and timers
(saga._language).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Generic, get_args, get_origin

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from saga._checks import check_definition, check_versions
from saga._language import Parallel
from saga._steps import (
    D,
    DefinitionError,
    LocalStep,
    Refused,
    RemoteStep,
    RetryPolicy,
    Step,
    StepKind,
)
from saga._versions import Migration, fingerprint

Node = tuple[type[Step[Any]], ...]


class Saga(Generic[D]):
    """Subclass as `class OrderSaga(Saga[OrderData]): steps = [ReserveCredit, ...]`."""

    name: ClassVar[str] = ""
    # Several versions of one saga (one `name`) may be deployed side by side: a saga runs to its
    # end on the version it started with, new ones start on the newest (see saga._versions).
    version: ClassVar[int] = 1
    migrations: ClassVar[Sequence[Migration]] = ()
    data_model: ClassVar[type[BaseModel]]
    steps: ClassVar[Sequence[type[Step[Any]] | Parallel]] = ()
    _nodes: ClassVar[tuple[Node, ...]] = ()
    _index: ClassVar[dict[str, int]] = {}
    _by_name: ClassVar[dict[str, type[Step[Any]]]] = {}
    _fingerprint: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__
        if "migrations" not in cls.__dict__ and "version" in cls.__dict__:
            cls.migrations = ()  # another version's migrations are not its own (an old version may subclass a new one)
        if "data_model" not in cls.__dict__:
            for base in getattr(cls, "__orig_bases__", ()):
                if get_origin(base) is Saga and get_args(base):
                    cls.data_model = get_args(base)[0]
        check_definition(cls)
        cls._nodes = tuple(n.steps if isinstance(n, Parallel) else (n,) for n in cls.steps)
        cls._index = {step.name: i for i, node in enumerate(cls._nodes) for step in node}
        cls._by_name = {step.name: step for node in cls._nodes for step in node}
        cls._fingerprint = ""
        check_versions(cls)

    # End hooks: run in the transaction of the decision that ends the saga (see saga._hooks).
    async def on_completed(self, conn: AsyncConnection, data: D) -> None:
        """The saga completed."""

    async def on_compensated(self, conn: AsyncConnection, data: D, reason: str) -> None:
        """The saga was compensated; `reason` says why its compensation began."""

    async def on_failed(self, conn: AsyncConnection, data: D, reason: str) -> None:
        """The saga stopped in `failed` or `compensation_failed` (an operator may resume it)."""

    @classmethod
    def fingerprint(cls) -> str:
        """What this version is made of, `<shape>.<data>` (see saga._versions)."""
        if not cls._fingerprint:
            cls._fingerprint = fingerprint(cls)
        return cls._fingerprint

    @classmethod
    def nodes(cls) -> tuple[Node, ...]:
        """The steps in order, a parallel group as one node of its members."""
        return cls._nodes

    @classmethod
    def all_steps(cls) -> list[type[Step[Any]]]:
        """Every step, group members included, in order."""
        return [step for node in cls._nodes for step in node]

    @classmethod
    def has_step(cls, name: str) -> bool:
        return name in cls._index

    @classmethod
    def step_index(cls, name: str) -> int:
        """The node a step stands in (a group's members share one)."""
        try:
            return cls._index[name]
        except KeyError:
            raise KeyError(f"saga {cls.name}: no step named {name!r}") from None

    @classmethod
    def step(cls, name: str) -> type[Step[Any]]:
        try:
            return cls._by_name[name]
        except KeyError:
            raise KeyError(f"saga {cls.name}: no step named {name!r}") from None

    @classmethod
    def group_of(cls, name: str) -> Node | None:
        """The members of the group a step is in, or None for a step on its own."""
        node = cls._nodes[cls.step_index(name)]
        return node if len(node) > 1 else None

    @classmethod
    def pivot_index(cls) -> int | None:
        for i, node in enumerate(cls._nodes):
            if any(step.kind is StepKind.PIVOT for step in node):
                return i
        return None


__all__ = [
    "D",
    "DefinitionError",
    "LocalStep",
    "Migration",
    "Node",
    "Refused",
    "RemoteStep",
    "RetryPolicy",
    "Saga",
    "Step",
    "StepKind",
]
