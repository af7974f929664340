"""The saga runtime's own errors.

SagaError              base; `retriable` says whether trying again can help
└── UnknownSagaError   no such saga id or saga type
"""

from __future__ import annotations


class SagaError(Exception):
    retriable = False


class UnknownSagaError(SagaError):
    pass
