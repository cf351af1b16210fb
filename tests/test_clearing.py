"""Reservation clearing: hand-solvable rounds, the audit, and the exact methods agreeing."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import EMPTY_LIMITS, examples, fc, make, request, seller
from optalloc.clearing import build_clearing_model, clear_round, held_grants, prepare_clearing
from optalloc.generate import GenerateSpec, generate, generate_single_pool
from optalloc.baseline import allocate
from optalloc.errors import InputError

METHODS = ["sort", "pyomo", "highspy"]
SOLVERS = ["pyomo", "highspy"]


def one_pool(requests, pool=100.0, settings=None, **kw):
    return make(fcs=[fc(capacity_cube=1000.0, pool_cube=pool)], requests=requests, settings=settings, **kw)


def with_rule(inst, rule):
    tables = {"fcs": inst.fcs, "sellers": inst.sellers, "needs": inst.needs, "requests": inst.requests}
    return type(inst).from_tables(period=inst.period, settings=inst.settings.model_copy(update={"clearing_rule": rule}), tables=tables)


def granted(res) -> dict:
    return res.grants["granted_cube"].droplevel("round").to_dict()


@pytest.mark.parametrize("method", METHODS)
def test_highest_fee_first_then_earliest_then_smallest_id(method):
    inst = one_pool(
        [
            request("R-late", 5.0, 60, minute=2),
            request("R-early", 5.0, 60, minute=1),
            request("R-high", 7.0, 30, minute=9),
            request("R-low", 3.0, 50, minute=0),
        ]
    )
    res = clear_round(inst, 1, limits=EMPTY_LIMITS, method=method)
    assert granted(res) == {"R-early": 60.0, "R-high": 30.0, "R-late": 10.0, "R-low": 0.0}
    assert res.prices.loc[(1, "standard"), "clearing_price"] == 5.0
    assert res.pools["dual_price"].iloc[0] == 5.0  # the marginal request is partly filled: the dual is its fee
    audit = res.grants.droplevel("round")
    assert audit.loc["R-late", ["status", "reason"]].tolist() == ["partially_granted", "outbid"]
    assert audit.loc["R-low", ["status", "reason"]].tolist() == ["rejected", "outbid"]


@pytest.mark.parametrize("method", METHODS)
def test_same_time_ties_go_to_the_smaller_request_id(method):
    inst = one_pool([request("R-b", 5.0, 80), request("R-a", 5.0, 80)])
    assert granted(clear_round(inst, 1, limits=EMPTY_LIMITS, method=method)) == {"R-a": 80.0, "R-b": 20.0}


@pytest.mark.parametrize("method", SOLVERS)
def test_a_multi_month_grant_holds_the_same_cube_in_every_month(method):
    months = ("2026-10", "2026-11")
    fcs = [fc(month="2026-10", pool_cube=100.0), fc(month="2026-11", pool_cube=50.0)]
    inst = make(fcs=fcs, months=months, requests=[request("R1", 5.0, 80, months="2026-10;2026-11")])
    res = clear_round(inst, 1, limits=EMPTY_LIMITS, method=method)
    assert granted(res) == {"R1": 50.0}
    pools = res.pools.droplevel(["round", "fc_id", "storage_type"])
    assert pools["pool_after"].to_dict() == {"2026-10": 50.0, "2026-11": 0.0}


@pytest.mark.parametrize("method", SOLVERS)
def test_welfare_min_cube_makes_a_mip_and_its_prices_come_from_the_fixed_lp(method):
    inst = one_pool(
        [
            request("R1", 5.0, 60, min_cube=60, minute=1),
            request("R2", 4.0, 60, min_cube=60, minute=2),
            request("R3", 3.0, 50, minute=3),
        ],
        settings={"clearing_rule": "welfare"},
    )
    res = clear_round(inst, 1, limits=EMPTY_LIMITS, method=method)
    assert granted(res) == {"R1": 60.0, "R2": 0.0, "R3": 40.0}
    assert res.prices.loc[(1, "standard"), "method"] == "mip"
    assert res.prices.loc[(1, "standard"), "clearing_price"] == 3.0
    assert res.pools["dual_price"].iloc[0] == pytest.approx(3.0)
    r2 = res.grants.droplevel("round").loc["R2"]
    assert r2["reason"] == "min_cube_did_not_fit"
    assert bool(r2["paradoxically_rejected"])  # fee 4 > price 3, yet rejected


def test_requests_below_reserve_or_over_the_cap_are_rejected_with_their_reason():
    inst = one_pool(
        [request("R-cheap", 2.0, 10), request("R-big", 9.0, 250), request("R-ok", 6.0, 10)],
        settings={"reserve_price": 3.0, "request_cap_share": 0.2, "request_cap_cube": 100.0},
    )
    limits = pd.Series([1000.0], index=pd.MultiIndex.from_tuples([("S1", "standard", "2026-10")], names=["seller_id", "storage_type", "month"]))
    res = clear_round(inst, 1, limits=limits)
    audit = res.grants.droplevel("round")
    assert audit.loc["R-cheap", "reason"] == "below_reserve"
    assert audit.loc["R-big", "reason"] == "over_request_cap"  # cap = max(0.2 x 1000, 100) = 200 < 250
    assert audit.loc["R-big", "request_cap_cube"] == 200.0
    assert audit.loc["R-ok", "status"] == "granted"


def test_pool_left_over_carries_to_the_next_round_and_runs_out():
    inst = one_pool([request("R1", 5.0, 70, round=1), request("R2", 4.0, 50, round=2), request("R3", 9.0, 10, round=3)], rounds=(1, 2, 3))
    r1 = clear_round(inst, 1, limits=EMPTY_LIMITS)
    r2 = clear_round(inst, 2, limits=EMPTY_LIMITS, held=held_grants(r1.grants))
    r3 = clear_round(inst, 3, limits=EMPTY_LIMITS, held=held_grants(r1.grants, r2.grants))
    assert granted(r2) == {"R2": 30.0}
    assert r3.grants.droplevel("round").loc["R3", "reason"] == "pool_exhausted"
    assert r3.pools[["held_cube", "granted_cube", "pool_after"]].iloc[0].tolist() == [100.0, 0.0, 0.0]


@pytest.mark.parametrize("method", SOLVERS)
def test_earlier_grants_move_between_fcs_to_make_room(method):
    # Round 1's grant could sit at E1 or E2; round 2's request can only use E2. Holding grants (not
    # placements) lets round 1's cube move to E1, so round 2 is served in full whatever round 1 chose.
    fcs = [fc("E1", region="east", pool_cube=100.0), fc("E2", region="east", pool_cube=100.0), fc("W2", region="west", pool_cube=0.0)]
    fcs[1]["region"] = "west"
    sellers = [seller("A", regions="east;west"), seller("B", regions="west")]
    reqs = [request("R1", 5.0, 100, seller_id="A", round=1), request("R2", 4.0, 100, seller_id="B", round=2)]
    inst = make(fcs=fcs, sellers=sellers, requests=reqs, rounds=(1, 2))
    r1 = clear_round(inst, 1, limits=EMPTY_LIMITS, method=method)
    r2 = clear_round(inst, 2, limits=EMPTY_LIMITS, held=held_grants(r1.grants), method=method)
    assert granted(r2) == {"R2": 100.0}
    assert r2.placements.droplevel("round")["cube"].to_dict() == {("R1", "E1"): 100.0, ("R2", "E2"): 100.0}


def test_grants_are_placed_only_at_fcs_in_the_sellers_regions():
    fcs = [fc("E1", region="east", pool_cube=100.0), fc("W1", region="west", pool_cube=100.0)]
    sellers = [seller("A", regions="east"), seller("B", regions="west"), seller("C", regions="north")]
    fcs.append(fc("N1", region="north", storage_type="oversize", pool_cube=100.0))
    reqs = [request("RA", 5.0, 150, seller_id="A"), request("RB", 5.0, 30, seller_id="B"), request("RC", 5.0, 10, seller_id="C")]
    res = clear_round(make(fcs=fcs, sellers=sellers, requests=reqs), 1, limits=EMPTY_LIMITS, method="pyomo")
    assert granted(res) == {"RA": 100.0, "RB": 30.0, "RC": 0.0}
    assert res.placements.droplevel("round").index.tolist() == [("RA", "E1"), ("RB", "W1")]
    assert res.grants.droplevel("round").loc["RC", "reason"] == "no_eligible_pool"


def test_pro_rata_shares_the_marginal_level_and_drops_requests_below_min_cube():
    inst = one_pool(
        [request("R1", 5.0, 60), request("R2", 4.0, 60), request("R3", 4.0, 40, min_cube=30)],
        settings={"tie_rule": "pro_rata"},
    )
    # Level $5 takes 60; $4 asks 100 for 40 left: shares 24 / 16, R3 falls below 30 and is dropped; R2 gets 40.
    assert granted(clear_round(inst, 1, limits=EMPTY_LIMITS)) == {"R1": 60.0, "R2": 40.0, "R3": 0.0}


def test_pro_rata_refuses_rounds_it_is_not_defined_for():
    fcs = [fc("E1", pool_cube=50.0), fc("E2", pool_cube=50.0)]
    inst = make(fcs=fcs, requests=[request("R1", 5.0, 60)], settings={"tie_rule": "pro_rata"})
    with pytest.raises(InputError, match="pro_rata"):
        clear_round(inst, 1, limits=EMPTY_LIMITS)


def test_model_names_its_constraint_families_as_the_formulation_does():
    inst = one_pool([request("R1", 5.0, 60, min_cube=10)])
    m = build_clearing_model(prepare_clearing(inst, 1, EMPTY_LIMITS))
    names = {c.local_name for c in m.component_objects(ctype=__import__("pyomo.environ").environ.Constraint)}
    assert names == {"pool_capacity", "grant_placement", "held_placement", "min_fill", "max_fill"}


# ------------------------------------------------------------------ properties

fees = st.sampled_from([1.0, 2.5, 3.0, 3.0, 4.25, 5.0, 5.0, 7.5])  # repeats: ties are the interesting case
single_pool_requests = st.lists(st.tuples(fees, st.integers(1, 80), st.integers(0, 5)), min_size=1, max_size=25)


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reqs=single_pool_requests, pool=st.integers(0, 600_000).map(lambda x: x / 1000))
def test_a_single_pool_divisible_round_equals_the_greedy_sort_exactly(reqs, pool):
    inst = one_pool([request(f"R{i:02d}", f, c, minute=m) for i, (f, c, m) in enumerate(reqs)], pool=pool)
    sort = clear_round(inst, 1, limits=EMPTY_LIMITS, method="sort")
    for method in SOLVERS:
        lp = clear_round(inst, 1, limits=EMPTY_LIMITS, method=method)
        assert granted(lp) == granted(sort)
        pd.testing.assert_series_equal(lp.prices["clearing_price"], sort.prices["clearing_price"])
        # The LP's dual of the pool lies between the highest fee left short and the lowest fee granted.
        g = sort.grants
        short = g.loc[(g.granted_cube < g.max_cube) & (g.reason == "outbid"), "max_fee_per_cube"]
        lo = short.max() if len(short) and sort.pools["pool_after"].iloc[0] == 0 else 0.0
        hi = g.loc[g.granted_cube > 0, "max_fee_per_cube"].min() if (g.granted_cube > 0).any() else np.inf
        assert lo - 1e-9 <= lp.pools["dual_price"].iloc[0] <= max(hi, lo) + 1e-9


@pytest.mark.parametrize("rule", ["priority", "welfare"])
@settings(max_examples=examples(15), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 100_000), min_share=st.sampled_from([0.0, 0.2]))
@example(seed=3951, min_share=0.2)  # HiGHS semi-continuous columns returned 9e-5 < min_cube here, then a solve error
def test_pyomo_reference_and_highspy_fast_path_agree_on_general_rounds(rule, seed, min_share):
    inst = with_rule(generate(GenerateSpec(sellers=30, fcs=4, regions=2, storage_types=2, months=3, rounds=2, requests=60,
                                           min_cube_share=min_share, seed=seed)), rule)
    limits = allocate(inst).limits["limit_cube"]
    for r in inst.period.rounds:
        a = clear_round(inst, r, limits=limits, method="pyomo")
        b = clear_round(inst, r, limits=limits, method="highspy")
        np.testing.assert_allclose(a.grants["granted_cube"], b.grants["granted_cube"], atol=1e-6)
        pd.testing.assert_series_equal(a.prices["clearing_price"], b.prices["clearing_price"])
        pd.testing.assert_series_equal(a.prices["objective"], b.prices["objective"])


@settings(max_examples=examples(20), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 100_000), who=st.integers(0, 39), raise_by=st.sampled_from([0.01, 0.5, 3.0]), min_share=st.sampled_from([0.0, 0.3]))
def test_raising_ones_own_fee_never_lowers_ones_own_grant(seed, who, raise_by, min_share):
    inst = generate(GenerateSpec(sellers=20, fcs=3, regions=2, storage_types=1, months=2, rounds=1, requests=40, min_cube_share=min_share, seed=seed))
    limits = allocate(inst).limits["limit_cube"]
    before = clear_round(inst, 1, limits=limits, method="highspy").grants["granted_cube"]
    reqs = inst.requests.copy()
    reqs.loc[who, "max_fee_per_cube"] += raise_by
    higher = type(inst).from_tables(period=inst.period, settings=inst.settings, tables={
        "fcs": inst.fcs, "sellers": inst.sellers, "needs": inst.needs, "requests": reqs})
    after = clear_round(higher, 1, limits=limits, method="highspy").grants["granted_cube"]
    rid = (1, reqs.loc[who, "request_id"])
    assert after.loc[rid] >= before.loc[rid] - 1e-6


def test_a_million_cube_round_clears_by_sort_and_the_sort_matches_highspy_on_a_sample():
    inst = generate_single_pool(2_000, seed=3)
    sort = clear_round(inst, 1, limits=EMPTY_LIMITS)
    assert sort.prices["method"].iloc[0] == "sort"
    lp = clear_round(inst, 1, limits=EMPTY_LIMITS, method="highspy")
    assert granted(lp) == granted(sort)


@settings(max_examples=examples(10), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 100_000))
def test_fast_path_places_each_grant_whole_at_eligible_fcs(seed):
    inst = generate(GenerateSpec(sellers=40, fcs=6, regions=3, storage_types=2, months=3, rounds=1, requests=120,
                                 second_region_share=0.5, min_cube_share=0.1, seed=seed))
    res = clear_round(inst, 1, limits=allocate(inst).limits["limit_cube"], method="highspy")
    placed = res.placements.reset_index()
    per_request = placed.groupby("request_id")["cube"].sum()
    grants = res.grants.droplevel("round")["granted_cube"]
    np.testing.assert_allclose(per_request.reindex(grants.index, fill_value=0.0), grants, atol=1e-5)
    seller_of = grants.index.to_series().map(inst.requests.set_index("request_id")["seller_id"])
    regions = inst.sellers.set_index("seller_id")["regions"]
    fc_region = inst.fcs.drop_duplicates("fc_id").set_index("fc_id")["region"]
    assert all(fc_region[f] in regions[seller_of[r]] for r, f in zip(placed["request_id"], placed["fc_id"]))


@pytest.mark.parametrize("method", SOLVERS)
def test_equal_fee_min_cube_requests_that_cannot_both_fit_go_by_time(method):
    # Either 60-cube request plus the 30 divisible earns $450: a tie, which the earlier one must win.
    for early, late in [("R-a", "R-b"), ("R-b", "R-a")]:
        inst = one_pool([request(late, 5.0, 60, min_cube=60, minute=2), request(early, 5.0, 60, min_cube=60, minute=1),
                         request("R-div", 5.0, 30, minute=3)])
        got = granted(clear_round(inst, 1, limits=EMPTY_LIMITS, method=method))
        assert got == {early: 60.0, late: 0.0, "R-div": 30.0}


# ------------------------------------------------------------------ the priority rule (issue 10)

BIG_SETTINGS = {"request_cap_cube": 2e9}


def big_pool(requests, pool, settings=None, **kw):
    return make(fcs=[fc(capacity_cube=max(pool, 1.0), pool_cube=pool)], requests=requests, settings={**BIG_SETTINGS, **(settings or {})}, **kw)


def audit_of(res):
    return res.grants.droplevel("round")


@pytest.mark.parametrize("method", [None, "pyomo", "highspy"])
def test_priority_a_lower_fee_never_displaces_a_higher_one(method):
    inst = big_pool([request("A", 5.0, 60, min_cube=60, minute=1), request("B", 4.0, 100, min_cube=100, minute=2)], 100.0)
    res = clear_round(inst, 1, limits=EMPTY_LIMITS, method=method)
    assert granted(res) == {"A": 60.0, "B": 0.0}
    assert res.prices.loc[(1, "standard"), "clearing_price"] == 5.0
    b = audit_of(res).loc["B"]
    assert (b["status"], b["reason"], bool(b["paradoxically_rejected"])) == ("rejected", "min_cube_did_not_fit", False)


def test_welfare_lets_the_lower_fee_in_and_flags_the_higher_one():
    inst = big_pool([request("A", 5.0, 60, min_cube=60, minute=1), request("B", 4.0, 100, min_cube=100, minute=2)], 100.0,
                    settings={"clearing_rule": "welfare"})
    res = clear_round(inst, 1, limits=EMPTY_LIMITS)
    assert granted(res) == {"A": 0.0, "B": 100.0}
    assert res.prices.loc[(1, "standard"), "clearing_price"] == 4.0
    assert bool(audit_of(res).loc["A", "paradoxically_rejected"])  # fee $5 above the price $4, rejected


@pytest.mark.parametrize("rule", ["priority", "welfare"])
def test_no_mip_gap_moves_the_price(rule):
    reqs = [request("BIG", 5.0, 1e9, minute=0), request("M3", 1.05, 15, min_cube=10, minute=2), request("M4", 1.00, 15, min_cube=10, minute=1)]
    res = clear_round(big_pool(reqs, 1_000_000_010.0, settings={"clearing_rule": rule}), 1, limits=EMPTY_LIMITS)
    assert granted(res) == {"BIG": 1e9, "M3": 10.0, "M4": 0.0}
    assert res.prices.loc[(1, "standard"), "clearing_price"] == 1.05


@pytest.mark.parametrize("method", [None, "pyomo", "highspy"])
def test_ties_at_one_fee_go_to_the_earliest_request_with_minimums(method):
    inst = big_pool([request("R80", 5.0, 29, min_cube=15, minute=1), request("R142", 5.0, 95, min_cube=67.6, minute=2)], 77.0)
    res = clear_round(inst, 1, limits=EMPTY_LIMITS, method=method)
    assert granted(res) == {"R80": 29.0, "R142": 0.0}
    assert audit_of(res).loc["R142", ["status", "reason"]].tolist() == ["rejected", "min_cube_did_not_fit"]


def test_a_cut_request_above_the_price_is_flagged_and_explained():
    # A (east only, $5) is cut: east is full. B (west, $3) is granted: the type's price is $3 < $5.
    fcs = [fc("E1", region="east", pool_cube=50.0), fc("W1", region="west", pool_cube=50.0)]
    sellers = [seller("A", regions="east"), seller("B", regions="west")]
    reqs = [request("A", 5.0, 80, seller_id="A"), request("B", 3.0, 10, seller_id="B")]
    res = clear_round(make(fcs=fcs, sellers=sellers, requests=reqs), 1, limits=EMPTY_LIMITS)
    a = audit_of(res).loc["A"]
    assert (a["granted_cube"], a["status"], a["reason"], bool(a["paradoxically_rejected"])) == (50.0, "partially_granted", "outbid", True)


def test_forced_methods_that_cannot_compute_the_rule_refuse():
    two_fcs = make(fcs=[fc("E1", pool_cube=50.0), fc("E2", pool_cube=50.0)], requests=[request("R1", 5.0, 60)])
    with pytest.raises(InputError, match="sort"):
        clear_round(two_fcs, 1, limits=EMPTY_LIMITS, method="sort")
    pro = one_pool([request("R1", 5.0, 60)], settings={"tie_rule": "pro_rata"})
    for method in ["sort", "highspy", "pyomo"]:
        with pytest.raises(InputError, match="pro_rata"):
            clear_round(pro, 1, limits=EMPTY_LIMITS, method=method)


@pytest.mark.parametrize("field,value", [("max_fee_per_cube", 4.255), ("max_cube", 10.0005), ("min_cube", 0.0001), ("max_cube", 1e-7)])
def test_fees_in_cents_and_cube_in_thousandths_are_validated(field, value):
    row = request("R1", 5.0, 60)
    row[field] = value
    with pytest.raises(InputError) as e:
        one_pool([row])
    assert field in str(e.value) and "requests" in str(e.value)


def greedy_skip_if_min_does_not_fit(reqs, pool_milli):
    """Independent statement of the rule on one pool, in milli-cube: rank, then each takes min(max, left) if >= min."""
    left, out = pool_milli, {}
    for rid, cents, mx, mn, minute in sorted(reqs, key=lambda r: (-r[1], r[4], r[0])):
        take = min(mx, left)
        out[rid] = take if take > 0 and take >= mn else 0
        left -= out[rid]
    return out


cents = st.sampled_from([100, 250, 300, 300, 425, 500, 500, 750, 751])
single_pool_min_requests = st.lists(
    st.tuples(cents, st.integers(1, 80_000), st.sampled_from([0.0, 0.0, 0.3, 0.7, 1.0]), st.integers(0, 5)), min_size=1, max_size=25)


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reqs=single_pool_min_requests, pool=st.integers(0, 600_000))
def test_priority_on_one_pool_equals_an_independent_greedy(reqs, pool):
    rows = [(f"R{i:02d}", c, mx, int(mx * share), minute) for i, (c, mx, share, minute) in enumerate(reqs)]
    inst = big_pool([request(r, c / 100, mx / 1000, min_cube=mn / 1000, minute=minute) for r, c, mx, mn, minute in rows], pool / 1000)
    got = {k: round(v * 1000) for k, v in granted(clear_round(inst, 1, limits=EMPTY_LIMITS)).items()}
    assert got == greedy_skip_if_min_does_not_fit(rows, pool)


def _could_get_more(inst, res, limits):
    """For every request that took part and was rejected or cut: the most it could get with every higher-ranked
    grant of the round kept (cube fixed, FC free) and the rest 0, by an LP written here from the instance tables."""
    import highspy

    g = res.grants.droplevel("round").reset_index()
    live = g[~g["reason"].isin(["over_request_cap", "below_reserve", "no_eligible_pool"])].copy()
    live["cents"] = np.rint(live["max_fee_per_cube"] * 100)
    live = live.sort_values(["cents", "submitted_at", "request_id"], ascending=[False, True, True], kind="stable").reset_index(drop=True)
    pool = inst.fcs.set_index(["fc_id", "storage_type", "month"])["pool_cube"]
    pool = np.floor(pool * 1000 + 1e-6) / 1000
    fc_region = inst.fcs.drop_duplicates("fc_id").set_index("fc_id")["region"]
    regions = inst.sellers.set_index("seller_id")["regions"]

    def arcs(row):
        return [f for f in fc_region.index if fc_region[f] in regions[row.seller_id]
                and all(pool.get((f, row.storage_type, t), 0.0) > 0 for t in row.months)]

    worst = []
    for k, row in live.iterrows():
        if row.status == "granted":
            continue
        members = [live.iloc[j] for j in range(k)] + [row]
        cols = [(j, f) for j, r in enumerate(members) for f in arcs(r)]
        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        inf = highspy.kHighsInf
        for j, f in cols:
            h.addVar(0, inf)
        h.changeColCost(len(cols) - 1, 0)
        pool_rows = {}
        for c, (j, f) in enumerate(cols):
            for t in members[j].months:
                pool_rows.setdefault((f, members[j].storage_type, t), []).append(c)
        for key, cs in pool_rows.items():
            h.addRow(-inf, float(pool[key]), len(cs), np.array(cs, np.int32), np.ones(len(cs)))
        for j, r in enumerate(members):
            cs = [c for c, (jj, _) in enumerate(cols) if jj == j]
            if j < k:
                h.addRow(float(r.granted_cube), float(r.granted_cube), len(cs), np.array(cs, np.int32), np.ones(len(cs)))
            else:
                h.addRow(0.0, float(r.max_cube), len(cs), np.array(cs, np.int32), np.ones(len(cs)))
                h.changeColsCost(len(cs), np.array(cs, np.int32), np.ones(len(cs)))
        h.changeObjectiveSense(highspy.ObjSense.kMaximize)
        h.run()
        assert h.getModelStatus() == highspy.HighsModelStatus.kOptimal
        best = h.getInfo().objective_function_value
        worst.append((row.request_id, row.granted_cube, row.min_cube, best))
    return worst


@settings(max_examples=examples(8), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 100_000), min_share=st.sampled_from([0.0, 0.3]))
def test_no_rejected_or_cut_request_could_get_more_without_taking_from_a_higher_rank(seed, min_share):
    inst = generate(GenerateSpec(sellers=20, fcs=4, regions=2, storage_types=1, months=3, rounds=1, requests=40,
                                 second_region_share=0.5, min_cube_share=min_share, seed=seed))
    limits = allocate(inst).limits["limit_cube"]
    res = clear_round(inst, 1, limits=limits)
    for rid, got, min_cube, best in _could_get_more(inst, res, limits):
        if got > 0:
            assert best <= got + 1e-6, rid  # cut: it got all it could
        else:
            assert best < max(min_cube, 0.001) - 1e-6 or best <= 1e-6, rid  # rejected: its minimum did not fit


def test_every_family_of_both_builds_is_named_in_models_clearing_md():
    """Docs as a contract: each constraint family of the Pyomo build and each row family of the array build
    appears in models/clearing.md as `name`."""
    from pathlib import Path

    import pyomo.environ as pyo

    from optalloc.clearing import build_clearing_arrays

    doc = (Path(__file__).resolve().parents[1] / "models" / "clearing.md").read_text()
    d = prepare_clearing(one_pool([request("R1", 5.0, 60, min_cube=10), request("R2", 4.0, 60)]), 1, EMPTY_LIMITS)
    m = build_clearing_model(d)
    pyomo_names = {c.local_name for c in m.component_objects(ctype=pyo.Constraint)} | {v.local_name for v in m.component_objects(ctype=pyo.Var)}
    _, fam = build_clearing_arrays(d)
    missing = sorted(n for n in pyomo_names | set(fam) | {"place_class", "extra"} if f"`{n}`" not in doc and f"`{n}[" not in doc)
    assert missing == []


def _pools_scaled(spec: GenerateSpec, tight: float):
    """A generated instance whose pools are `tight` times the generated ones (to the milli-cube)."""
    inst = generate(spec)
    return type(inst).from_tables(period=inst.period, settings=inst.settings, tables={
        "fcs": inst.fcs.assign(pool_cube=inst.fcs["pool_cube"] * tight).round({"pool_cube": 3}), "sellers": inst.sellers,
        "needs": inst.needs, "requests": inst.requests})


@settings(max_examples=examples(12), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 100_000), min_share=st.sampled_from([0.0, 0.2]), tight=st.sampled_from([0.3, 1.0]))
def test_chunked_priority_equals_one_request_at_a_time(seed, min_share, tight):
    """Requests granted in chunks (by direct room, or by one room LP for the chunk) get exactly what the plain
    method gives them one at a time, in every round (earlier grants held), and the LP chunk path runs."""
    from optalloc.clearing import priority as P
    from optalloc.clearing import prepare_clearing

    inst = _pools_scaled(GenerateSpec(sellers=40, fcs=5, regions=2, storage_types=1, months=3, rounds=2, requests=160,
                                      second_region_share=0.6, min_cube_share=min_share, multi_month_share=0.4, seed=seed), tight)
    limits = allocate(inst).limits["limit_cube"]
    opts = inst.settings.solver
    earlier = []
    for r in inst.period.rounds:
        held = held_grants(*earlier)
        d = prepare_clearing(inst, r, limits, held)
        plain = P.clear_by_priority(d, opts, chunks=False)
        fast = P.clear_by_priority(d, opts)
        np.testing.assert_array_equal(fast.grant, plain.grant)
        np.testing.assert_array_equal(fast.avail > 0, plain.avail > 0)  # what the reasons are read from
        earlier.append(clear_round(inst, r, limits=limits, held=held).grants)


def test_the_lp_chunk_path_is_taken_and_agrees(monkeypatch):
    """A round whose classes share FCs, so the direct room of a chunk falls short while one room LP fits it all, or
    fits a prefix of it (the requests before the first one whose class fell short)."""
    from optalloc.clearing import priority as P
    from optalloc.clearing import prepare_clearing

    taken = []  # (requests granted by the LP, chunk length)
    real = P._lp_prefix
    monkeypatch.setattr(P, "_lp_prefix", lambda st, idx, *a: taken.append((real(st, idx, *a), len(idx))) or taken[-1][0])
    chunks = []  # (chunk length, requests decided, by LP) of every chunk tried
    real_chunk = P._grant_chunk
    monkeypatch.setattr(P, "_grant_chunk", lambda st, idx, *a: chunks.append((len(idx), real_chunk(st, idx, *a), a[-1])) or chunks[-1][1])
    for seed in (5, 9):  # seed 5 has a chunk one LP fits whole, seed 9 one it fits a prefix of
        inst = generate(GenerateSpec(sellers=60, fcs=6, regions=2, storage_types=1, months=2, rounds=1, requests=400,
                                     second_region_share=0.7, multi_month_share=0.5, seed=seed))
        limits = allocate(inst).limits["limit_cube"]
        d = prepare_clearing(inst, 1, limits, held_grants())
        fast = P.clear_by_priority(d, inst.settings.solver)
        plain = P.clear_by_priority(d, inst.settings.solver, chunks=False)
        np.testing.assert_array_equal(fast.grant, plain.grant)
    assert any(n == k for n, k in taken), taken  # a whole chunk by one LP
    assert any(0 < n < k for n, k in taken), taken  # a prefix of one
    # After an LP's prefix (and the one request that ended it) the next chunk is as long as that LP's, not 2 again
    resumed = [(k, nxt) for (k, n, lp), (nxt, _, _) in zip(chunks, chunks[1:]) if lp and 0 < n < k and k > 2]
    assert resumed and all(nxt == k for k, nxt in resumed), resumed


def test_the_room_lp_solved_in_scaled_units_gives_the_same_rule_at_1024_times_the_cube():
    """At marketplace size the room LP is solved in units of S milli-cube (a power of two): every cube of a round
    times 1024 (pools, asks, minimums, caps, held grants) gives exactly 1024 times the grants, with S > 1. Tight
    pools and held grants, so the LP's values decide grants (an LP value not scaled back fails this)."""
    from optalloc.clearing import priority as P

    def times(inst, x):
        settings = inst.settings.model_copy(update={"request_cap_cube": inst.settings.request_cap_cube * x})
        return type(inst).from_tables(period=inst.period, settings=settings, tables={
            "fcs": inst.fcs.assign(capacity_cube=inst.fcs["capacity_cube"] * x,
                                   pool_cube=(inst.fcs["pool_cube"] * 0.3).round(3) * x),
            "sellers": inst.sellers.assign(floor_cube=inst.sellers["floor_cube"] * x),
            "needs": inst.needs.assign(**{k: inst.needs[k] * x for k in ("p50_cube", "p90_cube", "floor_cube")}),
            "requests": inst.requests.assign(max_cube=inst.requests["max_cube"] * x, min_cube=inst.requests["min_cube"] * x)})

    gen = generate(GenerateSpec(sellers=40, fcs=5, regions=2, storage_types=1, months=3, rounds=2, requests=160,
                                second_region_share=0.6, min_cube_share=0.2, multi_month_share=0.4, seed=0))
    x = 1024
    inst, big = times(gen, 1), times(gen, x)
    limits = allocate(inst).limits["limit_cube"]
    lp_calls = 0
    for r, held in ((1, held_grants()), (2, held_grants(clear_round(inst, 1, limits=limits).grants))):
        d = prepare_clearing(inst, r, limits, held)
        db = prepare_clearing(big, r, limits * x, held.assign(granted_cube=held["granted_cube"] * x))
        small, large = P.clear_by_priority(d, inst.settings.solver), P.clear_by_priority(db, inst.settings.solver)
        assert P.lp_scale(P.to_milli(db.pools["pool_cube"].to_numpy())) > 1
        np.testing.assert_array_equal(large.grant, small.grant * x)
        np.testing.assert_array_equal(large.avail, small.avail * x)
        lp_calls += small.lp_calls
    assert lp_calls > 2


