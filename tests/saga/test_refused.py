"""A participant's `Refused` is an eventstore `Refusal`: classified by class, never retried."""

from __future__ import annotations

from eventstore import ErrorKind, Refusal, classify_error, is_retriable
from saga import Refused


def test_refused_is_a_refusal() -> None:
    refused = Refused("insufficient credit")
    assert isinstance(refused, Refusal)
    assert refused.reason == "insufficient credit"
    assert classify_error(refused) is ErrorKind.REFUSAL
    assert not is_retriable(refused)
