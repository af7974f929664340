"""How the CLI writes an event's details and a saga's steps in a table cell."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

# Characters of details a timeline row shows without --wide.
DETAILS_WIDTH = 100


def _value(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _migrated(event: dict[str, Any]) -> str:
    parts = [
        f"version {event['from_version']} -> {event['to_version']} "
        f"(fingerprint {event['from_fingerprint'] or 'none'} -> {event['to_fingerprint']})"
    ]
    parts += [f"renamed {old} -> {new}" for old, new in event["renamed"].items()]
    if event["dropped"]:
        parts.append(f"dropped {', '.join(event['dropped'])}")
    parts.append("data changed" if event["data"] is not None else "data unchanged")
    if event["note"]:
        parts.append(f"note: {event['note']}")
    return "; ".join(parts)


def _deferred(event: dict[str, Any]) -> str:
    if event["kind"] == "compensate":
        return f"kept the parent's request to compensate: {event['data'].get('reason', '')}"
    what = f"kept {event['kind']} {event['message_type']}"
    if event["kind"] == "reply":
        what += f" to {event['step']}/{event['phase']} #{event['attempt']}"
    return f"{what} (id {event['message_id']}) until a worker with the saga's version takes it up"


# Events read better as a sentence than as their fields (--wide still shows the fields).
_SENTENCES: dict[str, Callable[[dict[str, Any]], str]] = {
    "saga.migrated": _migrated,
    "saga.input_deferred": _deferred,
}


def event_details(event: dict[str, Any], wide: bool, event_type: str = "") -> str:
    """`field=value` pairs. Whole fields only: a value (an id, a key) is never cut; fields
    past the width, or too long alone, are left out and counted, and --wide shows them all.
    A field that is null (a saga with no parent, a step with no child) is not shown. A
    migration and a message kept for a missing version are said in words."""
    if wide:
        return orjson.dumps(event).decode()
    if event_type in _SENTENCES:
        return _SENTENCES[event_type](event)
    shown: list[str] = []
    left_out = 0
    used = 0
    for name, value in event.items():
        if value is None:
            continue
        pair = f"{name}={_value(value)}"
        if used + len(pair) > DETAILS_WIDTH:
            left_out += 1
            continue
        shown.append(pair)
        used += len(pair) + 1
    if left_out:
        shown.append(f"(+{left_out} more: --wide)")
    return " ".join(shown)


def definition(saga_version: int, fingerprint: str) -> str:
    """The version of its definition a saga runs on, for `saga show`'s header."""
    return f"version {saga_version} (fingerprint {fingerprint})" if fingerprint else f"version {saga_version}"


def steps(done: list[str], timed_out: list[str]) -> list[str]:
    """The lines saying which steps took effect and which may have."""
    lines = [f"done: {', '.join(s for s in done if s not in timed_out) or 'none'}"]
    if timed_out:
        lines.append(f"timed out, may have acted (compensation undoes them too): {', '.join(timed_out)}")
    return lines


def _words(status: str | None) -> str:
    return "unknown" if status is None else status.replace("_", " ")


def language_lines(view: dict[str, Any]) -> list[str]:
    """The lines about a saga's groups, waits, timers, kept signals, children and parent
    (`saga._show.language_view`)."""
    lines = []
    for group in view["groups"]:
        members = ", ".join(f"{m['step']} {_words(m['status'])}" for m in group["members"])
        lines.append(f"group {group['group']}: {members}")
    for wait in view["waits"]:
        until = f"until {wait['until']}" if wait["until"] else "no timeout"
        lines.append(f"waiting on {wait['step']} for signal {' or '.join(wait['signals'])}, {until}")
    lines += [f"timer {timer['step']} until {timer['until']}" for timer in view["timers"]]
    for kept in view["kept_signals"]:
        data = orjson.dumps(kept["data"]).decode()
        lines.append(f"kept signal {kept['message_type']} (id {kept['message_id']}) for a later wait: {data}")
    for child in view["children"]:
        lines.append(
            f"child saga of step {child['step']}: {child['saga_type'] or '?'} {child['saga_id']} "
            f"({_words(child['status'])})"
        )
    if (parent := view["parent"]) is not None:
        lines.append(
            f"parent: {parent['saga_type']} {parent['saga_id']}, its step {parent['step']} "
            f"({parent['phase']}, attempt {parent['attempt']})"
        )
    return lines
