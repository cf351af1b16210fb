"""Baseline allocation LP: hand-solvable cases, the infeasible case, and the two build paths agreeing."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import examples, fc, make, need, seller
from optalloc.baseline import allocate, build_baseline_model, prepare_baseline
from optalloc.errors import InfeasibleError
from optalloc.generate import GenerateSpec, generate
from optalloc.schemas import SolverOptions

PYOMO = SolverOptions(backend="pyomo")
ARRAYS = SolverOptions(backend="highspy")
TWO = [seller("A", productivity=10.0), seller("B", productivity=5.0)]  # A is worth more per cube


def limits_of(result):
    return result.limits["limit_cube"].droplevel(["storage_type", "month"]).to_dict()


@pytest.mark.parametrize("options", [PYOMO, ARRAYS], ids=["pyomo", "highspy"])
@pytest.mark.parametrize(
    "net_capacity, expected",
    [
        (100.0, {"A": 50.0, "B": 50.0}),  # scarce: everyone's first half of need before anyone's second
        (150.0, {"A": 100.0, "B": 50.0}),  # then the more valuable seller's second half
        (300.0, {"A": 110.0, "B": 110.0}),  # ample: need x (1 + 10% headroom)
    ],
)
def test_tiers_share_scarce_space_without_starving_anyone(options, net_capacity, expected):
    inst = make(fcs=[fc(capacity_cube=net_capacity, pool_cube=0.0)], sellers=TWO)
    assert limits_of(allocate(inst, options)) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("options", [PYOMO, ARRAYS], ids=["pyomo", "highspy"])
@pytest.mark.parametrize(
    "settings, expected",
    [
        ({}, {"A": 50.0, "B": 50.0}),  # tier 1 = half of P50: both first halves (50 + 50)
        ({"need_tiers": [0.25, 1.0]}, {"A": 75.0, "B": 25.0}),  # tier 1 = a quarter: 25 + 25, then 50 of A's tier 2
        ({"need_tiers": [0.8, 1.0]}, {"A": 80.0, "B": 20.0}),  # tier 1 = 80 each: A's, then the rest of B's
        # the second tier worth nearly the first (0.9 > B's value / A's): A's whole P50 before any of B's
        ({"tier_weights": [1.0, 0.9, 0.01]}, {"A": 100.0, "B": 0.0}),
    ],
    ids=["default", "quarter-tier", "wide-tier", "flat-weights"],
)
def test_need_tiers_and_tier_weights_decide_who_gets_scarce_space(options, settings, expected):
    """100 cube for A (productivity 10) and B (5), P50 100 each (models/baseline.md, "Objective"): with the default
    weights (each tier worth a tenth of the one before, below the value floor 0.2) every seller's tier j is served
    before anyone's tier j+1, and within a tier the more valuable seller first."""
    inst = make(fcs=[fc(capacity_cube=100.0, pool_cube=0.0)], sellers=TWO, settings=settings)
    assert limits_of(allocate(inst, options)) == pytest.approx(expected, abs=1e-6)


def test_floor_is_guaranteed_and_the_rest_follows_value():
    sellers = [seller("A", productivity=10.0), seller("B", productivity=5.0, floor_cube=80.0)]
    inst = make(fcs=[fc(capacity_cube=100.0, pool_cube=0.0)], sellers=sellers)
    assert limits_of(allocate(inst)) == pytest.approx({"A": 20.0, "B": 80.0})


def test_pool_is_taken_out_of_capacity_before_the_baseline():
    inst = make(fcs=[fc(capacity_cube=300.0, pool_cube=200.0)], sellers=TWO)
    res = allocate(inst)
    assert sum(limits_of(res).values()) == pytest.approx(100.0)
    assert res.fc_prices.loc[("F1", "standard", "2026-10"), "baseline_cube"] == pytest.approx(100.0)


