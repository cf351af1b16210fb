"""The loop across periods: a seller's limit never falls when its score and forecast rise (the baseline LP's
monotonicity, on small random instances); `simulate --periods` is seeded and bounded; every seller gets needs."""

from __future__ import annotations

import filecmp
import json
from dataclasses import replace

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import examples, fc, make, need, raised, seller
from optalloc.baseline import allocate
from optalloc.cli import main


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code, capsys.readouterr()


@st.composite
def small_market(draw):
    """2-5 sellers, 1-3 FCs in 1-2 regions, 1-2 months, one storage type; random scores, productivity, needs, floors."""
    n_fc = draw(st.integers(1, 3))
    regions = ["east", "west"][: draw(st.integers(1, min(2, n_fc)))]
    months = ["2026-10", "2026-11"][: draw(st.integers(1, 2))]
    fcs = [fc(f"F{i}", regions[i % len(regions)], month=m, capacity_cube=draw(st.sampled_from([50.0, 200.0, 1000.0])))
           for i in range(n_fc) for m in months]
    n = draw(st.integers(2, 5))
    scores = draw(st.lists(st.sampled_from([0.0, 100.0, 400.0, 400.0, 800.0, 1000.0]), min_size=n, max_size=n))
    prods = draw(st.lists(st.sampled_from([0.0, 1.0, 5.0, 5.0, 20.0]), min_size=n, max_size=n))
    sellers = [seller(f"S{i}", scores[i], prods[i], regions=draw(st.sampled_from([regions[0], regions[-1], ";".join(regions)])),
                      floor_cube=draw(st.sampled_from([0.0, 0.0, 10.0]))) for i in range(n)]
    needs = [need(f"S{i}", month=m, p50_cube=draw(st.sampled_from([0.0, 20.0, 100.0, 300.0])),
                  p90_cube=draw(st.sampled_from([None, 150.0, 500.0]))) for i in range(n) for m in months]
    for r in needs:
        if r["p90_cube"] is None:
            del r["p90_cube"]
    return make(fcs=fcs, sellers=sellers, needs=needs, months=months)


@settings(max_examples=examples(120), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_market(), st.data())
def test_a_sellers_limit_does_not_fall_when_its_score_and_needs_rise(inst, data):
    """Raise one seller's performance score and its P50/P90 needs; re-run the baseline; its limit must not fall in
    any month (models/forecast.md, "Monotonicity": the baseline LP implies it)."""
    from optalloc.errors import InfeasibleError

    who = data.draw(st.sampled_from(list(inst.sellers["seller_id"])))
    score_up = data.draw(st.sampled_from([0.0, 50.0, 300.0, 1000.0]))
    need_up = data.draw(st.sampled_from([0.0, 0.1, 0.5, 2.0]))
    try:
        before = allocate(inst).limits["limit_cube"]
    except InfeasibleError:  # floors above capacity: nothing to compare
        return
    after = allocate(raised(inst, who, score_up, need_up)).limits["limit_cube"]
    b = before[before.index.get_level_values("seller_id") == who]
    a = after.reindex(b.index)
    assert (a >= b - 1e-6).all(), pd.concat([b.rename("before"), a.rename("after")], axis=1)


def test_simulate_periods_runs_is_seeded_and_shows_groups_and_calibration(tmp_path, capsys):
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        code, cap = run_cli(["simulate", "--periods", "2", "--sellers", "60", "--fcs", "3", "--regions", "2", "--seed", "3",
                             "--forecast-method", "seasonal_yoy", "-q", "-o", str(out)], capsys)
        assert code == 0, cap.err
        outs.append(out)
    assert "who gets the space" in cap.out and "coverage_90_weekly" in cap.out
    names = sorted(p.name for p in outs[0].iterdir())
    assert names == [".optalloc-output", "groups.csv", "periods.csv", "summary.json"]
    for n in names:
        assert filecmp.cmp(outs[0] / n, outs[1] / n, shallow=False), n
    groups = pd.read_csv(outs[0] / "groups.csv")
    assert groups["period"].tolist() == [1, 1, 1, 2, 2, 2] and set(groups["group"]) == {"efficient", "overstock", "reformed"}
    assert groups.groupby("period")["limit_share"].sum().round(3).eq(1.0).all()
    periods = pd.read_csv(outs[0] / "periods.csv")
    assert periods["coverage_90_weekly"].between(0.6, 1.0).all()
    summary = json.loads((outs[0] / "summary.json").read_text())
    assert summary["periods"] == 2 and len(summary["coverage_90_weekly"]) == 2
    code, cap = run_cli(["simulate", "--periods", "2", "--sellers", "60", "--fcs", "3", "--regions", "2", "--seed", "4",
                         "--forecast-method", "seasonal_yoy", "-q", "-o", str(tmp_path / "c")], capsys)
    assert code == 0 and not filecmp.cmp(outs[0] / "groups.csv", tmp_path / "c" / "groups.csv", shallow=False)


@pytest.mark.parametrize("periods", ["0", "41", "two"])
def test_simulate_refuses_periods_out_of_bounds(periods, tmp_path, capsys):
    code, cap = run_cli(["simulate", "--periods", periods, "-q", "-o", str(tmp_path / "out")], capsys)
    assert code == 2 and "--periods" in cap.err and not (tmp_path / "out").exists()


def test_simulate_periods_refuses_a_pool_of_all_the_capacity(tmp_path, capsys):
    """The loop sizes the capacity net of the pool to tightness x need: a pool share of 1 leaves nothing to size."""
    code, cap = run_cli(["simulate", "--periods", "1", "--pool-share", "1", "-q", "-o", str(tmp_path / "out")], capsys)
    assert code == 2 and "--pool-share" in cap.err and not (tmp_path / "out").exists()


