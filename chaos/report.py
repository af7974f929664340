"""The run's tables (faults, outcomes) and its last line, one JSON object."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from chaos.checks import Outcome
from chaos.faults import Injected
from chaos.plan import PlannedFault
from chaos.processes import Death


@dataclass(frozen=True)
class Report:
    seed: int
    planned_sagas: int
    sagas: int  # placed
    gave_up: str | None  # why placing stopped early
    planned: Sequence[PlannedFault]
    faults: Sequence[Injected]
    outcome: Outcome
    invariants: dict[str, bool]
    read_model_differences: int | None  # None: `saga rebuild --verify` did not run
    deaths: Sequence[Death]
    unclean_stops: Sequence[tuple[str, int]]
    dead_letters: dict[str, int]
    log_lines: dict[str, int]
    elapsed_s: float
    drained_in_s: float

    def checks(self) -> dict[str, bool]:
        """Every check `invariants_ok` stands for, by name."""
        return {
            **self.invariants,
            "the read model equals the events (saga rebuild --verify)": self.read_model_differences == 0,
            "no process died on its own": not self.deaths,
            "every SIGTERM answered with exit code 0": not self.unclean_stops,
        }

    @property
    def invariants_ok(self) -> bool:
        return all(self.checks().values())

    @property
    def failed(self) -> bool:
        o = self.outcome
        return bool(o.lost or o.applied_twice or o.stuck or self.gave_up) or not self.invariants_ok

    def summary(self) -> dict[str, Any]:
        o = self.outcome
        return {
            "sagas": self.sagas,
            "faults": len(self.faults),
            "lost": len(o.lost),
            "applied_twice": o.applied_twice,
            "stuck": len(o.stuck),
            "timeouts_due_to_outage": len(o.due_to_outage),
            "invariants_ok": self.invariants_ok,
            "seed": self.seed,
            "sagas_planned": self.planned_sagas,
            "timeouts": len(o.timeouts),
            "timeouts_unexplained": len(o.unexplained),
            "died_on_own": len(self.deaths),
            "read_model_differences": self.read_model_differences,
            "dead_letters": sum(self.dead_letters.values()),
            "outbox_dead": o.outbox_dead,
            "elapsed_s": round(self.elapsed_s, 1),
        }

    def render(self) -> str:
        return "\n".join([*self._faults_table(), "", *self._outcomes_table(), "", *self._findings()])

    def _faults_table(self) -> list[str]:
        by_kind: dict[str, list[Injected]] = {}
        for f in self.faults:
            by_kind.setdefault(f.kind, []).append(f)
        lines = [f"{'fault':<18} {'count':>5}  {'down (s)':>8}  at (s since the first order)", "-" * 78]
        for kind, faults in by_kind.items():
            down = sum(f.ended - f.at for f in faults)
            at = ", ".join(f"{f.at:.0f}" for f in faults)
            lines.append(f"{kind:<18} {len(faults):>5}  {down:>8.1f}  {at}")
        lines.append(f"{'total':<18} {len(self.faults):>5}")
        not_injected = [f for f in self.faults if f.error]
        lines += [f"  not injected: {f.kind} at {f.at:.0f}s: {f.error}" for f in not_injected]
        return lines

    def _outcomes_table(self) -> list[str]:
        o = self.outcome
        s = self.summary()
        sent_dead = sum(f.sent.to_dead_letter for f in self.faults if f.sent)
        sent_outbox_dead = sum(f.sent.to_outbox_dead for f in self.faults if f.sent)
        rows: list[tuple[str, Any, bool | None]] = [
            ("sagas planned", self.planned_sagas, None),
            ("sagas placed", self.sagas, self.sagas == self.planned_sagas),
            *((f"  {status}", n, None) for status, n in sorted(o.statuses.items())),
            ("stuck (not ended)", s["stuck"], s["stuck"] == 0),
            ("lost", s["lost"], s["lost"] == 0),
            ("applied twice", s["applied_twice"], s["applied_twice"] == 0),
            ("timeouts (all)", s["timeouts"], None),
            ("  of orders slow or never picked on purpose", o.of_slow_orders, None),
            ("  of a participant that was SIGKILLed", o.of_killed_participants, None),
            ("  due to outage", s["timeouts_due_to_outage"], s["timeouts_due_to_outage"] == 0),
            ("  unexplained", s["timeouts_unexplained"], None),
            ("processes died on their own", s["died_on_own"], not self.deaths),
            ("unclean SIGTERM stops", len(self.unclean_stops), not self.unclean_stops),
            ("read model differences", s["read_model_differences"], self.read_model_differences == 0),
            (f"dead letters (poison and '.' sent: {sent_dead})", s["dead_letters"], None),
            (f"outbox_dead rows (missing topic sent: {sent_outbox_dead})", o.outbox_dead, None),
            ("outbox rows left", o.outbox_left, o.outbox_left == 0),
            ("run time (s)", round(self.elapsed_s, 1), None),
            ("waited for the last sagas (s)", round(self.drained_in_s, 1), None),
        ]
        lines = [f"{'outcome':<52} {'value':>8}", "-" * 66]
        for name, value, ok in rows:
            mark = "" if ok is None else ("  ok" if ok else "  FAILED")
            lines.append(f"{name:<52} {value!s:>8}{mark}")
        lines += [f"[{'ok' if holds else 'FAILED'}] {name}" for name, holds in self.checks().items()]
        return lines

    def _findings(self, shown: int = 5) -> list[str]:
        o = self.outcome
        lines = [self.gave_up] if self.gave_up else []
        lines += [f"stuck: {oid}: {why[:300]}" for oid, why in list(o.stuck.items())[:shown]]
        lines += [f"lost: {oid}: {why}" for oid, why in list(o.lost.items())[:shown]]
        by_kind: dict[str, int] = {}
        for _, kinds in o.due_to_outage:
            for kind in kinds:
                by_kind[kind] = by_kind.get(kind, 0) + 1
        lines += [
            f"timeouts due to outage whose window overlaps {kind}: {n}" for kind, n in sorted(by_kind.items())
        ]
        lines += [
            f"timeout unexplained: {t.order_id} {t.step}/{t.phase}#{t.attempt}" for t in o.unexplained[:shown]
        ]
        lines += [f"dead-letter topic {topic}: {n}" for topic, n in self.dead_letters.items()]
        lines.append(
            "log lines (WARNING and up): " + ", ".join(f"{r} {n}" for r, n in self.log_lines.items())
        )
        for d in self.deaths:
            tail = "\n    ".join(d.log_tail.splitlines()[-8:])
            lines.append(f"died on its own: {d.role} exit {d.code} at {d.at:.1f}s; its log ends:\n    {tail}")
        lines += [f"unclean stop: {role} exit code {code}" for role, code in self.unclean_stops]
        return lines

    def json_line(self) -> str:
        return orjson.dumps(self.summary()).decode()
