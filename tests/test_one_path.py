"""One path: the Python API (`Scenario`), `optalloc solve` over files and the nightly batch call the same code in the
same order and give the same numbers, in memory as in files: every command's files equal the facade's result
written, batch -> export equals `optimize()` (with needs from history too, and continued round by round), what a
result holds in memory is what its files say, and a setting that an explicit column overrides is refused."""

from __future__ import annotations

import filecmp
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import INSTANCES, run_cli
from optalloc import Result, Scenario, compare
from optalloc.store import Store
from optalloc.errors import InputError
from optalloc.io import load_instance

SMALL = INSTANCES / "small_network"
WORKED = INSTANCES / "worked_example.json"


def same_folders(a, b) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert sorted(p.name for p in b.iterdir()) == names
    _, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert mismatch == [] and errors == [], mismatch


def same_table(a: pd.DataFrame, b: pd.DataFrame, name: str) -> None:
    """Equal tables, text held as pandas' str or as Python objects alike (a table read back from a file holds str)."""
    def plain(f: pd.DataFrame) -> pd.DataFrame:
        f = f.reset_index()
        return f.astype({c: object for c in f.columns if pd.api.types.is_string_dtype(f[c].dtype)})

    pd.testing.assert_frame_equal(plain(a), plain(b), obj=name)


@pytest.fixture(scope="module")
def history_only(tmp_path_factory):
    """A generated instance with 60 weeks of history and no needs table: its needs are forecast."""
    root = tmp_path_factory.mktemp("hist")
    assert run_cli("generate", "-o", str(root / "inst"), "--sellers", "30", "--requests", "20", "--history-weeks", "60", "-q").returncode == 0
    (root / "inst" / "needs.csv").unlink()
    return root / "inst"


# Each command with its library counterpart: what the command computes, as a Scenario does it, and what it writes.
COMMANDS = {
    "solve": (lambda s: s.optimize(), None, None),
    "allocate": (lambda s: s.allocate(), ("limits", "placements", "fc_prices"), ("baseline",)),
    "clear": (lambda s: s.optimize(settle=False), ("limits", "grants", "grant_placements", "pools", "round_prices"), ("baseline", "rounds")),
    "settle": (lambda s: s.optimize(), ("round_prices", "settlement"), ("rounds", "settlement")),
}


