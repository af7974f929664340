"""A record of a dead-letter topic, with the `dlq_*` headers the consumer gave it decoded."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from outbox._delivery import Record
from outbox._errors import DeadLetterError

# The header a redriven record carries: the dead letter it was sent back from.
REDRIVEN_FROM = "redriven_from"


@dataclass(frozen=True)
class DeadLetter:
    """Where the record is (`ref`: `topic[partition]@offset`), its key, value and headers.

    The properties read its headers: why it was dead-lettered (`reason`, `error_type`,
    `attempts`, `consumer_group`), where it came from (`original`), and the message's own
    envelope (`message_id`, `message_type`, `saga_id`). A header given twice reads as its last
    value (a redriven record that failed again has the `dlq_*` headers of both failures)."""

    topic: str
    partition: int
    offset: int
    timestamp: datetime | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @classmethod
    def of(cls, record: Record) -> DeadLetter:
        ts = record.timestamp
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp=datetime.fromtimestamp(ts / 1000, UTC) if ts is not None and ts >= 0 else None,
            key=record.key,
            value=record.value,
            headers=tuple((k, bytes(v)) for k, v in record.headers),
        )

    @property
    def ref(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"

    def header(self, name: str) -> str | None:
        found = [v for k, v in self.headers if k == name]
        return found[-1].decode(errors="replace") if found else None

    @property
    def is_dead_letter(self) -> bool:
        return self.original_topic is not None and self.original_partition is not None

    @property
    def reason(self) -> str | None:
        return self.header("dlq_reason")

    @property
    def error_type(self) -> str | None:
        return self.header("dlq_error_type")

    @property
    def consumer_group(self) -> str | None:
        return self.header("dlq_consumer_group")

    @property
    def attempts(self) -> int | None:
        return _int(self.header("dlq_attempts"))

    @property
    def original_topic(self) -> str | None:
        return self.header("dlq_topic")

    @property
    def original_partition(self) -> int | None:
        return _int(self.header("dlq_partition"))

    @property
    def original_offset(self) -> int | None:
        return _int(self.header("dlq_offset"))

    @property
    def original(self) -> str | None:
        """`topic[partition]@offset` the record was consumed from."""
        if not self.is_dead_letter:
            return None
        return f"{self.original_topic}[{self.original_partition}]@{self.original_offset}"

    @property
    def message_id(self) -> str | None:
        return self.header("message_id")

    @property
    def message_type(self) -> str | None:
        return self.header("message_type")

    @property
    def saga_id(self) -> str | None:
        return self.header("saga_id")

    @property
    def redriven_from(self) -> str | None:
        return self.header(REDRIVEN_FROM)

    def redrive_target(self) -> tuple[str, int]:
        """The topic and partition it came from; DeadLetterError naming why it cannot go back."""
        topic, partition = self.original_topic, self.original_partition
        if topic is None or partition is None:
            raise DeadLetterError(
                f"{self.ref} is not a dead letter (it has no dlq_topic/dlq_partition headers, so where it "
                "came from is unknown): only records a consumer dead-lettered can be redriven"
            )
        dropped = self.header("dlq_value_dropped")
        if dropped is not None:
            raise DeadLetterError(
                f"{self.ref} lost its value when it was dead-lettered ({dropped}); it cannot be redriven: "
                f"the message must be sent again by its producer"
            )
        return topic, partition

    def as_dict(self) -> dict[str, Any]:
        """Everything about it, JSON-ready (key and value as UTF-8 text, bad bytes replaced)."""
        return {
            "ref": self.ref,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp.isoformat() if self.timestamp else None,
            "message_type": self.message_type,
            "message_id": self.message_id,
            "saga_id": self.saga_id,
            "reason": self.reason,
            "error_type": self.error_type,
            "attempts": self.attempts,
            "consumer_group": self.consumer_group,
            "original": self.original,
            "redriven_from": self.redriven_from,
            "key": None if self.key is None else self.key.decode(errors="replace"),
            "value": None if self.value is None else self.value.decode(errors="replace"),
            "headers": {k: v.decode(errors="replace") for k, v in self.headers},
        }


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.strip().isdigit() else None
