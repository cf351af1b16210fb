"""A test for every rule a plausible one-line bug would break, each at its boundary: rules that only a golden file's
bytes pinned down (regenerate it and they were gone), and boundaries no test sat exactly on."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from conftest import EMPTY_LIMITS, INSTANCES, fc, make, need, request, seller
from optalloc.baseline import allocate
from optalloc.clearing import clear_round, held_grants
from optalloc.errors import InputError


def limits_of(rows: dict[tuple[str, str, str], float]) -> pd.Series:
    return pd.Series(list(rows.values()), index=pd.MultiIndex.from_tuples(list(rows), names=["seller_id", "storage_type", "month"]))


# ---------------------------------------------------------------- the request cap


def test_a_multi_month_request_s_cap_is_that_of_its_smallest_month():
    """cap = max(request_cap_share x the least limit over the months it names, request_cap_cube): a grant holds in every
    month, so the tightest month binds. Limits 1000 (Oct) and 100 (Nov): cap max(0.2 x 100, 10) = 20."""
    months = ("2026-10", "2026-11")
    inst = make(fcs=[fc(month=m, pool_cube=500.0) for m in months], months=months, requests=[
        request("WIDE", 5.0, 50, months="2026-10;2026-11"), request("FITS", 5.0, 20, months="2026-10;2026-11", minute=1)],
        settings={"request_cap_share": 0.2, "request_cap_cube": 10.0})
    res = clear_round(inst, 1, limits=limits_of({("S1", "standard", "2026-10"): 1000.0, ("S1", "standard", "2026-11"): 100.0}))
    g = res.grants.droplevel("round")
    assert g.loc["WIDE", "request_cap_cube"] == 20.0 and g.loc["WIDE", "reason"] == "over_request_cap"
    assert g.loc["FITS", "granted_cube"] == 20.0  # exactly at the cap: granted


def test_a_request_exactly_at_its_cap_is_granted_and_one_milli_cube_above_is_not():
    inst = make(fcs=[fc(pool_cube=500.0)], requests=[request("AT", 5.0, 200.0), request("ABOVE", 5.0, 200.001, minute=1)],
                settings={"request_cap_share": 0.2, "request_cap_cube": 10.0})
    g = clear_round(inst, 1, limits=limits_of({("S1", "standard", "2026-10"): 1000.0})).grants.droplevel("round")
    assert (g.loc["AT", "granted_cube"], g.loc["ABOVE", "reason"]) == (200.0, "over_request_cap")


# ---------------------------------------------------------------- the baseline


def test_the_limit_s_cap_takes_the_p90_when_it_is_above_the_p50():
    """upper = (1 + headroom) x max(P50, P90): with P90 150 above P50 100 and headroom 0.1, a seller with room to spare
    gets 165, not 110."""
    inst = make(fcs=[fc(capacity_cube=10_000.0, pool_cube=0.0)], needs=[need(p50_cube=100.0, p90_cube=150.0)], settings={"headroom": 0.1})
    limits = allocate(inst).limits.droplevel(["storage_type", "month"])
    assert (limits.loc["S1", "upper_cube"], limits.loc["S1", "limit_cube"]) == (165.0, 165.0)


def test_tied_sellers_share_the_marginal_tier_in_proportion_to_its_room_above_their_floors():
    """Two equal sellers, P50 100, tiers [0.5, 1.0], capacity 130; A's floor 70 puts it 20 into tier 2. Tier 1 is full
    for both (100), 10 cube are left for the tied tier-2 pieces, shared by their room above the floors: A 30, B 50, so
    A gets 20 + 10 x 30/80 = 23.75 of tier 2 and B 6.25 (shared by width alone it would be 25 and 5)."""
    inst = make(fcs=[fc(capacity_cube=130.0, pool_cube=0.0)], sellers=[seller("A", floor_cube=70.0), seller("B")], settings={"headroom": 0.1})
    for backend in ("pyomo", "highspy"):
        limits = allocate(inst, {"backend": backend}).limits["limit_cube"].droplevel(["storage_type", "month"])
        assert (limits["A"], limits["B"]) == (73.75, 56.25), backend


@pytest.mark.parametrize("wrong", ["held full below the price", "held empty above the price"])
def test_the_margin_method_frees_a_piece_its_start_held_on_the_wrong_side(monkeypatch, wrong):
    """The margin method's check of a start: a piece held at its upper bound whose value is below its class's price,
    or one held at its floor above it, is freed and the LP solved again; the answer is the whole LP's. The start
    here is made wrong on purpose (no generated start ever held a piece full below the price)."""
    from optalloc.baseline import fast
    from optalloc.baseline import market_data, markets, prepare_baseline, solve_classes
    from optalloc.generate import GenerateSpec, generate
    from optalloc.schemas import SolverOptions

    inst = generate(GenerateSpec(sellers=60, fcs=3, regions=1, storage_types=1, months=1, requests=0, tightness=0.6, seed=4))
    options = SolverOptions(backend="highspy")
    m = market_data(prepare_baseline(inst), *markets(prepare_baseline(inst))[0])
    reference = solve_classes(m, options, method="class_lp")
    real = fast._block_start
    seen = {}

    def spoiled(d, layout, pc, opts, blocks):
        fixed, free = real(d, layout, pc, opts, blocks)
        held = ~free & (pc.ub > pc.lb)
        order = np.argsort(pc.coef)
        if wrong == "held full below the price":  # the cheapest held piece, forced full
            i = next(p for p in order if held[p])
            fixed[i] = pc.ub[i]
        else:  # the dearest held piece, forced to its floor
            i = next(p for p in order[::-1] if held[p])
            fixed[i] = pc.lb[i]
        seen["piece"] = i
        return fixed, free

    monkeypatch.setattr(fast, "_block_start", spoiled)
    margin = solve_classes(m, options, method="margin")
    assert "piece" in seen
    np.testing.assert_allclose(margin.limit, reference.limit, atol=1e-6)
    assert margin.objective == pytest.approx(reference.objective, rel=1e-9)


# ---------------------------------------------------------------- rounds


def test_a_round_holds_the_grants_of_every_earlier_round_not_just_the_last():
    """Pool 100: round 1 grants 60, round 2 grants 30, so round 3 has 10 left (holding only round 2's grants it had 70)."""
    inst = make(fcs=[fc(pool_cube=100.0)], rounds=(1, 2, 3), requests=[
        request("R1", 5.0, 60, round=1), request("R2", 5.0, 30, round=2), request("R3", 5.0, 50, round=3)])
    r1 = clear_round(inst, 1, limits=EMPTY_LIMITS)
    r2 = clear_round(inst, 2, limits=EMPTY_LIMITS, held=held_grants(r1.grants))
    r3 = clear_round(inst, 3, limits=EMPTY_LIMITS, held=held_grants(r1.grants, r2.grants))
    assert r3.grants["granted_cube"].tolist() == [10.0]
    assert r3.pools["held_cube"].tolist() == [90.0]
    from optalloc import Scenario  # the one path carries them the same way

    whole = Scenario(inst).optimize()
    assert whole.grants["granted_cube"].tolist() == [60.0, 30.0, 10.0]


# ---------------------------------------------------------------- settlement


def test_the_extra_space_a_seller_used_is_capped_once_over_all_its_grants_of_the_month():
    """Two grants of 10 cube in October, a baseline of 10, 25 cube used: 15 of the 20 granted cube were used, so
    attributed sales are sales x 15/25, shared 50/50 (each grant capped alone would count 10 + 10 = 20)."""
    from optalloc.settlement import settle

    grants = pd.DataFrame({"round": [1, 1], "request_id": ["G1", "G2"], "seller_id": ["S1", "S1"], "storage_type": ["standard"] * 2,
                           "months": [("2026-10",)] * 2, "granted_cube": [10.0, 10.0], "max_fee_per_cube": [1.0, 1.0]}
                          ).set_index(["round", "request_id"])
    prices = pd.DataFrame({"round": [1], "storage_type": ["standard"], "clearing_price": [1.0]}).set_index(["round", "storage_type"])
    sales = pd.DataFrame({"seller_id": ["S1"], "storage_type": ["standard"], "month": ["2026-10"], "sales": [2500.0], "used_cube": [25.0]})
    from optalloc.schemas import Settings

    out = settle(grants, prices, limits_of({("S1", "standard", "2026-10"): 10.0}), sales, pd.DataFrame(columns=["request_id", "incremental_sales"]),
                 Settings(credit_rate=0.15, credit_cap_share=1.0))
    assert out["attributed_sales"].tolist() == [750.0, 750.0]  # 2500 x 15 / 25 = 1500, half each
    assert out["credit"].tolist() == [10.0, 10.0]  # 15% of 750 = 112.50, capped at the fee of 10


# ---------------------------------------------------------------- validation at its bounds


def test_a_min_cube_equal_to_its_max_cube_is_valid_and_one_milli_cube_above_is_not():
    make(requests=[request("EQ", 1.0, 5.0, min_cube=5.0)])
    with pytest.raises(InputError, match="min_cube 5.001 exceeds max_cube 5"):
        make(requests=[request("ABOVE", 1.0, 5.0, min_cube=5.001)])


@pytest.mark.parametrize("fee, ok", [(4.25, True), (4.255, False), (4.2500000001, True), (0.0, True), (1e6, True), (1e6 + 0.01, False)])
def test_a_fee_is_whole_cents_within_its_bounds(fee, ok):
    if ok:
        make(requests=[request("R", fee, 1.0)])
    else:
        with pytest.raises(InputError, match="max_fee_per_cube"):
            make(requests=[request("R", fee, 1.0)])


# ---------------------------------------------------------------- forecasting and the nightly job


def test_a_series_of_fewer_than_eight_observed_weeks_is_cold_and_one_of_eight_is_not():
    from optalloc.forecast.methods import COLD_START_WEEKS, cold_start

    W = 40
    Y = np.full((5, W), np.nan)
    Y[:3, :] = 10.0  # mature series, the peers
    Y[3, -(COLD_START_WEEKS - 1):] = 5.0  # 7 observed weeks: cold
    Y[4, -COLD_START_WEEKS:] = 5.0  # 8: not cold
    keys = pd.DataFrame({"seller_id": list("ABCDE"), "storage_type": ["standard"] * 5, "category": ["toys"] * 5, "size_band": ["s"] * 5})
    q = np.ones((5, 4))
    _, _, cold = cold_start(q, q * 2, Y, keys)
    assert COLD_START_WEEKS == 8 and cold.tolist() == [False, False, False, True, False]


def test_a_nightly_run_dated_on_a_round_s_close_date_does_not_clear_it(tmp_path):
    """A round takes requests through its close date; the batch clears it on its first run dated after that day."""
    from optalloc.batch import run_batch
    from optalloc.io import load_instance
    from optalloc.store import Store

    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    store.ingest(load_instance(INSTANCES / "small_network"))
    run_batch(store, date(2026, 9, 9))  # round 1 closes on 2026-09-09
    assert store.rounds()["cleared_run_id"].isna().all()
    run_batch(store, date(2026, 9, 10))
    assert store.rounds()["cleared_run_id"].notna().tolist() == [True, False, False]
