"""The README's "Your first app" and then "Testing your sagas", followed literally in an empty
folder (issues 13 and 16).

How this test reads a section (from its `## ` heading to the next `## `):
- a fenced block whose info string names a file, ```python title="bookings/app.py"```, is
  that file's whole content; it is written, at that point, under the project folder;
- a ```sh block is commands; all of them run in order in ONE bash session (as a user types
  them in one terminal) with `set -euo pipefail`, in the project folder;
- any other block is shown only.
Processes the commands leave in the background (`saga relay &`) are stopped at the end with
SIGTERM, and each must exit 0.

The environment the commands see: `python` and `pip` of a new virtual environment outside the
project folder, into which the section's `pip install "$SAGA_ES_CHECKOUT"` installs a clean copy
of this checkout. That environment also sees the packages of the one running this test (the
dependencies, pytest, pip itself), which saves downloading and setting them up: a minute.
DATABASE_URL names a new, empty database; KAFKA_BOOTSTRAP_SERVERS the test broker;
BOOKINGS_TOPIC_PREFIX (which the section's app reads) a prefix of this run's own. The test
run's own PYTHON*, SAGA_*, PYTEST_* variables stay out.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import site
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy.engine import make_url

from eventstore import libpq_url
from tests.checkout import clean_source

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("## Your first app", "## Testing your sagas")
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
TITLE = re.compile(r'title="([^"]+)"')
RUN_TIMEOUT_S = 300
MARK = "+ README block"
LEFT_OUT = ("PYTHON", "SAGA_", "PYTEST_", "BOOKINGS_", "DATABASE_URL", "KAFKA_")


@dataclass(frozen=True)
class Block:
    info: str
    body: str

    @property
    def path(self) -> str | None:
        found = TITLE.search(self.info)
        return found.group(1) if found else None

    @property
    def is_shell(self) -> bool:
        return self.info.strip() == "sh"


def section_blocks(readme: str) -> list[Block]:
    blocks = []
    for section in SECTIONS:
        start = readme.index(f"\n{section}\n")
        end = readme.find("\n## ", start + len(section) + 1)
        text = readme[start : end if end != -1 else len(readme)]
        blocks += [Block(m.group(1), m.group(2)) for m in FENCE.finditer(text)]
    return blocks


def script_of(blocks: list[Block]) -> str:
    """One bash script: files written by here-documents, commands as they are, then the stop."""
    lines = [
        "set -euo pipefail",
        # A failing command ends the script: it stops what it left running (the test then kills
        # whatever is left of the session).
        "trap 'status=$?; [ $status -eq 0 ] || kill -TERM $(jobs -p) 2>/dev/null || true' EXIT",
    ]
    for n, block in enumerate(blocks):
        if block.path is not None:
            path = Path(block.path)
            if path.is_absolute() or ".." in path.parts:
                raise ValueError(f"a README file block outside the project folder: {path}")
            delimiter = f"README_FILE_{n}"
            assert delimiter not in block.body
            quoted = shlex.quote(str(path))
            lines += [f"mkdir -p {shlex.quote(str(path.parent))}", f"cat > {quoted} <<'{delimiter}'"]
            lines += [block.body.rstrip("\n"), delimiter]
        elif block.is_shell:
            first = block.body.strip().splitlines()[0]
            lines += [f'echo {shlex.quote(f"{MARK} {n}: {first}")}" (at $SECONDS s)" >&2', block.body]
    lines += [
        "set +e",
        'echo "+ stopping the background processes (at $SECONDS s)" >&2',
        "jobs -l >&2",
        "pids=$(jobs -p)",
        '[ -n "$pids" ] && kill -TERM $pids',
        "failed=0",
        "for pid in $pids; do",
        '  wait "$pid"; code=$?',
        '  echo "background process $pid exited $code" >&2',
        '  [ "$code" -eq 0 ] || failed=1',
        "done",
        "exit $failed",
    ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A new database without any table: the section creates them."""
    name = f"readme_{uuid.uuid4().hex[:12]}"
    server = os.environ["DATABASE_URL"]
    with psycopg.connect(libpq_url(server), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(libpq_url(server), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
async def topic_prefix(kafka_bootstrap: str) -> AsyncIterator[str]:
    prefix = f"readme{uuid.uuid4().hex[:8]}"
    yield prefix
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        ours = [t for t in await admin.list_topics() if t.startswith(f"{prefix}.")]
        if ours:
            await admin.delete_topics(ours)
    finally:
        await admin.close()


def user_environment(tmp_path: Path) -> Path:
    """A virtual environment without the library (the section installs it) that sees this
    one's packages: the dependencies, and pip, whose own copy would cost half a minute to set
    up (`pip` on PATH is this pip, installing into the new environment)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    [own] = venv.glob("lib/python*/site-packages")
    (own / "test-run-packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    pip = venv / "bin" / "pip"
    pip.write_text(
        f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom pip._internal.cli.main import main\nsys.exit(main())\n"
    )
    pip.chmod(0o755)
    return venv


def run_section(tmp_path: Path, env: dict[str, str]) -> tuple[int, str]:
    project = tmp_path / "project"
    project.mkdir()
    blocks = section_blocks((ROOT / "README.md").read_text())
    script = tmp_path / "section.sh"
    script.write_text(script_of(blocks))
    log = tmp_path / "section.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["bash", str(script)],
            cwd=project,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            code = process.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            code = -1
        with contextlib.suppress(ProcessLookupError):  # nothing left: the usual case
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return code, log.read_text(errors="replace")


def failing_part(log: str) -> str:
    """From the last block that started (where `set -e` stopped) to the end, shortened."""
    tail = log[log.rfind(MARK) :] if MARK in log else log
    return tail if len(tail) < 10_000 else f"{tail[:6000]}\n...\n{tail[-3000:]}"


@pytest.mark.slow
def test_item9_first_app_section_runs_literally_from_an_empty_folder(
    tmp_path: Path, empty_database: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    blocks = section_blocks((ROOT / "README.md").read_text())
    assert any(b.path == "bookings/app.py" for b in blocks), "the section's files were not found"
    assert sum(b.is_shell for b in blocks) >= 3, "the section's commands were not found"
    venv = user_environment(tmp_path)
    # The test run's own settings stay out (pip's, a proxy's, HOME pass through).
    env = {k: v for k, v in os.environ.items() if not k.startswith(LEFT_OUT) and k != "VIRTUAL_ENV"}
    env |= {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "VIRTUAL_ENV": str(venv),
        "SAGA_ES_CHECKOUT": str(clean_source(tmp_path / "saga-es")),
        "DATABASE_URL": empty_database,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "BOOKINGS_TOPIC_PREFIX": topic_prefix,
    }
    code, log = run_section(tmp_path, env)
    assert code == 0, f"the section's commands failed (exit {code}):\n{failing_part(log)}"
    tests = sum(len(re.findall(r"^(?:async )?def test_", b.body, re.MULTILINE)) for b in blocks if b.path)
    assert tests >= 3, "the section's tests were not found"
    assert re.search(rf"^{tests} passed in ", log, re.MULTILINE), log[-4000:]
