"""Lanes: a partition whose batch was slow goes on record by record, keys side by side.

In a lane each record is applied in a transaction of its own; the records of one key in
order, those of different keys side by side (up to `concurrency` at once), so a slow record
holds up its own key and no other. The partition's committed offset is the lowest record
not done yet: what comes again after a crash and was done finds its inbox row. A lane ends
when nothing is left in it, and the partition's next fetch goes the usual way. A partition
with `limit` records waiting is held back (not fetched) until half of them are done.

Records fed to a lane whose keys have nothing waiting in it are applied together, in one
transaction (`apply_together`, one such batch at a time over all lanes, so two batches never
wait for each other's row locks), as a fetch would be; only when that fails or is slow do
they go record by record. So a lane costs one transaction per record only for the keys held
up: under a steady flow it still drains and ends, instead of running every later record of
its partition one by one.

Lanes know nothing of the consumer: it gives them what they need as functions.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable

from aiokafka import TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from outbox._dead_letters import DeadLetters
from outbox._delivery import Decoded

log = logging.getLogger(__name__)

# Applies one record (retried, or dead-lettered); False when the consumer stops first.
Apply = Callable[[Decoded], Awaitable[bool]]
# Applies records together in one transaction; False when they were not (all rolled back).
ApplyTogether = Callable[[list[Decoded]], Awaitable[bool]]
# Commits offsets to Kafka; False when that failed (it logs why).
Commit = Callable[[dict[TopicPartition, int]], Awaitable[bool]]
# Stops fetching a partition for now.
HoldBack = Callable[[TopicPartition], None]
# Fetches a partition again (from the offset, when one is given).
GiveBack = Callable[[TopicPartition, int | None], None]


class Lanes:
    """The partitions in lanes, by partition."""

    def __init__(
        self,
        *,
        name: str,
        apply: Apply,
        commit: Commit,
        hold_back: HoldBack,
        give_back: GiveBack,
        limit: int,
        concurrency: int = 16,
        apply_together: ApplyTogether | None = None,
    ) -> None:
        self.name = name
        self.apply = apply
        self.apply_together = apply_together
        self.together_lock = asyncio.Lock()
        self.commit = commit
        self.hold_back = hold_back
        self.give_back = give_back
        self.limit = limit
        self.concurrency = concurrency
        self._lanes: dict[TopicPartition, _Lane] = {}

    def __contains__(self, tp: TopicPartition) -> bool:
        return tp in self._lanes

    def feed(self, tp: TopicPartition, items: list[Decoded]) -> None:
        """Records of a partition, in order; opens its lane when it has none."""
        lane = self._lanes.get(tp)
        if lane is None:
            lane = self._lanes[tp] = _Lane(self, tp)
        lane.feed(items)

    async def close(self, tps: Iterable[TopicPartition] | None = None) -> None:
        """Finish the records in flight, commit, and leave the rest to be fetched again."""
        going = set(self._lanes if tps is None else tps)
        await asyncio.gather(
            *(lane.close() for tp, lane in list(self._lanes.items()) if tp in going),
            return_exceptions=True,
        )

    def _forget(self, lane: _Lane) -> bool:
        if self._lanes.get(lane.tp) is not lane:
            return False
        del self._lanes[lane.tp]
        return True


class _Lane:
    def __init__(self, lanes: Lanes, tp: TopicPartition) -> None:
        self.lanes = lanes
        self.tp = tp
        self.waiting: dict[bytes | None, deque[Decoded]] = {}
        self.grouped: set[bytes | None] = set()  # keys whose records are being applied together
        self.outstanding: set[int] = set()  # offsets fed and not done
        self.next_offset = 0  # after the last record fed
        self.committed = -1
        self.tasks: set[asyncio.Task[None]] = set()
        self.slots = asyncio.Semaphore(lanes.concurrency)
        self.commit_lock = asyncio.Lock()
        self.held_back = False
        self.closing = False
        self._ending: asyncio.Task[None] | None = None

    def feed(self, items: list[Decoded]) -> None:
        together: list[Decoded] = []
        keys: set[bytes | None] = set()
        for item in items:
            self.outstanding.add(item.offset)
            self.next_offset = item.offset + 1
            key = item.record.key
            if (
                self.lanes.apply_together is not None
                and key not in self.waiting
                and (key in keys or key not in self.grouped)
            ):
                together.append(item)
                keys.add(key)
                continue
            queue = self.waiting.get(key)
            if queue is None:
                queue = self.waiting[key] = deque()
                if key not in self.grouped:  # else it starts once its records before are done
                    self._start(self._run_key(key))
            queue.append(item)
        if together:
            self.grouped |= keys
            self._start(self._run_together(together, keys))
        if len(self.outstanding) >= self.lanes.limit and not self.held_back:
            self.lanes.hold_back(self.tp)
            self.held_back = True

    def _start(self, work: Coroutine[None, None, None]) -> None:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    async def _run_together(self, items: list[Decoded], keys: set[bytes | None]) -> None:
        """Records of keys with nothing waiting, together; when that does not go, record by
        record, in their keys' queues ahead of what came for those keys since."""
        assert self.lanes.apply_together is not None
        done = False
        try:
            async with self.lanes.together_lock:
                if not self.closing:
                    done = await self.lanes.apply_together(items)
        except Exception:
            log.exception("consumer %s: unexpected failure; the records go on one by one", self.lanes.name)
        self.grouped -= keys
        if done:
            self.outstanding.difference_update(item.offset for item in items)
        else:
            for item in reversed(items):
                self.waiting.setdefault(item.record.key, deque()).appendleft(item)
        if not self.closing:
            for key in keys & self.waiting.keys():
                self._start(self._run_key(key))
        if done:
            await self._commit()

    async def _run_key(self, key: bytes | None) -> None:
        queue = self.waiting[key]
        while not self.closing:
            if not queue:
                del self.waiting[key]  # in the same step as the check: `feed` starts a new task
                return
            item = queue[0]
            try:
                async with self.slots:
                    if self.closing:
                        return
                    done = await self.lanes.apply(item)
            except Exception:
                log.exception(
                    "consumer %s: unexpected failure; the record will be fetched again", self.lanes.name
                )
                done = False
            if not done:
                self.closing = True  # the lane ends here; the partition is fetched again from it
                return
            queue.popleft()
            self.outstanding.discard(item.offset)
            await self._commit()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not self.tasks:
            self._ending = asyncio.get_running_loop().create_task(self._end())

    async def _commit(self) -> None:
        async with self.commit_lock:  # in turn: the committed offset only grows
            low = min(self.outstanding) if self.outstanding else self.next_offset
            if low > self.committed and await self.lanes.commit({self.tp: low}):
                self.committed = low
        if self.held_back and len(self.outstanding) < self.lanes.limit // 2:
            self.held_back = False
            self.lanes.give_back(self.tp, None)

    async def _end(self) -> None:
        """No task left: either everything fed is done, or the lane is closing."""
        if self.tasks:
            return
        if self.outstanding and not self.closing:
            return  # cannot happen: each key with records outstanding has its task
        if not self.lanes._forget(self):
            return  # ended already
        await self._commit()
        self.lanes.give_back(self.tp, min(self.outstanding) if self.outstanding else None)

    async def close(self) -> None:
        self.closing = True
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self._end()
        if self._ending is not None:  # the last task's own call may be the one that ends it
            await asyncio.gather(self._ending, return_exceptions=True)


class FinishBatchOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Before partitions go to another member, let their batches in flight finish and commit;
    their dead letters still waiting are given up (the new owner meets their records again)."""

    def __init__(self, lock: asyncio.Lock, lanes: Lanes, dead_letters: DeadLetters) -> None:
        self._lock = lock
        self._lanes = lanes
        self._dead_letters = dead_letters

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        revoked = list(revoked)
        async with self._lock:
            self._dead_letters.abandon(revoked)
            await self._lanes.close(revoked)

    async def on_partitions_assigned(self, assigned: object) -> None:
        pass
