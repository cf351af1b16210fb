"""Money and cube are exact at the door (issue "Exact at the door"): an instance holds every fee as its whole number
of cents and every cube as its whole number of milli-cube, so float noise that validation accepts (a fee within
1e-6 cent of the grid, 0.1 + 0.2) can change no grant, price or reason, on any rule or method."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import EMPTY_LIMITS, examples, fc, make, request
from optalloc.baseline import allocate
from optalloc.clearing import clear_round
from optalloc.generate import GenerateSpec, generate
from optalloc.instance import Instance

# The ways each rule can be computed (None: the method the round's shape picks).
METHODS = {"priority": [None, "pyomo", "highspy"], "welfare": [None, "pyomo", "highspy"], "pro_rata": [None]}
SINGLE_POOL_METHODS = {"priority": [None, "sort", "pyomo", "highspy"], "welfare": [None, "sort", "pyomo", "highspy"], "pro_rata": [None]}


def one_pool(requests, pool, rule):
    return make(fcs=[fc(capacity_cube=max(1000.0, pool), pool_cube=pool)], requests=requests, settings={"clearing_rule": rule})


def outcome(res) -> pd.DataFrame:
    """What a round decided: each request's grant, status and reason, and its storage type's clearing price."""
    g = res.grants[["storage_type", "granted_cube", "status", "reason"]].reset_index()
    g["price"] = res.prices["clearing_price"].reindex(pd.MultiIndex.from_frame(g[["round", "storage_type"]])).to_numpy()
    return g


def test_a_fee_of_0_1_plus_0_2_is_a_fee_of_30_cents_on_every_path():
    """A $0.30 at t=0, B $0.1+0.2 (0.30000000000000004) at t=60, 10 cube each, a pool of 10: by cents a tie, which time
    breaks for A. The sort granted B (it ranked the raw float), the LPs granted A; an unrelated request with a minimum
    sent the round down the priority path, which granted A; the API showed a price of 0.30000000000000004."""
    reqs = [request("A", 0.30, 10, minute=0), request("B", 0.1 + 0.2, 10, minute=1)]
    unrelated = request("C", 0.05, 30, minute=2, min_cube=30)
    for extra in ([], [unrelated]):
        for rule in ("priority", "welfare"):
            inst = one_pool(reqs + extra, 10.0, rule)
            assert inst.requests.set_index("request_id").loc["B", "max_fee_per_cube"] == 0.3
            for method in SINGLE_POOL_METHODS[rule] if not extra else METHODS[rule]:
                res = clear_round(inst, 1, limits=EMPTY_LIMITS, method=method)
                got = res.grants["granted_cube"].droplevel("round")
                assert (got["A"], got["B"]) == (10.0, 0.0), (rule, method, extra)
                assert repr(float(res.prices["clearing_price"].iloc[0])) == "0.3"


def test_pro_rata_shares_a_fee_level_that_float_noise_split_in_two():
    """The same two fees under pro_rata are one level: 5 and 5 (it was 10 for B, 0 for A, 'outbid')."""
    inst = one_pool([request("A", 0.30, 10, minute=0), request("B", 0.1 + 0.2, 10, minute=1)], 10.0, "pro_rata")
    got = clear_round(inst, 1, limits=EMPTY_LIMITS).grants["granted_cube"].droplevel("round")
    assert got.to_dict() == {"A": 5.0, "B": 5.0}


def test_pro_rata_gives_every_milli_cube_of_the_pool_and_the_odd_ones_by_remainder_then_time():
    """Three equal asks share 0.010 cube: 0.004, 0.003, 0.003 (the whole parts leave one milli-cube, which goes to the
    largest remainder, all equal here, so to the earliest); before, each share was rounded and 0.001 was lost."""
    inst = one_pool([request(f"R{i}", 1.0, 5, minute=i) for i in range(3)], 0.010, "pro_rata")
    got = clear_round(inst, 1, limits=EMPTY_LIMITS).grants["granted_cube"].droplevel("round")
    assert got.to_dict() == {"R0": 0.004, "R1": 0.003, "R2": 0.003}


# Float noise validation accepts: within 1e-6 of a step of the grid (1e-8 $ on a fee, 1e-9 cube on cube).
fee_noise = st.sampled_from([0.0, 4e-9, -4e-9, 9e-9, -9e-9])
cube_noise = st.sampled_from([0.0, 5e-10, -5e-10, 9e-10, -9e-10])


def noisy(frame: pd.DataFrame, data, columns: dict) -> pd.DataFrame:
    out = frame.copy()
    for col, noise in columns.items():
        out[col] = [v + (data.draw(noise) if v > 0 else 0.0) for v in out[col]]
    return out


def with_noise(inst: Instance, data) -> Instance:
    requests = noisy(inst.requests, data, {"max_fee_per_cube": fee_noise, "max_cube": cube_noise, "min_cube": cube_noise})
    requests["min_cube"] = np.minimum(requests["min_cube"], requests["max_cube"])
    fcs = noisy(inst.fcs, data, {"pool_cube": cube_noise})
    return Instance.from_tables(period=inst.period, settings=inst.settings, name=inst.name, tables={
        "fcs": fcs, "sellers": inst.sellers, "needs": inst.needs, "requests": requests})


cents = st.sampled_from([30, 30, 100, 250, 300, 300, 425, 751])
single_pool_requests = st.lists(st.tuples(cents, st.integers(1, 80_000), st.sampled_from([0.0, 0.0, 0.5, 1.0]), st.integers(0, 5)),
                                min_size=1, max_size=12)


@pytest.mark.parametrize("rule", sorted(SINGLE_POOL_METHODS))
@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reqs=single_pool_requests, pool=st.integers(0, 400_000), data=st.data())
def test_float_noise_changes_nothing_on_one_pool(rule, reqs, pool, data):
    rows = [request(f"R{i:02d}", c / 100, mx / 1000, min_cube=int(mx * share) / 1000 if rule != "pro_rata" else 0.0, minute=m)
            for i, (c, mx, share, m) in enumerate(reqs)]
    exact = one_pool(rows, pool / 1000, rule)
    fuzzy = with_noise(exact, data)
    divisible = rule != "pro_rata" and not (exact.requests["min_cube"] > 0).any()
    for method in SINGLE_POOL_METHODS[rule]:
        if method == "sort" and not divisible:
            continue
        a, b = (clear_round(i, 1, limits=EMPTY_LIMITS, method=method) for i in (exact, fuzzy))
        pd.testing.assert_frame_equal(outcome(a), outcome(b), obj=f"{rule} by {method}")


@pytest.mark.parametrize("rule", ["priority", "welfare"])
@settings(max_examples=examples(8), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 100_000), min_share=st.sampled_from([0.0, 0.2]), data=st.data())
def test_float_noise_changes_nothing_on_a_network_of_fcs_and_months(rule, seed, min_share, data):
    inst = generate(GenerateSpec(sellers=25, fcs=4, regions=2, storage_types=1, months=2, rounds=1, requests=40,
                                 multi_month_share=0.4, min_cube_share=min_share, seed=seed))
    exact = inst.with_settings(clearing_rule=rule)
    fuzzy = with_noise(exact, data)
    limits = allocate(exact).limits["limit_cube"]
    for method in METHODS[rule]:
        a, b = (clear_round(i, 1, limits=limits, method=method) for i in (exact, fuzzy))
        pd.testing.assert_frame_equal(outcome(a), outcome(b), obj=f"{rule} by {method}")


def test_a_reserve_price_is_whole_cents_and_a_fee_exactly_at_it_is_granted():
    from optalloc.errors import InputError

    with pytest.raises(InputError, match="reserve_price.*not a whole number of cents"):
        one_pool([request("A", 1.0, 1)], 10.0, "priority").with_settings(reserve_price=4.255)
    reqs = [request("AT", 0.30, 4, minute=0), request("BELOW", 0.29, 4, minute=1), request("ABOVE", 0.31, 4, minute=2)]
    inst = one_pool(reqs, 10.0, "priority").with_settings(reserve_price=0.1 + 0.2)
    assert inst.settings.reserve_price == 0.3
    g = clear_round(inst, 1, limits=EMPTY_LIMITS).grants.droplevel("round")
    assert g.loc["AT", "granted_cube"] == 4.0 and g.loc["ABOVE", "granted_cube"] == 4.0
    assert (g.loc["BELOW", "granted_cube"], g.loc["BELOW", "reason"]) == (0.0, "below_reserve")


def test_a_market_larger_than_any_network_is_refused_naming_the_field():
    """Within 1e15 cube per market every sum the rules make in milli-cube is an exact 64-bit integer."""
    from optalloc.errors import InputError

    big = [request(f"R{i}", 1.0, 1e12, minute=i) for i in range(1001)]
    with pytest.raises(InputError) as e:
        one_pool(big, 10.0, "priority")
    assert "max_cube asked in one round of one storage type (1, standard) adds up to 1.001e+15 cube" in str(e.value)
    one_pool(big[:1000], 10.0, "priority")  # exactly 1e15: accepted
    fcs = [fc(fc_id=f"F{i}", capacity_cube=1e12, pool_cube=0.0) for i in range(1001)]
    with pytest.raises(InputError, match="capacity of one storage type and month .* adds up to 1.001e\\+15 cube"):
        make(fcs=fcs)
