"""Topics on the broker: which ones the relay can publish to right now, and creating the
dead-letter topics a consumer needs.

A topic the broker does not have (auto-creation off, or a name it refuses to create) would
make every send to it wait for metadata and fail. The relay asks the broker once per batch
for the topics it does not know yet; rows of a missing topic stay in the outbox and are left
out of the next batches (order per topic and key holds: none of them is sent), so that every
other topic goes on at full speed. A topic missing for `give_up_after_s` has its rows set
aside in `outbox_dead`, with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

log = logging.getLogger(__name__)

RECHECK_WAIT_S = 0.5


class MissingTopics:
    def __init__(self, *, give_up_after_s: float, recheck_s: float = 5.0, first_wait_s: float = 2.0) -> None:
        self.give_up_after_s = give_up_after_s
        self.recheck_s = recheck_s
        self.first_wait_s = first_wait_s
        self._since: dict[str, float] = {}  # topic -> when it was first found missing
        self._checked: dict[str, float] = {}  # topic -> when the broker was last asked

    @property
    def excluded(self) -> list[str]:
        """Topics whose rows are left out of batches until the broker has them."""
        return sorted(self._since)

    async def refresh(self, producer: AIOKafkaProducer, topics: Iterable[str]) -> None:
        """Note which of a batch's topics the broker lacks: a topic seen for the first time gets
        `first_wait_s` to appear (as a broker that creates topics on first use needs); a missing
        one is asked about again every `recheck_s`."""
        cluster = producer.client.cluster
        new = {t for t in topics if cluster.partitions_for_topic(t) is None and t not in self._since}
        found = await asyncio.gather(*(self._appears(producer, t, self.first_wait_s) for t in new))
        now = time.monotonic()
        for topic, there in zip(new, found, strict=True):
            if not there:
                self._since[topic] = self._checked[topic] = now
                log.error(
                    "relay: topic %r does not exist on the broker (and was not created); its messages wait, "
                    "other topics go on; after %.0fs they are set aside in outbox_dead",
                    topic,
                    self.give_up_after_s,
                )
        again = [t for t in self._since if now - self._checked.get(t, 0.0) >= self.recheck_s]
        for topic in again:
            self._checked[topic] = now
            if await self._appears(producer, topic, RECHECK_WAIT_S):
                self.forget(topic)
                log.warning("relay: topic %r exists now; its messages go out", topic)

    async def _appears(self, producer: AIOKafkaProducer, topic: str, wait_s: float) -> bool:
        try:
            await asyncio.wait_for(producer.partitions_for(topic), wait_s)
        except (TimeoutError, KafkaError):
            return False
        return True

    def given_up(self) -> list[str]:
        """Missing for too long: their rows go to `outbox_dead`."""
        now = time.monotonic()
        return [t for t, since in self._since.items() if now - since >= self.give_up_after_s]

    def forget(self, topic: str) -> None:
        self._since.pop(topic, None)
        self._checked.pop(topic, None)


async def create_missing(
    admin: AIOKafkaAdminClient, topics: dict[str, str], replication_factor: int
) -> tuple[list[str], dict[str, str]]:
    """Create each topic of `topics`' values that does not exist yet, with as many partitions
    as the topic it is keyed by (1 when that one is unknown). Returns the topics created, and
    why each one that is still missing could not be created."""
    # All topics' metadata, not the named ones': a broker that auto-creates topics creates a
    # missing topic that a metadata request names, with its default partition count.
    names = {*topics, *topics.values()}
    described = await admin.describe_topics()
    partitions = {
        t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0 and t["topic"] in names
    }
    wanted = [
        NewTopic(new, num_partitions=partitions.get(topic) or 1, replication_factor=replication_factor)
        for topic, new in topics.items()
        if new not in partitions
    ]
    if not wanted:
        return [], {}
    response = await admin.create_topics(wanted)
    created, problems = [], {}
    for result in response.to_object()["topic_errors"]:
        error = for_code(result["error_code"])
        if result["error_code"] == 0:
            created.append(result["topic"])
        elif error is not TopicAlreadyExistsError:  # another process made it meanwhile
            problems[result["topic"]] = f"{error.__name__}: {result['error_message']}"
    return created, problems
