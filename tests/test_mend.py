"""What optalloc writes, it can read back, and a period that failed at a step can be mended: the forecast's needs at
the history's documented maxima stay within the bounds needs are read with (solve, the store, export); a period
whose stored forecast no longer loads (written by an older optalloc) is mended by `period reset --step forecast`,
recorded in the run log with who asked and why; a step later steps were computed from is not discarded."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import sqlalchemy as sa

from conftest import INSTANCES, run_cli
from optalloc.schemas import MAX_CUBE, MAX_PRODUCTIVITY
from optalloc.store import Store
from optalloc.store import tables as T

CLOSES = ["2026-09-09", "2026-09-16", "2026-09-23"]


def cli(*args, db: str):
    return run_cli(*args, "--db", db, "-q")


@pytest.fixture(scope="module")
def at_the_maxima(tmp_path_factory):
    """A generated instance without needs whose history is at its documented maxima (sales 1e15, cube 1e12)."""
    root = tmp_path_factory.mktemp("max")
    folder = root / "inst"
    assert run_cli("generate", "-o", str(folder), "--sellers", "20", "--requests", "10", "--history-weeks", "60", "-q").returncode == 0
    (folder / "needs.csv").unlink()
    history = pd.read_csv(folder / "history.csv", dtype=str)
    history[["shipped_cube", "on_hand_cube"]] = "1000000000000"
    history["sales"] = "1000000000000000"
    history.to_csv(folder / "history.csv", index=False)
    meta = json.loads((folder / "instance.json").read_text())
    meta["period"]["round_close_dates"] = CLOSES
    (folder / "instance.json").write_text(json.dumps(meta))
    return folder


def test_the_forecast_at_the_history_s_maxima_writes_needs_its_readers_take(at_the_maxima, tmp_path):
    """History at the maxima forecast needs of 6e12 cube, above the 1e12 input bound: solve accepted them, the batch
    stored them and then failed the period at load every night, and export and report of it exited 2."""
    out = tmp_path / "forecast"
    assert run_cli("forecast", str(at_the_maxima), "-o", str(out), "-q").returncode == 0
    needs, perf = pd.read_csv(out / "needs.csv"), pd.read_csv(out / "performance.csv")
    assert needs[["p50_cube", "p90_cube"]].max().max() == MAX_CUBE
    assert perf["productivity"].max() <= MAX_PRODUCTIVITY and perf["performance_score"].between(0, 1000).all()
    given = tmp_path / "given"  # the forecast's needs given back as an instance's needs table
    shutil.copytree(at_the_maxima, given)
    needs.to_csv(given / "needs.csv", index=False)
    assert run_cli("validate", str(given), "-q").returncode == 0
    db = f"sqlite:///{tmp_path / 'store.db'}"
    for args in (["ingest", str(at_the_maxima)], ["batch", "--date", "2027-01-05"], ["export", "--period", "P202610", "-o", str(tmp_path / "e")]):
        done = cli(*args, db=db)
        assert done.returncode == 0, done.stderr
    assert run_cli("report", str(tmp_path / "e"), "-o", str(tmp_path / "e.html"), "-q").returncode == 0


def test_a_period_whose_stored_forecast_no_longer_loads_is_mended_by_reset(at_the_maxima, tmp_path, store_url):
    assert cli("ingest", str(at_the_maxima), db=store_url).returncode == 0
    assert cli("batch", "--date", "2026-09-01", db=store_url).returncode == 0  # the forecast and the baseline
    store = Store(store_url)
    # What an older optalloc stored: needs above the bound needs are read with; no baseline yet.
    with store.transaction() as conn:
        conn.execute(T.needs.update().where(T.needs.c.period_id == "P202610").values(p50_cube=6e12))
        for name in ("limits", "placements", "fc_prices"):
            conn.execute(T.RESULT_TABLES[name].delete())
        conn.execute(T.periods.update().values(baseline_run_id=None, baseline_objective=None, baseline_status=None))
    for night in ("2026-09-02", "2026-09-03"):  # every night, the period fails at load
        failed = cli("batch", "--date", night, db=store_url)
        assert failed.returncode == 2 and "P202610 failed at load" in failed.stderr and "p50_cube" in failed.stderr, failed.stderr
    mended = cli("period", "reset", "P202610", "--step", "forecast", "--reason", "needs above the bound", db=store_url)
    assert mended.returncode == 0, mended.stderr
    record = json.loads(mended.stdout)
    assert record["step"] == "forecast" and record["reason"] == "needs above the bound" and record["by"]
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(T.needs)).scalar() == 0
    done = cli("batch", "--date", "2027-01-05", db=store_url)
    assert done.returncode == 0, done.stderr
    steps = [s["step"] for s in json.loads(done.stdout)["steps"]]
    assert steps[:2] == ["P202610 forecast", "P202610 baseline"] and steps[-1] == "P202610 settlement"
    runs = store.runs()
    reset = runs[runs["command"] == "reset"].iloc[-1]
    assert json.loads(reset["steps"])[0]["reason"] == "needs above the bound" and reset["host"] and reset["outcome"] == "ok"
    status = json.loads(cli("status", db=store_url).stdout)
    assert status["periods"][0]["failure"] is None  # a later run wrote its results


def test_a_step_later_steps_were_computed_from_is_not_discarded(tmp_path):
    db = f"sqlite:///{tmp_path / 'store.db'}"
    assert cli("ingest", str(INSTANCES / "small_network"), db=db).returncode == 0
    assert cli("batch", "--date", "2026-09-20", db=db).returncode == 0  # baseline, rounds 1 and 2
    refused = {
        "forecast": "its needs were given",
        "baseline": "round 1 was cleared against these limits",
        "round 1": "round 2 holds its grants; reset the last round first",
        "round 3": "round 3 is not cleared",
        "settlement": "it is not settled",
        "rounds": "a step is forecast, baseline, round N or settlement",
    }
    for step, why in refused.items():
        done = cli("period", "reset", "P202610", "--step", step, db=db)
        assert done.returncode == 2 and why in done.stderr, (step, done.stderr)
    store = Store(db)
    before = store.results("P202610", ["grants"])["grants"]
    assert cli("period", "reset", "P202610", "--step", "round 2", db=db).returncode == 0
    assert store.rounds()["cleared_run_id"].notna().tolist() == [True, False, False]
    assert set(store.results("P202610", ["grants"])["grants"].index.get_level_values("round")) == {1}
    prices = store.round_prices_with_protection("P202610")
    pd.testing.assert_series_equal(prices["protected_price"], prices["clearing_price"], check_names=False)  # round 1 alone again
    assert cli("batch", "--date", "2026-09-20", db=db).returncode == 0  # round 2 again: the same grants
    again = store.results("P202610", ["grants"])["grants"]
    pd.testing.assert_frame_equal(again, before)
    assert cli("period", "release", "P202610", "--step", "forecast", db=db).returncode == 2
    assert cli("period", "reset", "P202610", db=db).returncode == 2


def test_a_report_of_a_folder_whose_money_is_out_of_range_is_refused(tmp_path):
    """A hand-edited net of 1e308 printed a numpy overflow warning and a total that disagreed with the row."""
    out = tmp_path / "out"
    assert run_cli("solve", str(INSTANCES / "worked_example.json"), "-o", str(out), "-q").returncode == 0
    shutil.copytree(out, tmp_path / "edited")
    (tmp_path / "edited" / ".optalloc-output").unlink()
    settlement = pd.read_csv(tmp_path / "edited" / "settlement.csv")
    settlement["net"] = 1e308
    settlement.to_csv(tmp_path / "edited" / "settlement.csv", index=False)
    done = run_cli("report", str(tmp_path / "edited"), "-o", str(tmp_path / "r.html"), "-q")
    assert done.returncode == 2 and "field 'net': out of range for an optalloc result" in done.stderr and "overflow" not in done.stderr
