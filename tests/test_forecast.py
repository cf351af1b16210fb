"""Forecasts from history: quantile-loss arithmetic, no crossing, cold start, determinism, and needs that solve."""

import filecmp
import shutil

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from optalloc.cli import main
from optalloc.forecast import coverage, pinball, wql
from optalloc.forecast.methods import forecast, make_panel
from conftest import examples


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code, capsys.readouterr().err


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    path = tmp_path_factory.mktemp("g") / "inst"
    with pytest.raises(SystemExit) as exc:
        main(["generate", "-o", str(path), "--sellers", "40", "--requests", "30", "--format", "csv", "-q", "--history-weeks", "80"])
    assert exc.value.code == 0
    return path


def test_pinball_wql_and_coverage_match_hand_computed_values():
    y, q = np.array([10.0, 0.0, 5.0]), np.array([8.0, 2.0, 5.0])
    # tau 0.9: under by 2 costs 0.9 x 2 = 1.8, over by 2 costs 0.1 x 2 = 0.2, exact costs 0
    assert pinball(y, q, 0.9).tolist() == pytest.approx([1.8, 0.2, 0.0])
    assert pinball(y, q, 0.5).tolist() == pytest.approx([1.0, 1.0, 0.0])
    assert wql(y, q, 0.9) == pytest.approx(2 * 2.0 / 15)  # 2 x sum pinball / sum |y|
    assert wql(y, q, 0.5) == pytest.approx(2 * 2.0 / 15)
    assert wql([0.0, 0.0], [1.0, 1.0], 0.5) != wql([0.0, 0.0], [1.0, 1.0], 0.5)  # NaN: no volume to weigh by
    assert coverage(y, q) == pytest.approx(2 / 3)


def _keys(n):
    return pd.DataFrame({"seller_id": [f"S{i}" for i in range(n)], "storage_type": "standard", "category": "toys", "size_band": "small"})


@settings(max_examples=examples(25), deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(2, 70)), elements=st.floats(0, 1e4)),
       st.sampled_from(["seasonal_naive", "seasonal_yoy"]), st.integers(1, 20))
def test_quantiles_never_cross_and_are_never_negative(Y, method, H):
    woy = np.tile(np.arange(1, 53, dtype=float), 4)
    q50, q90, _ = forecast(method, Y, H, woy, _keys(len(Y)))
    assert q50.shape == q90.shape == (len(Y), H)
    assert np.isfinite(q50).all() and (q50 >= 0).all() and (q90 >= q50).all()


def test_the_global_model_never_crosses_either(generated):
    from optalloc.io import load_instance

    panel = make_panel(load_instance(generated).history)
    q50, q90, _ = forecast("lightgbm", panel.y, 10, panel.woy(10), panel.keys, trees=20)
    assert (q50 >= 0).all() and (q90 >= q50).all() and q50.sum() > 0


def test_the_conformal_shift_is_the_rank_ceil_n_plus_1_tau_residual():
    from optalloc.forecast.methods import conformal_shift

    # scaled residuals (y - q) / s of the pairs with a level and an actual: 1..19 (n = 19, rank ceil(20 x 0.9) = 18)
    r = np.arange(1.0, 20.0)
    s = np.array([2.0] * 19 + [0.0])  # the last series has no level: left out
    y = np.vstack([(r * 2.0)[:, None], [[1e9]]])
    q = np.zeros_like(y)
    assert conformal_shift(y, q, s) == 18.0
    y[3, 0] = np.nan  # a pair without an actual is left out: n = 18, rank ceil(19 x 0.9) = 18, of 1,2,3,5..19 -> 19
    assert conformal_shift(y, q, s) == 19.0
    assert conformal_shift(np.array([[5.0], [-1.0]]), np.zeros((2, 1)), np.ones(2)) == 5.0  # rank ceil(3 x 0.9) = 3 > n: the largest
    assert conformal_shift(np.full((2, 1), np.nan), np.zeros((2, 1)), np.ones(2)) == 0.0


def _iid_panel(n=300, W=90, seed=7):
    """Series of i.i.d. weeks (level x Lognormal(0, 0.6)), levels 10-1000."""
    rng = np.random.default_rng(seed)
    level = np.exp(rng.uniform(np.log(10), np.log(1000), n))
    return level, level[:, None] * rng.lognormal(0.0, 0.6, (n, W))


