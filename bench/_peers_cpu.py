"""CPU seconds of one side of bench/peers.py: its own processes, and of the Postgres server only
what serves this run, since other runs may share the server (and the machine).

Postgres here is the server's backends connected to the run's databases (pg_stat_activity at
each sample: a backend that connects between two samples counts from its start, one that ends
between them is missed, which pooled connections rarely do) plus the postmaster and its
background processes (WAL writer, checkpointer, ...), which also serve whoever else writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import psycopg

from bench import _cpu
from eventstore import libpq_url

_BACKENDS = "SELECT pid FROM pg_stat_activity WHERE datname = ANY(%s) OR datname IS NULL"


class CpuMeter:
    def __init__(self, server_url: str, databases: Sequence[str], *, kafka: bool) -> None:
        self.server_url = server_url
        self.databases = list(databases)
        self.kafka = kafka

    def _postgres(self) -> dict[str, int]:
        with psycopg.connect(libpq_url(self.server_url), autocommit=True) as conn:
            named = {f"postgres {row[0]}": row[0] for row in conn.execute(_BACKENDS, (self.databases,))}
            # The postmaster: the parent of every backend, this connection's too (while it lives).
            stat = Path(f"/proc/{conn.info.backend_pid}/stat").read_text()
            named["postgres postmaster"] = int(stat[stat.rfind(")") + 2 :].split()[1])
        return named

    def sample(self, processes: Mapping[str, int]) -> dict[str, float]:
        """CPU seconds so far: each of `processes` (role -> pid), "postgres" (see above) and,
        if asked, "kafka" (the whole broker)."""
        postgres = self._postgres()
        used = _cpu.sample({**processes, **postgres})
        result = {role: used.get(role, 0.0) for role in processes}
        result["postgres"] = sum(used.get(name, 0.0) for name in postgres)
        if self.kafka:
            result["kafka"] = used.get("kafka", 0.0)
        return result


def spent(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    return {role: seconds - before.get(role, 0.0) for role, seconds in after.items()}
