"""The Python API checks what it is given: every public function, handed any mix of valid and wrong arguments,
returns or raises optalloc's own error (one clear line naming the argument), never an AttributeError, TypeError or
ValueError from deep inside. `run_period(None)`, `allocate(inst, "highspy")`, `clear_round(..., limits=<DataFrame>)`,
`Instance.from_tables(tables=None)`, `Settings(pool_share=2)` and `clear_round(inst, "1")` each did."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import optalloc
from conftest import INSTANCES, examples
from optalloc.errors import InputError, OptallocError
from optalloc.io import load_instance

WORKED = load_instance(INSTANCES / "worked_example.json")
BASE = optalloc.allocate(WORKED)
INDEX = ["seller_id", "storage_type", "month"]


def _limits(values) -> pd.Series:
    keys = BASE.limits.index
    return pd.Series(np.resize(np.asarray(values, dtype=float), len(keys)), index=keys)


JUNK = [None, 0, 1, -1, 2, 1.5, math.nan, math.inf, True, "", "1", "highspy", "csv", [], {}, [1, 2], {"a": 1}, b"bytes", object(),
        pd.DataFrame(), pd.DataFrame({"x": [1]}), pd.Series(dtype=float), pd.Series([1.0, 2.0])]
LIMITS = [BASE.limits, BASE.limits["limit_cube"], _limits([np.nan]), _limits([-5.0]), _limits([np.inf]), _limits([1.0]).iloc[:1]]
VALID = {
    "instance": [WORKED],
    "options": [None, optalloc.SolverOptions(), {"backend": "highspy"}, {"time_limit": -1}],
    "round": [1, 2, 3],
    "limits": LIMITS,
    "baseline": [BASE],
    "executor": [None],
}


def values(kind: str):
    return st.sampled_from(VALID.get(kind, []) + JUNK)


def call(fn, *args, **kwargs) -> None:
    try:
        fn(*args, **kwargs)
    except OptallocError as e:
        text = str(e)
        assert "Traceback" not in text and text.strip(), text
    except Exception as e:  # noqa: BLE001 -- the point of the test
        pytest.fail(f"{getattr(fn, '__qualname__', fn)} raised {type(e).__name__}: {e}")


QUICK = settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
                 derandomize=True)


@QUICK
@given(instance=values("instance"), options=values("options"), executor=values("executor"))
def test_run_period_and_allocate(instance, options, executor):
    call(optalloc.run_period, instance, options, executor)
    call(optalloc.allocate, instance, options, executor=executor)


@QUICK
@given(instance=values("instance"), round_=values("round"), limits=values("limits"), held=values("held"), options=values("options"),
       method=st.sampled_from([None, "sort", "highspy", "pyomo", "pro_rata", 3, ""]))
def test_clear_round(instance, round_, limits, held, options, method):
    call(optalloc.clear_round, instance, round_, limits=limits, held=held, options=options, method=method)


@QUICK
@given(instance=values("instance"), baseline=values("baseline"), options=values("options"), through=values("round"), clearing=values("x"))
def test_clear_rounds_settle_and_held_grants(instance, baseline, options, through, clearing):
    call(optalloc.clear_rounds, instance, baseline, options, through)
    call(optalloc.settle, instance, baseline, clearing)
    call(optalloc.held_grants, clearing, baseline)


@QUICK
@given(period=st.sampled_from([WORKED.period, WORKED.period.model_dump(), {"period_id": "P"}, *JUNK]),
       tables=st.sampled_from([{"fcs": WORKED.fcs, "sellers": WORKED.sellers, "needs": WORKED.needs}, {"fcs": [1, 2]}, {1: WORKED.fcs},
                               {"fcs": "text"}, *JUNK]),
       settings_=st.sampled_from([None, {}, {"pool_share": 2}, optalloc.Settings(), *JUNK]), name=st.sampled_from(["x", *JUNK]),
       sources=st.sampled_from([None, {"fcs": "f.csv"}, {"fcs": 1}, *JUNK]))
def test_instance_from_tables(period, tables, settings_, name, sources):
    call(optalloc.Instance.from_tables, period=period, tables=tables, settings=settings_, name=name, sources=sources)


@QUICK
@given(key=st.sampled_from(["pool_share", "credit_rate", "clearing_rule", "need_tiers", "reserve_price", "solver", "nope"]),
       value=st.sampled_from([0.2, 2, -1, "welfare", [0.5, 1.0], None, *JUNK]))
def test_settings_solver_options_and_what_ifs(key, value):
    call(optalloc.Settings, **{key: value})
    call(optalloc.SolverOptions, **{key: value})
    call(WORKED.with_settings, **{key: value})
    call(optalloc.Scenario(WORKED).with_settings, **{key: value})
    call(optalloc.Scenario(WORKED).with_pool_share, value)


@QUICK
@given(round_=values("round"), through=values("round"), settle=st.sampled_from([True, False, None, 1, "no"]), names=values("x"))
def test_the_facade(round_, through, settle, names):
    call(optalloc.Scenario, round_)
    scenario = optalloc.Scenario(WORKED)
    call(scenario.clear, round_)
    call(optalloc.Scenario(WORKED).optimize, through=through, settle=settle)
    result = optalloc.Scenario(WORKED).optimize()
    call(optalloc.compare, result, result, names=names)
    call(optalloc.compare, result, names)
    call(result.summary, names)


@QUICK
@given(path=values("x"), fmt=st.sampled_from(["csv", "parquet", *JUNK]), tables=st.sampled_from([{"limits": BASE.limits}, *JUNK]),
       summary=st.sampled_from([{}, *JUNK]))
def test_files(tmp_path_factory, path, fmt, tables, summary):
    here = tmp_path_factory.mktemp("api")
    target = here / "out" if isinstance(path, str) and path else path
    call(optalloc.load_instance, path)
    call(optalloc.write_tables, target, tables, summary, fmt)
    call(optalloc.Scenario.load, path)
    call(optalloc.Scenario(WORKED).optimize().write, here / "res", fmt)


def test_the_named_cases_are_one_line_each():
    cases = [
        (lambda: optalloc.run_period(None), "field 'instance': needs an Instance"),
        (lambda: optalloc.allocate(WORKED, "highspy"), "for a backend: SolverOptions(backend='highspy')"),
        (lambda: optalloc.clear_round(WORKED, 1, limits=BASE.limits.reset_index()), "limits are indexed by seller_id, storage_type, month"),
        (lambda: optalloc.Instance.from_tables(period=WORKED.period, tables=None), "field 'tables': tables is a dict"),
        (lambda: optalloc.Settings(pool_share=2), "Settings, field 'pool_share': Input should be less than or equal to 1"),
        (lambda: optalloc.clear_round(WORKED, "1", limits=BASE.limits), "a round is a whole number, one of 1, 2; got str '1'"),
        (lambda: optalloc.clear_round(WORKED, 1, limits=_limits([np.nan])), "every limit is a finite number of cube, 0 or more"),
        (lambda: optalloc.clear_round(WORKED, 1, limits=_limits([np.inf])), "every limit is a finite number of cube, 0 or more"),
        (lambda: optalloc.clear_round(WORKED, 1, limits=_limits([-1.0])), "every limit is a finite number of cube, 0 or more"),
        (lambda: optalloc.clear_round(WORKED, 1, limits=pd.Series(dtype=float, index=pd.MultiIndex.from_tuples([], names=INDEX))),
         "no limits: pass the baseline's limits"),
    ]
    for fn, message in cases:
        with pytest.raises(InputError) as e:
            fn()
        assert message in str(e.value) and "\n" not in str(e.value), str(e.value)
    # a limits DataFrame is the baseline's own table: taken as its limit_cube column
    a = optalloc.clear_round(WORKED, 1, limits=BASE.limits)
    b = optalloc.clear_round(WORKED, 1, limits=BASE.limits["limit_cube"])
    pd.testing.assert_frame_equal(a.grants, b.grants)
