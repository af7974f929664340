"""The deploy gate at the command line (issue 15), run as a subprocess on the real Postgres:
`saga export --running` to a file, `saga check-deploy` from that file (no database touched)
and against the live database, in table and JSON form."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from eventstore import Database
from saga import Orchestrator
from tests.cli.test_cli import Cli, assert_clean_error
from tests.saga.test_deploy_gate import HAS, SHAPE, transfer
from tests.saga.versions_app import TransferV1, app_v1

APPS = "tests.saga.versions_app"
IN_PLACE = f"{APPS}:app_in_place"
SIDE_BY_SIDE = f"{APPS}:app_v1_v2"
NO_DATABASE = "postgresql://nobody@127.0.0.1:1/nowhere"  # refuses any connection
PASSED = "checked 3 running sagas against the app: nothing would break (Transfer@1: 3)\n"
MISSING = f"is not in Transfer@1 {HAS}"
FIX_SHAPE = "give the changed class a new `version` and keep the old one registered as Transfer@1"
FIX_STEP = "keep step 'hold' in Transfer@1; rename it only in a new version, with a Migration that maps it"


@pytest.fixture
async def v1(database: Database) -> AsyncIterator[Orchestrator]:
    orchestrator = app_v1.with_topic_prefix(f"v{uuid.uuid4().hex[:10]}").orchestrator(database)
    try:
        yield orchestrator
    finally:
        await orchestrator.aclose()


@pytest.fixture
async def sagas(v1: Orchestrator) -> dict[str, str]:
    """Three Transfer@1 sagas running, one completed."""
    return {
        "debit": await transfer(v1, "t-debit", until="debit"),
        "hold": await transfer(v1, "t-hold", until="hold"),
        "credit": await transfer(v1, "t-credit", until="credit"),
        "completed": await transfer(v1, "t-done"),
    }


def expected_rows(sagas: dict[str, str]) -> list[dict[str, object]]:
    """The problems in the report's order: by saga id, each saga's own in the order checked."""

    def row(saga: str, step: str, problem: str, fix: str) -> dict[str, object]:
        return {
            "saga_id": sagas[saga],
            "saga_type": "Transfer",
            "saga_version": 1,
            "status": "running",
            "step": step,
            "problem": problem,
            "fix": fix,
        }

    rows = {
        "debit": [row("debit", "debit", SHAPE, FIX_SHAPE)],
        "hold": [
            row("hold", "hold", SHAPE, FIX_SHAPE),
            row("hold", "hold", f"step 'hold' (awaited) {MISSING}", FIX_STEP),
        ],
        "credit": [
            row("credit", "credit", SHAPE, FIX_SHAPE),
            row("credit", "credit", f"step 'hold' (done) {MISSING}", FIX_STEP),
        ],
    }
    return [r for saga in sorted(rows, key=lambda s: sagas[s]) for r in rows[saga]]


async def test_export_then_check_from_the_file_touches_no_database(
    cli: Cli, sagas: dict[str, str], tmp_path: Path
) -> None:
    file = tmp_path / "running.json"
    exported = await cli("export", "--running", "-o", str(file))
    assert exported.code == 0, exported.describe()
    assert exported.stderr.strip() == f"exported 3 running saga(s) to {file}"
    document = orjson.loads(file.read_bytes())
    assert sorted(document) == ["count", "exported_at", "format", "format_version", "sagas"]
    assert (document["format"], document["format_version"], document["count"]) == ("saga-export", 1, 3)
    running = {sagas[k] for k in ("debit", "hold", "credit")}
    assert {s["saga_id"] for s in document["sagas"]} == running
    assert {s["fingerprint"] for s in document["sagas"]} == {TransferV1.fingerprint()}
    to_stdout = await cli("export", "--running")
    assert orjson.loads(to_stdout.stdout)["sagas"] == document["sagas"], to_stdout.describe()

    failed = await cli(
        "check-deploy", "--app", IN_PLACE, "--from", str(file), "--json", database_url=NO_DATABASE
    )
    assert failed.code == 1, failed.describe()
    report = orjson.loads(failed.stdout)
    assert list(report) == ["ok", "checked", "broken", "by_version", "migrations", "problems", "counts"]
    assert report["problems"] == expected_rows(sagas)
    assert {k: v for k, v in report.items() if k != "problems"} == {
        "ok": False,
        "checked": 3,
        "broken": 3,
        "by_version": {"Transfer@1": 3},
        "migrations": {},
        "counts": [
            {"problem": SHAPE, "sagas": 3},
            {"problem": f"step 'hold' (awaited) {MISSING}", "sagas": 1},
            {"problem": f"step 'hold' (done) {MISSING}", "sagas": 1},
        ],
    }

    # The app before the command name serves too.
    passed = await cli("check-deploy", "--from", str(file), app=SIDE_BY_SIDE, database_url=NO_DATABASE)
    assert (passed.code, passed.stdout) == (0, PASSED), passed.describe()


async def test_check_against_the_live_database(cli: Cli, sagas: dict[str, str]) -> None:
    failed = await cli("check-deploy", "--app", IN_PLACE, columns=None)
    assert failed.code == 1, failed.describe()
    lines = failed.stdout.splitlines()
    assert lines[-1] == "checked 3 running sagas against the app: 3 would break (5 problems; Transfer@1: 3)"
    for row in expected_rows(sagas):
        line = next((ln for ln in lines if str(row["saga_id"]) in ln and str(row["problem"]) in ln), None)
        assert line is not None, f"no table row for {row}:\n{failed.stdout}"
        cells = [cell.strip() for cell in line.strip("│").split("│")]
        assert cells == [row["saga_id"], "Transfer@1", "running", row["step"], row["problem"]]
    fixes = {str(row["problem"]): str(row["fix"]) for row in expected_rows(sagas)}
    counts = [
        [c.strip() for c in ln.strip("│").split("│")]
        for ln in lines
        if ln.startswith("│") and ln.count("│") == 4
    ]
    assert counts == [
        ["3", SHAPE, fixes[SHAPE]],
        ["1", f"step 'hold' (awaited) {MISSING}", fixes[f"step 'hold' (awaited) {MISSING}"]],
        ["1", f"step 'hold' (done) {MISSING}", fixes[f"step 'hold' (done) {MISSING}"]],
    ]

    passed = await cli("check-deploy", "--app", SIDE_BY_SIDE)
    assert (passed.code, passed.stdout) == (0, PASSED), passed.describe()
    as_json = await cli("check-deploy", "--app", SIDE_BY_SIDE, "--json")
    assert orjson.loads(as_json.stdout) == {
        "ok": True,
        "checked": 3,
        "broken": 0,
        "by_version": {"Transfer@1": 3},
        "migrations": {},
        "problems": [],
        "counts": [],
    }


async def test_a_removed_version_covered_by_a_migration_says_what_to_run(
    cli: Cli, sagas: dict[str, str]
) -> None:
    result = await cli("check-deploy", "--app", f"{APPS}:app_v2")
    assert result.code == 0, result.describe()
    assert result.stdout.splitlines() == [
        "checked 3 running sagas against the app: nothing would break (Transfer@1: 3)",
        "3 sagas of Transfer@1 pass by migration only: after the deploy, run "
        "`saga migrate Transfer@1 --to 2 --apply` (until then they stay parked)",
    ]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"\x00garbage{", "is not JSON"),
        (b'{"hello": "world"}', 'is not a saga export (it lacks "format": "saga-export")'),
        (
            b'{"format": "saga-export", "format_version": 9, "sagas": []}',
            "format_version 9, this saga reads version 1",
        ),
        (
            b'{"format": "saga-export", "format_version": 1, "sagas": [{"status": "?"}]}',
            'saga #1 of "sagas" is not a saga state',
        ),
    ],
)
async def test_a_bad_or_foreign_file_is_a_clear_error(
    cli: Cli, tmp_path: Path, content: bytes, says: str
) -> None:
    file = tmp_path / "running.json"
    file.write_bytes(content)
    result = await cli("check-deploy", "--app", IN_PLACE, "--from", str(file), database_url=NO_DATABASE)
    assert_clean_error(result, str(file), says, "saga export --running")


async def test_a_missing_file_or_app_is_a_clear_error(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.json"
    result = await cli("check-deploy", "--app", IN_PLACE, "--from", str(missing), database_url=NO_DATABASE)
    assert_clean_error(result, f"cannot read {missing}")
    result = await cli("check-deploy", "--app", f"{APPS}:no_such_app", database_url=NO_DATABASE)
    assert_clean_error(result, "no attribute 'no_such_app'")
