"""The history table: bad rows are named by file, row and field; generation is seeded."""

import filecmp

import pandas as pd
import pytest

from optalloc.cli import main


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code, capsys.readouterr().err


def gen(path, capsys, *extra):
    code, err = run_cli(["generate", "-o", str(path), "--sellers", "30", "--requests", "20", "--format", "csv", "-q", *extra], capsys)
    assert code == 0, err


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    path = tmp_path_factory.mktemp("g") / "inst"
    with pytest.MonkeyPatch.context():
        try:
            main(["generate", "-o", str(path), "--sellers", "30", "--requests", "20", "--format", "csv", "-q", "--history-weeks", "60"])
        except SystemExit as e:
            assert e.code == 0
    return path


def test_generated_history_is_seeded_and_leaves_the_other_tables_alone(tmp_path, capsys, generated):
    gen(tmp_path / "a", capsys, "--history-weeks", "60")
    gen(tmp_path / "plain", capsys)
    assert filecmp.cmp(generated / "history.csv", tmp_path / "a" / "history.csv", shallow=False)
    for t in ("fcs", "sellers", "needs", "requests", "sales"):
        assert filecmp.cmp(tmp_path / "a" / f"{t}.csv", tmp_path / "plain" / f"{t}.csv", shallow=False)
    assert not (tmp_path / "plain" / "history.csv").exists()
    h = pd.read_csv(generated / "history.csv")
    assert (pd.to_datetime(h["week"]).dt.day_of_week == 0).all()
    assert h["week"].nunique() == 60 and h["week"].max() < "2026-10-01"
    firsts = h.groupby(["seller_id", "storage_type"])["week"].min()
    assert firsts.nunique() > 1  # launches: not every series starts in week 1
    gen(tmp_path / "b", capsys, "--history-weeks", "60", "--seed", "1")
    assert not filecmp.cmp(generated / "history.csv", tmp_path / "b" / "history.csv", shallow=False)


CASES = [
    (3, "week", "2025-01-07", "is a Tuesday; a week is named by its Monday"),
    (4, "week", "last week", "not an ISO date (YYYY-MM-DD)"),
    (4, "week", "now", "not an ISO date (YYYY-MM-DD): 'now'"),  # pandas reads the clock for these (a Monday's was taken)
    (4, "week", "today", "not an ISO date (YYYY-MM-DD): 'today'"),
    (7, "sales", "1.7e308", "must be <= 1e+15, got 1.7e+308"),  # the forecast summed it to inf
    (5, "week", "2026-10-05", "is not before the period (it starts 2026-10-01)"),
    (6, "shipped_cube", "-1", "must be >= 0, got -1"),
    (7, "sales", "NaN", "not a number: 'NaN'"),
    (8, "on_hand_cube", "", "value is missing"),
    (9, "seller_id", "S-NOBODY", "unknown seller 'S-NOBODY'"),
    (10, "storage_type", "cryogenic", "unknown storage type 'cryogenic'"),
]


@pytest.mark.parametrize("row, field, value, message", CASES, ids=[f"{c[1]}={c[2] or 'blank'}" for c in CASES])
def test_bad_history_row_is_named_by_file_row_and_field(generated, tmp_path, capsys, row, field, value, message):
    import shutil

    folder = tmp_path / "inst"
    shutil.copytree(generated, folder)
    path = folder / "history.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[row - 1, field] = value
    frame.to_csv(path, index=False)
    code, err = run_cli(["validate", str(folder)], capsys)
    assert code == 2
    assert f"history.csv, row {row}, field '{field}'" in err and message in err
