"""Settings and solver options moved off their defaults: HiGHS is given each solver option, the answer does not depend
on the LP algorithm, the backend switches where `auto_pyomo_max_rows` says, and every bound refuses the value just
beyond it and takes the value at it. What each policy setting does to an answer is tested where its rule is
(test_baseline.py: pool_share, need_tiers, tier_weights, value_floor, headroom; test_settlement.py: credit_rate, credit_cap_share;
test_clearing.py: request caps, reserve_price, clearing and tie rules)."""

import pytest
from pydantic import ValidationError

from optalloc.baseline import allocate
from optalloc.generate import GenerateSpec, generate
from optalloc.schemas import MAX_CUBE, MAX_FEE, Settings, SolverOptions
from optalloc.solver import new_highs


def highs_reads(options: SolverOptions, *names: str, is_mip: bool = False, kind: str = "baseline") -> list:
    """What the HiGHS object the engine builds holds for these options (not what a dict says it was told)."""
    h = new_highs(options, is_mip=is_mip, kind=kind)
    return [h.getOptionValue(name)[1] for name in names]


@pytest.mark.parametrize(
    "options, kind, expected",
    [
        (SolverOptions(), "baseline", ("ipm", None)),  # auto: IPM with crossover for the baseline ...
        (SolverOptions(), "clearing", ("simplex", 1)),  # ... dual simplex (strategy 1) for a round
        (SolverOptions(lp_method="ipm"), "clearing", ("ipm", None)),
        (SolverOptions(lp_method="primal_simplex"), "baseline", ("simplex", 4)),
        (SolverOptions(lp_method="dual_simplex"), "baseline", ("simplex", 1)),
    ],
)
def test_lp_method_picks_the_highs_algorithm(options, kind, expected):
    solver, crossover, strategy = highs_reads(options, "solver", "run_crossover", "simplex_strategy", kind=kind)
    if expected[0] == "ipm":
        assert (solver, crossover) == ("ipm", "on")  # crossover: a vertex, grants at their bounds, duals of a basis
    else:
        assert (solver, strategy) == expected


@pytest.mark.parametrize("presolve, is_mip, expected", [("auto", False, "off"), ("auto", True, "on"), ("on", False, "on"), ("off", True, "off")])
def test_presolve_reaches_highs(presolve, is_mip, expected):
    assert highs_reads(SolverOptions(presolve=presolve), "presolve", is_mip=is_mip) == [expected]


def test_gap_tolerances_and_time_limit_reach_highs():
    options = SolverOptions(mip_rel_gap=0.25, feasibility_tolerance=1e-9, time_limit=12.5)
    names = ("mip_rel_gap", "primal_feasibility_tolerance", "dual_feasibility_tolerance", "mip_feasibility_tolerance", "time_limit")
    assert highs_reads(options, *names, is_mip=True) == [0.25, 1e-9, 1e-9, 1e-9, 12.5]
    assert highs_reads(SolverOptions(), "mip_rel_gap", "primal_feasibility_tolerance")[0:2] == [0.0, 1e-7]


@pytest.fixture(scope="module")
def instance():
    return generate(GenerateSpec(sellers=400, fcs=6, regions=3, storage_types=1, months=2, requests=0, tightness=0.8, seed=5))


@pytest.mark.parametrize("lp_method", ["ipm", "primal_simplex", "dual_simplex"])
@pytest.mark.parametrize("presolve", ["on", "off"])
def test_the_baseline_does_not_depend_on_the_lp_algorithm(instance, lp_method, presolve):
    reference = allocate(instance, SolverOptions(backend="highspy"))
    got = allocate(instance, SolverOptions(backend="highspy", lp_method=lp_method, presolve=presolve, feasibility_tolerance=1e-9))
    assert got.objective == pytest.approx(reference.objective, rel=1e-9)
    assert (got.limits["limit_cube"] - reference.limits["limit_cube"]).abs().max() <= 1e-6


def test_auto_backend_switches_at_auto_pyomo_max_rows(instance):
    """backend auto: the Pyomo reference up to `auto_pyomo_max_rows` baseline cells, the array build above; the same
    limits either way."""
    cells = len(instance.needs)
    at = allocate(instance, SolverOptions(auto_pyomo_max_rows=cells))
    above = allocate(instance, SolverOptions(auto_pyomo_max_rows=cells - 1))
    assert (at.backend, above.backend) == ("pyomo", "highspy")
    assert (at.limits["limit_cube"] - above.limits["limit_cube"]).abs().max() <= 1e-6