def test_calibration_shifts_the_p90_by_the_held_out_residual_quantile(monkeypatch):
    """A stand-in model whose P90 is half of each series' level: held out on the last H weeks, its scaled residuals
    give the shift, added x scale to the P90 of the model trained on the whole window; the P50 is untouched."""
    from optalloc.forecast import methods

    level, Y = _iid_panel(n=40)
    H = 6

    def half_level(Yw, H, *a, alphas=(0.5, 0.9), predict_rows=None, **k):
        s = methods.scale(Yw if predict_rows is None else Yw[predict_rows])
        return np.repeat(0.3 * s[:, None], H, axis=1), np.repeat(0.5 * s[:, None], H, axis=1)

    monkeypatch.setattr(methods, "_lightgbm_fit", half_level)
    woy = np.tile(np.arange(1, 53, dtype=float), 3)
    q50, raw = methods.lightgbm_quantiles(Y, H, woy, _keys(40), calibrate=False)
    q50c, q90 = methods.lightgbm_quantiles(Y, H, woy, _keys(40))
    inner = Y[:, :-H]
    r = np.sort(((Y[:, -H:] - 0.5 * methods.scale(inner)[:, None]) / methods.scale(inner)[:, None]).ravel())
    shift = r[int(np.ceil((r.size + 1) * 0.9)) - 1]
    assert shift > 0.5  # half the level is far below the P90
    np.testing.assert_array_equal(q50c, q50)
    np.testing.assert_allclose(q90, raw + shift * methods.scale(Y)[:, None])
    # too short a window to hold H weeks out: not calibrated
    short = Y[:, : methods.CALIBRATION_MIN_WEEKS + H - 1]
    np.testing.assert_array_equal(methods.lightgbm_quantiles(short, H, woy, _keys(40))[1],
                                  methods.lightgbm_quantiles(short, H, woy, _keys(40), calibrate=False)[1])


def test_calibration_brings_an_under_covering_p90_to_90_percent_and_never_crosses():
    """Series whose weeks grow noisier (log-sd 0.1, then 0.8 over the last 16 weeks and the future): a model trained
    mostly on the calm weeks under-covers; the held-out last weeks are noisy, so calibration raises the P90 to cover
    close to 90% of the next weeks (same process). P90 >= P50 either way; the same inputs give the same quantiles."""
    rng = np.random.default_rng(11)
    n, W, H = 300, 90, 8
    level = np.exp(rng.uniform(np.log(10), np.log(1000), n))
    sd = np.where(np.arange(W + H) < W - 16, 0.1, 0.8)
    Y = level[:, None] * np.exp(rng.normal(0.0, 1.0, (n, W + H)) * sd[None, :])
    woy = np.tile(np.arange(1, 53, dtype=float), 3)
    keys = _keys(n)
    past, future = Y[:, :W], Y[:, W:]
    cov = {}
    for cal in (False, True):
        q50, q90, _ = forecast("lightgbm", past, H, woy, keys, trees=30, calibrate=cal)
        assert (q90 >= q50).all() and (q50 >= 0).all()
        cov[cal] = coverage(future, q90)
    assert cov[False] < 0.88 and cov[True] > cov[False] + 0.02 and abs(cov[True] - 0.9) < 0.015, cov
    np.testing.assert_array_equal(q90, forecast("lightgbm", past, H, woy, keys, trees=30)[1])


def test_a_smoothed_column_is_the_column_of_the_smoothed_panel():
    """The global model reads last year's week smoothed over 3 weeks from `_smoothed_at` (three columns), not from
    the whole smoothed panel: the same numbers, bit for bit, NaN before a series starts and outside the weeks."""
    from optalloc.forecast.methods import _smoothed, _smoothed_at

    rng = np.random.default_rng(1)
    Y = rng.gamma(1.0, 10.0, (200, 60))
    Y[rng.random(Y.shape) < 0.2] = np.nan
    Y[:5, :30] = np.nan
    sm = _smoothed(Y)
    for col in range(-3, 63):
        want = sm[:, col] if 0 <= col < 60 else np.full(200, np.nan)
        np.testing.assert_array_equal(_smoothed_at(Y, col), want)


def test_a_new_seller_borrows_the_shape_of_similar_sellers():
    W = 60
    t = np.arange(W)
    shape = 1 + 0.5 * np.sin(2 * np.pi * t / 52)
    mature = np.array([100.0, 200.0, 300.0, 400.0])[:, None] * shape[None, :]
    new = np.full(W, np.nan)
    new[-3:] = [10.0, 20.0, 30.0]  # three weeks only: mean 20
    Y = np.vstack([mature, new])
    keys = _keys(5)
    q50, q90, cold = forecast("seasonal_naive", Y, 8, np.tile(np.arange(1, 53, dtype=float), 3), keys)
    assert cold.tolist() == [False] * 4 + [True]
    peers = q50[:4] / np.array([Y[i, -13:].mean() for i in range(4)])[:, None]
    assert q50[4] == pytest.approx(20.0 * np.median(peers, axis=0))
    assert (q90[4] >= q50[4]).all() and q50[4].min() > 0


