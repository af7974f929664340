"""The outbox's errors.

OutboxError                   base; `retriable` says whether trying again can help
├── MessageTypeError          a message type is unknown or registered twice
├── MessageDecodeError        a record cannot be turned into a message (poison)
├── PublishError              Kafka did not acknowledge (retriable)
├── BrokerUnavailableError    no Kafka broker answers at the bootstrap address (retriable)
├── KafkaConfigError          Kafka refuses the settings (login, certificate, protocol)
├── TopicsMissingError        topics a consumer reads are not on a broker that creates none
├── TopicPlanError            the topic settings cannot work on this cluster
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


class BrokerUnavailableError(OutboxError):
    """A client could not start because no broker answered: `service` names where ("Kafka at
    host:9092"), `reason` what aiokafka said. An outage, worth waiting out."""

    retriable = True

    def __init__(self, bootstrap_servers: str, reason: str) -> None:
        self.service = f"Kafka at {bootstrap_servers}"
        self.reason = reason
        super().__init__(f"{self.service} is unreachable: {reason}")


class KafkaConfigError(OutboxError):
    """Kafka answered but refuses this process's settings: a login, a certificate, a protocol.
    Waiting will not help; the message names the setting to fix, never a password."""


class TopicsMissingError(OutboxError):
    """Topics a consumer reads do not exist, and the broker does not create topics by itself:
    `topics` names them. Create them (`saga topics apply`) and start again."""

    def __init__(self, topics: list[str], where: str) -> None:
        self.topics = sorted(topics)
        super().__init__(
            f"{where} does not have the topic(s) {', '.join(self.topics)} and creates no topic by itself "
            "(auto.create.topics.enable=false): run `saga topics apply` with this app, then start again"
        )


class TopicPlanError(OutboxError):
    """The topic settings cannot work on this cluster; the message names each setting."""


class DeadLetterError(OutboxError):
    pass
