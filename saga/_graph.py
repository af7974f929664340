"""A saga drawn as a Mermaid flowchart (`saga graph`): the steps forward, a parallel group as a
fork and a join, waits with their signals, timers, child sagas, and the compensations backward.

Shapes: a pivot is a hexagon, a wait a flag, a timer a parallelogram, a child saga a
subroutine box, a local step dashed. A dotted edge is what runs when a step fails (or a wait
times out): the compensations, latest first, down to `compensated`.
"""

from __future__ import annotations

import inspect
from typing import Any

from saga._definition import LocalStep, Node, RemoteStep, Saga, Step, StepKind
from saga._language import ChildSaga, TimerStep, WaitStep

Leaf = type[Step[Any]]

_SHAPES: tuple[tuple[type[Any], str, str], ...] = (
    (WaitStep, ">", "]"),
    (TimerStep, "[/", "/]"),
    (ChildSaga, "[[", "]]"),
)
# Characters that would end a quoted Mermaid label or open an HTML tag in it.
_ESCAPES = {'"': "#quot;", "<": "#lt;", ">": "#gt;"}
_DOC_WIDTH = 60


def _escape(text: str) -> str:
    return "".join(_ESCAPES.get(c, c) for c in text)


def _timer_text(step: Leaf) -> str:
    """What a timer waits for, from its docstring ("Waits 5s." from Delay(5))."""
    doc = inspect.getdoc(step)
    if not doc or doc == inspect.getdoc(TimerStep):
        return "waits until due(data, now)"
    first = doc.splitlines()[0].rstrip(".")
    first = first[:1].lower() + first[1:]
    return first if len(first) <= _DOC_WIDTH else first[: _DOC_WIDTH - 3] + "..."


def _where(step: Leaf) -> str:
    if issubclass(step, RemoteStep):
        return f"remote: {step.participant}"
    if issubclass(step, ChildSaga):
        return f"child saga: {step.saga.name}"
    if issubclass(step, WaitStep):
        names = [signal.__name__ for signal in step.signals]
        if len(names) == 1:
            return f"waits for signal {names[0]}"
        return f"waits for the first signal of {', '.join(names)}"
    if issubclass(step, TimerStep):
        return f"timer: {_timer_text(step)}"
    return "local"


def _label(step: Leaf) -> str:
    extra = [_where(step)]
    if not issubclass(step, WaitStep | TimerStep):  # a wait or timer has no kind that matters
        extra.append(step.kind.value)
    if step.timeout_s:
        extra.append(f"timeout {step.timeout_s:g}s")
    if step.retry.attempts > 1:
        extra.append(f"{step.retry.attempts} attempts")
    return f"{_escape(step.name)}<br/>{_escape(' · '.join(extra))}"


def _box(step: Leaf) -> str:
    if step.kind is StepKind.PIVOT:
        opening, closing = "{{", "}}"
    else:
        opening, closing = next(((o, c) for kind, o, c in _SHAPES if issubclass(step, kind)), ("[", "]"))
    return f'    {step.name}{opening}"{_label(step)}"{closing}'


def _undo_how(step: Leaf) -> str:
    if issubclass(step, RemoteStep):
        return f"remote: {step.participant}"
    if issubclass(step, ChildSaga):
        return f"child saga {step.saga.name} compensates"
    return "local"


def _can_fail(step: Leaf) -> bool:
    """A timer always fires; a wait fails only by timing out."""
    if issubclass(step, TimerStep):
        return False
    return not issubclass(step, WaitStep) or step.timeout_s is not None


def _group_numbers(nodes: tuple[Node, ...]) -> list[int]:
    """Each node's group number (1, 2, ... in order), 0 for a single step."""
    numbers: list[int] = []
    for node in nodes:
        numbers.append(max(numbers, default=0) + 1 if len(node) > 1 else 0)
    return numbers


def _forward(nodes: tuple[Node, ...]) -> list[str]:
    lines: list[str] = []
    previous = "start"
    for node, group in zip(nodes, _group_numbers(nodes), strict=True):
        lines += [_box(step) for step in node]
        if not group:
            lines.append(f"    {previous} --> {node[0].name}")
            previous = node[0].name
            continue
        fork, join = f"fork_{group}", f"join_{group}"
        lines += [f'    {fork}(("parallel"))', f'    {join}(("all done"))', f"    {previous} --> {fork}"]
        lines += [f"    {fork} --> {step.name}" for step in node]
        lines += [f"    {step.name} --> {join}" for step in node]
        previous = join
    return [*lines, "    completed([completed])", f"    {previous} --> completed"]


class _Undo:
    """Where compensation enters each node (a group with several undoable members enters at a
    fork to the undo of each), and where it leaves it."""

    def __init__(self, nodes: tuple[Node, ...]) -> None:
        self.undoable = [[s for s in node if s.has_compensation()] for node in nodes]
        self.groups = _group_numbers(nodes)
        self.entries: list[str | None] = []
        for undoable, group in zip(self.undoable, self.groups, strict=True):
            if not undoable:
                self.entries.append(None)
            elif len(undoable) == 1:
                self.entries.append(f"undo_{undoable[0].name}")
            else:
                self.entries.append(f"undo_fork_{group}")

    def before(self, index: int) -> str:
        """Where compensation starts when node `index` fails as a whole."""
        return next((e for e in reversed(self.entries[:index]) if e is not None), "compensated")

    def on_failure(self, index: int, step: Leaf) -> str:
        """A member's siblings that took effect are undone first, then the earlier nodes."""
        siblings = [s for s in self.undoable[index] if s is not step]
        if not siblings:
            return self.before(index)
        if len(siblings) == 1:
            return f"undo_{siblings[0].name}"
        return f"undo_fork_{self.groups[index]}"


def _backward(saga: type[Saga[Any]]) -> list[str]:
    nodes = saga.nodes()
    undo = _Undo(nodes)
    lines: list[str] = []
    if any(undo.undoable):
        lines.append("    compensated([compensated])")
    for index, undoable in enumerate(undo.undoable):
        lines += [
            f'    undo_{s.name}["{_escape(f"undo {s.name}")}<br/>{_escape(_undo_how(s))}"]' for s in undoable
        ]
        entry = undo.entries[index]
        if len(undoable) > 1 and entry is not None:
            lines.append(f'    {entry}("undo the members that took effect")')
            lines += [f"    {entry} -.-> undo_{s.name}" for s in undoable]
    pivot = saga.pivot_index()
    for index, node in enumerate(nodes[: len(nodes) if pivot is None else pivot + 1]):
        for step in node:
            if _can_fail(step):
                how = "times out" if issubclass(step, WaitStep) else "fails"
                lines.append(f"    {step.name} -. {how} .-> {undo.on_failure(index, step)}")
    for index, undoable in reversed(list(enumerate(undo.undoable))):  # latest first, as they run
        lines += [f"    undo_{s.name} -.-> {undo.before(index)}" for s in undoable]
    return lines


def graph(saga: type[Saga[Any]]) -> str:
    """A Mermaid flowchart of `saga`: see the module's docstring for how to read it."""
    lines = ["flowchart TD", "    start([start])", *_forward(saga.nodes()), *_backward(saga)]
    local = [s.name for s in saga.all_steps() if issubclass(s, LocalStep)]
    if local:
        lines.append(f"    classDef local stroke-dasharray: 4 2\n    class {','.join(local)} local")
    return "\n".join(lines)
