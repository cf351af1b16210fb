"""History in the store (SQLite and PostgreSQL): `ingest --history` appends weeks (idempotent, validated, all or
nothing); an instance with history round-trips byte for byte; the batch's forecast step writes a period's needs and
scores (the same as `optalloc forecast`), and a period whose forecast fails fails alone."""

from __future__ import annotations

import filecmp
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import INSTANCES, run_cli
from optalloc.cli import main
from optalloc.store import Store


def cli(*args: str, db: str):
    """`optalloc ARGS --db DB -q`, in this process."""
    return run_cli(*args, "--db", db, "-q")


def run_main(args) -> int:
    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """30 sellers, 2 storage types, 60 weeks of history, and the same instance without its needs."""
    root = tmp_path_factory.mktemp("hist")
    path = root / "inst"
    assert run_main(["generate", "-o", str(path), "--sellers", "30", "--requests", "20", "-q", "--history-weeks", "60"]) == 0
    no_needs = root / "no_needs"
    shutil.copytree(path, no_needs)
    (no_needs / "needs.csv").unlink()
    return path, no_needs


def same_folders(a, b) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert sorted(p.name for p in b.iterdir()) == names
    match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert mismatch == [] and errors == [], mismatch


def batch_steps(done) -> list[str]:
    return [s["step"] for s in json.loads(done.stdout)["steps"]]


def test_an_instance_with_history_and_needs_round_trips_byte_for_byte(generated, store_url, tmp_path):
    inst, _ = generated
    solved, exported = tmp_path / "solved", tmp_path / "exported"
    assert run_main(["solve", str(inst), "-o", str(solved), "-q"]) == 0
    assert cli("ingest", str(inst), db=store_url).returncode == 0
    done = cli("batch", "--date", "2027-01-05", "--workers", "0", db=store_url)
    assert done.returncode == 0, done.stderr
    assert not any(s.endswith("forecast") for s in batch_steps(done))  # a period that has needs is not re-forecast
    assert cli("export", "--period", "P202610", "-o", str(exported), db=store_url).returncode == 0
    same_folders(solved, exported)  # summary.json too: the same inputs_hash, history included
    back = Store(store_url).instance("P202610")
    assert len(back.history) == len(pd.read_csv(inst / "history.csv"))


def test_history_is_appended_week_by_week_idempotently_and_changed_weeks_are_refused(generated, store_url, tmp_path):
    inst, _ = generated
    history = pd.read_csv(inst / "history.csv", dtype=str, keep_default_na=False)
    last = sorted(history["week"].unique())[-2:]
    early = tmp_path / "early"
    shutil.copytree(inst, early)
    history[~history["week"].isin(last)].to_csv(early / "history.csv", index=False)
    first = cli("ingest", str(early), db=store_url)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["history"] == (~history["week"].isin(last)).sum()
    weekly = tmp_path / "weekly.csv"
    new_rows = history[history["week"].isin(last)].iloc[::-1]  # any row order
    new_rows.to_csv(weekly, index=False)
    done = cli("ingest", "--history", str(weekly), db=store_url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["history"] == len(new_rows)
    again = cli("ingest", "--history", str(weekly), db=store_url)  # the same weeks again: nothing added, no error
    assert again.returncode == 0 and json.loads(again.stdout)["history"] == 0
    store = Store(store_url)
    assert store.history_weeks() == (history["week"].min(), history["week"].max(), len(history))
    # The period now sees every week, as the file instance does: the same inputs as the whole file.
    from optalloc.io import load_instance
    from optalloc.results_io import inputs_hash

    assert inputs_hash(store.instance("P202610")) == inputs_hash(load_instance(inst))

    changed = new_rows.copy()
    changed.iloc[2, changed.columns.get_loc("shipped_cube")] = "123.456"
    changed.to_csv(weekly, index=False)
    refused = cli("ingest", "--history", str(weekly), db=store_url)
    assert refused.returncode == 2
    assert f"{weekly}, row 3, field 'shipped_cube': already in the store with another shipped_cube" in refused.stderr  # it named 'week'
    bad = new_rows.copy()
    bad.iloc[4, bad.columns.get_loc("week")] = "2026-08-26"  # a Wednesday
    bad.iloc[5, bad.columns.get_loc("seller_id")] = "NOBODY"
    bad.to_csv(weekly, index=False)
    refused = cli("ingest", "--history", str(weekly), db=store_url)
    assert refused.returncode == 2
    assert f"{weekly}, row 5, field 'week': 2026-08-26 is a Wednesday" in refused.stderr
    assert f"{weekly}, row 6, field 'seller_id': unknown seller 'NOBODY'" in refused.stderr
    late = new_rows.copy()
    late["week"] = "2026-10-05"
    late.iloc[:1].to_csv(weekly, index=False)
    refused = cli("ingest", "--history", str(weekly), "--period", "P202610", db=store_url)
    assert refused.returncode == 2 and "is not before the period (it starts 2026-10-01)" in refused.stderr
    assert Store(store_url).history_weeks()[2] == len(history)  # nothing of the refused files was written


def test_history_and_requests_in_one_ingest_are_written_together_or_not_at_all(generated, store_url, tmp_path):
    """`ingest --period P --requests R --history H`: every file is checked before anything is written, and both are
    one transaction (the history was committed first, so a bad requests file left it written)."""
    inst, _ = generated
    history = pd.read_csv(inst / "history.csv", dtype=str, keep_default_na=False)
    requests = pd.read_csv(inst / "requests.csv", dtype=str, keep_default_na=False)
    last = history["week"].max()
    early = tmp_path / "early"
    shutil.copytree(inst, early)
    history[history["week"] != last].to_csv(early / "history.csv", index=False)
    requests.iloc[:0].to_csv(early / "requests.csv", index=False)
    assert cli("ingest", str(early), db=store_url).returncode == 0
    weekly, arriving = tmp_path / "weekly.csv", tmp_path / "requests.csv"
    history[history["week"] == last].to_csv(weekly, index=False)
    bad = requests.copy()
    bad.loc[len(bad) - 1, "seller_id"] = "NOBODY"
    bad.to_csv(arriving, index=False)
    runs = len(Store(store_url).runs())
    refused = cli("ingest", "--period", "P202610", "--requests", str(arriving), "--history", str(weekly), db=store_url)
    assert refused.returncode == 2 and f"{arriving}, row {len(bad)}, field 'seller_id': unknown seller 'NOBODY'" in refused.stderr
    store = Store(store_url)
    assert store.history_weeks()[2] == (history["week"] != last).sum() and len(store.runs()) == runs
    assert len(store.instance("P202610").requests) == 0
    requests.to_csv(arriving, index=False)
    done = cli("ingest", "--period", "P202610", "--requests", str(arriving), "--history", str(weekly), db=store_url)
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout)
    assert (counts["history"], counts["requests"]) == ((history["week"] == last).sum(), len(requests))
    assert len(Store(store_url).runs()) == runs + 1 and Store(store_url).history_weeks()[2] == len(history)