@pytest.mark.parametrize("pool_share, baseline_cube", [(0.10, 270.0), (0.0, 300.0), (0.5, 150.0), (1.0, 0.0)])
def test_an_fc_without_pool_cube_sets_aside_pool_share_of_its_capacity(pool_share, baseline_cube):
    """pool_cube left blank: the pool is pool_share x capacity, and the baseline shares the rest (needs ample)."""
    inst = make(fcs=[fc(capacity_cube=300.0)], sellers=TWO, needs=[need("A", p50_cube=500.0), need("B", p50_cube=500.0)],
                settings={"pool_share": pool_share})
    assert inst.fcs["pool_cube"].tolist() == [pytest.approx(300.0 * pool_share)]
    res = allocate(inst)
    assert sum(limits_of(res).values()) == pytest.approx(baseline_cube)
    assert res.fc_prices.loc[("F1", "standard", "2026-10"), "pool_cube"] == pytest.approx(300.0 * pool_share)


def test_region_eligibility_limits_where_a_seller_is_placed():
    fcs = [fc("E1", region="east", capacity_cube=1000.0, pool_cube=0.0), fc("W1", region="west", capacity_cube=1000.0, pool_cube=0.0)]
    sellers = [seller("A", regions="east"), seller("B", regions="west;east")]
    res = allocate(make(fcs=fcs, sellers=sellers))
    placed = res.placements.reset_index()
    assert set(placed.loc[placed.seller_id == "A", "fc_id"]) == {"E1"}


def test_shadow_price_is_the_value_of_the_marginal_tier():
    # 120 cube: both first halves (50 + 50), then 20 of A's second tier: the next cube is worth
    # A's tier-2 coefficient = value(A) x 0.1 = 10 x (0.5 + 500/1000) x 0.1 = 1.0 $/cube-month.
    inst = make(fcs=[fc(capacity_cube=120.0, pool_cube=0.0)], sellers=TWO)
    for options in (PYOMO, ARRAYS):
        res = allocate(inst, options)
        assert res.fc_prices.loc[("F1", "standard", "2026-10"), "shadow_price"] == pytest.approx(1.0)


def test_infeasible_floors_name_the_fc_storage_type_and_month():
    sellers = [seller("A", floor_cube=80.0), seller("B", floor_cube=80.0)]
    inst = make(fcs=[fc("FC-NORTH", capacity_cube=200.0, pool_cube=50.0)], sellers=sellers)
    with pytest.raises(InfeasibleError) as err:
        allocate(inst)
    text = str(err.value)
    assert "FC-NORTH" in text and "standard" in text and "2026-10" in text
    assert err.value.where == [{"storage_type": "standard", "month": "2026-10", "fc_ids": ["FC-NORTH"], "shortfall_cube": 10.0}]


def test_a_floor_no_fc_can_hold_is_named_before_solving():
    # A seller whose only region has no FC is rejected at load time; a storage type missing there is caught here.
    fcs = [fc("E1", region="east", storage_type="standard"), fc("W1", region="west", storage_type="oversize")]
    sellers = [seller("W", regions="west", floor_cube=5.0)]
    inst = make(fcs=fcs, sellers=sellers, needs=[need("W", storage_type="standard")])
    with pytest.raises(InfeasibleError, match="seller W standard 2026-10"):
        allocate(inst)


def test_model_names_its_constraint_families_as_the_formulation_does():
    inst = make(fcs=[fc(capacity_cube=100.0, pool_cube=0.0)], sellers=[seller("A", floor_cube=10.0)])
    m = build_baseline_model(prepare_baseline(inst))
    assert {c.local_name for c in m.component_objects(ctype=__import__("pyomo.environ").environ.Constraint)} == {
        "fc_capacity", "limit_balance", "seller_floor"
    }


@settings(max_examples=examples(12), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), tightness=st.floats(0.3, 1.5))
def test_pyomo_and_array_builds_agree(seed, tightness):
    inst = generate(GenerateSpec(sellers=25, fcs=4, regions=2, storage_types=2, months=2, requests=0, tightness=tightness, seed=seed))
    a, b = allocate(inst, PYOMO), allocate(inst, ARRAYS)
    assert a.objective == pytest.approx(b.objective, rel=1e-9)
    np.testing.assert_allclose(a.limits["limit_cube"], b.limits["limit_cube"], atol=1e-5)


