"""The market simulator: seeded, reproducible, and consistent with the engine that clears and settles it."""

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from optalloc import tables, units
from optalloc.cli import run
from optalloc.simulate import SimulationSpec, simulate
from conftest import examples

EPS = 1e-6


def test_the_same_seed_gives_the_same_tables_and_another_seed_others():
    a, b = simulate(SimulationSpec(sellers=80, fcs=4, seed=3)), simulate(SimulationSpec(sellers=80, fcs=4, seed=3))
    for name, frame in a.tables().items():
        pd.testing.assert_frame_equal(frame, b.tables()[name], obj=name)
    c = simulate(SimulationSpec(sellers=80, fcs=4, seed=4))
    assert not c.headline.equals(a.headline)


@settings(max_examples=examples(8), deadline=None)
@given(seed=st.integers(0, 10_000), rounds=st.integers(1, 3), storage_types=st.integers(1, 2),
       pool_share=st.sampled_from([0.05, 0.1, 0.2]), forecast_error=st.sampled_from([0.0, 0.3, 0.6]))
def test_what_the_market_gives_out_is_paid_for_by_the_rules(seed, rounds, storage_types, pool_share, forecast_error):
    r = simulate(SimulationSpec(sellers=60, fcs=4, regions=2, rounds=rounds, storage_types=storage_types, pool_share=pool_share,
                                forecast_error=forecast_error, seed=seed))
    h = r.headline["market"]
    # Space: no more than the pool is given out, and no more than that is used.
    assert h["pool space given out (cube-months)"] <= h["pool (cube-months)"] + EPS
    assert h["of it used by its holder (cube-months)"] <= h["pool space given out (cube-months)"] + EPS
    assert r.headline.loc["pool space given out (cube-months)", "planner_lp"] <= h["pool (cube-months)"] + EPS
    # Bids: nobody offers more than the space is worth to it.
    reqs = r.requests
    assert (reqs["max_fee_per_cube"] <= reqs["value"] + EPS).all()
    # Fees: never above the offer, never above the round's price; earlier rounds never pay more than later ones' protected price.
    s = r.settlement
    assert (s["fee_per_cube"] <= s["max_fee_per_cube"] + EPS).all() and (s["fee_per_cube"] <= s["round_clearing_price"] + EPS).all()
    protected = s.groupby([s.index.get_level_values("round"), "storage_type"])["protected_price"].first().unstack()
    assert (protected.ffill().diff().fillna(0) >= -EPS).all().all()
    # Credits never exceed fees; the headline totals are the engine's settlement totals, summed as settlement.csv
    # shows its rows (each to the cent), and within a cent a grant of the unrounded ones.
    assert (s["credit"] <= s["reservation_fee"] + EPS).all() and (s["net"] >= 0).all()
    shown = tables.round_table("settlement", s)
    assert h["reservation fees ($)"] == units.total(shown["reservation_fee"], units.MONEY)
    assert h["fees net of credits ($)"] == units.total(shown["net"], units.MONEY)
    assert abs(h["reservation fees ($)"] - s["reservation_fee"].sum()) <= 0.01 * len(s) + 1e-6
    assert abs(h["fees net of credits ($)"] - s["net"].sum()) <= 0.01 * len(s) + 1e-6
    # Every bid was audited by the engine in its round.
    assert set(r.grants.reset_index()["request_id"]) == set(reqs["request_id"])


def test_the_command_prints_the_headline_and_writes_its_tables(tmp_path, capsys):
    assert run(["simulate", "--sellers", "60", "--fcs", "4", "--seed", "1", "-o", str(tmp_path / "sim"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "| sales per cube-month given out ($) |" in out and "## by round of grant" in out
    names = sorted(p.name for p in (tmp_path / "sim").iterdir())
    assert names == [".optalloc-output", "bids.csv", "by_round.csv", "grants.csv", "headline.csv", "settlement.csv", "summary.json", "truth.csv"]


def test_savings_split_into_the_uniform_price_and_price_protection_by_hand():
    """Round 1 clears at $3 and round 2 at $2. A round-1 winner offered $5 for 100 cube: the uniform price saves it
    ($5 - $3) x 100 = $200 of its $500 offer (0.4), price protection ($3 - $2) x 100 = $100 more (0.2); it pays $200.
    A round-2 winner offered $4 for 50 cube and pays round 2's $2: 0.5 by the uniform price, nothing by protection."""
    import pandas as pd

    from optalloc.simulate import _by_round

    requests = pd.DataFrame({"request_id": ["A", "B", "C"], "round": [1, 2, 2], "storage_type": "standard"})
    grants = pd.DataFrame({"round": [1, 2, 2], "request_id": ["A", "B", "C"], "storage_type": "standard",
                           "granted_cube": [100.0, 50.0, 0.0]}).set_index(["round", "request_id"])
    settlement = pd.DataFrame({"round": [1, 2], "request_id": ["A", "B"], "seller_id": ["S1", "S2"], "storage_type": "standard",
                               "max_fee_per_cube": [5.0, 4.0], "granted_cube": [100.0, 50.0], "round_clearing_price": [3.0, 2.0],
                               "protected_price": [2.0, 2.0], "fee_per_cube": [2.0, 2.0], "reservation_fee": [200.0, 100.0],
                               "credit": [0.0, 0.0], "net": [200.0, 100.0]}).set_index(["round", "request_id"])
    out = _by_round(requests, grants, settlement)
    r1, r2 = out.loc[(1, "standard")], out.loc[(2, "standard")]
    assert (r1["saved_by_uniform_price"], r1["saved_by_price_protection"]) == (0.4, 0.2)
    assert (r2["saved_by_uniform_price"], r2["saved_by_price_protection"]) == (0.5, 0.0)
    assert (r1["mean_offer_per_cube"], r1["mean_paid_per_cube"], r2["bids"], r2["granted_requests"]) == (5.0, 2.0, 2, 1)