def test_forecast_is_byte_identical_run_to_run_and_its_tables_feed_solve(generated, tmp_path, capsys):
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        code, err = run_cli(["forecast", str(generated), "-o", str(out), "--backtest", "-q"], capsys)
        assert code == 0, err
        outs.append(out)
    names = sorted(p.name for p in outs[0].iterdir() if not p.name.startswith("."))
    assert names == ["backtest.csv", "needs.csv", "performance.csv", "summary.json"]
    for n in names:
        assert filecmp.cmp(outs[0] / n, outs[1] / n, shallow=False), n
    bt = pd.read_csv(outs[0] / "backtest.csv")
    assert set(bt["method"]) == {"seasonal_naive", "seasonal_yoy", "lightgbm"} and bt["horizon"].min() == 1
    needs = pd.read_csv(outs[0] / "needs.csv", dtype={"month": str})
    assert (needs["p90_cube"] >= needs["p50_cube"]).all()
    months = ["2026-10", "2026-11", "2026-12"]
    assert needs.groupby(["seller_id", "storage_type"]).size().eq(3).all() and sorted(needs["month"].unique()) == months
    perf = pd.read_csv(outs[0] / "performance.csv")
    assert perf["performance_score"].between(0, 1000).all() and (perf["productivity"] >= 0).all()

    inst = tmp_path / "inst"
    shutil.copytree(generated, inst)
    shutil.copy(outs[0] / "needs.csv", inst / "needs.csv")
    sellers = pd.read_csv(inst / "sellers.csv", dtype=str)
    scored = sellers.drop(columns=["performance_score", "productivity"]).merge(
        perf[["seller_id", "performance_score", "productivity"]].astype(str), on="seller_id", how="left")
    scored[["performance_score", "productivity"]] = scored[["performance_score", "productivity"]].fillna("0")
    scored.to_csv(inst / "sellers.csv", index=False)
    code, err = run_cli(["solve", str(inst), "-o", str(tmp_path / "solved"), "-q"], capsys)
    assert code == 0, err
    limits = pd.read_csv(tmp_path / "solved" / "limits.csv")
    assert limits["limit_cube"].sum() > 0


def test_forecast_refuses_bad_history_and_an_instance_without_history(generated, tmp_path, capsys):
    folder = tmp_path / "inst"
    shutil.copytree(generated, folder)
    frame = pd.read_csv(folder / "history.csv", dtype=str, keep_default_na=False)
    frame.loc[4, "week"] = "2025-01-08"
    frame.to_csv(folder / "history.csv", index=False)
    out = tmp_path / "out"
    code, err = run_cli(["forecast", str(folder), "-o", str(out), "-q"], capsys)
    assert code == 2 and "history.csv, row 5, field 'week': 2025-01-08 is a Wednesday" in err
    assert not out.exists()
    (folder / "history.csv").unlink()
    code, err = run_cli(["forecast", str(folder), "-o", str(out), "-q"], capsys)
    assert code == 2 and "no history table" in err and not out.exists()


@pytest.fixture(scope="module")
def forecast_instance(generated):
    """The generated instance with its needs and seller scores taken from its own history."""
    from dataclasses import replace

    from optalloc.forecast import run_forecast
    from optalloc.io import load_instance

    inst = load_instance(generated)
    result = run_forecast(inst, method="seasonal_yoy")
    sellers = inst.sellers.drop(columns=["performance_score", "productivity"]).merge(
        result.performance[["seller_id", "performance_score", "productivity"]], on="seller_id", how="left").fillna(
        {"performance_score": 0.0, "productivity": 0.0})
    return replace(inst, needs=result.needs.assign(floor_cube=np.nan), sellers=sellers, requests=inst.requests.iloc[:0])


@settings(max_examples=examples(8), deadline=None)
@given(st.integers(0, 39), st.floats(0, 400), st.floats(0, 1.0))
def test_a_sellers_limit_does_not_fall_when_its_score_and_forecast_both_rise(forecast_instance, who, score_up, need_up):
    from conftest import raised
    from optalloc.baseline import allocate

    inst = forecast_instance
    seller = inst.sellers["seller_id"].iloc[who]
    before = allocate(inst).limits["limit_cube"]
    after = allocate(raised(inst, seller, score_up, need_up)).limits["limit_cube"]
    b = before[before.index.get_level_values("seller_id") == seller]
    a = after.reindex(b.index)
    assert (a >= b - 1e-6).all(), pd.concat([b, a], axis=1)


