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
