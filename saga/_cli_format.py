"""How the CLI writes an event's details and a saga's steps in a table cell."""

from __future__ import annotations

from typing import Any

import orjson

# Characters of details a timeline row shows without --wide.
DETAILS_WIDTH = 100


def _value(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def event_details(event: dict[str, Any], wide: bool) -> str:
    """`field=value` pairs. Whole fields only: a value (an id, a key) is never cut; fields
    past the width, or too long alone, are left out and counted, and --wide shows them all."""
    if wide:
        return orjson.dumps(event).decode()
    shown: list[str] = []
    left_out = 0
    used = 0
    for name, value in event.items():
        pair = f"{name}={_value(value)}"
        if used + len(pair) > DETAILS_WIDTH:
            left_out += 1
            continue
        shown.append(pair)
        used += len(pair) + 1
    if left_out:
        shown.append(f"(+{left_out} more: --wide)")
    return " ".join(shown)


def steps(done: list[str], timed_out: list[str]) -> list[str]:
    """The lines saying which steps took effect and which may have."""
    lines = [f"done: {', '.join(s for s in done if s not in timed_out) or 'none'}"]
    if timed_out:
        lines.append(f"timed out, may have acted (compensation undoes them too): {', '.join(timed_out)}")
    return lines
