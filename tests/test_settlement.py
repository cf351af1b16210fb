"""Settlement: price protection, the attributed-sales rule, credit caps; invariants over whole periods."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optalloc.generate import GenerateSpec, generate
from optalloc.period import run_period
from optalloc.schemas import Settings
from optalloc.settlement import protected_prices, settle
from conftest import examples

IDX = ["round", "request_id"]


def prices(rows):
    return pd.DataFrame(rows, columns=["round", "storage_type", "clearing_price"]).set_index(["round", "storage_type"])


def grants(rows):
    cols = ["round", "request_id", "seller_id", "storage_type", "months", "granted_cube", "max_fee_per_cube"]
    return pd.DataFrame(rows, columns=cols).set_index(IDX)


NO_SALES = pd.DataFrame(columns=["seller_id", "storage_type", "month", "sales", "used_cube"])
NO_GRANT_SALES = pd.DataFrame(columns=["request_id", "incremental_sales"])
LIMITS = pd.Series(
    [1000.0, 1000.0], index=pd.MultiIndex.from_tuples([("S1", "standard", "2026-10"), ("S1", "standard", "2026-11")], names=["seller_id", "storage_type", "month"])
)


def test_protection_takes_the_lowest_price_of_this_and_later_rounds_of_the_same_type():
    p = prices([(1, "standard", 6.0), (2, "standard", np.nan), (3, "standard", 4.0), (4, "standard", 5.0), (1, "oversize", 2.0), (2, "oversize", 3.0)])
    got = protected_prices(p)
    assert got.loc[(1, "standard")] == 4.0  # round 2 granted nothing; round 3's $4 reaches back past it
    assert got.loc[(4, "standard")] == 5.0  # a later round's price never raises an earlier... nor is raised itself
    assert got.loc[(1, "oversize")] == 2.0  # oversize is its own market


def test_attributed_sales_count_only_extra_space_actually_used():
    # Baseline 1,000; granted 500 for two months. Used 1,300 in October: 300 of the grant used -> 300/1300 of sales.
    # Used 900 in November: nothing above the baseline -> no credit for November.
    g = grants([(1, "R1", "S1", "standard", ("2026-10", "2026-11"), 500.0, 5.0)])
    sales = pd.DataFrame(
        [("S1", "standard", "2026-10", 13_000.0, 1300.0), ("S1", "standard", "2026-11", 9_000.0, 900.0)],
        columns=["seller_id", "storage_type", "month", "sales", "used_cube"],
    )
    out = settle(g, prices([(1, "standard", 5.0)]), LIMITS, sales, NO_GRANT_SALES, Settings())
    row = out.loc[(1, "R1")]
    assert row["attributed_sales"] == pytest.approx(3_000.0)  # 13,000 x 300 / 1,300
    assert row["reservation_fee"] == 2_500.0
    assert row["credit"] == pytest.approx(450.0)  # 15% of 3,000
    assert row["net"] == pytest.approx(2_050.0)


@pytest.mark.parametrize(
    "credit_rate, credit_cap_share, credit",
    [
        (0.15, 1.0, 450.0),  # the defaults: 15% of the 3,000 of attributed sales
        (0.30, 1.0, 900.0),
        (0.0, 1.0, 0.0),
        (0.30, 0.2, 500.0),  # capped at 20% of the 2,500 fee
        (1.0, 0.5, 1_250.0),
        (1.0, 1.0, 2_500.0),  # at most the fee: net never below 0
    ],
)
def test_credit_is_the_rate_of_attributed_sales_capped_at_a_share_of_the_fee(credit_rate, credit_cap_share, credit):
    g = grants([(1, "R1", "S1", "standard", ("2026-10", "2026-11"), 500.0, 5.0)])
    sales = pd.DataFrame(
        [("S1", "standard", "2026-10", 13_000.0, 1300.0), ("S1", "standard", "2026-11", 9_000.0, 900.0)],
        columns=["seller_id", "storage_type", "month", "sales", "used_cube"],
    )
    out = settle(g, prices([(1, "standard", 5.0)]), LIMITS, sales, NO_GRANT_SALES,
                 Settings(credit_rate=credit_rate, credit_cap_share=credit_cap_share))
    row = out.loc[(1, "R1")]
    assert (row["attributed_sales"], row["reservation_fee"]) == (pytest.approx(3_000.0), 2_500.0)
    assert row["credit"] == pytest.approx(credit) and row["net"] == pytest.approx(2_500.0 - credit)


def test_direct_grant_sales_take_precedence_and_credit_is_capped_at_the_fee():
    g = grants([(1, "R1", "S1", "standard", ("2026-10",), 100.0, 5.0)])
    direct = pd.DataFrame([("R1", 1e6)], columns=["request_id", "incremental_sales"])
    out = settle(g, prices([(1, "standard", 5.0)]), LIMITS, NO_SALES, direct, Settings())
    assert out.loc[(1, "R1"), ["reservation_fee", "credit", "net", "sales_source"]].tolist() == [500.0, 500.0, 0.0, "grant_sales"]


@settings(max_examples=examples(10), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 100_000), tightness=st.floats(0.5, 1.2), min_share=st.sampled_from([0.0, 0.1]))
def test_period_invariants(seed, tightness, min_share):
    inst = generate(GenerateSpec(sellers=40, fcs=4, regions=2, storage_types=2, months=3, rounds=3, requests=80,
                                 tightness=tightness, min_cube_share=min_share, seed=seed))
    res = run_period(inst)
    fcs = inst.fcs.set_index(["fc_id", "storage_type", "month"])

    # No FC/type/month is ever over-allocated: baseline within capacity net of the pool, grants within the pool.
    base = res.baseline.placements.groupby(["fc_id", "storage_type", "month"])["cube"].sum()
    assert (base <= (fcs["capacity_cube"] - fcs["pool_cube"]).reindex(base.index) + 1e-6).all()
    last = res.clearing.placements.xs(inst.period.rounds[-1], level="round")  # every grant, where it sits at the end
    info = res.clearing.grants.droplevel("round")[["storage_type", "months"]]
    gp = last.join(info, on="request_id").reset_index()
    gp = gp.explode("months").groupby(["fc_id", "storage_type", "months"])["cube"].sum()
    gp.index.names = ["fc_id", "storage_type", "month"]
    assert (gp <= fcs["pool_cube"].reindex(gp.index) + 1e-6).all()

    g = res.clearing.grants
    assert ((g["granted_cube"] == 0) | (g["granted_cube"] >= g["min_cube"] - 1e-6)).all()
    assert (g["granted_cube"] <= g["max_cube"] + 1e-9).all()

    s = res.settlement
    assert (s["fee_per_cube"] <= s["max_fee_per_cube"]).all()  # price protection never raises a fee
    assert (s["fee_per_cube"] <= s["round_clearing_price"]).all()
    assert (s["credit"] <= s["reservation_fee"] + 1e-9).all()
    assert (s["net"] >= 0).all()
    assert np.allclose(s["net"], s["reservation_fee"] - s["credit"], atol=1e-6)