def test_the_batch_forecasts_a_period_without_needs_as_optalloc_forecast_does(generated, store_url, tmp_path):
    _, no_needs = generated
    fc, solved, exported = tmp_path / "fc", tmp_path / "solved", tmp_path / "exported"
    assert run_main(["forecast", str(no_needs), "-o", str(fc), "-q"]) == 0
    assert run_main(["solve", str(no_needs), "-o", str(solved), "-q"]) == 0
    assert cli("ingest", str(no_needs), db=store_url).returncode == 0
    done = cli("batch", "--date", "2027-01-05", "--workers", "0", db=store_url)
    assert done.returncode == 0, done.stderr
    steps = batch_steps(done)
    assert steps[:2] == ["P202610 forecast", "P202610 baseline"]
    assert cli("export", "--period", "P202610", "-o", str(exported), db=store_url).returncode == 0
    assert filecmp.cmp(fc / "needs.csv", exported / "needs.csv", shallow=False)
    assert filecmp.cmp(fc / "performance.csv", exported / "performance.csv", shallow=False)
    same_folders(solved, exported)  # solve forecasts first too: the same files, byte for byte
    status = json.loads(cli("status", db=store_url).stdout)
    assert status["periods"][0]["forecast_run_id"] == json.loads(done.stdout)["run_id"]
    # Re-ingesting the instance (still without needs) is accepted; a second night forecasts nothing again.
    assert cli("ingest", str(no_needs), db=store_url).returncode == 0
    again = cli("batch", "--date", "2027-01-06", "--workers", "0", db=store_url)
    assert again.returncode == 0 and json.loads(again.stdout)["outcome"] == "nothing_to_do"


