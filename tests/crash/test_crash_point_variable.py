"""`SAGA_CRASH_AT` as a process sees it: each case runs in a fresh interpreter, since the
variable is read once per process and a crash ends it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from eventstore import CrashPointError, crash_point

# Passes the point three times, saying so before each pass.
PASS_THREE_TIMES = """
from eventstore import crash_point
for n in (1, 2, 3):
    print(f"pass {n}", flush=True)
    crash_point("relay.after_ack")
print("survived", flush=True)
"""


def run(code: str, crash_at: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SAGA_CRASH_AT"}
    if crash_at is not None:
        env["SAGA_CRASH_AT"] = crash_at
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_a_point_named_alone_crashes_the_first_time() -> None:
    done = run(PASS_THREE_TIMES, "relay.after_ack")
    assert (done.returncode, done.stdout.split()) == (86, ["pass", "1"])
    assert done.stderr == "crash point relay.after_ack reached: exiting\n"


def test_at_n_crashes_the_nth_time() -> None:
    done = run(PASS_THREE_TIMES, " consumer.after_commit@2 , relay.after_ack@3")
    assert done.returncode == 86
    assert done.stdout.splitlines() == ["pass 1", "pass 2", "pass 3"]
    assert done.stderr == "crash point relay.after_ack reached: exiting\n"


def test_other_points_or_no_variable_change_nothing() -> None:
    for crash_at in (None, "", "participant.before_commit", "relay.after_ack@4"):
        done = run(PASS_THREE_TIMES, crash_at)
        assert (done.returncode, done.stdout.splitlines()[-1], done.stderr) == (0, "survived", "")


def test_the_variable_is_read_once_per_process() -> None:
    code = (
        "import os\nfrom eventstore import crash_point\ncrash_point('relay.after_ack')\n"
        "os.environ['SAGA_CRASH_AT'] = 'relay.after_ack'\ncrash_point('relay.after_ack')\nprint('survived')"
    )
    assert run(code, None).stdout == "survived\n"


@pytest.mark.parametrize(
    ("crash_at", "message"),
    [
        (
            "relay.after_akc",
            "'relay.after_akc' is not a crash point; the crash points are: consumer.after_commit, ",
        ),
        ("relay.after_ack@0", "after '@' comes the pass that crashes"),
        ("relay.after_ack@x", "after '@' comes the pass that crashes"),
        ("relay.after_ack@", "after '@' comes the pass that crashes"),
        ("@2", "'@2' has no point name"),
        ("relay.after_ack,relay.after_ack@2", "'relay.after_ack' is named twice"),
    ],
)
def test_a_bad_variable_is_an_error_at_the_first_call_naming_what_is_wrong(
    crash_at: str, message: str
) -> None:
    code = "from eventstore import crash_point\ncrash_point('participant.before_commit')\nprint('survived')"
    done = run(code, crash_at)
    assert done.returncode == 1
    assert "survived" not in done.stdout
    assert "eventstore._crash.CrashPointError: SAGA_CRASH_AT: " in done.stderr
    assert message in done.stderr


def test_a_bad_variable_stops_a_worker_at_start() -> None:
    code = (
        "import asyncio\nfrom eventstore._worker import Worker\n"
        "class Idle(Worker):\n    async def _run(self) -> None:\n        print('running')\n"
        "asyncio.run(Idle().start())"
    )
    done = run(code, "relay.after_akc")
    assert done.returncode == 1
    assert "running" not in done.stdout
    assert "'relay.after_akc' is not a crash point" in done.stderr


def test_a_call_site_must_name_a_known_point() -> None:
    with pytest.raises(
        CrashPointError,
        match=r"crash_point\('relay.after_acked'\): not a crash point; the crash points are: consumer",
    ):
        crash_point("relay.after_acked")
