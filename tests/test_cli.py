"""The CLI end to end: determinism, formats, and the incremental allocate -> clear -> settle chain."""

import filecmp
import json

import pandas as pd
import pytest

from conftest import INSTANCES
from optalloc.cli import run

SMALL = str(INSTANCES / "small_network")


def test_same_input_gives_byte_identical_output(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run(["solve", SMALL, "-o", str(a), "-q"]) == 0
    assert run(["solve", SMALL, "-o", str(b), "-q", "--backend", "pyomo"]) == 0
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert mismatch == [] and errors == []


def test_markets_on_two_worker_processes_give_byte_identical_output(tmp_path, monkeypatch, own_dask_cluster):
    """`--workers 2` solves the baseline's markets and each round's storage types (small_network has two) on a Dask
    LocalCluster: every file it writes equals the in-process run's, byte for byte."""
    import optalloc.cli as cli

    mapped = []
    real = cli.make_executor

    def counting(workers):
        ex = real(workers)
        inner = ex.map

        def map_counted(fn, calls):  # calls may be a generator (the baseline builds each market as it is sent): counted as taken
            taken = []

            def counted():
                for call in calls:
                    taken.append(call)
                    yield call

            out = inner(fn, counted())
            mapped.append((fn.__name__, len(taken)))
            return out

        ex.map = map_counted
        return ex

    monkeypatch.setattr(cli, "make_executor", counting)
    a, b = tmp_path / "a", tmp_path / "b"
    assert run(["solve", SMALL, "-o", str(a), "-q"]) == 0 and mapped == []
    assert run(["solve", SMALL, "-o", str(b), "-q", "--workers", "2"]) == 0
    assert ("solve_market", 6) in mapped and mapped.count(("clear_market", 2)) == 3  # 2 types x 3 months; 3 rounds
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert mismatch == [] and errors == []


def test_json_and_table_folders_give_the_same_answer(tmp_path):
    from optalloc.io import load_instance
    from optalloc.results_io import write_instance

    inst = load_instance(INSTANCES / "worked_example.json")
    write_instance(inst, tmp_path / "as_parquet", fmt="parquet")
    assert run(["solve", str(INSTANCES / "worked_example.json"), "-o", str(tmp_path / "j"), "-q"]) == 0
    assert run(["solve", str(tmp_path / "as_parquet"), "-o", str(tmp_path / "p"), "-q", "--format", "parquet"]) == 0
    j = pd.read_csv(tmp_path / "j" / "settlement.csv")
    p = pd.read_parquet(tmp_path / "p" / "settlement.parquet")
    pd.testing.assert_frame_equal(j[["request_id", "reservation_fee", "credit", "net"]], p[["request_id", "reservation_fee", "credit", "net"]])


def test_round_by_round_chain_equals_solve(tmp_path):
    assert run(["solve", SMALL, "-o", str(tmp_path / "all"), "-q"]) == 0
    assert run(["allocate", SMALL, "-o", str(tmp_path / "step0"), "-q"]) == 0
    for r in (1, 2, 3):
        assert run(["clear", SMALL, "--previous", str(tmp_path / f"step{r - 1}"), "-o", str(tmp_path / f"step{r}"), "-q"]) == 0
    assert run(["settle", SMALL, "--previous", str(tmp_path / "step3"), "-o", str(tmp_path / "settled"), "-q"]) == 0
    for table, folder in [("grants", "step3"), ("pools", "step3"), ("round_prices", "step3"), ("settlement", "settled")]:
        whole = (tmp_path / "all" / f"{table}.csv").read_text()
        assert (tmp_path / folder / f"{table}.csv").read_text() == whole, table


def test_validate_prints_a_summary(capsys):
    assert run(["validate", SMALL]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["fcs"] == 6 and summary["requests"] == 80 and summary["rounds"] == [1, 2, 3]


def test_progress_goes_to_stderr_unless_quiet(tmp_path, capsys):
    run(["allocate", str(INSTANCES / "worked_example.json"), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert "[optalloc] baseline: done in" in err and "optalloc: wrote 3 tables and summary.json to" in err
    run(["allocate", str(INSTANCES / "worked_example.json"), "-o", str(tmp_path / "o"), "-q"])
    assert capsys.readouterr().err == ""


def test_a_time_limit_that_stops_the_solver_is_an_error_not_a_result(tmp_path):
    from optalloc.errors import SolveError
    from optalloc.generate import GenerateSpec, generate
    from optalloc.period import run_period
    from optalloc.schemas import SolverOptions

    inst = generate(GenerateSpec(sellers=3000, fcs=10, regions=3, storage_types=2, months=3, requests=0, seed=1))
    with pytest.raises(SolveError, match="stopped_at_limit"):
        run_period(inst, SolverOptions(time_limit=1e-4, backend="highspy"))


def test_python_m_optalloc_is_the_optalloc_command(real_process):
    """`python -m optalloc` (no console script on the PATH, say in a venv not activated) runs the same command: it
    was "No module named optalloc.__main__"."""
    import sys

    done = real_process.run(argv=[sys.executable, "-m", "optalloc", "validate", str(INSTANCES / "worked_example.json"), "-q"])
    assert done.returncode == 0, done.stderr
    bad = real_process.run(argv=[sys.executable, "-m", "optalloc", "validate", "/nonexistent"])
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
