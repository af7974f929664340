"""KafkaLogThrottle: one aiokafka warning or error of a kind a minute, with a count of those
held back; everything else passes."""

from __future__ import annotations

import logging

import pytest

from outbox import KafkaLogThrottle

pytestmark = pytest.mark.pure


def record(name: str, level: int, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_one_line_of_a_kind_until_the_interval_passed() -> None:
    throttle = KafkaLogThrottle(repeat_s=3600.0)
    connect = [record("aiokafka", logging.ERROR, "Unable connect to %r: %s", "k:9092", i) for i in range(50)]
    assert [throttle.filter(r) for r in connect] == [True] + [False] * 49
    other = record("aiokafka.consumer.fetcher", logging.ERROR, "Failed fetch messages from %s", 1)
    assert throttle.filter(other)  # another kind has its own line


def test_the_next_line_of_a_kind_counts_those_held_back() -> None:
    throttle = KafkaLogThrottle(repeat_s=0.0)
    first = record("aiokafka", logging.ERROR, "Unable connect to %r", "k:9092")
    assert throttle.filter(first)
    assert first.getMessage() == "Unable connect to 'k:9092'"
    throttle = KafkaLogThrottle(repeat_s=3600.0)
    for _ in range(3):
        throttle.filter(record("aiokafka", logging.ERROR, "Unable connect to %r", "k:9092"))
    throttle.repeat_s = 0.0
    later = record("aiokafka", logging.ERROR, "Unable connect to %r", "k:9092")
    assert throttle.filter(later)
    assert later.getMessage().startswith("Unable connect to 'k:9092' (2 like it in the last ")


def test_info_lines_and_other_loggers_pass() -> None:
    throttle = KafkaLogThrottle(repeat_s=3600.0)
    joined = [
        record("aiokafka.consumer.group_coordinator", logging.INFO, "Joined group %s", "g") for _ in range(5)
    ]
    ours = [record("saga._process", logging.WARNING, "Kafka at k is unreachable") for _ in range(5)]
    assert all(throttle.filter(r) for r in [*joined, *ours])
