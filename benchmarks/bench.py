"""optalloc benchmark: seconds per stage and peak memory, Pyomo reference vs fast path, by size.

    python benchmarks/bench.py                 # the sizes in docs/performance.md (about 8 minutes)
    python benchmarks/bench.py --quick         # small sizes, a minute
    python benchmarks/bench.py --solver-study  # HiGHS LP methods x presolve on the baseline and clearing LPs

Every measurement runs in a fresh process (peak memory = that process's max RSS), on an instance
generated beforehand by `optalloc generate` and read back from Parquet (so "load" includes validation).
Stages: load (read + validate), prepare (instance -> model data), build (Pyomo model or arrays),
solve (all solver calls, or the sort), extract (tidy result tables). The single-pool rows also show the
floor: one numpy argsort of the same fees, and the ratio clear time / floor.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

FULL = {
    "single_pool": {"sizes": [10_000, 100_000, 1_000_000], "paths": {"pyomo": 10_000, "highspy": 1_000_000, "sort": 1_000_000}},
    "general_round": {"sizes": [10_000, 100_000], "paths": {"pyomo": 10_000, "highspy": 100_000}},
    "baseline": {"sizes": [10_000, 100_000], "paths": {"pyomo": 10_000, "highspy": 100_000}},
}
QUICK = {
    "single_pool": {"sizes": [1_000, 100_000], "paths": {"pyomo": 1_000, "highspy": 100_000, "sort": 100_000}},
    "general_round": {"sizes": [2_000, 20_000], "paths": {"pyomo": 2_000, "highspy": 20_000}},
    "baseline": {"sizes": [2_000, 20_000], "paths": {"pyomo": 2_000, "highspy": 20_000}},
}


def generate_args(case: str, size: int) -> list[str]:
    if case == "single_pool":
        return ["--single-pool", "--requests", str(size)]
    if case == "general_round":  # FC placement, multi-month, 5% min_cube; 50 FCs in 10 regions
        return ["--sellers", "20000", "--fcs", "50", "--regions", "10", "--storage-types", "2", "--months", "3",
                "--rounds", "1", "--requests", str(size), "--min-cube-share", "0.05", "--multi-month-share", "0.3"]
    # baseline: size sellers x 50 FCs (5 per region, one region each) x 3 months
    return ["--sellers", str(size), "--fcs", "50", "--regions", "10", "--storage-types", "1", "--months", "3",
            "--rounds", "1", "--requests", "0", "--second-region-share", "0"]


# ------------------------------------------------------------------ child: one measurement


def run_one(case: str, folder: str, path: str) -> dict:
    import numpy as np

    from optalloc import progress
    from optalloc.baseline import allocate
    from optalloc.clearing import clear_round
    from optalloc.io import load_instance
    from optalloc.schemas import SolverOptions

    t = time.perf_counter()
    inst = load_instance(folder)
    out = {"load": time.perf_counter() - t}
    options = SolverOptions(backend="pyomo" if path == "pyomo" else "highspy")
    with progress.timings() as timings:
        if case == "baseline":
            res = allocate(inst, options)
            out["objective"] = res.objective
        else:
            limits = allocate(inst, SolverOptions(backend="highspy")).limits["limit_cube"]
            timings.clear()
            res = clear_round(inst, 1, limits=limits, options=options, method=path if path != "highspy" else "highspy")
            out["objective"] = float(res.prices["objective"].sum())
            if case == "single_pool":
                fee = inst.requests["max_fee_per_cube"].to_numpy()
                floor = []
                for _ in range(5):
                    t = time.perf_counter()
                    np.argsort(-fee, kind="stable")
                    floor.append(time.perf_counter() - t)
                out["floor"] = min(floor)
    for name, seconds in timings.items():
        stage_ = name.rsplit(": ", 1)[-1]
        out[stage_] = out.get(stage_, 0.0) + seconds
    out["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


# ------------------------------------------------------------------ parent: the table


def child(args: list[str], timeout: float) -> dict | str:
    try:
        p = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"> {timeout:.0f} s"
    if p.returncode != 0:
        return "failed: " + (p.stderr.strip().splitlines() or ["?"])[-1][:80]
    return json.loads(p.stdout.strip().splitlines()[-1])


def fmt(x, digits=2) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def benchmark(plan: dict, timeout: float) -> None:
    cols = ["case", "size", "path", "load s", "prepare s", "build s", "solve s", "extract s", "total s", "peak MiB", "floor s", "solve/floor", "objective"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    with tempfile.TemporaryDirectory(prefix="optalloc-bench-") as tmp:
        for case, spec in plan.items():
            for size in spec["sizes"]:
                folder = os.path.join(tmp, f"{case}_{size}")
                subprocess.run([sys.executable, "-m", "optalloc.cli", "generate", "-q", "--format", "parquet", "-o", folder, *generate_args(case, size)], check=True)
                for path, max_size in spec["paths"].items():
                    if size > max_size:
                        continue
                    r = child(["--run", case, folder, path], timeout)
                    if isinstance(r, str):
                        print(f"| {case} | {size:,} | {path} | {r} |" + " |" * (len(cols) - 4))
                        continue
                    work = sum(r.get(k, 0.0) for k in ("prepare", "build", "solve", "extract"))
                    ratio = r["solve"] / r["floor"] if r.get("floor") else None
                    row = [case, f"{size:,}", path, fmt(r["load"]), fmt(r.get("prepare")), fmt(r.get("build", 0.0)), fmt(r.get("solve"), 3),
                           fmt(r.get("extract")), fmt(r["load"] + work), fmt(r["peak_mib"], 0), fmt(r.get("floor"), 3), fmt(ratio, 1),
                           f"{r['objective']:.6g}"]
                    print("| " + " | ".join(row) + " |", flush=True)


def solver_study(timeout: float) -> None:
    """HiGHS LP methods on the two LP shapes optalloc builds, with and without presolve."""
    print("| LP | rows x columns | method | presolve | seconds |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="optalloc-study-") as tmp:
        for case, size in [("baseline", 30_000), ("baseline", 100_000), ("general_round_lp", 100_000)]:
            folder = os.path.join(tmp, f"{case}_{size}")
            gen = generate_args("baseline" if case == "baseline" else "general_round", size)
            if case == "general_round_lp":
                gen = [a if a != "0.05" else "0" for a in gen]  # no min_cube: the pure LP
            subprocess.run([sys.executable, "-m", "optalloc.cli", "generate", "-q", "--format", "parquet", "-o", folder, *gen], check=True)
            for method in ("ipm", "dual_simplex", "primal_simplex"):
                for presolve in ("off", "on"):
                    r = child(["--study", case, folder, method, presolve], timeout)
                    if isinstance(r, str):
                        print(f"| {case} {size:,} | | {method} | {presolve} | {r} |", flush=True)
                    else:
                        print(f"| {case} {size:,} | {r['shape']} | {method} | {presolve} | {r['seconds']:.2f} |", flush=True)


def study_one(case: str, folder: str, method: str, presolve: str) -> dict:
    from optalloc.baseline import build_baseline_class_arrays, prepare_baseline
    from optalloc.clearing import build_clearing_arrays, prepare_clearing
    from optalloc.baseline import allocate
    from optalloc.io import load_instance
    from optalloc.schemas import SolverOptions
    from optalloc.solver import solve_arrays

    inst = load_instance(folder)
    if case == "baseline":
        d = prepare_baseline(inst)
        lp, _ = build_baseline_class_arrays(d, d.layout)
    else:
        limits = allocate(inst, SolverOptions(backend="highspy")).limits["limit_cube"]
        lp, _ = build_clearing_arrays(prepare_clearing(inst, 1, limits))
    t = time.perf_counter()
    solve_arrays(lp, SolverOptions(lp_method=method, presolve=presolve), what=case)
    return {"seconds": time.perf_counter() - t, "shape": f"{len(lp.row_lower):,} x {len(lp.col_cost):,}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", help="comma-separated cases: single_pool, general_round, baseline")
    ap.add_argument("--solver-study", action="store_true")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per measurement (default 600)")
    ap.add_argument("--run", nargs=3, metavar=("CASE", "FOLDER", "PATH"), help=argparse.SUPPRESS)
    ap.add_argument("--study", nargs=4, metavar=("CASE", "FOLDER", "METHOD", "PRESOLVE"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.run:
        print(json.dumps(run_one(*a.run)))
        return
    if a.study:
        print(json.dumps(study_one(*a.study)))
        return
    if a.solver_study:
        solver_study(a.timeout)
        return
    plan = QUICK if a.quick else FULL
    if a.only:
        plan = {k: v for k, v in plan.items() if k in a.only.split(",")}
    print(f"optalloc benchmark — {os.cpu_count()} cores, Python {sys.version.split()[0]}\n")
    benchmark(plan, a.timeout)


if __name__ == "__main__":
    main()
