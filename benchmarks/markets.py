"""What one market costs a worker: the figures a Dask cluster is sized from, measured market by market.

    python benchmarks/markets.py DIR                  # an instance folder, e.g. the 2 M period of
                                                      # `benchmarks/marketplace.py --keep DIR` (DIR/marketplace2m)
    python benchmarks/markets.py --sellers 20000      # a generated period of the 2 M period's shape, fewer sellers

The baseline (`allocate`) and the rounds (`period.clear_rounds`) are run as the nightly job runs them on a cluster,
with an executor that stands in for Dask: each market's call (its arguments, as Dask would send them) is pickled, and
a fresh worker process (spawned, as a Dask worker is) unpickles it, solves it and pickles its result back. Every
market is solved once, in its own worker, so the figures are that market's alone:

- sent MB: the pickled call (a baseline market's arrays; a round market's part of the instance, limits, held grants);
- seconds: the solve in the worker (unpickling excluded);
- worker peak MiB: the worker's peak resident memory (VmHWM), and how much of it is the market's (less the
  worker's resident memory after its imports, before it received anything);
- result MB: the pickled solution sent back.

The closing lines give what a cluster needs per worker (the largest market's peak) and the critical path of each wave
(the baseline's markets are independent; each round's storage types are, the rounds are not).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import pickle
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MB = 1e6


def _worker(call_path: str, out_path: str) -> None:
    """One market in a fresh process: imports, then the call; writes (result, seconds, peak KiB, KiB after imports)."""
    import optalloc.baseline
    import optalloc.clearing  # noqa: F401 -- the imports a Dask worker has before it receives a task

    after_imports = _status_kib("VmRSS")
    with open(call_path, "rb") as f:
        fn, args = pickle.load(f)
    t = time.perf_counter()
    result = fn(*args)
    seconds = time.perf_counter() - t
    peak = _status_kib("VmHWM")
    with open(out_path, "wb") as f:
        pickle.dump((result, seconds, peak, after_imports), f, protocol=pickle.HIGHEST_PROTOCOL)


def _status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status (KiB). VmHWM is the peak of this process's own memory
    since it started: not ru_maxrss, which a process started by fork and exec inherits from its parent."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


class WorkerPerMarket:
    """An executor (`map(fn, calls)`) that solves each call in a fresh spawned process and records its figures."""

    description = "a fresh worker process per market"

    def __init__(self, tmp: str):
        self.tmp, self.rows = tmp, []
        self.ctx = multiprocessing.get_context("spawn")

    def map(self, fn, calls) -> list:
        results = []
        for args in calls:
            call_path, out_path = os.path.join(self.tmp, "call.pkl"), os.path.join(self.tmp, "out.pkl")
            with open(call_path, "wb") as f:
                pickle.dump((fn, args), f, protocol=pickle.HIGHEST_PROTOCOL)
            sent = os.path.getsize(call_path)
            p = self.ctx.Process(target=_worker, args=(call_path, out_path))
            p.start()
            p.join()
            stage, market = _market(fn, args)
            if p.exitcode:
                sys.exit(f"{stage} {market}: the worker exited with {p.exitcode}")
            back = os.path.getsize(out_path)
            with open(out_path, "rb") as f:
                result, seconds, peak, after_imports = pickle.load(f)
            self.rows.append((stage, market, sent / MB, seconds, peak / 1024, (peak - after_imports) / 1024, back / MB))
            print(f"  {self.rows[-1][0]} {self.rows[-1][1]}: {seconds:.1f}s, peak {peak / 1024:.0f} MiB", flush=True)
            results.append(result)
        return results


def _market(fn, args) -> tuple[str, str]:
    """(stage, market) of a call: solve_market(market data, ...) or clear_market(instance of one type, round, ...)."""
    if fn.__name__ == "solve_market":
        d = args[0]
        return "baseline", f"{d.cells['storage_type'].iloc[0]} {d.cells['month'].iloc[0]}" if len(d.cells) else "empty"
    return f"round {args[1]}", ", ".join(sorted(args[0].fcs["storage_type"].unique()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("instance", nargs="?", help="an instance folder or file (default: generate one)")
    ap.add_argument("--sellers", type=int, default=20_000, help="sellers of the generated period (default 20,000)")
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()

    from optalloc.baseline import allocate
    from optalloc.generate import GenerateSpec, generate
    from optalloc.io import load_instance
    from optalloc.period import clear_rounds

    t = time.perf_counter()
    if args.instance:
        inst = load_instance(args.instance)
    else:
        inst = generate(GenerateSpec(sellers=args.sellers, fcs=300, regions=30, storage_types=3, months=3, rounds=3,
                                     requests=int(args.sellers * 1.5), seed=args.seed))
    print(f"instance: {len(inst.sellers):,} sellers, {len(inst.requests):,} requests, {inst.fcs['fc_id'].nunique()} FCs "
          f"({time.perf_counter() - t:.1f}s)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        executor = WorkerPerMarket(tmp)
        clear_rounds(inst, allocate(inst, executor=executor), executor=executor)
        rows = executor.rows
    parent = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    print("\n| stage | market | sent MB | seconds | worker peak MiB | of it the market's MiB | result MB |")
    print("|---|---|---|---|---|---|---|")
    for stage, market, sent, seconds, peak, own, back in rows:
        print(f"| {stage} | {market} | {sent:.1f} | {seconds:.1f} | {peak:.0f} | {own:.0f} | {back:.1f} |")
    waves: dict[str, list] = {}
    for row in rows:
        waves.setdefault(row[0], []).append(row)
    print(f"\nlargest worker peak: {max(r[4] for r in rows):.0f} MiB; the client process (this one, which holds the "
          f"instance and builds each call): {parent:.2f} GiB peak")
    for stage, wave in waves.items():
        seconds = [r[3] for r in wave]
        print(f"{stage}: {len(wave)} markets, {sum(seconds):.1f} s of solves, the longest {max(seconds):.1f} s "
              f"(the wave's floor with {len(wave)} or more workers)")


if __name__ == "__main__":
    main()
