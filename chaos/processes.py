"""The order system's processes (each the `saga` CLI), watched the way a supervisor would.

Every exit is sorted: one the scheduler caused (SIGKILL, SIGTERM) is expected; any other is a
death on its own, recorded with the tail of the process's log, and the process is started
again a second later (as systemd's `Restart=always` would), so one crash does not end the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROLES = ("relay", "worker", "customers", "inventory", "payments")
PARTICIPANTS = ROLES[2:]
RESTART_AFTER_S = 1.0
# A fault waits until every process has run this long: one that hits a process still
# importing its modules tests the interpreter's start-up, not the product.
STARTUP_GRACE_S = 8.0


@dataclass(frozen=True)
class Death:
    """A process that exited although nobody asked it to."""

    role: str
    code: int
    at: float  # seconds since the run started
    log_tail: str


@dataclass
class _Running:
    popen: subprocess.Popen[bytes]
    since: float = field(default_factory=time.monotonic)
    expected: bool = False  # the scheduler is stopping it


@dataclass
class Supervisor:
    env: Mapping[str, str]
    log_dir: Path
    started_at: float = field(default_factory=time.monotonic)
    deaths: list[Death] = field(default_factory=list)
    unclean_stops: list[tuple[str, int]] = field(default_factory=list)  # SIGTERM answered with a failure
    _running: dict[str, _Running] = field(default_factory=dict)

    def log_of(self, role: str) -> Path:
        return self.log_dir / f"{role}.log"

    def start(self, role: str) -> None:
        if role in self._running:
            raise RuntimeError(f"{role} is already running (pid {self._running[role].popen.pid})")
        args = ["participant", role] if role in PARTICIPANTS else [role]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_of(role).open("ab") as log:
            popen = subprocess.Popen(
                [sys.executable, "-m", "saga", *args],
                env=dict(self.env),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._running[role] = _Running(popen)

    def start_all(self) -> None:
        for role in ROLES:
            self.start(role)

    def running(self) -> list[str]:
        return list(self._running)

    def kill(self, roles: Sequence[str]) -> list[str]:
        """SIGKILL (no clean shutdown, the way a crashed host looks); returns the roles killed
        (one that had died on its own meanwhile is skipped)."""
        killed = [r for r in roles if r in self._running]
        for role in killed:
            self._running[role].expected = True
            self._running[role].popen.send_signal(signal.SIGKILL)
        for role in killed:
            self._running.pop(role).popen.wait()
        return killed

    async def terminate(self, roles: Sequence[str], timeout_s: float = 60) -> dict[str, int]:
        """SIGTERM and wait: exit codes (0 = stopped cleanly); a process still up after
        `timeout_s` is SIGKILLed and counts as unclean."""
        asked = [r for r in roles if r in self._running]
        for role in asked:
            self._running[role].expected = True
            self._running[role].popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(self._running[r].popen.poll() is None for r in asked):  # noqa: ASYNC110 - polls child processes
            await asyncio.sleep(0.05)
        codes: dict[str, int] = {}
        for role in asked:
            popen = self._running.pop(role).popen
            if popen.poll() is None:
                popen.kill()
            codes[role] = popen.wait()
            if codes[role] != 0:
                self.unclean_stops.append((role, codes[role]))
        return codes

    async def terminate_all(self) -> dict[str, int]:
        return await self.terminate(self.running())

    def ensure_started(self, roles: Sequence[str]) -> None:
        for role in roles:
            if role not in self._running:
                self.start(role)

    def log_lines(self) -> dict[str, int]:
        """Lines each role's processes logged (at WARNING and up) over the run."""
        counts = {}
        for role in ROLES:
            try:
                with self.log_of(role).open("rb") as log:
                    counts[role] = sum(1 for _ in log)
            except OSError:
                counts[role] = 0
        return counts

    async def settled(self, grace_s: float = STARTUP_GRACE_S) -> None:
        """Until every running process has been up for `grace_s`."""
        while self._running:
            youngest = max(r.since for r in self._running.values())
            wait = youngest + grace_s - time.monotonic()
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    def _tail(self, role: str, lines: int = 25) -> str:
        try:
            text = self.log_of(role).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check(self) -> list[Death]:
        """Record the processes that ended on their own since the last check."""
        found = []
        for role, running in list(self._running.items()):
            code = running.popen.poll()
            if code is None or running.expected:
                continue
            del self._running[role]
            death = Death(role, code, time.monotonic() - self.started_at, self._tail(role))
            self.deaths.append(death)
            found.append(death)
        return found

    async def watch(self, stop: asyncio.Event) -> None:
        """Until `stop`: notice deaths and start the dead again after `RESTART_AFTER_S`."""
        while not stop.is_set():
            for death in self.check():
                print(
                    f"!! {death.role} exited on its own with code {death.code} at {death.at:.1f}s; "
                    f"restarting it (log: {self.log_of(death.role)})",
                    file=sys.stderr,
                )
                await asyncio.sleep(RESTART_AFTER_S)
                if death.role not in self._running:
                    self.start(death.role)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.2)
