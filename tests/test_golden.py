"""Golden answers for the shipped multi-FC, multi-round instance: any change to grants, prices or
settlement shows up here. Regenerate deliberately (and say why in the commit):
    optalloc solve instances/small_network -o /tmp/g -q && cp /tmp/g/{round_prices,settlement}.csv tests/golden/small_network/
    (grants.csv keeps round, request_id, granted_cube, status, reason)
"""

import pandas as pd
import pytest

from conftest import INSTANCES, ROOT
from optalloc.cli import run

GOLDEN = ROOT / "tests" / "golden" / "small_network"


@pytest.fixture(scope="module")
def solved(tmp_path_factory):
    out = tmp_path_factory.mktemp("golden") / "out"
    assert run(["solve", str(INSTANCES / "small_network"), "-o", str(out), "-q"]) == 0
    return out


# Clearing prices are unique; pool duals (and the paradox flag read from them) need not be when the LP is
# degenerate: the build path or LP method may report a different valid one.
UNIQUE = ["round", "storage_type", "requests", "granted_requests", "granted_cube", "clearing_price", "objective", "method"]


def test_settlement_matches_golden(solved):
    assert (solved / "settlement.csv").read_text() == (GOLDEN / "settlement.csv").read_text()


def test_round_prices_match_golden(solved):
    pd.testing.assert_frame_equal(pd.read_csv(solved / "round_prices.csv")[UNIQUE], pd.read_csv(GOLDEN / "round_prices.csv")[UNIQUE])


def test_grants_match_golden(solved):
    got = pd.read_csv(solved / "grants.csv")[["round", "request_id", "granted_cube", "status", "reason"]]
    pd.testing.assert_frame_equal(got, pd.read_csv(GOLDEN / "grants.csv"))


def test_fast_path_gives_the_golden_answer_too(tmp_path):
    out = tmp_path / "fast"
    assert run(["solve", str(INSTANCES / "small_network"), "-o", str(out), "-q", "--backend", "highspy"]) == 0
    got = pd.read_csv(out / "grants.csv")[["round", "request_id", "granted_cube", "status", "reason"]]
    pd.testing.assert_frame_equal(got, pd.read_csv(GOLDEN / "grants.csv"))
    assert (out / "settlement.csv").read_text() == (GOLDEN / "settlement.csv").read_text()
    pd.testing.assert_frame_equal(pd.read_csv(out / "round_prices.csv")[UNIQUE], pd.read_csv(GOLDEN / "round_prices.csv")[UNIQUE])
