"""The deploy gate: would a new app break the sagas that are still running?

`check_deploy(app, states)` is pure: it checks each saga not ended against the app about to
be deployed, the way a worker of that app would meet it. Its version must be deployed, or a
migration of the app must cover it; a deployed version must still be the definition the saga
started on (its steps' shape), accept its data and have every step it names; the step it
awaits must still await that reply, signal or child saga, registered in the app.
`running_states` reads those sagas from the live database; `export_document` and
`read_export` carry them through a file, for a pipeline without database access.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ValidationError

from eventstore import Database, EventStore, driver_connection
from saga import _repository as repo
from saga._definition import RemoteStep, Saga, Step
from saga._errors import SagaError
from saga._events import saga_event_registry
from saga._language import ChildSaga, TimerStep, WaitStep
from saga._migrate import migrated, plan_migration
from saga._parking import missing_steps
from saga._protocol import CHILD_ENDED, COMPENSATE_SAGA, STEP_REFUSED, stream_of
from saga._state import Awaiting, SagaState, fold
from saga._steps import LocalStep
from saga._versions import Migration, shape_of

if TYPE_CHECKING:
    from saga._app import App

EXPORT_FORMAT = "saga-export"
EXPORT_FORMAT_VERSION = 1
_SAGA_MESSAGES = frozenset({STEP_REFUSED, CHILD_ENDED, COMPENSATE_SAGA})  # registered by every orchestrator

Finding = tuple[str, str]  # (problem, fix)


@dataclass(frozen=True)
class DeployProblem:
    """One thing that would break for one saga; `step` is where the saga is (as `saga ls`
    shows it), `fix` what to do, in one sentence."""

    saga_id: str
    saga_type: str
    saga_version: int
    status: str
    step: str | None
    problem: str
    fix: str


@dataclass
class DeployReport:
    checked: int  # sagas not ended
    problems: list[DeployProblem]
    by_version: dict[str, int]  # "Transfer@1" -> sagas of it checked
    # "Transfer@1 -> Transfer@2" -> sagas that pass only once `saga migrate` moves them
    migrations: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def broken(self) -> int:
        """How many sagas have at least one problem."""
        return len({p.saga_id for p in self.problems})

    def counts(self) -> dict[str, int]:
        """Each problem and the number of sagas that have it, most first."""
        counted = Counter(p.problem for p in self.problems)
        return dict(sorted(counted.items(), key=lambda item: (-item[1], item[0])))

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "broken": self.broken,
            "by_version": self.by_version,
            "migrations": self.migrations,
            "problems": [asdict(p) for p in self.problems],
            "counts": [{"problem": problem, "sagas": n} for problem, n in self.counts().items()],
        }


def check_deploy(app: App, states: Iterable[SagaState]) -> DeployReport:
    """Every saga of `states` not ended, checked against `app`. Deterministic: the sagas are
    taken by type, version and id, whatever order they come in."""
    running = sorted(
        (s for s in states if not s.terminal), key=lambda s: (s.saga_type, s.saga_version, s.saga_id)
    )
    report = DeployReport(checked=len(running), problems=[], by_version={})
    for state in running:
        label = f"{state.saga_type}@{state.saga_version}"
        report.by_version[label] = report.by_version.get(label, 0) + 1
        row = partial(
            DeployProblem,
            state.saga_id,
            state.saga_type,
            state.saga_version,
            state.status,
            state.last_step,
        )
        report.problems += [row(problem, fix) for problem, fix in _check(app, state, report.migrations)]
    return report


def _check(app: App, state: SagaState, migrations: dict[str, int]) -> list[Finding]:
    versions = app.versions
    name, version = state.saga_type, state.saga_version
    if not versions.of(name):
        has = ", ".join(sorted(versions.names())) or "none"
        return [
            (
                f"saga type {name} is not in the new app (it has: {has})",
                f"keep {name} registered in the app until its sagas end",
            )
        ]
    deployed = versions.get(name, version)
    if deployed is not None:
        return _on_version(app, deployed, state)
    cover = versions.migration_to(name, version)
    if cover is None:
        return [
            (
                f"version {version} of {name} is not in the new app (it has: {versions.describe(name)})",
                f"keep the class of version {version} registered until its sagas end, "
                f"or declare Migration(from_version={version}) on the newest",
            )
        ]
    target, migration = cover
    found = _migrating(app, target, migration, state)
    if not found:
        move = f"{name}@{version} -> {target.name}@{target.version}"
        migrations[move] = migrations.get(move, 0) + 1
    return found


def _on_version(app: App, saga: type[Saga[Any]], state: SagaState) -> list[Finding]:
    label = f"{saga.name}@{saga.version}"
    found: list[Finding] = []
    started = shape_of(state.fingerprint)
    if started and started != shape_of(saga.fingerprint()):
        found.append(
            (
                f"{saga.name} version {saga.version} changed since the saga started (its steps differ)",
                f"give the changed class a new `version` and keep the old one registered as {label}",
            )
        )
    found += _data(saga, state.data)
    has = ", ".join(step.name for step in saga.all_steps())
    found += [
        (
            f"step {step!r} ({_uses(state, step)}) is not in {label} (it has: {has})",
            f"keep step {step!r} in {label}; rename it only in a new version, with a Migration that maps it",
        )
        for step in missing_steps(saga, state)
    ]
    return found + _awaited(app, saga, state)


def _migrating(app: App, target: type[Saga[Any]], migration: Migration, state: SagaState) -> list[Finding]:
    """A migration covers the saga only if it would move it: then the moved saga is checked."""
    plan = plan_migration(None, target, state, migration)
    name, version = state.saga_type, state.saga_version
    to = f"{target.name}@{target.version}"
    if not plan.ok:
        return [
            (
                f"version {version} of {name} is not in the new app and its migration to {to} fails: {problem}",
                f"fix Migration(from_version={version}) of {to}, "
                f"or keep the class of version {version} registered until its sagas end",
            )
            for problem in plan.problems
        ]
    return _awaited(app, target, migrated(state, target, plan))


def _uses(state: SagaState, step: str) -> str:
    """Where a saga names a step: awaited, done, to compensate, failed at."""
    waiting = [*state.waiting, *(state.parked.waiting if state.parked is not None else [])]
    status = state.parked.status if state.parked is not None else state.status
    uses = [
        use
        for use, named in (
            ("awaited", any(w.step == step for w in waiting)),
            ("done", step in state.done),
            ("to compensate", step in state.to_compensate),
            ("failed at", status == "failed" and state.last_step == step),
        )
        if named
    ]
    return ", ".join(uses)


def _data(saga: type[Saga[Any]], data: dict[str, Any]) -> list[Finding]:
    try:
        saga.data_model.model_validate(data)
    except ValidationError as exc:
        fields = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'data'}: {e['msg']}" for e in exc.errors())
        model, label = saga.data_model.__name__, f"{saga.name}@{saga.version}"
        return [
            (
                f"its data does not fit {model} of {label} ({fields})",
                f"keep {model} accepting the data of running sagas (a new field needs a default), "
                "or change it in a new version with a Migration data function",
            )
        ]
    return []


def _awaited(app: App, saga: type[Saga[Any]], state: SagaState) -> list[Finding]:
    """What the saga waits for, and the messages it keeps, must still be understood."""
    registered = set(app.messages.models())
    waiting = [*state.waiting, *(state.parked.waiting if state.parked is not None else [])]
    found = [
        finding
        for waits in waiting
        if saga.has_step(waits.step)
        for finding in _awaits(app, saga, saga.step(waits.step), waits, registered)
    ]
    kept = [
        *(d.message_type for d in state.deferred if d.kind != "compensate"),
        *(k.message_type for k in state.signals),
    ]
    found += [
        (
            f"message {name} that the saga keeps (deferred or a signal for a later wait) "
            "is not registered in the app's messages",
            f"keep {name} registered in the app's MessageRegistry until these sagas end",
        )
        for name in dict.fromkeys(kept)
        if name not in app.messages and name not in _SAGA_MESSAGES
    ]
    return found


def _awaits(
    app: App, saga: type[Saga[Any]], step: type[Step[Any]], waits: Awaiting, registered: set[type[BaseModel]]
) -> list[Finding]:
    where = f"step {step.name!r} of {saga.name}@{saga.version}"
    if issubclass(step, TimerStep) != (waits.kind == "timer"):
        return [
            (
                f"the saga awaits a {waits.kind} on {where}, but it is a {_kind(step)}",
                f"keep {where} the kind of step it was; change it only in a new version",
            )
        ]
    if issubclass(step, RemoteStep):
        return _reply(step, waits, where, registered)
    if issubclass(step, WaitStep):
        return [
            f
            for signal in step.signals
            for f in _registered(signal, f"the signal {where} awaits", registered)
        ]
    if issubclass(step, ChildSaga) and app.versions.get(step.saga.name, step.saga.version) is None:
        child = f"{step.saga.name}@{step.saga.version}"
        return [
            (
                f"{where} awaits its child saga, but {child} is not in the new app",
                f"keep the class of {child} registered until these sagas end",
            )
        ]
    return []


def _reply(
    step: type[RemoteStep[Any]], waits: Awaiting, where: str, registered: set[type[BaseModel]]
) -> list[Finding]:
    model = step.expected_reply(waits.phase)
    if model is not None:
        return _registered(model, f"the reply {where} awaits", registered)
    if waits.phase == "compensation":
        problem, keep = "its compensation", "the compensation and compensation_reply"
    else:
        problem, keep = "its command", "the reply model"
    return [
        (f"the saga awaits the reply to {problem} on {where}, but it expects none", f"keep {keep} of {where}")
    ]


def _registered(model: type[BaseModel], what: str, registered: set[type[BaseModel]]) -> list[Finding]:
    if model in registered:
        return []
    return [
        (
            f"{what}, {model.__name__}, is not registered in the app's messages",
            f"register {model.__name__} in the app's MessageRegistry",
        )
    ]


def _kind(step: type[Step[Any]]) -> str:
    kinds = (
        (TimerStep, "timer"),
        (LocalStep, "local step"),
        (WaitStep, "wait"),
        (ChildSaga, "child saga step"),
    )
    return next((name for kind, name in kinds if issubclass(step, kind)), "remote step")


# --- the sagas to check: from the live database, or from an export file ------------------


class ExportFileError(SagaError):
    """A file given to `check-deploy --from` that is not a saga export this version reads."""


async def running_states(database: Database) -> tuple[list[SagaState], datetime]:
    """Every saga not ended, folded from its events, and the database's time of the read.
    One snapshot: a saga that ends or starts meanwhile is seen before or after, never half."""
    store = EventStore(database, saga_event_registry())
    async with database.engine.connect() as conn:
        await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            driver = await driver_connection(conn)
            now = await repo.database_now(driver)
            states = []
            for saga_id in await repo.not_ended(driver):
                events = await store.load(stream_of(saga_id), conn=conn)
                if events:
                    states.append(fold(saga_id, (e.event for e in events)))
    return [s for s in states if not s.terminal], now


def export_document(states: Iterable[SagaState], exported_at: datetime) -> dict[str, Any]:
    sagas = [state.model_dump(mode="json") for state in states]
    return {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "exported_at": exported_at.isoformat(),
        "count": len(sagas),
        "sagas": sagas,
    }


def read_export(path: Path) -> list[SagaState]:
    """The sagas of a file `saga export --running` wrote; ExportFileError saying what is wrong."""
    again = "write it with `saga export --running -o FILE`"
    try:
        document = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise ExportFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise ExportFileError(f"{path} is not JSON ({exc}); {again}") from None
    if not isinstance(document, dict) or document.get("format") != EXPORT_FORMAT:
        raise ExportFileError(f'{path} is not a saga export (it lacks "format": "{EXPORT_FORMAT}"); {again}')
    if document.get("format_version") != EXPORT_FORMAT_VERSION:
        raise ExportFileError(
            f"{path} is a saga export of format_version {document.get('format_version')!r}, "
            f"this saga reads version {EXPORT_FORMAT_VERSION}; export again with this version's `saga export --running`"
        )
    sagas = document.get("sagas")
    if not isinstance(sagas, list):
        raise ExportFileError(f'{path}: "sagas" must be a list of saga states; {again}')
    states = []
    for number, saga in enumerate(sagas, start=1):
        try:
            states.append(SagaState.model_validate(saga))
        except ValidationError as exc:
            first = exc.errors()[0]
            at = ".".join(map(str, first["loc"])) or "the saga"
            raise ExportFileError(
                f'{path}: saga #{number} of "sagas" is not a saga state ({at}: {first["msg"]}); {again}'
            ) from None
    return states


__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_FORMAT_VERSION",
    "DeployProblem",
    "DeployReport",
    "ExportFileError",
    "check_deploy",
    "export_document",
    "read_export",
    "running_states",
]