@settings(max_examples=examples(10), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), second_region=st.sampled_from([0.0, 0.5]))
def test_fast_path_placement_sums_to_limits_at_eligible_fcs_within_capacity(seed, second_region):
    inst = generate(GenerateSpec(sellers=60, fcs=6, regions=3, storage_types=2, months=2, requests=0, second_region_share=second_region, seed=seed))
    res = allocate(inst, ARRAYS)
    placed = res.placements.reset_index()
    per_cell = placed.groupby(["seller_id", "storage_type", "month"])["cube"].sum()
    limits = res.limits["limit_cube"]
    np.testing.assert_allclose(per_cell.reindex(limits.index, fill_value=0.0), limits, atol=1e-5)
    regions = inst.sellers.set_index("seller_id")["regions"]
    fc_region = inst.fcs.drop_duplicates("fc_id").set_index("fc_id")["region"]
    assert all(fc_region[f] in regions[s] for s, f in zip(placed["seller_id"], placed["fc_id"]))
    used = placed.groupby(["fc_id", "storage_type", "month"])["cube"].sum()
    net = res.fc_prices["net_cube"].reindex(used.index)
    assert (used <= net + 1e-6).all()


@settings(max_examples=examples(8), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), tightness=st.floats(0.3, 1.5), options=st.sampled_from([PYOMO, ARRAYS]))
def test_one_lp_per_market_gives_the_single_lps_limits_shadow_prices_and_objective(seed, tightness, options):
    """models/baseline.md, "One LP per market": nothing links two (storage type, month) markets, so solving each on
    its own is exact. Placements are compared as placements (valid, see above), not cube by cube: where several FCs
    of a class have room, how a class's cube is spread over them is not unique."""
    inst = generate(GenerateSpec(sellers=40, fcs=5, regions=2, storage_types=3, months=2, requests=0, tightness=tightness, seed=seed))
    split, whole = allocate(inst, options), allocate(inst, options, split=False)
    assert split.objective == pytest.approx(whole.objective, rel=1e-9)
    np.testing.assert_allclose(split.limits["limit_cube"], whole.limits["limit_cube"], atol=1e-6)
    assert split.limits.index.equals(whole.limits.index) and split.fc_prices.index.equals(whole.fc_prices.index)
    np.testing.assert_allclose(split.fc_prices["shadow_price"], whole.fc_prices["shadow_price"], atol=1e-6)
    np.testing.assert_allclose(split.fc_prices["baseline_cube"].groupby(level=["storage_type", "month"]).sum(),
                               whole.fc_prices["baseline_cube"].groupby(level=["storage_type", "month"]).sum(), atol=1e-5)


@pytest.mark.parametrize("options", [PYOMO, ARRAYS], ids=["pyomo", "highspy"])
def test_a_market_with_fcs_but_no_sellers_is_reported_empty(options):
    fcs = [fc("E1", storage_type="standard"), fc("E1", storage_type="oversize", capacity_cube=500.0)]
    inst = make(fcs=fcs, sellers=[seller("A")])  # needs only in standard
    res = allocate(inst, options)
    assert res.fc_prices.loc[("E1", "oversize", "2026-10"), ["baseline_cube", "shadow_price"]].tolist() == [0.0, 0.0]
    assert limits_of(res) == pytest.approx({"A": 110.0})


def test_an_infeasible_market_is_named_and_the_others_do_not_hide_it():
    fcs = [fc("E1", storage_type="standard", capacity_cube=1000.0), fc("E1", storage_type="oversize", capacity_cube=50.0, pool_cube=0.0)]
    sellers = [seller("A", floor_cube=60.0)]
    inst = make(fcs=fcs, sellers=sellers, needs=[need("A", storage_type="standard"), need("A", storage_type="oversize")])
    with pytest.raises(InfeasibleError) as err:
        allocate(inst, ARRAYS)
    assert err.value.where == [{"storage_type": "oversize", "month": "2026-10", "fc_ids": ["E1"], "shortfall_cube": 10.0}]


