"""Planning the move of a running saga to another version of its definition. Pure, but for the
migration's own data function.

A plan renames the steps the saga names, drops those the new version has no place for, turns
its data into the new version's data, and lists what would break: a step it needs that the
new version lacks, a step in flight dropped, a step that took effect losing its compensation
(with nothing said about what undoes it now), data the new model refuses. Its notes say what
will happen that the operator may not expect: a step new in the version, standing before
where the saga is, runs when the saga moves on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from saga._definition import Saga
from saga._events import SagaMigrated
from saga._parking import missing_steps
from saga._state import SagaState, apply
from saga._versions import Migration

_ENDED = ("completed", "compensated")


@dataclass
class MigrationPlan:
    saga_id: str
    saga_type: str
    from_version: int
    to_version: int
    renamed: dict[str, str]
    dropped: list[str]
    data: dict[str, Any] | None  # the new data (None: unchanged)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def plan_migration(
    source: type[Saga[Any]] | None,
    target: type[Saga[Any]],
    state: SagaState,
    migration: Migration,
) -> MigrationPlan:
    """What moving `state` to `target` would do. `source` is the class of the saga's version,
    when deployed: without it, every step that took effect counts as having a compensation."""
    named = _named_steps(state)
    plan = MigrationPlan(
        saga_id=state.saga_id,
        saga_type=state.saga_type,
        from_version=state.saga_version,
        to_version=target.version,
        renamed={old: new for old, new in migration.renames.items() if old in named and old != new},
        dropped=[step for step in migration.dropped if step in named],
        data=None,
    )
    problems = plan.problems
    if state.saga_type != target.name:
        problems.append(f"it is a {state.saga_type}, not a {target.name}")
        return plan
    if state.status in _ENDED:
        problems.append(f"it is {state.status}: an ended saga stays on its version")
        return plan
    if state.saga_version == target.version:
        problems.append(f"it is on version {target.version} already")
        return plan
    if state.saga_version != migration.from_version:
        problems.append(
            f"it is on version {state.saga_version}, but the migration is from version {migration.from_version}"
        )
        return plan
    if source is not None:
        problems += [
            f"version {source.version} has no step {old!r} to rename or drop"
            for old in [*migration.renames, *migration.dropped]
            if not source.has_step(old)
        ]
    problems += _dropping(source, state, plan.dropped)
    problems += _compensations(source, target, state, plan.renamed)
    plan.data = _new_data(target, state, migration, problems)
    moved = migrated(state, target, plan)
    problems += [
        f"step {step!r} is not in {target.name}@{target.version}: rename it to one of that version's "
        f"steps (--map {step}=<step>) or drop it (--drop {step})"
        for step in missing_steps(target, moved)
    ]
    plan.notes = _notes(target, moved)
    return plan


def migrated(state: SagaState, target: type[Saga[Any]], plan: MigrationPlan, note: str = "") -> SagaState:
    """The state once the plan's `saga.migrated` is applied."""
    return apply(state, migrated_event(state, target, plan, note))


def migrated_event(state: SagaState, target: type[Saga[Any]], plan: MigrationPlan, note: str) -> SagaMigrated:
    return SagaMigrated(
        from_version=state.saga_version,
        to_version=target.version,
        from_fingerprint=state.fingerprint,
        to_fingerprint=target.fingerprint(),
        renamed=plan.renamed,
        dropped=plan.dropped,
        data=plan.data,
        note=note,
    )


def _named_steps(state: SagaState) -> set[str]:
    waiting = [*state.waiting, *(state.parked.waiting if state.parked else [])]
    named = {*state.done, *state.to_compensate, *state.children, *(w.step for w in waiting)}
    named |= {key.partition(":")[2] for key in state.attempts}
    if state.last_step is not None:
        named.add(state.last_step)
    return named


def _dropping(source: type[Saga[Any]] | None, state: SagaState, dropped: Sequence[str]) -> list[str]:
    problems = []
    waiting = {w.step for w in [*state.waiting, *(state.parked.waiting if state.parked else [])]}
    for step in dropped:
        if step in waiting:
            problems.append(f"step {step!r} is in flight: it cannot be dropped until it answers")
        elif step in state.to_compensate or (step in state.done and _had_compensation(source, step)):
            problems.append(
                f"step {step!r} took effect and has a compensation: dropping it would leave it undone if the "
                f"saga compensates; rename it to the step of the new version that undoes it (--map {step}=<step>)"
            )
    return problems


def _compensations(
    source: type[Saga[Any]] | None, target: type[Saga[Any]], state: SagaState, renamed: Mapping[str, str]
) -> list[str]:
    """A step that took effect keeps a compensation under its new name."""
    problems = []
    for old in dict.fromkeys([*state.done, *state.to_compensate]):
        new = renamed.get(old, old)
        if not _had_compensation(source, old) or not target.has_step(new):
            continue
        if not target.step(new).has_compensation():
            to = f"{new!r}" if new == old else f"{new!r} (renamed from {old!r})"
            problems.append(
                f"step {old!r} took effect and has a compensation, but {to} in {target.name}@{target.version} "
                "has none: if the saga compensates it would stay done; map it to a step that undoes it"
            )
    return problems


def _had_compensation(source: type[Saga[Any]] | None, step: str) -> bool:
    if source is None or not source.has_step(step):
        return True  # unknown: assume the worst
    return source.step(step).has_compensation()


def _new_data(
    target: type[Saga[Any]], state: SagaState, migration: Migration, problems: list[str]
) -> dict[str, Any] | None:
    data: Any = state.data
    if migration.data is not None:
        try:
            data = migration.data(dict(state.data))
        except Exception as exc:
            problems.append(f"the data migration raised {type(exc).__name__}: {exc}")
            return None
        if isinstance(data, BaseModel):
            data = data.model_dump(mode="json")
        if not isinstance(data, dict):
            problems.append(
                f"the data migration must return a dict or the new data model, got {type(data).__name__}"
            )
            return None
    try:
        valid = target.data_model.model_validate(data).model_dump(mode="json")
    except ValidationError as exc:
        fields = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'data'}: {e['msg']}" for e in exc.errors()[:5])
        hint = (
            ""
            if migration.data is not None
            else " (give the migration a data function: --data module:function)"
        )
        problems.append(f"its data does not fit {target.data_model.__name__}: {fields}{hint}")
        return None
    return None if valid == state.data else valid


def _notes(target: type[Saga[Any]], state: SagaState) -> list[str]:
    """Steps new to the saga that stand before where it is: they run when it next moves on."""
    if state.status != "running" and not (state.parked and state.parked.status == "running"):
        return []
    done = set(state.done)
    waiting = {w.step for w in [*state.waiting, *(state.parked.waiting if state.parked else [])]}
    reached = [i for i, node in enumerate(target.nodes()) if any(s.name in done | waiting for s in node)]
    if not reached:
        return []
    behind = [s.name for node in target.nodes()[: max(reached)] for s in node if s.name not in done | waiting]
    return [
        f"step {step!r} is new before where the saga is: it runs when the saga moves on" for step in behind
    ]


__all__ = ["MigrationPlan", "migrated", "migrated_event", "plan_migration"]
