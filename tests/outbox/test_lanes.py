"""Lanes through their interface alone: functions to apply, commit, hold back and give back."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from outbox import MessageDecodeError
from outbox._delivery import Decoded
from outbox._lanes import Lanes
from tests.helpers import wait_for

TP = TopicPartition("t", 0)


def item(offset: int, key: bytes) -> Decoded:
    record = ConsumerRecord("t", 0, offset, 0, 0, key, b"", None, len(key), 0, [])
    return Decoded(record, MessageDecodeError("lanes never look at it"))


@dataclass
class Partition:
    """What the consumer would do for the lanes, written down."""

    blocked: dict[int, asyncio.Event] = field(default_factory=dict)
    stop_at: set[int] = field(default_factory=set)
    started: list[int] = field(default_factory=list)
    applied: list[int] = field(default_factory=list)
    commits: list[int] = field(default_factory=list)
    flow: list[tuple[str, int | None]] = field(default_factory=list)

    def lanes(self, limit: int = 100) -> Lanes:
        return Lanes(
            name="g",
            apply=self.apply,
            commit=self.commit,
            hold_back=lambda tp: self.flow.append(("hold back", None)),
            give_back=lambda tp, rewind_to: self.flow.append(("give back", rewind_to)),
            limit=limit,
        )

    async def apply(self, d: Decoded) -> bool:
        self.started.append(d.offset)
        if d.offset in self.blocked:
            await self.blocked[d.offset].wait()
        if d.offset in self.stop_at:
            return False
        self.applied.append(d.offset)
        return True

    async def commit(self, offsets: dict[TopicPartition, int]) -> bool:
        self.commits.append(offsets[TP])
        return True


async def test_a_slow_record_holds_up_its_own_key_and_the_committed_offset_waits_for_it() -> None:
    p = Partition(blocked={0: asyncio.Event()})
    lanes = p.lanes()
    lanes.feed(TP, [item(0, b"a"), item(1, b"b"), item(2, b"a"), item(3, b"b")])
    await wait_for(lambda: p.applied == [1, 3], 5, "key b while key a waits")
    assert p.commits == [0]  # record 0 is not done: nothing after it counts as committed
    assert TP in lanes

    p.blocked[0].set()
    await wait_for(lambda: TP not in lanes, 5, "the lane to end")
    assert p.applied == [1, 3, 0, 2]
    assert p.commits == sorted(set(p.commits))  # only ever grows
    assert p.commits[-1] == 4
    assert p.flow == [("give back", None)]


async def test_a_lane_holds_back_its_partition_at_the_limit_and_gives_it_back_at_half() -> None:
    release = asyncio.Event()
    p = Partition(blocked=dict.fromkeys(range(4), release))
    lanes = p.lanes(limit=4)
    lanes.feed(TP, [item(i, f"k{i}".encode()) for i in range(4)])
    assert p.flow == [("hold back", None)]
    release.set()
    await wait_for(lambda: TP not in lanes, 5, "the lane to end")
    assert p.flow == [("hold back", None), ("give back", None), ("give back", None)]


async def test_a_lane_that_stops_gives_its_partition_back_from_the_first_record_not_done() -> None:
    p = Partition(stop_at={1})
    lanes = p.lanes()
    lanes.feed(TP, [item(0, b"a"), item(1, b"a"), item(2, b"a")])
    await wait_for(lambda: TP not in lanes, 5, "the lane to end")
    assert p.applied == [0]
    assert p.commits == [1]
    assert p.flow == [("give back", 1)]


async def test_closing_finishes_what_is_in_flight_and_leaves_the_rest() -> None:
    p = Partition(blocked={0: asyncio.Event()})
    lanes = p.lanes()
    lanes.feed(TP, [item(0, b"a"), item(1, b"a")])
    await wait_for(lambda: p.started == [0], 5, "record 0 to be in flight")
    called: list[bool] = []

    async def close() -> None:
        called.append(True)
        await lanes.close([TP])  # marks the lane closing before its first await

    closing = asyncio.create_task(close())
    await wait_for(lambda: called == [True], 5, "close to be called")
    p.blocked[0].set()
    await closing
    assert TP not in lanes
    assert p.applied == [0]
    assert p.commits == [1]
    assert p.flow == [("give back", 1)]


@dataclass
class Together(Partition):
    """A partition whose lanes apply the records of free keys together (`apply_together`)."""

    batches: list[list[int]] = field(default_factory=list)
    refuse_together: bool = False
    batch_blocked: asyncio.Event | None = None

    def lanes(self, limit: int = 100) -> Lanes:
        return Lanes(
            name="g",
            apply=self.apply,
            commit=self.commit,
            hold_back=lambda tp: self.flow.append(("hold back", None)),
            give_back=lambda tp, rewind_to: self.flow.append(("give back", rewind_to)),
            limit=limit,
            apply_together=self.apply_together,
        )

    async def apply_together(self, items: list[Decoded]) -> bool:
        self.batches.append([d.offset for d in items])
        if self.batch_blocked is not None:
            await self.batch_blocked.wait()
        if self.refuse_together:
            return False
        self.applied += [d.offset for d in items]
        return True


async def test_records_of_keys_not_held_up_go_together_and_the_lane_ends_once_the_slow_key_is_done() -> None:
    p = Together(blocked={0: asyncio.Event()})
    lanes = p.lanes()
    p.refuse_together = True  # the first feed: as after a slow batch, every record one by one
    lanes.feed(TP, [item(0, b"a"), item(1, b"b")])
    await wait_for(lambda: p.applied == [1], 5, "key b while key a waits")
    p.refuse_together = False
    lanes.feed(TP, [item(2, b"a"), item(3, b"c"), item(4, b"b"), item(5, b"c")])
    await wait_for(lambda: p.applied == [1, 3, 4, 5], 5, "the free keys' records together")
    assert p.batches[-1] == [3, 4, 5]  # key a's record 2 waits behind record 0, not in the batch
    assert p.commits[-1] == 0
    p.blocked[0].set()
    await wait_for(lambda: TP not in lanes, 5, "the lane to end")
    assert p.applied == [1, 3, 4, 5, 0, 2]
    assert p.commits == sorted(set(p.commits))
    assert p.commits[-1] == 6
    assert p.flow == [("give back", None)]


async def test_records_that_do_not_go_together_go_one_by_one_in_order_ahead_of_their_keys_later_records() -> (
    None
):
    p = Together(refuse_together=True, batch_blocked=asyncio.Event())
    lanes = p.lanes()
    lanes.feed(TP, [item(0, b"a"), item(1, b"b"), item(2, b"a")])
    await wait_for(lambda: p.batches == [[0, 1, 2]], 5, "the batch to be tried")
    lanes.feed(TP, [item(3, b"a"), item(4, b"c")])  # a: behind the batch; c: a batch of its own
    assert p.batches == [[0, 1, 2]]  # one batch at a time over all lanes
    assert p.batch_blocked is not None
    p.batch_blocked.set()
    await wait_for(lambda: TP not in lanes, 5, "the lane to end")
    assert p.batches == [[0, 1, 2], [4]]
    assert [o for o in p.applied if o in (0, 2, 3)] == [0, 2, 3]
    assert sorted(p.applied) == [0, 1, 2, 3, 4]
    assert p.commits[-1] == 5
