"""The rules a saga definition must follow, checked when the class is created, so a mistake
fails at import with the saga and the step named, and says what to do."""

from __future__ import annotations

import inspect
import re
from typing import Any

from pydantic import BaseModel

from saga._language import ChildSaga, Parallel, TimerStep, WaitStep
from saga._steps import DefinitionError, LocalStep, RemoteStep, Step, StepKind

_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")
_LEAVES = (LocalStep, RemoteStep, WaitStep, TimerStep, ChildSaga)


def check_definition(saga: Any) -> None:
    """Raise DefinitionError for every mistake we can see before the saga ever runs."""
    who = f"saga {saga.name}"
    data_model = getattr(saga, "data_model", None)
    if not (isinstance(data_model, type) and issubclass(data_model, BaseModel)):
        raise DefinitionError(f"{who}: declare its data as a pydantic model: class {saga.name}(Saga[MyData])")
    if not _NAME.fullmatch(saga.name):
        raise DefinitionError(
            f"{who}: the name must be 1 to 80 letters, digits, '_' or '-' (it names the topic <prefix>.<name>.replies)"
        )
    if not saga.steps:
        raise DefinitionError(f"{who}: no steps declared")
    _check_hooks(saga, who)
    nodes = [_node(who, entry) for entry in saga.steps]
    leaves = [step for node in nodes for step in node]
    pivots = [s.name for s in leaves if s.kind is StepKind.PIVOT]
    if len(pivots) > 1:
        raise DefinitionError(f"{who}: more than one pivot step ({', '.join(pivots)})")
    seen: set[str] = set()
    for step in leaves:
        if step.name in seen:
            raise DefinitionError(
                f"{who}: step {step.name}: duplicate step name (give one of them `name=...` or a `name` attribute)"
            )
        seen.add(step.name)
        _check_step(step, f"{who}: step {step.name}")
    after_pivot = False
    for node in nodes:
        for step in node:
            _check_kind(step, f"{who}: step {step.name}", after_pivot)
        after_pivot = after_pivot or any(s.kind is StepKind.PIVOT for s in node)


def _node(who: str, entry: Any) -> tuple[type[Step[Any]], ...]:
    if isinstance(entry, Parallel):
        for member in entry.steps:
            _leaf(who, member)
            where = f"{who}: step {member.name} in {entry!r}"
            if issubclass(member, LocalStep):
                raise DefinitionError(
                    f"{where}: a local step runs in the orchestrator's transaction, one at a time; "
                    "put it before or after the group"
                )
            if member.kind is StepKind.PIVOT:
                # A pivot that succeeded while a sibling failed could be neither undone nor
                # completed around: the group would have no defined outcome.
                raise DefinitionError(
                    f"{where}: the pivot cannot stand in a parallel group (if it succeeded and a "
                    "sibling failed, the saga could neither undo it nor complete); put it before or after the group"
                )
        return entry.steps
    if isinstance(entry, type) and issubclass(entry, Parallel):
        raise DefinitionError(f"{who}: write Parallel(StepA, StepB), not the class Parallel")
    _leaf(who, entry)
    return (entry,)


def _leaf(who: str, step: Any) -> None:
    if isinstance(step, Parallel):
        raise DefinitionError(f"{who}: {step!r} inside a group: groups do not nest")
    if not (isinstance(step, type) and issubclass(step, _LEAVES)):
        hint = (
            " (call it: WaitFor(MyMessage, timeout_s=...))"
            if callable(step) and not isinstance(step, type)
            else ""
        )
        raise DefinitionError(
            f"{who}: {step!r} is not a step: use a LocalStep or RemoteStep class, Parallel(...), "
            f"WaitFor(...), WaitForAny(...), Delay(...), Until(...) or a ChildSaga class{hint}"
        )


def _check_step(step: type[Step[Any]], where: str) -> None:
    if step.timeout_s is not None and not step.timeout_s > 0:
        raise DefinitionError(f"{where}: timeout_s must be > 0, got {step.timeout_s}")
    if issubclass(step, RemoteStep):
        _check_remote(step, where)
    elif issubclass(step, LocalStep) and step.action is LocalStep.action:
        raise DefinitionError(f"{where}: a local step must define action()")
    elif issubclass(step, WaitStep):
        signals = step.signals
        if not signals or not all(isinstance(s, type) and issubclass(s, BaseModel) for s in signals):
            raise DefinitionError(
                f"{where}: a wait names the signals it takes: signals = (MyMessage,), pydantic model classes"
            )
    elif issubclass(step, TimerStep) and step.due is TimerStep.due:
        raise DefinitionError(
            f"{where}: a timer step must define due(data, now): use Delay(...) or Until(...)"
        )
    elif issubclass(step, ChildSaga):
        _check_child(step, where)


def _check_remote(step: type[RemoteStep[Any]], where: str) -> None:
    if not step.participant:
        raise DefinitionError(f"{where}: a remote step must name its participant service")
    if not _NAME.fullmatch(step.participant):
        raise DefinitionError(
            f"{where}: participant {step.participant!r} must be 1 to 80 letters, digits, '_' or '-' "
            "(it names the topic <prefix>.<participant>.commands)"
        )
    if step.command is RemoteStep.command:
        raise DefinitionError(f"{where}: a remote step must define command()")
    _check_replies(step, where)


