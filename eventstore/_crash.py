"""Named crash points: places where a process can be made to die abruptly, on purpose.

The code calls `crash_point("relay.after_ack")` at the moments where a crash is hardest to
get right (between two commits that are not one transaction). Normally that does nothing.
With the environment variable `SAGA_CRASH_AT` naming the point, the process writes one line
to stderr (`crash point relay.after_ack reached: exiting`) and ends with `os._exit(86)`: no
`finally`, no clean shutdown, no flushed buffers, the way a kill -9 looks. Tests use it to
kill a real worker exactly there, restart it, and check that nothing was lost or done twice.

    SAGA_CRASH_AT=relay.after_ack            # the first time the relay gets there
    SAGA_CRASH_AT=consumer.after_commit@3    # the third time, counted in this process
    SAGA_CRASH_AT=relay.after_ack,participant.before_commit@2   # whichever comes first

The variable is read once per process, at the first call (or when a `Worker` starts, so a
misspelt name stops a worker at once instead of failing inside a handler): a name that is
not one of the points below, or a count that is not a whole number >= 1, is an error
(`CrashPointError`) that names the known points.

The points (`CRASH_POINTS`):

    consumer.after_commit      a consumer's Postgres transaction committed; its Kafka
                               offsets are not (the records come again: the inbox skips them)
    participant.after_commit   the same, in a participant's consumer
    orchestrator.after_commit  the orchestrator worker committed saga decisions (a fetch of
                               replies, or a due deadline); for replies, offsets not committed
    participant.before_commit  a participant's handlers ran and its replies are in the
                               outbox; nothing is committed (all of it is rolled back)
    relay.after_ack            Kafka acknowledged the relay's batch; its outbox rows are not
                               deleted (they are sent again: the consumers' inbox skips them)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

ENV_VAR = "SAGA_CRASH_AT"
EXIT_CODE = 86

CRASH_POINTS: dict[str, str] = {
    "consumer.after_commit": "a consumer committed its Postgres transaction, not yet its Kafka offsets",
    "participant.after_commit": "a participant committed its Postgres transaction, not yet its Kafka offsets",
    "orchestrator.after_commit": "the orchestrator worker committed saga decisions (replies or a deadline)",
    "participant.before_commit": "a participant's handlers ran and its replies are in the outbox, uncommitted",
    "relay.after_ack": "Kafka acknowledged the relay's batch; its outbox rows are not deleted yet",
}

CrashHook = Callable[[str], None]
# In-process: called with the name at every crash point reached (a test's stand-in for a kill).
_hook: CrashHook | None = None
# Point name -> on which time it is reached to crash; None until the variable is read.
_armed: dict[str, int] | None = None
_reached: dict[str, int] = {}


class CrashPointError(ValueError):
    """SAGA_CRASH_AT names something that is not a crash point, or a bad count."""


def _known() -> str:
    return ", ".join(CRASH_POINTS)


def parse_crash_at(value: str) -> dict[str, int]:
    """`"a,b@3"` -> `{"a": 1, "b": 3}`; raises CrashPointError naming what is wrong."""
    armed: dict[str, int] = {}
    for item in value.split(","):
        name, at, count = item.strip().partition("@")
        if not name:
            if item.strip():
                raise CrashPointError(f"{ENV_VAR}: {item.strip()!r} has no point name before '@'")
            continue
        if name not in CRASH_POINTS:
            raise CrashPointError(
                f"{ENV_VAR}: {name!r} is not a crash point; the crash points are: {_known()}"
            )
        if name in armed:
            raise CrashPointError(f"{ENV_VAR}: {name!r} is named twice; name each point once")
        if not at:
            armed[name] = 1
            continue
        if not (count.strip().isascii() and count.strip().isdigit()) or int(count) < 1:
            raise CrashPointError(
                f"{ENV_VAR}: {item.strip()!r}: after '@' comes the pass that crashes, "
                f"a whole number >= 1 (1 = the first time the point is reached)"
            )
        armed[name] = int(count)
    return armed


def armed() -> dict[str, int]:
    """The points this process crashes at, from `SAGA_CRASH_AT` (read on the first call)."""
    global _armed
    if _armed is None:
        _armed = parse_crash_at(os.environ.get(ENV_VAR, ""))
    return _armed


def set_crash_hook(hook: CrashHook | None) -> CrashHook | None:
    """Have `hook(name)` called at every crash point this process reaches, before
    `SAGA_CRASH_AT` is looked at; None removes it. Returns the hook it replaces. A hook that
    raises (a BaseException, which no worker loop catches) stops that worker exactly there:
    `saga.testing` uses it to kill and restart in-process workers."""
    global _hook
    previous, _hook = _hook, hook
    return previous


def crash_point(name: str) -> None:
    """Exit the process at once (code 86) if `SAGA_CRASH_AT` names this point and this is the
    time to; otherwise return. `name` must be one of `CRASH_POINTS`."""
    if name not in CRASH_POINTS:
        raise CrashPointError(f"crash_point({name!r}): not a crash point; the crash points are: {_known()}")
    if _hook is not None:
        _hook(name)
    at = (_armed if _armed is not None else armed()).get(name)
    if at is None:
        return
    reached = _reached[name] = _reached.get(name, 0) + 1
    if reached == at:
        sys.stderr.write(f"crash point {name} reached: exiting\n")
        sys.stderr.flush()
        os._exit(EXIT_CODE)
