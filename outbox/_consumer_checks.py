"""What a `Consumer` refuses at construction, each naming the group and the option."""

from __future__ import annotations

from collections.abc import Sequence


def check_options(
    group_id: str, topics: Sequence[str], max_attempts: int, slow_batch_s: float, suffix: str
) -> None:
    if not topics:
        raise ValueError(f"consumer {group_id!r}: no topics to consume")
    if max_attempts < 1:
        raise ValueError(f"consumer {group_id!r}: max_attempts must be >= 1, got {max_attempts}")
    if slow_batch_s <= 0:
        raise ValueError(f"consumer {group_id!r}: slow_batch_s must be > 0, got {slow_batch_s}")
    if not suffix:
        raise ValueError(f"consumer {group_id!r}: dead_letter_suffix must not be empty")


def check_dead_letters_and_inbox(group_id: str, replication_factor: int, inbox_retention_s: float) -> None:
    if replication_factor < 1:
        raise ValueError(
            f"consumer {group_id!r}: dead_letter_replication_factor must be >= 1, got {replication_factor}"
        )
    if inbox_retention_s <= 0:
        raise ValueError(
            f"consumer {group_id!r}: inbox_retention_s must be > 0 (seconds), got {inbox_retention_s}"
        )