def test_room_lp_values_that_drift_from_the_basis_are_recomputed_before_they_count(monkeypatch):
    """A warm-started simplex can return values that break the rows (seen at marketplace size: 2e-6 on rows of 1e6,
    reported optimal); a placement built on them makes later room LPs infeasible. Every LP answer whose values break
    a row is re-solved from a fresh factorization: with drift injected into every solver answer, the grants are those
    of the clean run and the placement published holds every row."""
    from optalloc.clearing import priority as P

    gen = generate(GenerateSpec(sellers=40, fcs=5, regions=2, storage_types=1, months=3, rounds=2, requests=160,
                                second_region_share=0.6, min_cube_share=0.2, multi_month_share=0.4, seed=0))
    inst = type(gen).from_tables(period=gen.period, settings=gen.settings, tables={
        "fcs": gen.fcs.assign(pool_cube=(gen.fcs["pool_cube"] * 0.3).round(3)), "sellers": gen.sellers, "needs": gen.needs,
        "requests": gen.requests})
    limits = allocate(inst).limits["limit_cube"]
    d = prepare_clearing(inst, 2, limits, held_grants(clear_round(inst, 1, limits=limits).grants))
    clean = P.clear_by_priority(d, inst.settings.solver)
    assert clean.lp_calls > 2

    real, states = P.run_highs, []
    monkeypatch.setattr(P._State, "_lp", lambda self, f=P._State._lp: (states.append(self), f(self))[1])

    def drifting(h, *, is_mip):
        out = real(h, is_mip=is_mip)
        out.x = np.asarray(h.getSolution().col_value) * 1.001  # every arc (and extra) 0.1% over what the basis gives
        return out

    monkeypatch.setattr(P, "run_highs", drifting)
    drifted = P.clear_by_priority(d, inst.settings.solver)
    np.testing.assert_array_equal(drifted.grant, clean.grant)
    np.testing.assert_array_equal(drifted.avail, clean.avail)
    assert states[0].refreshes == drifted.lp_calls
    R = P.to_milli(d.pools["pool_cube"].to_numpy())
    use = np.bincount(d.centry_pool, weights=drifted.place[d.centry_carc], minlength=len(R))
    assert (use <= R + 1e-3).all()
    D = np.bincount(d.req_class, weights=drifted.grant, minlength=d.n_classes) + np.bincount(
        d.held_class, weights=P.to_milli(d.held_cube), minlength=d.n_classes)
    np.testing.assert_allclose(np.bincount(d.carc_class, weights=drifted.place, minlength=d.n_classes), D, atol=1e-3)