@pytest.mark.parametrize(
    "field, outside, edge",
    [
        ("time_limit", 0.0, 1e-3),
        ("time_limit", 1.1e7, 1e7),
        ("mip_rel_gap", -0.01, 0.0),
        ("mip_rel_gap", 1.01, 1.0),
        ("feasibility_tolerance", 0.0, 1e-12),
        ("feasibility_tolerance", 2e-4, 1e-4),
        ("threads", 0, 1),
        ("threads", 1025, 1024),
        ("auto_pyomo_max_rows", -1, 0),
        ("auto_pyomo_max_rows", 10**12 + 1, 10**12),
    ],
)
def test_each_bound_refuses_the_value_just_beyond_it(field, outside, edge):
    with pytest.raises(ValidationError, match=field):
        SolverOptions.model_validate({field: outside})
    assert getattr(SolverOptions.model_validate({field: edge}), field) == edge


def test_auto_method_of_a_welfare_round_switches_at_auto_pyomo_max_rows():
    """clearing_rule welfare, backend auto: the Pyomo reference up to `auto_pyomo_max_rows` of the round's requests,
    the array build above; the same grants either way. (The priority rule is computed by its own method at any size.)"""
    from optalloc.clearing import choose_method, clear_round, prepare_clearing

    inst = generate(GenerateSpec(sellers=60, fcs=4, regions=2, storage_types=1, months=2, rounds=1, requests=120, seed=3))
    inst = inst.with_settings(clearing_rule="welfare")
    limits = allocate(inst).limits["limit_cube"]
    d = prepare_clearing(inst, 1, limits)
    assert not d.single_pool and d.n > 1
    assert choose_method(d, SolverOptions(auto_pyomo_max_rows=d.n)) == "pyomo"
    assert choose_method(d, SolverOptions(auto_pyomo_max_rows=d.n - 1)) == "highspy"
    at = clear_round(inst, 1, limits=limits, options=SolverOptions(auto_pyomo_max_rows=d.n))
    above = clear_round(inst, 1, limits=limits, options=SolverOptions(auto_pyomo_max_rows=d.n - 1))
    assert at.grants["granted_cube"].equals(above.grants["granted_cube"])


@pytest.mark.parametrize(
    "field, outside, edge",
    [
        ("pool_share", -0.01, 0.0),
        ("pool_share", 1.01, 1.0),
        ("headroom", -0.01, 0.0),
        ("headroom", 100.5, 100.0),
        ("value_floor", 0.0, 1e-9),
        ("value_floor", 1.01, 1.0),
        ("credit_rate", -0.01, 0.0),
        ("credit_rate", 1.01, 1.0),
        ("credit_cap_share", -0.01, 0.0),
        ("credit_cap_share", 1.01, 1.0),
        ("request_cap_share", -0.01, 0.0),
        ("request_cap_share", 1000.5, 1000.0),
        ("request_cap_cube", -0.01, 0.0),
        ("request_cap_cube", MAX_CUBE * 1.01, MAX_CUBE),
        ("reserve_price", -0.01, 0.0),
        ("reserve_price", MAX_FEE * 1.01, MAX_FEE),
    ],
)
def test_each_settings_bound_refuses_the_value_just_beyond_it(field, outside, edge):
    with pytest.raises(ValidationError, match=field):
        Settings.model_validate({field: outside})
    assert getattr(Settings.model_validate({field: edge}), field) == edge


@pytest.mark.parametrize(
    "tiers, weights, message",
    [
        ([0.5, 0.5], [1.0, 0.1, 0.01], "strictly increasing"),
        ([0.0, 1.0], [1.0, 0.1, 0.01], "positive"),
        ([0.5, 1001.0], [1.0, 0.1, 0.01], "less than or equal to 1000"),
        ([0.5, 1.0], [1.0, 0.1], "one weight more"),
        ([0.5, 1.0], [1.0, 1.0, 0.01], "strictly decreasing"),
        ([0.5, 1.0], [2e6, 0.1, 0.01], "less than or equal to 1000000"),
        ([float(i + 1) for i in range(101)], [1.0 / (i + 1) for i in range(102)], "at most 100 items"),
    ],
)
def test_need_tiers_and_weights_are_checked(tiers, weights, message):
    """Settings(...) made in Python raises optalloc's InputError (pydantic's ValidationError is the loaders' concern)."""
    from optalloc.errors import InputError

    with pytest.raises(InputError, match=message):
        Settings(need_tiers=tiers, tier_weights=weights)
    many = [float(i + 1) for i in range(100)]  # the most tiers allowed
    assert len(Settings(need_tiers=many, tier_weights=[1.0 / (i + 1) for i in range(101)]).need_tiers) == 100
