"""Bad input gets a clear error naming file, row and field, a non-zero exit, and nothing written."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import INSTANCES
from optalloc.cli import main


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code, capsys.readouterr().err


@pytest.fixture
def folder(tmp_path) -> Path:
    dst = tmp_path / "inst"
    shutil.copytree(INSTANCES / "small_network", dst)
    return dst


def edit(folder: Path, table: str, row: int, field: str, value) -> None:
    """Set one cell (row is the 1-based data row, as errors report it)."""
    path = folder / f"{table}.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[row - 1, field] = value
    frame.to_csv(path, index=False)


CASES = [
    ("requests", 3, "max_fee_per_cube", "-5", "must be >= 0, got -5"),
    ("requests", 4, "min_cube", "999999", "min_cube 999999 exceeds max_cube"),
    ("requests", 5, "seller_id", "S-NOBODY", "unknown seller 'S-NOBODY'"),
    ("requests", 6, "storage_type", "cryogenic", "unknown storage type 'cryogenic'"),
    ("requests", 7, "request_id", "Q00", "duplicate id"),
    ("requests", 8, "max_cube", "NaN", "not a number: 'NaN'"),
    ("requests", 9, "max_cube", "", "value is missing"),
    ("requests", 2, "months", "2027-01", "not all in the period"),
    ("requests", 2, "submitted_at", "yesterday", "not an ISO 8601 date-time"),
    ("requests", 2, "submitted_at", "now", "not an ISO 8601 date-time: 'now'"),  # pandas reads the clock for these two
    ("requests", 2, "submitted_at", "today", "not an ISO 8601 date-time: 'today'"),
    ("requests", 2, "submitted_at", "9999-12-31T23:59:59-05:00", "10000-01-01T04:59:59Z (UTC) is outside the years 0001 to 9999"),
    ("requests", 2, "submitted_at", "10000-01-01T00:00:00Z", "not an ISO 8601 date-time"),
    ("requests", 2, "round", "9", "unknown round (not in the period) 9"),
    ("needs", 2, "p50_cube", "-1", "must be >= 0, got -1"),
    ("fcs", 2, "capacity_cube", "inf", "must be finite"),
    ("sellers", 3, "performance_score", "1200", "must be <= 1000, got 1200"),
    ("sellers", 4, "regions", "NOWHERE", "no FC in any of the regions"),
]


@pytest.mark.parametrize("table, row, field, value, message", CASES, ids=[f"{c[0]}.{c[2]}={c[3] or 'blank'}" for c in CASES])
def test_bad_cell_is_named_by_file_row_and_field_and_nothing_is_written(folder, tmp_path, capsys, table, row, field, value, message):
    edit(folder, table, row, field, value)
    out = tmp_path / "out"
    code, err = run_cli(["solve", str(folder), "-o", str(out), "-q"], capsys)
    assert code == 2
    assert f"{table}.csv, row {row}, field '{field}'" in err
    assert message in err
    assert not out.exists()
    assert not list(tmp_path.glob(".out*"))  # no partial folder left behind


def test_missing_column_unknown_column_and_bad_json(folder, tmp_path, capsys):
    frame = pd.read_csv(folder / "requests.csv", dtype=str).drop(columns=["max_cube"]).assign(colour="red")
    frame.to_csv(folder / "requests.csv", index=False)
    code, err = run_cli(["validate", str(folder)], capsys)
    assert code == 2
    assert "requests.csv, field 'max_cube': required column is missing" in err
    assert "requests.csv, field 'colour': unknown column" in err

    bad = tmp_path / "bad.json"
    bad.write_text('{"period": {"period_id": "P", "months": ["2026-10"], "rounds": [1]},\n "fcs": [,]}')
    code, err = run_cli(["validate", str(bad)], capsys)
    assert code == 2 and "not valid JSON" in err and "line 2" in err


def test_bad_settings_are_named_by_their_field(tmp_path, capsys):
    doc = json.loads((INSTANCES / "worked_example.json").read_text())
    doc["settings"]["credit_rate"] = 1.5
    path = tmp_path / "inst.json"
    path.write_text(json.dumps(doc))
    code, err = run_cli(["validate", str(path)], capsys)
    assert code == 2
    assert f"{path}, field 'settings.credit_rate': Input should be less than or equal to 1" in err

    doc["settings"]["credit_rate"] = 0.15
    doc["settings"]["tier_weights"] = [1.0, 2.0, 0.1]
    path.write_text(json.dumps(doc))
    code, err = run_cli(["validate", str(path)], capsys)
    assert code == 2
    assert "field 'settings'" in err and "tier_weights must be positive and strictly decreasing" in err


def test_infeasible_baseline_names_the_fc_type_and_month(tmp_path, capsys):
    doc = json.loads((INSTANCES / "worked_example.json").read_text())
    for s in doc["sellers"]:
        s["floor_cube"] = 60_000  # two floors of 60,000 > 90,000 cube after the pool
    path = tmp_path / "inst.json"
    path.write_text(json.dumps(doc))
    out = tmp_path / "out"
    code, err = run_cli(["solve", str(path), "-o", str(out), "-q"], capsys)
    assert code == 3
    assert "FC-EAST-1" in err and "'standard'" in err and "2026-10" in err
    assert not out.exists()


def test_a_round_that_was_already_cleared_is_refused(tmp_path, capsys):
    inst = str(INSTANCES / "small_network")
    first = tmp_path / "r1"
    assert run_cli(["clear", inst, "--round", "1", "-o", str(first), "-q"], capsys)[0] == 0
    code, err = run_cli(["clear", inst, "--round", "1", "--previous", str(first), "-o", str(tmp_path / "again"), "-q"], capsys)
    assert code == 2
    assert "round_prices.csv, row 1, field 'round': round 1 was already cleared" in err
    assert not (tmp_path / "again").exists()
    code, err = run_cli(["clear", inst, "--round", "3", "--previous", str(first), "-o", str(tmp_path / "skip"), "-q"], capsys)
    assert code == 2 and "round 3 cannot be cleared before round 2" in err


def test_a_failure_while_writing_leaves_no_output(tmp_path, capsys, monkeypatch):
    import optalloc.results_io

    calls = {"n": 0}
    real = optalloc.results_io.csv_chunks

    def flaky(frame):  # the third table's file fills the disk after its header
        calls["n"] += 1
        for i, chunk in enumerate(real(frame)):
            if calls["n"] == 3 and i == 1:
                raise OSError(28, "No space left on device")
            yield chunk

    monkeypatch.setattr(optalloc.results_io, "csv_chunks", flaky)
    out = tmp_path / "out"
    code, err = run_cli(["solve", str(INSTANCES / "worked_example.json"), "-o", str(out), "-q"], capsys)
    assert code == 2 and "No space left on device; nothing was written" in err and "Traceback" not in err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "months, message",
    [([], "must name at least one item"), (["2026-10", "2026-10"], "lists an item twice"),
     (["26-10"], "items must be a calendar month, YYYY-MM"), (5, "must be a list")],
)
def test_bad_lists_in_json_are_named_like_bad_lists_in_tables(tmp_path, capsys, months, message):
    doc = json.loads((INSTANCES / "worked_example.json").read_text())
    doc["requests"][1]["months"] = months
    path = tmp_path / "inst.json"
    path.write_text(json.dumps(doc))
    code, err = run_cli(["validate", str(path)], capsys)
    assert code == 2
    assert f"{path}: requests, row 2, field 'months': {message}" in err


@pytest.mark.parametrize(
    "dates, message",
    [(["2026-09-02"], "round_close_dates needs one date per round (2), got 1"),
     (["2026-09-09", "2026-09-02"], "must be strictly increasing"), (["2026-09-02", "soon"], "Input should be a valid date")],
)
def test_a_bad_round_calendar_is_named_by_its_field(tmp_path, capsys, dates, message):
    doc = json.loads((INSTANCES / "worked_example.json").read_text())
    doc["period"]["round_close_dates"] = dates
    path = tmp_path / "inst.json"
    path.write_text(json.dumps(doc))
    code, err = run_cli(["validate", str(path)], capsys)
    assert code == 2
    assert f"{path}, field 'period" in err and message in err
