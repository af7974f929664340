"""The saga runtime's own errors.

SagaError              base; `retriable` says whether trying again can help
├── UnknownSagaError   no such saga id or saga type
├── SagaDataError      a saga's stored data no longer fits its data model
└── HookFailed         a saga's end hook raised; the decision that ends the saga is not committed
"""

from __future__ import annotations


class SagaError(Exception):
    retriable = False


class UnknownSagaError(SagaError):
    pass


class SagaDataError(SagaError):
    """Trying again cannot help: the data model or the stored data must change."""


class HookFailed(SagaError):
    """`retriable` follows the hook's own error: a bug in a statement is dead-lettered at once,
    anything else is tried again."""

    def __init__(self, message: str, *, retriable: bool) -> None:
        super().__init__(message)
        self.retriable = retriable