def test_every_seller_gets_needs_for_every_storage_type_and_month_it_can_sell_in(tmp_path, capsys):
    from optalloc.forecast import run_forecast
    from optalloc.forecast.run import can_sell
    from optalloc.io import load_instance

    path = tmp_path / "inst"
    code, cap = run_cli(["generate", "-o", str(path), "--sellers", "40", "--requests", "0", "-q", "--history-weeks", "60"], capsys)
    assert code == 0, cap.err
    inst = load_instance(path)
    h = inst.history
    sellers = sorted(h["seller_id"].unique())
    new_sellers = sellers[:3]  # no history at all
    one_type = sellers[3]  # history in one storage type only
    kept_type = sorted(h.loc[h["seller_id"] == one_type, "storage_type"].unique())[0]
    h = h[~h["seller_id"].isin(new_sellers) & ~((h["seller_id"] == one_type) & (h["storage_type"] != kept_type))]
    inst = replace(inst, history=h.reset_index(drop=True))
    result = run_forecast(inst, method="seasonal_naive")
    key = ["seller_id", "storage_type", "month"]
    want = can_sell(inst)
    got = result.needs.merge(want, on=key, how="right", indicator=True)
    assert (got["_merge"] == "both").all()  # every (seller, type, month) it can sell in has a row
    assert set(inst.sellers["seller_id"]) <= set(result.needs["seller_id"])
    needs = result.needs.set_index(key)
    other = needs.loc[one_type]
    assert (other.drop(index=kept_type, level="storage_type", errors="ignore")[["p50_cube", "p90_cube"]] == 0).all().all()
    new = needs.loc[new_sellers[0]]
    assert (new["p50_cube"] > 0).all() and (new["p90_cube"] >= new["p50_cube"]).all()
    for (k, m), row in new.iterrows():  # a new seller's need is its storage type's new-seller need, the same for all of them
        assert row["p50_cube"] == needs.loc[(new_sellers[1], k, m), "p50_cube"]
    assert result.summary["sellers_without_history"] == 3
    assert not (set(new_sellers) & set(result.performance["seller_id"]))  # no score: they keep their given one


def test_the_network_is_sized_to_tightness_times_the_forecast_p50_need():
    """sized_network: per storage type and month, capacity net of the pool = tightness x the sellers' P50 need
    (to the cube FC capacity is rounded to), split among FCs by their shares; the pool is pool_share of capacity."""
    from optalloc.forecast.loop import fc_weights, sized_network

    months = ["2026-10", "2026-11"]
    fcs = pd.DataFrame({"fc_id": ["F1", "F2", "F1", "F2"], "region": "east", "storage_type": "standard",
                        "month": ["2026-10", "2026-10", "2026-11", "2026-11"], "capacity_cube": [300.0, 100.0, 50.0, 50.0]})
    needs = pd.DataFrame({"seller_id": ["A", "B", "A", "B"], "storage_type": "standard", "month": ["2026-10", "2026-10", "2026-11", "2026-11"],
                          "p50_cube": [600.0, 400.0, 200.0, 0.0]})
    out = sized_network(fcs, needs, months, fc_weights(fcs, months), 0.9, 0.1)
    # October: 0.9 x 1,000 / 0.9 = 1,000 cube, 3:1; November: 0.9 x 200 / 0.9 = 200 cube, 1:1.
    assert out["capacity_cube"].tolist() == [750.0, 250.0, 100.0, 100.0]
    assert out["pool_cube"].tolist() == [75.0, 25.0, 10.0, 10.0]
    net = (out["capacity_cube"] - out["pool_cube"]).groupby(out["month"]).sum()
    assert net.to_dict() == {"2026-10": 900.0, "2026-11": 180.0}


def test_sellers_who_reform_gain_space_per_need_and_overstockers_lose_it():
    """The report's claim (models/forecast.md, "The loop"): with the network at 0.9 x the forecast P50 need, the
    reformed overstockers (low scores from their history, 6 weeks of cover from period 1 on) get less space per need
    than the efficient sellers in period 1 and more in period 2, once their score has risen; the overstockers, whose
    aged stock keeps their scores low, get the least. Limits never add up to more than the network holds."""
    from optalloc.forecast.loop import simulate_periods
    from optalloc.specs import SimulationSpec

    spec = SimulationSpec(sellers=80, fcs=3, regions=1, seed=0)
    groups, periods, summary = simulate_periods(spec, 2, method="seasonal_yoy")
    g = groups.set_index(["period", "group"])
    per_need = g["limit_per_need"]
    assert g.loc[(1, "reformed"), "sellers"] >= 3 and g.loc[(1, "overstock"), "sellers"] >= 3
    assert g.loc[(2, "reformed"), "mean_score"] > g.loc[(1, "reformed"), "mean_score"] + 100
    assert per_need[1, "reformed"] < per_need[1, "efficient"]
    assert per_need[2, "reformed"] > per_need[1, "reformed"] + 0.2
    assert per_need[2, "reformed"] > per_need[2, "efficient"] > per_need[2, "overstock"]
    # The network is sized to 0.9 x the P50 need: all limits together are at most 90% of all needs
    # (sum over groups of limit/need x need share = total limit / total need).
    overall = (groups["limit_per_need"] * groups["need_share"]).groupby(groups["period"]).sum()
    assert (overall <= 0.9 + 1e-3).all() and (overall > 0.8).all(), overall
    assert summary["limit_per_need"]["reformed"] == [round(float(v), 4) for v in per_need.xs("reformed", level="group")]