def test_requests_and_sales_arriving_after_the_forecast_are_taken(generated, store_url, tmp_path):
    """The production order: a period registered with history only, forecast by the first night's batch (which
    replaces its sellers' scores), then its requests and sales report arriving by `ingest --period`. The period as
    read back carries the forecast's scores, and the ingest compares it with the stored sellers as such (it refused
    them as "other sellers"); the end is what `solve` gives on the whole instance."""
    _, no_needs = generated
    registered, solved, exported = tmp_path / "registered", tmp_path / "solved", tmp_path / "exported"
    shutil.copytree(no_needs, registered)
    for name in ("requests.csv", "sales.csv"):
        (registered / name).unlink()
    assert cli("ingest", str(registered), db=store_url).returncode == 0
    first = cli("batch", "--date", "2026-09-01", "--workers", "0", db=store_url)
    assert first.returncode == 0 and batch_steps(first) == ["P202610 forecast", "P202610 baseline"], first.stderr
    arrived = cli("ingest", "--period", "P202610", "--requests", str(no_needs / "requests.csv"), "--sales", str(no_needs / "sales.csv"),
                  db=store_url)
    assert arrived.returncode == 0, arrived.stderr
    counts = json.loads(arrived.stdout)
    assert counts["requests"] == len(pd.read_csv(no_needs / "requests.csv")) and counts["sales"] == len(pd.read_csv(no_needs / "sales.csv"))
    assert cli("batch", "--date", "2027-01-05", "--workers", "0", db=store_url).returncode == 0
    assert cli("export", "--period", "P202610", "-o", str(exported), db=store_url).returncode == 0
    assert run_main(["solve", str(no_needs), "-o", str(solved), "-q"]) == 0
    same_folders(solved, exported)
    # Sellers that are neither the ingested ones nor those with the forecast's scores are still refused.
    changed = tmp_path / "changed"
    shutil.copytree(registered, changed)
    sellers = pd.read_csv(changed / "sellers.csv")
    sellers.loc[0, "productivity"] += 1.0
    sellers.to_csv(changed / "sellers.csv", index=False)
    refused = cli("ingest", str(changed), db=store_url)
    assert refused.returncode == 2 and "already in the store with other sellers" in refused.stderr


def test_a_period_whose_forecast_fails_fails_alone_at_step_forecast(generated, store_url, tmp_path):
    _, no_needs = generated
    doc = json.loads((INSTANCES / "worked_example.json").read_text())
    doc["period"]["period_id"] = "SHORT"
    doc["settings"]["forecast_method"] = "backtest"  # 5 weeks cannot be backtested
    del doc["needs"]
    weeks = ["2026-07-06", "2026-07-13", "2026-07-20", "2026-07-27", "2026-08-03"]
    doc["history"] = [{"seller_id": s["seller_id"], "storage_type": "standard", "week": w, "shipped_cube": 1000 + 100 * i, "sales": 5e4,
                       "on_hand_cube": 7000} for s in doc["sellers"] for i, w in enumerate(weeks)]
    short = tmp_path / "short.json"
    short.write_text(json.dumps(doc))
    assert cli("ingest", str(short), db=store_url).returncode == 0
    assert cli("ingest", str(no_needs), db=store_url).returncode == 0
    done = cli("batch", "--date", "2027-01-05", "--workers", "0", db=store_url)
    assert done.returncode == 2
    report = json.loads(done.stdout)
    assert [(f["period_id"], f["step"]) for f in report["failures"]] == [("SHORT", "forecast")]
    assert "too little history for a backtest" in report["failures"][0]["error"]
    assert "period SHORT failed at forecast" in done.stderr
    assert "P202610 settlement" in [s["step"] for s in report["steps"]]  # the other period went all the way
    status = {p["period_id"]: p for p in json.loads(cli("status", db=store_url).stdout)["periods"]}
    assert status["SHORT"]["failure"]["step"] == "forecast" and status["SHORT"]["baseline_run_id"] is None
    assert status["P202610"]["failure"] is None and status["P202610"]["forecast_run_id"] is not None


def next_period(src, dst, period_id="P202701", months=("2027-01", "2027-02", "2027-03")) -> None:
    """The instance at `src` (no needs) three months on: the same FCs, sellers and history, no requests or sales."""
    shutil.copytree(src, dst)
    meta = json.loads((dst / "instance.json").read_text())
    meta["period"].update(period_id=period_id, months=list(months), round_close_dates=["2026-12-09", "2026-12-16", "2026-12-23"])
    (dst / "instance.json").write_text(json.dumps(meta))
    fcs = pd.read_csv(dst / "fcs.csv", dtype=str, keep_default_na=False)
    fcs["month"] = fcs["month"].map(dict(zip(sorted(fcs["month"].unique()), months)))
    fcs.to_csv(dst / "fcs.csv", index=False)
    for name in ("requests.csv", "sales.csv"):
        (dst / name).unlink(missing_ok=True)


