"""One savepoint for a run of steps in a transaction, so that each costs one round trip."""

from __future__ import annotations

from typing import Any

import psycopg


class StepSavepoint:
    """Steps that must be undoable one at a time (a refused command, a failed local step) run
    after `take()`; `roll_back()` undoes the current one's writes only. Taking the next
    releases the previous in the same round trip, so the transaction never nests deeper than
    one savepoint. Whatever is left open is committed or rolled back with the transaction."""

    def __init__(self, driver: psycopg.AsyncConnection[Any], name: str) -> None:
        self.driver = driver
        self.name = name
        self._taken = False

    async def take(self) -> None:
        if self._taken:
            await self.driver.execute(f"RELEASE SAVEPOINT {self.name}; SAVEPOINT {self.name}")
        else:
            await self.driver.execute(f"SAVEPOINT {self.name}")
            self._taken = True

    async def roll_back(self) -> None:
        await self.driver.execute(f"ROLLBACK TO SAVEPOINT {self.name}")

    async def release(self) -> None:
        if self._taken:
            await self.driver.execute(f"RELEASE SAVEPOINT {self.name}")
            self._taken = False