def test_a_json_instance_with_a_few_weeks_forecasts_but_cannot_backtest(tmp_path, capsys):
    import json

    from conftest import INSTANCES

    doc = json.loads((INSTANCES / "worked_example.json").read_text())
    weeks = ["2026-07-06", "2026-07-13", "2026-07-20", "2026-07-27", "2026-08-03"]
    doc["history"] = [{"seller_id": s["seller_id"], "storage_type": "standard", "week": w, "shipped_cube": 1000 + 100 * i,
                       "sales": 5e4, "on_hand_cube": 7000} for s in doc["sellers"] for i, w in enumerate(weeks)]
    path = tmp_path / "inst.json"
    path.write_text(json.dumps(doc))
    code, err = run_cli(["forecast", str(path), "-o", str(tmp_path / "out"), "-q"], capsys)
    assert code == 0, err
    needs = pd.read_csv(tmp_path / "out" / "needs.csv")
    assert needs["p50_cube"].tolist() == [7500.0] * 6  # 6 cover weeks x the mean of the last 4 weeks (1,250)
    code, err = run_cli(["forecast", str(path), "-o", str(tmp_path / "bt"), "--backtest", "-q"], capsys)
    assert code == 2 and f"{path}: history, field 'week': too little history for a backtest" in err
    assert not (tmp_path / "bt").exists()


def test_the_loop_runs_periods_on_its_own_history(generated):
    from optalloc.forecast.loop import run_loop
    from optalloc.io import load_instance

    report, periods = run_loop(load_instance(generated), 2, method="seasonal_yoy")
    assert report["period_id"].drop_duplicates().tolist() == ["P202610", "P202701"]
    assert report.groupby("period")["limit_share"].sum().round(9).eq(1.0).all()
    assert periods["coverage_90_weekly"].between(0, 1).all() and report["mean_score"].dropna().between(0, 1000).all()


def test_productivity_is_sales_per_cube_month_at_most_the_sellers_bound():
    """productivity = sales / on-hand cube-months, capped at MAX_PRODUCTIVITY: large sales on a sliver of cube gave
    1e21, which the sellers table refuses, so a period forecast in the store could never be loaded again."""
    from optalloc.forecast.performance import performance_scores
    from optalloc.schemas import MAX_PRODUCTIVITY

    weeks = pd.date_range("2026-06-01", periods=13, freq="7D").strftime("%Y-%m-%d")
    rows = [("A", w, 1.0, 1e15, 1e-6) for w in weeks] + [("B", w, 2.0, 520.0, 4.0) for w in weeks]
    history = pd.DataFrame(rows, columns=["seller_id", "week", "shipped_cube", "sales", "on_hand_cube"]).assign(storage_type="standard")
    scores = performance_scores(history).set_index("seller_id")["productivity"]
    assert scores["A"] == MAX_PRODUCTIVITY
    assert scores["B"] == round(13 * 520.0 / (13 * 4.0 * 12 / 52), 2)  # $ per cube-month


def test_history_older_than_ten_years_is_left_out_of_the_forecast(generated, tmp_path, capsys):
    """The panel lays every series over each week from the first to the last: one stray row of year 0001 made it
    105,000 weeks wide (a forecast of 30 sellers took 152 s instead of 3.4 s). Rows more than PANEL_WEEKS before the
    last week are left out, so the forecast is the one without them, file for file."""
    from optalloc.forecast.methods import PANEL_WEEKS, make_panel

    ancient = tmp_path / "ancient"
    shutil.copytree(generated, ancient)
    history = pd.read_csv(ancient / "history.csv", dtype=str, keep_default_na=False)
    old = history.iloc[:2].copy()
    old["week"] = ["0001-01-01", "1990-01-01"]  # Mondays, of an existing series and of one no longer sold
    old.loc[old.index[1], "storage_type"] = "oversize" if history["storage_type"].iloc[0] != "oversize" else "standard"
    pd.concat([old, history]).to_csv(ancient / "history.csv", index=False)
    last = pd.Timestamp(history["week"].max())
    edge = history.iloc[:1].assign(week=str((last - pd.Timedelta(weeks=PANEL_WEEKS - 1)).date()))
    assert len(make_panel(pd.concat([edge, history]).astype({c: float for c in ("shipped_cube", "sales", "on_hand_cube")})).weeks) == PANEL_WEEKS
    outs = {}
    for name, folder in (("plain", generated), ("ancient", ancient)):
        outs[name] = tmp_path / f"out_{name}"
        code, err = run_cli(["forecast", str(folder), "-o", str(outs[name]), "-q"], capsys)
        assert code == 0, err
    for n in ("needs.csv", "performance.csv", "summary.json"):
        assert filecmp.cmp(outs["plain"] / n, outs["ancient"] / n, shallow=False), n