@settings(max_examples=examples(15), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), tightness=st.floats(0.2, 1.5), floors=st.floats(0.0, 0.6), second_region=st.sampled_from([0.0, 0.4]))
def test_the_margin_method_equals_the_whole_class_lp(seed, tightness, floors, second_region):
    """models/baseline.md, "The exact fast method": the LP solved on its margin has the whole LP's limits, shadow
    prices and objective, floors included (a share of the sellers get a floor of up to their P50)."""
    from dataclasses import replace

    from optalloc.baseline import solve_classes, extract_baseline, market_data, markets

    inst = generate(GenerateSpec(sellers=300, fcs=6, regions=3, storage_types=1, months=2, requests=0, tightness=tightness,
                                 second_region_share=second_region, seed=seed))
    rng = np.random.default_rng(seed)
    needs = inst.needs.assign(floor_cube=np.where(rng.random(len(inst.needs)) < floors, np.round(inst.needs["p50_cube"] * rng.random(len(inst.needs)), 3), np.nan))
    d = prepare_baseline(replace(inst, needs=needs))
    for k, t in markets(d):
        m = market_data(d, k, t)
        try:
            whole = extract_baseline(m, solve_classes(m, ARRAYS, method="class_lp"))
        except InfeasibleError:
            with pytest.raises(InfeasibleError):
                solve_classes(m, ARRAYS, method="margin")
            continue
        margin = extract_baseline(m, solve_classes(m, ARRAYS, method="margin"))
        assert margin.objective == pytest.approx(whole.objective, rel=1e-9)
        np.testing.assert_allclose(margin.limits["limit_cube"], whole.limits["limit_cube"], atol=1e-6)
        np.testing.assert_allclose(margin.fc_prices["shadow_price"], whole.fc_prices["shadow_price"], atol=1e-6)


TIED = [seller("A", productivity=10.0), seller("B", productivity=10.0)]  # equal value: they tie in every tier


@pytest.mark.parametrize("options", [PYOMO, ARRAYS], ids=["pyomo", "highspy"])
@pytest.mark.parametrize(
    "sellers, settings, net, expected",
    [
        # tier 1 widths 50 and 150 (half of P50): 100 cube of tier 1 shared 1 : 3
        (TIED, {}, 100.0, {"A": 25.0, "B": 75.0}),
        # both first tiers full (200), the tied second tiers (50, 150) share the other 100 in the same proportion
        (TIED, {}, 300.0, {"A": 75.0, "B": 225.0}),
        # nobody's space is worth anything: every seller ties, and the same rule splits every tier
        ([seller("A", productivity=0.0), seller("B", productivity=0.0)], {}, 100.0, {"A": 25.0, "B": 75.0}),
        # a value floor of 1 compresses every seller to the same value
        ([seller("A", productivity=10.0), seller("B", productivity=3.0)], {"value_floor": 1.0}, 100.0, {"A": 25.0, "B": 75.0}),
    ],
    ids=["tier1", "tier2", "all-zero-value", "value-floor-1"],
)
def test_tied_sellers_share_the_marginal_tier_in_proportion_to_its_widths(options, sellers, settings, net, expected):
    inst = make(fcs=[fc(capacity_cube=net, pool_cube=0.0)], sellers=sellers, settings=settings,
                needs=[need("A", p50_cube=100.0), need("B", p50_cube=300.0)])
    assert limits_of(allocate(inst, options)) == pytest.approx(expected, abs=1e-6)


def test_a_baseline_stopped_at_its_time_limit_is_an_error_even_when_nonoptimal_is_allowed_but_nothing_was_found():
    """The margin method's solves stop too: a clean SolveError (exit 4), not a crash on a missing solution."""
    from optalloc.errors import SolveError

    inst = generate(GenerateSpec(sellers=3000, fcs=10, regions=3, storage_types=1, months=1, requests=0, seed=3))
    for allow in (False, True):
        with pytest.raises(SolveError, match="stopped_at_limit"):
            allocate(inst, SolverOptions(backend="highspy", time_limit=1e-6, allow_nonoptimal=allow))
