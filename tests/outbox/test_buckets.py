"""Buckets: every one has exactly one owner among the relays, and every key lands in one of them."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from outbox import Outbox
from outbox._buckets import ALL_BUCKETS, BUCKETS, describe, share_of
from tests.outbox.messages import Ping


@pytest.mark.parametrize("members", [1, 2, 3, 4, 7, 63, 64, 65])
def test_each_bucket_has_one_owner_and_shares_are_even(members: int) -> None:
    shares = [share_of(position, members) for position in range(members)]
    owners = [sum(bucket in share for share in shares) for bucket in ALL_BUCKETS]
    assert owners == [1] * BUCKETS
    sizes = {len(share) for share in shares}
    assert max(sizes) - min(sizes) <= 1


def test_a_position_outside_the_members_is_refused() -> None:
    with pytest.raises(ValueError, match=r"member position 2 is not in 0\.\.1"):
        share_of(2, 2)


def test_describe_says_ranges_and_lists() -> None:
    assert describe(frozenset(range(32))) == "0-31"
    assert describe(frozenset({1, 3})) == "1,3"
    assert describe(frozenset()) == "none"


async def test_the_table_puts_each_key_in_one_bucket_of_64(engine: AsyncEngine, outbox: Outbox) -> None:
    async with engine.begin() as conn:
        for n in range(2000):
            await outbox.put(conn, Ping(key="k", seq=n), topic="t", key=f"saga-{n % 1000}")
        row = (
            await conn.execute(
                text(
                    "SELECT min(bucket), max(bucket), count(DISTINCT bucket), "
                    "bool_and(n = 1) FROM (SELECT min(bucket) AS bucket, count(DISTINCT bucket) AS n "
                    "FROM outbox GROUP BY key) AS per_key"
                )
            )
        ).one()
    assert tuple(row) == (0, BUCKETS - 1, BUCKETS, True)
