"""A whole marketplace, measured: `optalloc allocate` and `optalloc solve` as a user runs them, wall time and peak memory.

    python benchmarks/marketplace.py                      # 300,000-seller baseline, then the 2,000,000-seller period
    python benchmarks/marketplace.py --only baseline300k  # one case
    python benchmarks/marketplace.py --keep DIR           # generate into DIR once and reuse it on later runs
    python benchmarks/marketplace.py --workers 2          # the command with --workers 2 (markets on a Dask LocalCluster)

Each case generates its instance with `optalloc generate` (seeded; skipped when DIR already holds it), then runs the
command in a fresh process and reports its wall seconds, its peak resident memory (the child's own, from wait4)
and the seconds of each stage as the command's progress lines give them (stages of the same name added up).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import psutil

CASES = {
    # The 300k shape: baseline only (`optalloc allocate`), target <= 60 s and <= 4 GiB.
    "baseline300k": {
        "generate": ["--sellers", "300000", "--fcs", "200", "--regions", "20", "--storage-types", "3", "--requests", "500000", "--seed", "11"],
        "command": "allocate",
    },
    # A marketplace: 2 M sellers x 300 FCs (30 regions) x 3 types x 3 months, 3 M requests over 3 rounds;
    # `optalloc solve` (baseline, 3 rounds, settlement), target <= 15 min and <= 16 GiB.
    "marketplace2m": {
        "generate": ["--sellers", "2000000", "--fcs", "300", "--regions", "30", "--storage-types", "3", "--requests", "3000000",
                     "--rounds", "3", "--seed", "11"],
        "command": "solve",
    },
}

DONE = re.compile(r"\[optalloc\] (?P<stage>.+?): done in (?P<s>[0-9.]+)s")


def optalloc() -> list[str]:
    return [sys.executable, "-m", "optalloc.cli"]


def _tree_peak(pid: int, done: threading.Event, peak: list[float]) -> None:
    """Sample the resident memory of a process and all its descendants (Dask's worker processes) twice a second."""
    try:
        root = psutil.Process(pid)
        while not done.wait(0.5):
            total = 0
            for q in [root, *root.children(recursive=True)]:
                try:
                    total += q.memory_info().rss
                except psutil.Error:
                    pass
            peak[0] = max(peak[0], total / 2**30)
    except psutil.Error:
        pass


def measure(args: list[str]) -> tuple[float, float, dict[str, float], int, str]:
    """Run one command; return (wall s, peak GiB, seconds per stage, exit code, stderr tail). Peak memory is the
    child's own (wait4) or, when it starts worker processes, the largest sampled sum over it and its descendants."""
    t0 = time.perf_counter()
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    done, tree = threading.Event(), [0.0]
    sampler = threading.Thread(target=_tree_peak, args=(p.pid, done, tree), daemon=True)
    sampler.start()
    err = p.stderr.read()
    done.set()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    stages: dict[str, float] = defaultdict(float)
    for m in DONE.finditer(err):
        stages[re.sub(r" market \S+ \S+", "", m["stage"])] += float(m["s"])
    code = os.waitstatus_to_exitcode(status)
    return wall, max(usage.ru_maxrss / 2**20, tree[0]), dict(stages), code, err[-2000:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated cases: " + ", ".join(CASES))
    ap.add_argument("--keep", help="folder for the generated instances (reused when present)")
    ap.add_argument("--workers", type=int, default=0, help="pass --workers N to the command (default 0: in its own process)")
    args = ap.parse_args()
    names = args.only.split(",") if args.only else list(CASES)
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="optalloc-marketplace-"))
    base.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        case = CASES[name]
        inst = base / name
        if not (inst / "instance.json").exists():
            t = time.perf_counter()
            done = subprocess.run([*optalloc(), "generate", "-o", str(inst), "-q", *case["generate"]], capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"generate {name} failed:\n{done.stderr}")
            print(f"{name}: generated in {time.perf_counter() - t:.1f}s", flush=True)
        out = base / f"{name}.out"
        extra = ["--workers", str(args.workers)] if args.workers else []
        wall, peak, stages, code, tail = measure([*optalloc(), case["command"], str(inst), "-o", str(out), *extra])
        name = f"{name} (--workers {args.workers})" if args.workers else name
        if code:
            print(f"{name}: exit {code}\n{tail}", flush=True)
        top = {k: v for k, v in stages.items() if k in ("load and validate", "baseline: prepare", "baseline: build", "baseline: solve",
                                                      "baseline: extract", f"write {out}")}
        rounds = sum(v for k, v in stages.items() if k.startswith("round"))
        settle = sum(v for k, v in stages.items() if k.startswith("settle"))
        rows.append((name, case["command"], wall, peak, top, rounds, settle, code))
        print(f"{name}: {wall:.1f}s, {peak:.2f} GiB; stages: " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()), flush=True)

    print("\n| case | command | wall s | peak GiB | load+validate | baseline prepare | build | solve | extract | rounds | settle | write | exit |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, command, wall, peak, top, rounds, settle, code in rows:
        get = lambda k: f"{top[k]:.1f}" if k in top else ""  # noqa: E731
        write = next((f"{v:.1f}" for k, v in top.items() if k.startswith("write")), "")
        print(f"| {name} | {command} | {wall:.1f} | {peak:.2f} | {get('load and validate')} | {get('baseline: prepare')} | {get('baseline: build')} | "
              f"{get('baseline: solve')} | {get('baseline: extract')} | {rounds:.1f} | {settle:.1f} | {write} | {code} |")


if __name__ == "__main__":
    main()
