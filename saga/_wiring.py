"""Checks of how an app is wired: which participant serves each step, and that every message
type a step sends or expects is registered.

A saga class checks itself when it is created (`check_definition`); what it cannot know alone
(the app's participants, its message registry) is checked here, when the `App` or the
`Orchestrator` is created, so a mistake stops the process at start instead of sending commands
to a topic nobody reads or dead-lettering a good reply.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from pydantic import BaseModel

from outbox import MessageRegistry, MessageTypeError
from saga._definition import DefinitionError, RemoteStep, Saga
from saga._language import ChildSaga, WaitStep
from saga._protocol import ChildEnded, CompensateSaga
from saga._steps import returned_models
from saga._versions import Versions, version_problems

_ROLES = {
    "command": "its command",
    "reply": "the reply to its command",
    "compensation": "its compensation command",
    "compensation_reply": "the reply to its compensation",
}


def raise_problems(problems: list[str], what: str) -> None:
    """One DefinitionError listing every problem (fixing them one start at a time is slow)."""
    if len(problems) == 1:
        raise DefinitionError(problems[0])
    if problems:
        raise DefinitionError(f"{what}: {len(problems)} problems:\n" + "\n".join(f"- {p}" for p in problems))


def step_messages(step: type[RemoteStep[Any]]) -> list[tuple[str, type[BaseModel]]]:
    """(role, model) for every message type of a remote step that can be known before it runs."""
    found = [("command", m) for m in returned_models(step.command)]
    if step.reply is not None:
        found.append(("reply", step.reply))
    if step.has_compensation():
        found += [("compensation", m) for m in returned_models(step.compensation)]
        if step.compensation_reply is not None:
            found.append(("compensation_reply", step.compensation_reply))
    return found


def _remote_steps(saga: type[Saga[Any]]) -> Iterable[type[RemoteStep[Any]]]:
    return (s for s in saga.all_steps() if issubclass(s, RemoteStep))


def _unregistered(model: type[BaseModel]) -> str:
    return (
        f"{model.__name__} is not registered in the app's MessageRegistry; register it: "
        f'@messages.message("<service>.<name>") on the class, or messages.register({model.__name__}, "<service>.<name>")'
    )


def message_problems(sagas: Iterable[type[Saga[Any]]], messages: MessageRegistry) -> list[str]:
    """Every message type a step uses must be registered: an unregistered command cannot be
    sent, an unregistered reply or signal cannot be read."""
    registered = set(messages.models())
    problems = []
    for saga in sagas:
        for step in _remote_steps(saga):
            for role, model in step_messages(step):
                if model not in registered:
                    problems.append(f"{saga.name} step {step.name}: {_ROLES[role]} {_unregistered(model)}")
        for wait in (s for s in saga.all_steps() if issubclass(s, WaitStep)):
            problems += [
                f"{saga.name} step {wait.name}: the signal it waits for, {_unregistered(model)}"
                for model in wait.signals
                if model not in registered
            ]
    return problems


def child_problems(sagas: Collection[type[Saga[Any]]]) -> list[str]:
    """A child saga step starts a saga of the app: the same orchestrators must decide on it
    and read its reply topic."""
    known = Versions(sagas)
    problems = []
    for saga in sagas:
        for step in (s for s in saga.all_steps() if issubclass(s, ChildSaga)):
            child = getattr(step, "saga", None)
            if child is None or not known.has(child):
                name = getattr(child, "__qualname__", repr(child))
                version = ""
                if child is not None and child.name in known.names():
                    version = f" (version {child.version}; it has {known.describe(child.name)})"
                problems.append(
                    f"{saga.name} step {step.name}: its child saga {name}{version} is not one of the app's sagas "
                    f"(it has: {', '.join(known.names()) or 'none'}); add it to App(sagas=[...])"
                )
    return problems


def saga_name_problems(sagas: Iterable[type[Saga[Any]]]) -> list[str]:
    problems = [
        f"{saga!r} is not a Saga subclass"
        for saga in sagas
        if not (isinstance(saga, type) and issubclass(saga, Saga))
    ]
    return problems + version_problems([s for s in sagas if isinstance(s, type) and issubclass(s, Saga)])


def participant_problems(
    sagas: Iterable[type[Saga[Any]]],
    participants: Mapping[str, Mapping[type[BaseModel], object]],
    external: Collection[str],
) -> list[str]:
    """Each remote step's participant is served by the app (with a handler for its commands)
    or declared external; a command to anyone else would wait on a topic nobody reads."""
    problems = [
        f"participant {name!r} is both in participants and in external_participants; keep it in one"
        for name in external
        if name in participants
    ]
    known = sorted({*participants, *external})
    for saga in sagas:
        for step in _remote_steps(saga):
            where = f"{saga.name} step {step.name}"
            if step.participant in external:
                continue
            handlers = participants.get(step.participant)
            if handlers is None:
                problems.append(f"{where}: {_unknown_participant(step.participant, known)}")
                continue
            for role, model in step_messages(step):
                if role in ("command", "compensation") and model not in handlers:
                    handled = ", ".join(sorted(m.__name__ for m in handlers)) or "nothing"
                    problems.append(
                        f"{where}: participant {step.participant!r} has no handler for {_ROLES[role]} "
                        f"{model.__name__} (it handles: {handled}); add one to "
                        f"App(participants={{{step.participant!r}: {{{model.__name__}: handler, ...}}}})"
                    )
    return problems


def _unknown_participant(name: str, known: list[str]) -> str:
    text = f"participant {name!r} is not in the app (it has: {', '.join(known) or 'none'})"
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        text += f"; did you mean {close[0]!r}?"
    return text + " A participant served by another deployment goes in App(external_participants=[...])"


def unknown_service(name: str, known: Collection[str]) -> str:
    """The error for a participant service the app does not serve, with the closest name."""
    text = f"the app has no participant {name!r} (it has: {', '.join(sorted(known)) or 'none'})"
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"{text}; did you mean {close[0]!r}?" if close else text


def handler_problems(
    participants: Mapping[str, Mapping[type[BaseModel], object]], messages: MessageRegistry
) -> list[str]:
    registered = set(messages.models())
    problems = []
    for service, handlers in participants.items():
        for model in handlers:
            if not (isinstance(model, type) and issubclass(model, BaseModel)):
                problems.append(
                    f"participant {service!r}: handler key {model!r} is not a message class; "
                    "the handlers mapping goes from command class to handler: {ReserveCredit: reserve_credit}"
                )
            elif model not in registered:
                problems.append(f"participant {service!r}: the command {_unregistered(model)}")
    return problems


def check_command(saga: type[Saga[Any]], step: str, message: BaseModel, messages: MessageRegistry) -> None:
    """At run time, for what no annotation told: the message a step's command() or
    compensation() returned must be a registered type. The runtime's own messages to another
    saga (a child's end, a compensation request) always are."""
    if isinstance(message, ChildEnded | CompensateSaga):
        return
    try:
        messages.type_of_model(type(message))
    except MessageTypeError:
        raise DefinitionError(
            f"{saga.name} step {step}: the command it returned, {_unregistered(type(message))} "
            "(annotate command()'s return type and the App checks this at start)"
        ) from None


_PREFIX = re.compile(r"[A-Za-z0-9._-]{1,150}")


def prefix_problems(prefix: object) -> list[str]:
    """The same rule as SAGA_TOPIC_PREFIX: every topic derived from it stays a legal Kafka name."""
    if isinstance(prefix, str) and _PREFIX.fullmatch(prefix):
        return []
    return [
        f"topic_prefix {prefix!r} must be 1 to 150 letters, digits, '.', '_' or '-' "
        "(topics are <prefix>.<participant>.commands and <prefix>.<Saga>.replies)"
    ]
