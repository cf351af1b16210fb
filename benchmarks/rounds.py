"""The priority rule's rounds on the 2 M period's FC structure, measured market by market.

    python benchmarks/rounds.py                   # 200,000 sellers, 300 FCs in 30 regions, 3 types, 3 rounds (~6 min)
    python benchmarks/rounds.py --sellers 5000    # a check that it runs (~10 s; far fewer classes)

The room LP of a market has a row per pool (FC x month) and a column per class arc (eligibility class x FC). The
classes are the sets of FCs and months sellers ask for, so once there are enough sellers to ask for most of them
the LP stops growing: about 2,560 classes x 49,000 arcs per market at 200,000 sellers, 2,800 x 54,000 at 2 M (286
classes at 5,000). A period of 200,000 sellers on the 2,000,000-seller period's 300 FCs and 30 regions therefore
costs about what the 2 M period's rounds cost, in a fraction of the time and memory. The rounds are cleared as
`optalloc solve` clears them (`period.clear_rounds`: each holds the grants of the ones before); for each market
(storage type) the priority rule's own call is timed and reported: the market's size, room LPs, simplex
iterations, seconds, and a hash of its grants (equal across runs and solver settings: the rule is exact).
"""

from __future__ import annotations

import argparse
import hashlib
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sellers", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()

    from optalloc.baseline import allocate
    from optalloc.clearing import priority, solve
    from optalloc.generate import GenerateSpec, generate
    from optalloc.period import clear_rounds

    iterations = [0]
    run_highs, clear_by_priority = priority.run_highs, solve.clear_by_priority
    rows = []

    def counted(h, *, is_mip):  # every room LP's simplex iterations, added up
        out = run_highs(h, is_mip=is_mip)
        iterations[0] += max(h.getInfo().simplex_iteration_count, 0)
        return out

    def measured(d, options):  # the rule on one market, as `optalloc solve` calls it
        iterations[0] = 0
        t = time.perf_counter()
        out = clear_by_priority(d, options)
        seconds = time.perf_counter() - t
        rows.append([d.round, ", ".join(sorted(d.pools["storage_type"].unique())), d.n, d.n_classes, len(d.carc_class), len(d.pools),
                     out.lp_calls, iterations[0], seconds, hashlib.sha256(np.ascontiguousarray(out.grant).tobytes()).hexdigest()[:12]])
        print(f"  round {d.round} {rows[-1][1]}: {seconds:.1f}s, {out.lp_calls} room LPs", flush=True)
        return out

    priority.run_highs, solve.clear_by_priority = counted, measured
    spec = GenerateSpec(sellers=args.sellers, fcs=300, regions=30, storage_types=3, months=3, rounds=3,
                        requests=int(args.sellers * 1.5), seed=args.seed)
    t = time.perf_counter()
    inst = generate(spec)
    print(f"instance: {spec.sellers:,} sellers, {spec.requests:,} requests, 300 FCs, 30 regions "
          f"(generated in {time.perf_counter() - t:.1f}s)", flush=True)
    clear_rounds(inst, allocate(inst))

    print("\n| round | market | requests | classes | class arcs | pools | room LPs | simplex iterations | seconds | grants |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r, k, n, ncl, narc, npool, lps, its, s, h in rows:
        print(f"| {r} | {k} | {n:,} | {ncl:,} | {narc:,} | {npool} | {lps} | {its:,} | {s:.1f} | {h} |")


if __name__ == "__main__":
    main()