def _check_child(step: type[ChildSaga[Any]], where: str) -> None:
    from saga._definition import Saga  # the module that calls these checks

    child = getattr(step, "saga", None)
    if not (isinstance(child, type) and issubclass(child, Saga)):
        raise DefinitionError(
            f"{where}: a child step names the saga it starts: saga = MyChildSaga, got {child!r}"
        )
    if step.start is ChildSaga.start:
        raise DefinitionError(f"{where}: a child step must define start(data), returning the child's data")


def _check_kind(step: type[Step[Any]], where: str, after_pivot: bool) -> None:
    """Waits and timers change nothing: they may stand anywhere but cannot be the pivot."""
    if issubclass(step, WaitStep | TimerStep):
        if step.kind is StepKind.PIVOT:
            raise DefinitionError(f"{where}: a wait or a timer changes nothing, so it cannot be the pivot")
        return
    if step.kind is StepKind.PIVOT:
        if step.has_compensation():
            raise DefinitionError(f"{where}: the pivot step cannot have a compensation")
        return
    if after_pivot:
        if step.kind is not StepKind.RETRIABLE:
            raise DefinitionError(
                f"{where}: steps after the pivot must be retriable (kind = StepKind.RETRIABLE)"
            )
        if step.has_compensation():
            raise DefinitionError(f"{where}: a retriable step after the pivot cannot have a compensation")
        return
    if step.kind is StepKind.RETRIABLE:
        raise DefinitionError(f"{where}: a retriable step must come after a pivot step")
    if not step.has_compensation():
        raise DefinitionError(f"{where}: a step before the pivot needs a compensation")
    if issubclass(step, ChildSaga) and step.saga.pivot_index() is not None:
        # Undoing a completed child means running its compensations; past its pivot it has none.
        raise DefinitionError(
            f"{where}: the child saga {step.saga.name} has a pivot, so once it completed it cannot be "
            "undone; make this step the pivot (kind = StepKind.PIVOT) or put it after the pivot "
            "(kind = StepKind.RETRIABLE), or give the child no pivot"
        )


def _check_replies(step: type[RemoteStep[Any]], where: str) -> None:
    """A reply's type is what tells a success from a stray message: each must be known."""
    for attribute, declared in (("reply", step.reply), ("compensation_reply", step.compensation_reply)):
        if declared is not None and not (isinstance(declared, type) and issubclass(declared, BaseModel)):
            raise DefinitionError(f"{where}: {attribute} must be a pydantic model class, got {declared!r}")
    if step.reply is None:
        raise DefinitionError(
            f"{where}: say which reply its command gets: set `reply = MyReply` on the step, or "
            "annotate on_reply's `reply` parameter with the reply model"
        )
    if step.has_compensation() and step.compensation_reply is None:
        raise DefinitionError(
            f"{where}: say which reply its compensation gets: set `compensation_reply = MyUndoneReply`"
        )


_HOOK_PARAMETERS = {
    "on_completed": ("conn", "data"),
    "on_compensated": ("conn", "data", "reason"),
    "on_failed": ("conn", "data", "reason"),
}


def _check_hooks(saga: Any, who: str) -> None:
    """An end hook is awaited with these arguments in the orchestrator's transaction."""
    from saga._definition import Saga

    for name, parameters in _HOOK_PARAMETERS.items():
        hook = getattr(saga, name)
        if hook is getattr(Saga, name):
            continue
        wanted = f"`async def {name}(self, {', '.join(parameters)}) -> None`"
        if not inspect.iscoroutinefunction(hook):
            raise DefinitionError(f"{who}: hook {name} must be {wanted}, got {hook!r}")
        try:
            inspect.signature(hook).bind("self", *parameters)
        except TypeError as exc:
            raise DefinitionError(f"{who}: hook {name} must be {wanted}: {exc}") from None


def check_versions(saga: Any) -> None:
    """`version` is a number from 1; each migration comes from an older version, once, and
    renames old steps to steps this version has."""
    who = f"saga {saga.name}"
    version = saga.version
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise DefinitionError(f"{who}: version must be a whole number >= 1, got {version!r}")
    from saga._versions import Migration  # saga._versions describes the steps checked here

    if isinstance(saga.migrations, Migration) or not all(isinstance(m, Migration) for m in saga.migrations):
        raise DefinitionError(
            f"{who}: migrations is a list of Migration(from_version=..., renames={{...}}), got {saga.migrations!r}"
        )
    seen: set[int] = set()
    for migration in saga.migrations:
        where = f"{who} version {version}: Migration(from_version={migration.from_version})"
        if migration.from_version >= version:
            raise DefinitionError(f"{where}: a migration comes from an older version than {version}")
        if migration.from_version in seen:
            raise DefinitionError(f"{where}: declared twice; keep one migration per older version")
        seen.add(migration.from_version)
        unknown = sorted(new for new in migration.renames.values() if not saga.has_step(new))
        if unknown:
            has = ", ".join(step.name for step in saga.all_steps())
            raise DefinitionError(
                f"{where}: renames to {', '.join(map(repr, unknown))}, not a step of this version (it has: {has})"
            )
