"""The saga streams an orchestrator loaded last, so the next decision reads only what is new.

A stream only grows: every append names the version it expects, and nothing deletes or
rewrites events. So what was read from the database once is, for ever, the true beginning
of that stream, whatever happened since (another worker's decision, an operator's call):
the next load asks only for the events after it and folds them onto the state held. Only
loaded rows are held, never a decision's own events, so a transaction that rolls back
leaves nothing wrong behind. Sagas that ended are not held, and at most `size` are.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from eventstore import EventStore, RecordedEvent
from saga._protocol import stream_of
from saga._state import TERMINAL, SagaState, apply, fold

Loaded = tuple[list[RecordedEvent], SagaState]


class StreamCache:
    def __init__(self, size: int = 2000) -> None:
        if size < 0:
            raise ValueError(f"the stream cache size must be >= 0, got {size}")
        self.size = size
        self._held: OrderedDict[str, Loaded] = OrderedDict()

    def __len__(self) -> int:
        return len(self._held)

    async def load(
        self, store: EventStore, saga_ids: Sequence[str], conn: AsyncConnection
    ) -> dict[str, Loaded]:
        """Each saga's events and their fold, in one query (a saga with no events: [])."""
        # Taken before the query: a concurrent load may replace an entry meanwhile.
        base = {s: self._held.get(s) for s in saga_ids}
        after = {stream_of(s): held[0][-1].version for s, held in base.items() if held is not None}
        tails = await store.load_many([stream_of(s) for s in saga_ids], conn=conn, after=after)
        loaded: dict[str, Loaded] = {}
        for saga_id in saga_ids:
            tail = tails[stream_of(saga_id)]
            held = base[saga_id]
            if held is None or (tail and tail[0].version != held[0][-1].version + 1):
                events = tail if held is None else await self._whole(store, saga_id, conn)
                state = fold(saga_id, (e.event for e in events))
            else:
                events, state = [*held[0], *tail], held[1]
                for recorded in tail:
                    state = apply(state, recorded.event)
            loaded[saga_id] = (events, state)
            self._keep(saga_id, events, state)
        return loaded

    @staticmethod
    async def _whole(store: EventStore, saga_id: str, conn: AsyncConnection) -> list[RecordedEvent]:
        """The whole stream again (its versions did not follow on from what was held)."""
        return (await store.load_many([stream_of(saga_id)], conn=conn))[stream_of(saga_id)]

    def _keep(self, saga_id: str, events: list[RecordedEvent], state: SagaState) -> None:
        held = self._held.get(saga_id)
        if held is not None and held[0][-1].version > (events[-1].version if events else 0):
            return  # a later load got further
        self._held.pop(saga_id, None)
        if not events or state.status in TERMINAL or self.size == 0:
            return
        self._held[saga_id] = (events, state)
        while len(self._held) > self.size:
            self._held.popitem(last=False)