def _working_set_against_every_arc(seed, min_share, tight):
    """Clear every round (earlier grants held) with the room LP over its working set pruned to the basis after every LP
    (WORK_MAX = 0) and over every arc (the reference); assert equal grants; return how many arcs the pricing brought
    back."""
    from optalloc.clearing import priority as P
    from optalloc.clearing import prepare_clearing

    inst = _pools_scaled(GenerateSpec(sellers=40, fcs=6, regions=2, storage_types=1, months=3, rounds=2, requests=200,
                                      second_region_share=0.7, min_cube_share=min_share, multi_month_share=0.5, seed=seed), tight)
    limits = allocate(inst).limits["limit_cube"]
    opts = inst.settings.solver
    states, real_lp = [], P._State._lp
    earlier, priced = [], 0
    for r in inst.period.rounds:
        d = prepare_clearing(inst, r, limits, held_grants(*earlier))
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(P, "WORK_MAX", np.inf)
            every = P.clear_by_priority(d, opts)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(P, "WORK_MAX", 0)
            mp.setattr(P._State, "_lp", lambda self: (states.append(self), real_lp(self))[1])
            working = P.clear_by_priority(d, opts)
        np.testing.assert_array_equal(working.grant, every.grant)
        np.testing.assert_array_equal(working.avail > 0, every.avail > 0)
        priced += sum(s.priced for s in states)
        states.clear()
        earlier.append(clear_round(inst, r, limits=limits, held=held_grants(*earlier)).grants)
    return priced