def test_the_batch_forecast_scores_space_use_from_the_last_settlement_in_the_store(generated, store_url, tmp_path):
    """A period forecast after another was settled: its performance scores' space_use is credits / fees of each
    seller's grants in that settlement (the same table `optalloc forecast --settlement` of the exported settlement.csv
    writes); the step says which period it read."""
    inst, no_needs = generated
    later = tmp_path / "later"
    next_period(no_needs, later)
    assert cli("ingest", str(inst), db=store_url).returncode == 0
    done = cli("batch", "--date", "2027-01-05", "--workers", "0", db=store_url)
    assert done.returncode == 0 and "P202610 settlement" in batch_steps(done), done.stderr
    first = tmp_path / "first"
    assert cli("export", "--period", "P202610", "-o", str(first), db=store_url).returncode == 0

    assert cli("ingest", str(later), db=store_url).returncode == 0
    done = cli("batch", "--date", "2027-01-06", "--workers", "0", db=store_url)
    assert done.returncode == 0, done.stderr
    step = next(s for s in json.loads(done.stdout)["steps"] if s["step"] == "P202701 forecast")
    assert step["space_use_from"] == "P202610"
    perf = Store(store_url).forecast_tables("P202701")["performance"]
    settlement = pd.read_csv(first / "settlement.csv", dtype={"seller_id": str})
    fees = settlement.groupby("seller_id")[["credit", "reservation_fee"]].sum()
    fees = fees[fees["reservation_fee"] > 0]
    want = (fees["credit"] / fees["reservation_fee"]).clip(0, 1).round(4)
    assert len(want) >= 3 and want.nunique() > 1
    got = perf["space_use"]
    pd.testing.assert_series_equal(got.dropna().sort_index(), want.reindex(got.dropna().index).sort_index(), check_names=False)
    assert set(got.dropna().index) == set(want.index) & set(got.index) and got.drop(index=want.index, errors="ignore").isna().all()
    fc = tmp_path / "fc"
    assert run_main(["forecast", str(later), "-o", str(fc), "--settlement", str(first / "settlement.csv"), "-q"]) == 0
    exported = tmp_path / "exported"
    assert cli("export", "--period", "P202701", "-o", str(exported), db=store_url).returncode == 0
    assert filecmp.cmp(fc / "performance.csv", exported / "performance.csv", shallow=False)
    assert filecmp.cmp(fc / "needs.csv", exported / "needs.csv", shallow=False)


def test_a_period_forecast_before_any_settlement_has_no_space_use(generated, store_url):
    _, no_needs = generated
    assert cli("ingest", str(no_needs), db=store_url).returncode == 0
    done = cli("batch", "--date", "2026-09-01", "--workers", "0", db=store_url)
    assert done.returncode == 0, done.stderr
    step = next(s for s in json.loads(done.stdout)["steps"] if s["step"] == "P202610 forecast")
    assert step["space_use_from"] is None
    assert Store(store_url).space_use_from("P202610") is None
    assert Store(store_url).forecast_tables("P202610")["performance"]["space_use"].isna().all()


def test_history_ingest_adds_new_weeks_skips_identical_ones_and_names_every_changed_row(generated, store_url):
    """One file mixing stored weeks (identical, or changed in a number or an attribute) and new weeks, in any order:
    every changed row is named (file, row, field) and nothing is written; without the changed rows only the new weeks
    are added, and the same file again adds nothing. A missing attribute (NaN or None) equals a stored NULL."""
    from dataclasses import replace

    from optalloc.errors import InputError
    from optalloc.io import load_instance

    inst, _ = generated
    loaded = load_instance(inst)
    history = loaded.history
    weeks = sorted(history["week"].unique())
    old, new = history[history["week"] < weeks[-3]], history[history["week"] >= weeks[-3]].copy()
    new.loc[new.index[:3], "category"] = None  # stored as NULL
    store = Store(store_url)
    store.ingest(replace(loaded, history=old.reset_index(drop=True)), tables=[])
    assert store.history_weeks()[2] == len(old)
    mixed = pd.concat([old.tail(5), new], ignore_index=True).iloc[::-1].reset_index(drop=True)
    stored_rows = mixed.index[mixed["week"] < weeks[-3]]
    changed = mixed.copy()
    changed.loc[stored_rows[0], "sales"] += 0.01
    changed.loc[stored_rows[2], "category"] = "other"
    changed.loc[stored_rows[4], "size_band"] = None
    with pytest.raises(InputError) as e:
        store.ingest_history(changed, "weekly.csv", lambda i: i + 1)
    problems = e.value.problems
    assert [(p.file, p.row, p.field) for p in problems] == [("weekly.csv", int(i) + 1, f) for i, f in
                                                             zip(stored_rows[[0, 2, 4]], ("sales", "category", "size_band"))]
    assert all(f"already in the store with another {p.field}" in p.message for p in problems)
    assert store.history_weeks()[2] == len(old)  # nothing written
    assert store.ingest_history(mixed, "weekly.csv")["history"] == len(new)
    again = mixed.copy()
    again["category"] = again["category"].astype(object).where(again["category"].notna(), np.nan)
    assert store.ingest_history(again, "weekly.csv")["history"] == 0
    assert store.history_weeks()[2] == len(history)
    back = Store(store_url).instance("P202610").history
    assert back["category"].isna().sum() == 3
