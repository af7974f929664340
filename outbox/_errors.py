"""The outbox's errors.

OutboxError                   base; `retriable` says whether trying again can help
├── MessageTypeError          a message type is unknown or registered twice
├── MessageDecodeError        a record cannot be turned into a message (poison)
├── PublishError              Kafka did not acknowledge (retriable)
└── DeadLetterError           a dead letter cannot be found, read or redriven (the message says why;
                              retriable when Kafka did not answer)
"""

from __future__ import annotations


class OutboxError(Exception):
    retriable: bool = False


class MessageTypeError(OutboxError):
    pass


class MessageDecodeError(OutboxError):
    pass


class PublishError(OutboxError):
    retriable = True


class DeadLetterError(OutboxError):
    pass