@settings(max_examples=examples(10), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 100_000), min_share=st.sampled_from([0.0, 0.2]), tight=st.sampled_from([0.3, 0.6]))
def test_the_room_lp_over_its_working_set_equals_the_lp_over_every_arc(seed, min_share, tight):
    """The room LP holds only a working set of class arcs: the placement's, the asking classes', and those whose
    reduced cost asks to enter (models/clearing.md, "The room LP's working set"). Pruned to its basis after every LP,
    so that the pricing decides which arcs come back, it grants exactly what the LP over every arc grants."""
    _working_set_against_every_arc(seed, min_share, tight)


def test_the_pricing_brings_arcs_back_into_the_room_lp():
    """On a round where it matters, the pricing takes arcs back into the working set (without it the LP over the
    working set alone finds less room and the grants differ from the reference: checked by mutation)."""
    assert _working_set_against_every_arc(0, 0.2, 0.3) > 0


def test_a_round_market_is_cleared_as_its_storage_type_is():
    """What a worker is sent for one round of one storage type (`Instance.round_market`: that round's requests, the
    type's FCs, every seller, no needs, sales or history) clears exactly as the type's whole instance does, every round,
    earlier grants held, multi-month and minimum requests included."""
    from optalloc.clearing import clear_market

    inst = generate(GenerateSpec(sellers=60, fcs=6, regions=2, storage_types=2, months=3, rounds=3, requests=240,
                                 second_region_share=0.5, min_cube_share=0.2, multi_month_share=0.4, seed=5))
    limits = allocate(inst).limits["limit_cube"]
    opts = inst.settings.solver
    earlier = []
    for r in inst.period.rounds:
        held = held_grants(*earlier)
        for k in sorted(inst.fcs["storage_type"].unique()):
            market = inst.round_market(k, r)
            assert len(market.needs) == len(market.sales) == 0 and set(market.requests["round"]) <= {r}
            assert market.sellers is inst.sellers
            whole = clear_market(inst.of_storage_type(k), r, limits, held[held["storage_type"] == k], opts, None)
            part = clear_market(market, r, limits, held[held["storage_type"] == k], opts, None)
            for a, b in zip((whole.grants, whole.placements, whole.pools, whole.prices), (part.grants, part.placements, part.pools, part.prices)):
                pd.testing.assert_frame_equal(a, b)
            assert len(whole.grants) and (r == 1 or len(held))
        earlier.append(clear_round(inst, r, limits=limits, held=held).grants)
