"""Which outbox buckets a relay publishes: the buckets are shared out among the relays that run.

Every outbox row has a bucket, a hash of its key (outbox migration 0004), so all the messages
of one key are in one bucket. A relay holds, on its own Postgres session, a member lock
(`MEMBERS`, its backend pid) and a lock per bucket it publishes (`BUCKETS`, the bucket). Every
so often it lists the members from `pg_locks`: bucket b is the share of the member at
position b mod n in pid order. It lets go of the buckets that are no longer its share and
tries to lock those that are; a bucket another relay still holds is tried again next time.

So a bucket is published by one relay at a time. A relay lets a bucket go only between
batches, when the bucket's sends were acknowledged and deleted, so the next holder starts
where it stopped: per-key order holds across a handover. A relay whose session dies loses its
locks with it, and the others take its buckets at their next look. Advisory locks belong to
one database, so relays of different databases never meet.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

log = logging.getLogger(__name__)

# The migration's `hashtext(key) & 63`: at most this many relays publish at once.
BUCKETS = 64
ALL_BUCKETS: tuple[int, ...] = tuple(range(BUCKETS))
# Two-key advisory locks (int4, int4): a space of their own, apart from single bigint keys.
MEMBERS = 730_211_500
BUCKET_LOCKS = 730_211_501

_JOIN = "SELECT pg_advisory_lock(%s::int, pg_backend_pid()), pg_backend_pid()"
_MEMBERS = (
    "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND classid = %s::bigint::oid "
    "AND objsubid = 2 AND granted "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY objid"
)
_TAKE = "SELECT b FROM unnest(%s::int[]) AS b WHERE pg_try_advisory_lock(%s::int, b) ORDER BY b"
_RELEASE = "SELECT count(pg_advisory_unlock(%s::int, b)) FROM unnest(%s::int[]) AS b"


def share_of(position: int, members: int) -> frozenset[int]:
    """The buckets of the member at `position` (0-based, in pid order) of `members`."""
    if not 0 <= position < members:
        raise ValueError(f"member position {position} is not in 0..{members - 1}")
    return frozenset(b for b in ALL_BUCKETS if b % members == position)


def describe(buckets: frozenset[int]) -> str:
    """`0-31` or `1,3,5` style, for the log."""
    ordered = sorted(buckets)
    if not ordered:
        return "none"
    if ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{ordered[0]}-{ordered[-1]}" if len(ordered) > 1 else str(ordered[0])
    return ",".join(map(str, ordered))


class BucketShare:
    """One relay's membership and buckets, held on its session connection `conn`."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn
        self.pid = 0
        self.members = 0
        self.held: frozenset[int] = frozenset()

    async def join(self) -> None:
        row = await (await self.conn.execute(_JOIN, (MEMBERS,))).fetchone()
        assert row is not None
        self.pid = int(row[1])

    async def rebalance(self) -> bool:
        """Let go of what is no longer this relay's share, take what is; True if `held` changed.

        Call it between batches only: what it lets go of must have nothing in flight.
        """
        rows = await (await self.conn.execute(_MEMBERS, (MEMBERS,))).fetchall()
        pids = [int(row[0]) for row in rows]
        if self.pid not in pids:  # only if someone unlocked it on this session: take it again
            log.warning("relay: its member lock (backend %d) was gone; taking it again", self.pid)
            await self.join()
            pids = sorted([*pids, self.pid])
        target = share_of(pids.index(self.pid), len(pids))
        before = self.held
        extra = sorted(self.held - target)
        if extra:
            await self.conn.execute(_RELEASE, (BUCKET_LOCKS, extra))
            self.held -= set(extra)
        wanted = sorted(target - self.held)
        if wanted:
            taken = await (await self.conn.execute(_TAKE, (wanted, BUCKET_LOCKS))).fetchall()
            self.held |= {int(row[0]) for row in taken}
        changed = self.held != before or self.members != len(pids)
        if changed:
            missing = target - self.held
            log.info(
                "relay: %d relay(s) running; publishing buckets %s%s",
                len(pids),
                describe(self.held),
                f" (waiting for {describe(missing)}, held by another relay)" if missing else "",
            )
        self.members = len(pids)
        return changed