@pytest.mark.parametrize("instance", ["small_network", "history_only"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_writes_what_the_facade_returns(tmp_path, command, instance, request):
    path = SMALL if instance == "small_network" else request.getfixturevalue("history_only")
    done = run_cli(command, str(path), "-o", str(tmp_path / "cli"), "-q")
    assert done.returncode == 0, done.stderr
    step, tables, parts = COMMANDS[command]
    scenario = Scenario.load(path)
    step(scenario)
    result = scenario.result
    if tables is not None and result.forecast is not None:
        tables = ("needs", "performance", *tables)
    result.write(tmp_path / "api", tables=tables, parts=parts)
    same_folders(tmp_path / "cli", tmp_path / "api")


def test_a_continuation_round_by_round_equals_the_whole_period(tmp_path):
    """allocate, then clear one round at a time on top of the last folder (the CLI's --previous and Scenario.resume),
    then settle: the same tables as one `optimize()`."""
    whole = Scenario.load(SMALL).optimize()
    last = tmp_path / "allocated"
    assert run_cli("allocate", str(SMALL), "-o", str(last), "-q").returncode == 0
    inst = load_instance(SMALL)
    for r in inst.period.rounds:
        out = tmp_path / f"round{r}"
        assert run_cli("clear", str(SMALL), "--previous", str(last), "-o", str(out), "-q").returncode == 0
        api = Scenario.resume(inst, last)
        api.clear()
        api.result.write(tmp_path / f"api{r}", tables=("limits", "grants", "grant_placements", "pools", "round_prices"), parts=("rounds",))
        same_folders(out, tmp_path / f"api{r}")
        last = out
    settled = tmp_path / "settled"
    assert run_cli("settle", str(SMALL), "--previous", str(last), "-o", str(settled), "-q").returncode == 0
    resumed = Scenario.resume(inst, last)
    resumed.settle()
    for name in ("grants", "round_prices", "pools", "grant_placements"):
        same_table(getattr(resumed.result, name), getattr(whole, name), name)
    same_table(resumed.settlement, whole.settlement, "settlement")
    whole.write(tmp_path / "whole")
    assert (settled / "settlement.csv").read_bytes() == (tmp_path / "whole" / "settlement.csv").read_bytes()


@pytest.mark.parametrize("instance", ["small_network", "history_only"])
def test_the_nightly_batch_exported_equals_optimize(store_url, tmp_path, instance, request):
    """ingest -> batch (after every round closed, with the sales report in) -> export writes what `optimize()`'s
    result writes, byte for byte, on SQLite and PostgreSQL; with the needs forecast from history too."""
    path = SMALL if instance == "small_network" else request.getfixturevalue("history_only")
    if instance == "history_only":  # the store needs the round calendar
        folder = tmp_path / "inst"
        shutil.copytree(path, folder)
        meta = json.loads((folder / "instance.json").read_text())
        meta["period"]["round_close_dates"] = ["2026-09-09", "2026-09-16", "2026-09-23"]
        (folder / "instance.json").write_text(json.dumps(meta))
        path = folder
    for args in (["ingest", str(path)], ["batch", "--date", "2027-01-05"], ["export", "--period", "P202610", "-o", str(tmp_path / "exported")]):
        done = run_cli(*args, "--db", store_url, "-q")
        assert done.returncode == 0, done.stderr
    result = Scenario.load(path).optimize()
    result.write(tmp_path / "api")
    same_folders(tmp_path / "exported", tmp_path / "api")
    # ... and in memory: what the store holds, read as a Result, is the same frames (values, index and dtypes)
    stored = Result.from_store(Store(store_url, create=False), "P202610").tables()
    ours = result.tables()
    assert sorted(stored) == sorted(ours)
    for name, frame in ours.items():
        assert frame.equals(stored[name]) and frame.dtypes.equals(stored[name].dtypes), name


def test_what_a_result_holds_in_memory_is_what_its_files_say(tmp_path):
    """Money to the cent and cube to 0.001 in memory as in the files: a credit was 1189.819454 in Python and 1189.82
    in the CSV, a clearing price 0.30000000000000004 and 0.3; summing credits in memory gave 10492.734779, summary.json
    10492.74."""
    result = Scenario.load(SMALL).optimize()
    result.write(tmp_path / "out")
    for name, frame in result.tables().items():
        written = pd.read_csv(tmp_path / "out" / f"{name}.csv", keep_default_na=False, na_values=[""])
        ours = frame.reset_index()
        for col in ours.columns:
            if ours[col].dtype.kind == "f":
                np.testing.assert_array_equal(ours[col].to_numpy(), written[col].to_numpy(dtype=float), err_msg=f"{name}.{col}")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert round(float(result.settlement["credit"].sum()), 2) == summary["settlement"]["credits"]
    assert result.statistics()["credits"].sum().round(2) == summary["settlement"]["credits"]
    assert {k: v for k, v in result.summary(hash_inputs=True).items()} == summary


def test_statistics_compare_and_report_come_from_memory(tmp_path, chromium):
    from conftest import headless

    base = Scenario.load(SMALL)
    a, b = base.optimize(), base.with_settings(reserve_price=4.0).optimize()
    stats = a.statistics()
    assert list(stats.index.names) == ["round", "storage_type"] and len(stats) == 6
    assert (stats["granted_cube_months"] <= stats["pool_available_cube"] + 1e-9).all()
    both = compare(a, b, names=["base", "reserve $4"])
    assert list(both.columns.get_level_values("scenario")[:2]) == ["base", "reserve $4"]
    assert (both[("requests", "base")] == both[("requests", "reserve $4")]).all()
    assert both[("granted_requests", "reserve $4")].sum() < both[("granted_requests", "base")].sum()
    page = a.report(tmp_path / "a.html")
    dom = headless(chromium, "--dump-dom", "--virtual-time-budget=10000", page.as_uri())
    assert "optalloc report: small_network" in dom and dom.count('data-rendered="true"') >= 8
    assert "inputs_hash" not in a.summary() and "inputs_hash" in a.summary(hash_inputs=True)


# ---------------------------------------------------------------- settings that cannot lie


def test_a_pool_share_that_the_pool_cube_column_overrides_is_refused_on_every_path(tmp_path):
    """small_network's fcs.csv has a pool_cube on every row: pool_share 0.2 changed nothing (the pool stayed 24,775)
    while summary.json reported it. Refused from Python, from instance.json and from the command line."""
    with pytest.raises(InputError, match="pool_share 0.2 would change nothing: every row of the fcs table has its own pool_cube"):
        Scenario.load(SMALL).with_settings(pool_share=0.2)
    folder = tmp_path / "inst"
    shutil.copytree(SMALL, folder)
    meta = json.loads((folder / "instance.json").read_text())
    meta["settings"]["pool_share"] = 0.25
    (folder / "instance.json").write_text(json.dumps(meta))
    done = run_cli("solve", str(folder), "-o", str(tmp_path / "out"), "-q")
    assert done.returncode == 2 and "field 'pool_share': pool_share 0.25 would change nothing" in done.stderr
    done = run_cli("solve", str(SMALL), "-o", str(tmp_path / "out"), "--set", "pool_share=0.2", "-q")
    assert done.returncode == 2 and "--set, field 'pool_share'" in done.stderr and not (tmp_path / "out").exists()


def test_a_pool_share_what_if_changes_the_pool_where_it_is_derived(tmp_path):
    """Without a pool_cube column, pool_share is the pool: a what-if with another share gives another pool (it gave
    the same one: the derived pool was fixed when the instance was built)."""
    folder = tmp_path / "inst"
    shutil.copytree(SMALL, folder)
    fcs = pd.read_csv(folder / "fcs.csv").drop(columns="pool_cube")
    fcs.to_csv(folder / "fcs.csv", index=False)
    base = Scenario.load(folder)
    assert base.instance.fcs["pool_cube"].sum() == pytest.approx(fcs["capacity_cube"].sum() * 0.1, abs=1)
    wider = base.with_settings(pool_share=0.2)
    assert wider.instance.fcs["pool_cube"].sum() == pytest.approx(fcs["capacity_cube"].sum() * 0.2, abs=1)
    a, b = base.optimize(), wider.optimize()
    assert a.statistics()["pool_available_cube"].sum() < b.statistics()["pool_available_cube"].sum()
    done = run_cli("solve", str(folder), "-o", str(tmp_path / "out"), "--set", "pool_share=0.2", "-q")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["baseline"]["pool_cube"] == b.summary()["baseline"]["pool_cube"]


def test_with_pool_share_sets_every_pool_aside_and_derives_it_from_capacity(tmp_path):
    """The planner's first what-if on an instance that gives every pool: with_pool_share(0.2) makes each pool 20% of
    its FC's capacity, floored to whole milli-cube, and the
    refusal of with_settings(pool_share=...) names it. A share out of bounds is refused naming the call."""
    base = Scenario.load(SMALL)
    with pytest.raises(InputError, match=r"\(in Python: with_pool_share\)"):
        base.with_settings(pool_share=0.2)
    wider = base.with_pool_share(0.2)
    fcs = wider.instance.fcs
    expected = np.floor(np.round(fcs["capacity_cube"].to_numpy() * 1000) * 0.2) / 1000
    assert fcs["pool_cube"].tolist() == expected.tolist() and wider.instance.settings.pool_share == 0.2
    assert not (fcs["pool_cube"] == base.instance.fcs["pool_cube"]).all()
    assert wider.with_settings(pool_share=0.3).instance.fcs["pool_cube"].sum() > fcs["pool_cube"].sum()  # derived now
    folder = tmp_path / "odd"
    shutil.copytree(SMALL, folder)
    pd.read_csv(folder / "fcs.csv").assign(capacity_cube=0.003, pool_cube=0.003).to_csv(folder / "fcs.csv", index=False)
    assert Scenario.load(folder).with_pool_share(0.5).instance.fcs["pool_cube"].eq(0.001).all()  # 1.5 milli-cube floored
    a, b = base.optimize(), wider.optimize()
    assert a.statistics()["pool_available_cube"].sum() < b.statistics()["pool_available_cube"].sum()
    with pytest.raises(InputError, match="with_pool_share, field 'pool_share': Input should be less than or equal to 1"):
        base.with_pool_share(1.5)


def test_a_forecast_method_with_the_needs_given_is_refused(tmp_path):
    with pytest.raises(InputError, match="forecast_method 'seasonal_naive' would change nothing: the needs table is given"):
        Scenario.load(SMALL).with_settings(forecast_method="seasonal_naive")


@pytest.mark.parametrize("setting, message", [
    ("pool_share", "not KEY=VALUE"), ("=3", "not KEY=VALUE"), ("credit_rate=2", "--set, field 'credit_rate'"),
    ("no_such=1", "--set, field 'no_such': Extra inputs are not permitted"), ("clearing_rule=nope", "'nope' is not a clearing rule"),
])
def test_set_is_checked_as_the_settings_are(tmp_path, setting, message):
    done = run_cli("solve", str(WORKED), "-o", str(tmp_path / "out"), "--set", setting, "-q")
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


def test_set_changes_the_run_and_summary_json_says_so(tmp_path):
    done = run_cli("solve", str(WORKED), "-o", str(tmp_path / "out"), "--set", "clearing_rule=welfare", "--set", "credit_rate=0.1", "-q")
    assert done.returncode == 0, done.stderr
    settings = json.loads((tmp_path / "out" / "summary.json").read_text())["settings"]
    assert settings["clearing_rule"] == "welfare" and settings["credit_rate"] == 0.1
    twice = run_cli("solve", str(WORKED), "-o", str(tmp_path / "o2"), "--set", "credit_rate=0.1", "--set", "credit_rate=0.2", "-q")
    assert twice.returncode == 2 and "credit_rate is set twice" in twice.stderr


# ---------------------------------------------------------------- each table declared once


def test_a_column_added_to_a_declaration_is_written_read_back_and_stored(tmp_path, monkeypatch):
    """One line in optalloc.tables: the column is rounded to its unit and written, read back by --previous and the
    report, and has its column in the store's table (created here from the declarations; a real store would need a
    migration)."""
    from dataclasses import replace

    import sqlalchemy as sa

    from optalloc import tables
    from optalloc.results_io import read_result_table
    from optalloc.store import tables as T
    from optalloc.store.frames import read_frame, result_frame, write_frame

    grants = tables.RESULTS["grants"]
    wider = replace(grants, columns=(*grants.columns, tables.Column("lucky_cube", tables.NUMBER, "a test's column", tables.CUBE)))
    monkeypatch.setitem(tables.RESULTS, "grants", wider)
    monkeypatch.setitem(tables.WRITTEN, "grants", wider)
    result = Scenario.load(WORKED).optimize(settle=False)
    for r in result.rounds:
        r.grants["lucky_cube"] = r.grants["granted_cube"] / 3
    result.write(tmp_path / "out", tables=("limits", "grants", "round_prices"), parts=("rounds",))
    written = pd.read_csv(tmp_path / "out" / "grants.csv")
    assert written.columns[-1] == "lucky_cube" and written["lucky_cube"].tolist() == [1666.667, 666.667]  # rounded to 0.001 cube
    back = read_result_table(tmp_path / "out", "grants")
    assert back["lucky_cube"].tolist() == [1666.667, 666.667]
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    stored = T.result_table(wider, sa.MetaData())
    stored.metadata.create_all(engine)
    assert "lucky_cube" in stored.c
    with engine.begin() as conn:
        write_frame(conn, stored, back, period_id="P", run_id=1)
    with engine.connect() as conn:
        monkeypatch.setitem(tables.RESULTS, "grants", replace(wider, store=stored.name))
        again = result_frame(read_frame(conn, stored, "P"), stored)
    assert again["lucky_cube"].tolist() == [1666.667, 666.667]


def test_a_rule_registered_in_a_test_module_runs_through_the_facade_and_set(tmp_path):
    from optalloc import rules
    from test_rules import LowestFeeFirst

    rules.register(LowestFeeFirst)
    try:
        inst = load_instance(WORKED)
        cheap_first = Scenario(inst).with_settings(clearing_rule="lowest_fee_first").optimize()
        assert set(cheap_first.round_prices["method"]) <= {"lowest_fee_first", "empty"}
        done = run_cli("solve", str(WORKED), "-o", str(tmp_path / "out"), "--set", "clearing_rule=lowest_fee_first", "-q")
        assert done.returncode == 0, done.stderr
        written = pd.read_csv(tmp_path / "out" / "grants.csv")
        assert written["granted_cube"].tolist() == cheap_first.grants["granted_cube"].tolist()
        assert "lowest_fee_first" in run_cli("solve", "--help").stdout
    finally:
        rules.unregister(LowestFeeFirst.name)
