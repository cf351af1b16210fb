"""Forecast + backtest on generated history: docs/forecasting.md's accuracy and scale numbers.

    python benchmarks/forecast.py                      # 2,000 sellers (generate's mix of storage types), 104 weeks
    python benchmarks/forecast.py --series 100000      # 100,000 seller x storage-type series of 104 weeks

Prints, per method, the backtest's mean WQL (3 rolling origins 4 weeks apart, horizons 1-17 weeks), its gap to
seasonal naive and the P90 coverage; then the seconds and peak RSS of forecast + backtest. Seeded.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import pandas as pd

from optalloc.forecast.methods import forecast, make_panel
from optalloc.forecast.run import backtest, choose, horizon_weeks
from optalloc.generate import GenerateSpec, generate
from optalloc.history import COVER_WEEKS, generate_history


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sellers", type=int, default=2_000)
    ap.add_argument("--series", type=int, help="instead: this many series straight from the history generator")
    ap.add_argument("--weeks", type=int, default=104)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    if args.series:
        rng = np.random.default_rng(args.seed)
        n = args.series
        series = pd.DataFrame({"seller_id": np.char.add("S", np.char.zfill(np.arange(n // 2 + 1).astype(str), 7))[np.arange(n) // 2],
                               "storage_type": np.where(np.arange(n) % 2 == 0, "standard", "oversize"),
                               "weekly_cube": np.exp(rng.normal(7.0, 1.4, n)).clip(50, 5e6) / 2 / COVER_WEEKS})
        history = generate_history(series, args.weeks, "2026-10", args.seed)
        months = ["2026-10", "2026-11", "2026-12"]
    else:
        inst = generate(GenerateSpec(sellers=args.sellers, requests=10, history_weeks=args.weeks, seed=args.seed))
        history, months = inst.history, list(inst.period.months)
    t1 = time.perf_counter()
    panel = make_panel(history)
    H = len(horizon_weeks(panel, months))
    bt = backtest(panel, H, seed=args.seed, threads=args.threads)
    best, scores = choose(bt)
    forecast(best, panel.y, H, panel.woy(H), panel.keys, seed=args.seed, threads=args.threads)
    t2 = time.perf_counter()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    by = bt.groupby("method")[["wql_50", "wql_90", "coverage_90"]].mean()
    naive = scores["seasonal_naive"]
    print(f"{len(panel.keys):,} series x {panel.y.shape[1]} weeks ({len(history):,} history rows), horizon {H} weeks, seed {args.seed}\n")
    print("| method | wql_50 | wql_90 | mean WQL | vs seasonal naive | P90 coverage |")
    print("|---|---:|---:|---:|---:|---:|")
    for m, s in scores.items():
        mark = " (chosen)" if m == best else ""
        print(f"| {m}{mark} | {by.loc[m, 'wql_50']:.4f} | {by.loc[m, 'wql_90']:.4f} | {s:.4f} | {100 * (s / naive - 1):+.1f}% | {by.loc[m, 'coverage_90']:.3f} |")
    print(f"\ngenerate {t1 - t0:.1f} s; forecast + backtest {t2 - t1:.1f} s; peak RSS {rss:.2f} GiB; {args.threads} LightGBM thread(s)")


if __name__ == "__main__":
    main()
