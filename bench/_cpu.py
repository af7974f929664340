"""CPU seconds used by groups of processes over a measurement (Linux /proc; empty elsewhere)."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_s(pid: int) -> float:
    """User + system time of one process, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _command(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def sample(named: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds so far of `named` processes (role -> pid), this process ("bench"), every
    Postgres server process ("postgres") and the Kafka broker ("kafka")."""
    used: defaultdict[str, float] = defaultdict(float)
    if not Path("/proc/self/stat").exists():
        return {}
    known = {pid: role for role, pid in named.items()}
    known[os.getpid()] = "bench"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            role = known.get(pid)
            if role is None:
                command = _command(pid)
                if "bin/postgres" in command or command.startswith("postgres:"):
                    role = "postgres"
                elif "java" in command and "kafka" in command:
                    role = "kafka"
                else:
                    continue
            used[role] += _cpu_s(pid)
        except OSError:  # the process ended while we looked
            continue
    return dict(used)
