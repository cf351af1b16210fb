"""The nightly batch job, measured: ingest and a whole period through the store, per store and executor.

    python benchmarks/batch.py            # 100,000 requests, 20,000 sellers, 3 storage types (a few minutes)
    python benchmarks/batch.py --quick    # 10,000 requests
    python benchmarks/batch.py --pg URL   # an existing PostgreSQL server (default: a throwaway one, as the tests start)
    python benchmarks/batch.py --repeat 3 --serial   # each measurement 3 times, the fastest kept; in-process only

For each store (SQLite file, PostgreSQL) and executor (in-process, Dask LocalCluster of 2 workers) it ingests the
same generated instance into a new store, runs `optalloc batch` once for a date after every round has closed (the
baseline, 3 rounds of 3 storage-type markets each, the settlement), and prints the seconds of each step as the run
recorded them, beside `run_period` on the same instance in memory. Every configuration's results are checked equal
to the first one's. On a shared machine one run can be 1.5x another: `--repeat N` runs `run_period` and each
configuration N times (a new store each time) and keeps the fastest, and the ratio of the batch to `run_period` is
printed per configuration, both as the fastest batch over the fastest `run_period` and as the median over the
repeats of each batch run over a `run_period` run just before it (the pair sees the same machine: on a shared one,
that ratio moves less than either time).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the throwaway PostgreSQL server of the tests


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--pg", help="PostgreSQL server URL (a database is created in it per configuration)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each measurement; the fastest is kept (default 1)")
    ap.add_argument("--serial", action="store_true", help="only the in-process executor (no Dask LocalCluster)")
    args = ap.parse_args()

    from optalloc.batch import DaskExecutor, SerialExecutor, run_batch
    from optalloc.generate import GenerateSpec, generate
    from optalloc.period import run_period
    from optalloc.store import Store
    from pgserver import find_bindir, fresh_database, throwaway_server

    n = 10_000 if args.quick else 100_000
    spec = GenerateSpec(sellers=n // 5, fcs=50, regions=10, storage_types=3, months=3, rounds=3, requests=n, min_cube_share=0.05, seed=7)
    t = time.perf_counter()
    inst = generate(spec)
    print(f"instance: {n:,} requests, {spec.sellers:,} sellers, {spec.fcs} FCs, 3 storage types, 3 rounds "
          f"(generated in {time.perf_counter() - t:.1f}s)", flush=True)
    in_memory = float("inf")

    def in_memory_once() -> float:
        nonlocal in_memory
        t = time.perf_counter()
        run_period(inst)
        seconds = time.perf_counter() - t
        in_memory = min(in_memory, seconds)
        return seconds

    in_memory_once()  # imports and caches, as a batch run's first step would not have them either
    in_memory = float("inf")
    night = date(2026, 10, 1)

    rows, reference = [], None
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        pg = args.pg
        if pg is None and find_bindir():
            pg = stack.enter_context(throwaway_server(find_bindir()))
        stores = [("sqlite", lambda name: f"sqlite:///{tmp}/{name}.db")]
        if pg:
            stores.append(("postgresql", lambda name: stack.enter_context(fresh_database(pg))))
        for store_name, url_of in stores:
            executors = [("in-process", SerialExecutor), ("dask, 2 workers", lambda: DaskExecutor(workers=2))]
            for ex_name, make in executors[:1] if args.serial else executors:
                best, differs, ratios = None, False, []
                for attempt in range(args.repeat):
                    store = Store(url_of(f"{store_name}_{len(rows)}_{attempt}"))
                    t = time.perf_counter()
                    store.ingest(inst)
                    ingest = time.perf_counter() - t
                    executor = make()
                    paired = in_memory_once()  # right before the batch: the two see the same machine
                    try:
                        t = time.perf_counter()
                        report = run_batch(store, night, executor=executor)
                        total = time.perf_counter() - t
                    finally:
                        executor.close()
                    ratios.append(total / paired)
                    results = {p: store.results(p) for p in store.period_ids()}
                    if reference is None:
                        reference = results
                    same = all(results[p][k].equals(reference[p][k]) for p in results for k in results[p])
                    steps = report.timings
                    pid = inst.period.period_id
                    names = ("baseline", "round 1", "round 2", "round 3", "settlement")
                    row = [store_name, ex_name, ingest, *(steps[f"{pid} {n}"] for n in names), total]
                    print(f"  {store_name} / {ex_name}: {total:.1f}s", flush=True)
                    differs = differs or not same
                    if best is None or total < best[-1]:
                        best = row
                rows.append([*best, statistics.median(ratios), "NO" if differs else "yes"])

    head = ["store", "executor", "ingest", "baseline", "round 1", "round 2", "round 3", "settlement", "batch total",
            "x in memory", "x paired (median)", "same results"]
    print()
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        r = [*r[:-2], f"{r[-3] / in_memory:.2f}", f"{r[-2]:.2f}", r[-1]]
        print("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in r) + " |")
    fastest = f" (fastest of {args.repeat})" if args.repeat > 1 else ""
    print(f"\nin memory (run_period, no store): {in_memory:.2f}s{fastest}. x in memory: the fastest batch over the fastest "
          "run_period; x paired: each batch run over the run_period run just before it, the median of the repeats. "
          "Round timings include reading the held grants and writing the round.")


if __name__ == "__main__":
    main()
