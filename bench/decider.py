"""Decider benchmark: CPU per decision, no services (the decider is pure).

    python bench/decider.py

A saga of four remote steps is driven start to completion (a start and four replies: five
decisions) many times, and, where the saga language is there, a saga whose three remote
steps stand in one parallel group (a start and three replies). Prints microseconds per
decision and per saga (best of three rounds), then one JSON line. The sequential figure is
comparable across versions of the decider: the script runs on those without groups too.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import saga as lib
from saga import RemoteStep, Reply, Saga, SagaState, Start, decide

ROUNDS = 3
SAGAS = 2_000
NOW = datetime(2030, 1, 1, tzinfo=UTC)


class Data(BaseModel):
    trail: list[str] = []


class Do(BaseModel):
    step: str


class Done(BaseModel):
    step: str


class Undone(BaseModel):
    step: str


def remote(name: str) -> type[RemoteStep[Data]]:
    def command(self: Any, data: Data) -> Do:
        return Do(step=name)

    def on_reply(self: Any, data: Data, reply: Done) -> Data:
        return data.model_copy(update={"trail": [*data.trail, name]})

    def compensation(self: Any, data: Data) -> Do:
        return Do(step=name)

    body = {
        "name": name,
        "participant": "svc",
        "timeout_s": 30.0,
        "reply": Done,
        "compensation_reply": Undone,
        "command": command,
        "on_reply": on_reply,
        "compensation": compensation,
    }
    return type(f"Step_{name}", (RemoteStep,), body)


def run_saga(saga: type[Saga[Any]], saga_id: str) -> int:
    """Start the saga and answer every command it sends until it completes; the decisions taken."""
    decision = decide(saga, SagaState(saga_id=saga_id), Start(saga.name, {}), NOW)
    decisions = 1
    pending = list(decision.commands)
    state = decision.state
    while pending:
        command = pending.pop(0)
        reply = Reply("bench.done", Done(step=command.step), command.step, command.phase, command.attempt)
        decision = decide(saga, state, reply, NOW)
        decisions += 1
        state = decision.state
        pending += decision.commands
    assert state.status == "completed", state.status
    return decisions


def measure(saga: type[Saga[Any]]) -> tuple[float, float]:
    """(microseconds per decision, per saga), best of ROUNDS."""
    best = float("inf")
    decisions = 0
    for _ in range(ROUNDS):
        started = time.perf_counter()
        decisions = sum(run_saga(saga, f"saga-{i}") for i in range(SAGAS))
        best = min(best, time.perf_counter() - started)
    return best / decisions * 1e6, best / SAGAS * 1e6


def main() -> None:
    four = [remote(f"s{i}") for i in range(4)]
    sequence = type("Sequence", (Saga,), {"data_model": Data, "steps": tuple(four)})
    results = {"sequence": measure(sequence)}
    parallel = getattr(lib, "Parallel", None)
    if parallel is not None:
        group = type("Group", (Saga,), {"data_model": Data, "steps": (parallel(*four[:3]),)})
        results["group"] = measure(group)
    print(f"{'saga':<40} {'us/decision':>12} {'us/saga':>10}")
    labels = {"sequence": "four remote steps in sequence", "group": "three remote steps in one group"}
    for key, (per_decision, per_saga) in results.items():
        print(f"{labels[key]:<40} {per_decision:>12.1f} {per_saga:>10.1f}")
    summary = {f"{key}_us_per_decision": round(v[0], 1) for key, v in results.items()}
    summary |= {f"{key}_us_per_saga": round(v[1], 1) for key, v in results.items()}
    print(orjson.dumps({"sagas": SAGAS, **summary}).decode())


if __name__ == "__main__":
    main()
