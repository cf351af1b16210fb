"""The market simulator at scale: seconds, and the headline tables docs/simulator.md quotes.

    python benchmarks/simulate.py            # 20,000 sellers, 50 FCs in 10 regions, 2 storage types, 3 rounds
    python benchmarks/simulate.py --quick    # 2,000 sellers

Each run is seeded; the tables are the same on every machine (the seconds are not).
"""

from __future__ import annotations

import argparse
import time

from optalloc.simulate import SimulationSpec, markdown, simulate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    spec = SimulationSpec(sellers=2_000 if args.quick else 20_000, fcs=50, regions=10, storage_types=2, rounds=3, seed=args.seed)
    t = time.perf_counter()
    result = simulate(spec)
    seconds = time.perf_counter() - t
    print(f"{spec.sellers:,} sellers, {spec.fcs} FCs, {spec.storage_types} storage types, {spec.rounds} rounds, seed {spec.seed}: "
          f"{len(result.requests):,} bids, {seconds:.1f} s\n")
    print(markdown(result.headline, "headline"))
    print()
    print(markdown(result.by_round, "by_round"))


if __name__ == "__main__":
    main()
