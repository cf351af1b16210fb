"""Clearing rules are plug-ins: a rule registered from this module alone (lowest fee first, a toy) is accepted by the
settings, cleared by the engine, written by the command line and listed with the others; nothing outside this file
names it."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import EMPTY_LIMITS, fc, make, request
from optalloc import rules
from optalloc.clearing import clear_round
from optalloc.clearing.rules import ClearingRule
from optalloc.clearing.sort import _from_grants, _single_pool_available, _single_pool_of_class
from optalloc.clearing.data import Solution
from optalloc.errors import InputError
from optalloc.units import MILLI


class LowestFeeFirst(ClearingRule):
    """Single-pool rounds, the cheapest request first, each as much as is left (a rule nobody should use)."""

    name = "lowest_fee_first"
    description = "granted starting with the lowest fee"
    methods = ("lowest_fee_first",)

    def solve(self, d, options, method):
        left = _single_pool_available(d).copy()
        pool = _single_pool_of_class(d)[d.req_class]
        grant = np.zeros(d.n, dtype=np.int64)
        for i in np.lexsort((d.req["request_id"].to_numpy(), d.fee_cents)):
            grant[i] = min(int(d.max_milli[i]), int(left[pool[i]]))
            left[pool[i]] -= grant[i]
        cube = grant / MILLI
        return Solution(cube, _from_grants(d, cube), np.zeros(len(d.pools)), "lowest_fee_first")


@pytest.fixture
def toy_rule():
    rules.register(LowestFeeFirst)
    yield LowestFeeFirst.name
    rules.unregister(LowestFeeFirst.name)


def one_pool(rule: str | None = None):
    reqs = [request("CHEAP", 1.0, 60, minute=0), request("DEAR", 9.0, 60, minute=1)]
    return make(fcs=[fc(capacity_cube=1000.0, pool_cube=100.0)], requests=reqs, settings={"clearing_rule": rule} if rule else None)


def test_a_rule_registered_here_clears_rounds(toy_rule):
    res = clear_round(one_pool(toy_rule), 1, limits=EMPTY_LIMITS)
    got = res.grants.droplevel("round")
    assert got["granted_cube"].to_dict() == {"CHEAP": 60.0, "DEAR": 40.0}
    assert got.loc["DEAR", "reason"] == "outbid" and res.prices["method"].iloc[0] == "lowest_fee_first"
    assert toy_rule in rules.names() and rules.DESCRIPTIONS[toy_rule] == "granted starting with the lowest fee"


def test_an_unregistered_rule_is_refused_naming_the_rules():
    with pytest.raises(InputError, match="'lowest_fee_first' is not a clearing rule; the rules are priority, welfare, pro_rata"):
        one_pool("lowest_fee_first")


def test_a_method_the_rule_does_not_have_is_refused(toy_rule):
    with pytest.raises(InputError, match="clearing rule 'lowest_fee_first' is computed by 'lowest_fee_first', not 'highspy'"):
        clear_round(one_pool(toy_rule), 1, limits=EMPTY_LIMITS, method="highspy")


def test_tie_rule_pro_rata_is_the_clearing_rule_it_names_and_cannot_contradict_another():
    from optalloc.schemas import Settings

    assert Settings(tie_rule="pro_rata").clearing_rule == "pro_rata"
    with pytest.raises(InputError, match="contradicts clearing_rule 'welfare'"):
        Settings(tie_rule="pro_rata", clearing_rule="welfare")


def test_the_built_in_rules_can_be_neither_replaced_nor_removed():
    """A store's periods name their rule by its name: "welfare" must mean the built-in welfare rule in every process.
    Removing one was refused only until it had been used once (the registry then held the rule, not its import path)."""
    from optalloc.clearing.rules import WelfareRule

    rules.get("welfare")  # used: loaded into the registry
    for name in rules.BUILT_IN:
        with pytest.raises(ValueError, match="is a built-in rule"):
            rules.unregister(name)
    impostor = type("Impostor", (WelfareRule,), {"name": "priority"})
    with pytest.raises(ValueError, match="'priority' is a built-in rule; register yours under another name"):
        rules.register(impostor)
    assert type(rules.get("priority")).__name__ == "PriorityRule" and rules.names()[:3] == ["priority", "welfare", "pro_rata"]
