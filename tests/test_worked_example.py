"""The spec's worked example, exactly: $6 -> $4, $20,000 fee, $45,000 credits capped at $20,000, net $0."""

import json

import pandas as pd

from optalloc.cli import run
from optalloc.period import run_period


def test_worked_example_through_the_api(worked_example):
    result = run_period(worked_example)
    limits = result.baseline.limits["limit_cube"]
    assert (limits.xs("HALLOWEEN-SHOP", level="seller_id") == 10_000).all()

    grants = result.clearing.grants
    assert grants.loc[(1, "R-HALLOWEEN"), "granted_cube"] == 5_000
    assert grants.loc[(1, "R-HALLOWEEN"), "status"] == "granted"
    prices = result.clearing.round_prices["clearing_price"]
    assert prices.loc[(1, "standard")] == 6.0
    assert prices.loc[(2, "standard")] == 4.0

    row = result.settlement.loc[(1, "R-HALLOWEEN")]
    assert row["fee_per_cube"] == 4.0
    assert row["reservation_fee"] == 20_000.0
    assert row["attributed_sales"] == 300_000.0
    assert 0.15 * row["attributed_sales"] == 45_000.0  # earned, before the cap
    assert row["credit"] == 20_000.0
    assert row["net"] == 0.0


def test_worked_example_through_the_cli(tmp_path):
    out = tmp_path / "out"
    assert run(["solve", "instances/worked_example.json", "-o", str(out), "--quiet"]) == 0
    settlement = pd.read_csv(out / "settlement.csv").set_index("request_id")
    assert settlement.loc["R-HALLOWEEN", ["fee_per_cube", "reservation_fee", "credit", "net"]].tolist() == [4.0, 20000.0, 20000.0, 0.0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settlement"]["reservation_fees"] == 28_000.0  # 20,000 + the late bidder's 4 x 2,000
    assert summary["settlement"]["credits"] == 20_000.0
