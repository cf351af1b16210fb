"""A whole marketplace, measured: `optalloc allocate` and `optalloc solve` as a user runs them, wall time and peak memory.

    python benchmarks/marketplace.py                      # 300,000-seller baseline, the 2,000,000-seller period, its baseline
    python benchmarks/marketplace.py --only baseline300k  # one case
    python benchmarks/marketplace.py --keep DIR           # generate into DIR once and reuse it on later runs
    python benchmarks/marketplace.py --workers 2          # the command with --workers 2 (markets on a Dask LocalCluster)
    python benchmarks/marketplace.py --only batch2m_pg    # the 2 M period through the nightly job on PostgreSQL

Each case generates its instance with `optalloc generate` (seeded; skipped when DIR already holds it), then runs the
command in a fresh process and reports its wall seconds, its peak resident memory (the child's own, from wait4)
and the seconds of each stage as the command's progress lines give them (stages of the same name added up).

The store case (`batch2m_pg`) starts a throwaway PostgreSQL server (as the tests do: `tests/pgserver.py`, the
binaries of `initdb` on the PATH or under /usr/lib/postgresql), then runs `optalloc ingest` of the instance into a new
database and `optalloc batch` for the night after every round has closed (baseline, 3 rounds, settlement), each in
its own process: one row each, and their sum. Its peak is the optalloc process's, not the server's.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the throwaway PostgreSQL server of the tests

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
    # The 2 M period's baseline alone (`optalloc allocate` on the same generated instance): the case that
    # `--workers 2` is measured on (markets fanned out to a Dask LocalCluster).
    "baseline2m": {"instance": "marketplace2m", "command": "allocate"},
    # The 2 M period through the nightly job: `optalloc ingest` into a new PostgreSQL database, then one
    # `optalloc batch` after every round has closed; target ingest + batch <= 30 min.
    "batch2m_pg": {"instance": "marketplace2m", "command": "ingest+batch", "night": "2026-10-01"},
}

DONE = re.compile(r"\[optalloc\] (?P<stage>.+?): done in (?P<s>[0-9.]+)s")
STEP = re.compile(r"P\d{6} (?P<step>.+)")  # the batch's own line per period and step ("P202610 round 2")
COLUMNS = ("load and validate", "baseline", "rounds", "settle", "summary")


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


def store_case(name: str, case: dict, inst: Path, workers: int) -> list[tuple]:
    """`optalloc ingest` of the instance into a new database of a throwaway PostgreSQL server, then `optalloc batch`
    for the case's night: a row for each and one for their sum."""
    from pgserver import find_bindir, fresh_database, throwaway_server

    bindir = find_bindir()
    if bindir is None:
        sys.exit(f"{name}: needs PostgreSQL's initdb (on the PATH or under /usr/lib/postgresql)")
    rows = []
    with throwaway_server(bindir) as server, fresh_database(server) as url:
        runs = [("ingest", [*optalloc(), "ingest", str(inst), "--db", url]),
                ("batch", [*optalloc(), "batch", "--date", case["night"], "--db", url, "--workers", str(workers)])]
        for command, argv in runs:
            wall, peak, stages, code, tail = measure(argv)
            if code:
                print(f"{name} {command}: exit {code}\n{tail}", flush=True)
            # ingest reports its load and validate; the batch one line per period and step (baseline, round N,
            # settlement) around the inner stages of the same names
            if command == "ingest":
                steps = {"load and validate": stages.get("load and validate", 0.0)}
            else:
                steps = {m["step"]: v for s, v in stages.items() if (m := STEP.fullmatch(s))}
            cols = dict.fromkeys(COLUMNS, 0.0)
            for step, v in steps.items():
                cols["rounds" if step.startswith("round ") else "settle" if step == "settlement" else
                     step if step in COLUMNS else "baseline"] += v
            cols["write and rest"] = wall - sum(steps.values())
            label = f"{name} {command}" + (f" (--workers {workers})" if command == "batch" and workers else "")
            rows.append((label, command, wall, peak, cols, code))
            print(f"{label}: {wall:.1f}s, {peak:.2f} GiB; steps: " + ", ".join(f"{k} {v:.1f}" for k, v in steps.items()), flush=True)
            if code:
                break
    total = (f"{name} ingest + batch", "", sum(r[2] for r in rows), max(r[3] for r in rows), dict.fromkeys([*COLUMNS, "write and rest"], 0.0), max(r[5] for r in rows))
    return [*rows, total]


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
        source = case.get("instance", name)
        inst = base / source
        if not (inst / "instance.json").exists():
            t = time.perf_counter()
            done = subprocess.run([*optalloc(), "generate", "-o", str(inst), "-q", *CASES[source]["generate"]], check=False, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"generate {source} failed:\n{done.stderr}")
            print(f"{source}: generated in {time.perf_counter() - t:.1f}s", flush=True)
        if case["command"] == "ingest+batch":
            rows += store_case(name, case, inst, args.workers)
            continue
        out = base / f"{name}.out"
        extra = ["--workers", str(args.workers)] if args.workers else []
        wall, peak, stages, code, tail = measure([*optalloc(), case["command"], str(inst), "-o", str(out), *extra])
        name = f"{name} (--workers {args.workers})" if args.workers else name
        if code:
            print(f"{name}: exit {code}\n{tail}", flush=True)
        cols = {k: sum(v for s, v in stages.items() if s == k or (k == "rounds" and s.startswith("round "))) for k in COLUMNS}
        # the write's own line is the command's closing line, which gives no duration: it is the rest of the wall
        # time (the interpreter's start and imports, ~1-2 s, included)
        cols["write and rest"] = wall - sum(stages.values())
        rows.append((name, case["command"], wall, peak, cols, code))
        print(f"{name}: {wall:.1f}s, {peak:.2f} GiB; stages: " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()), flush=True)

    heads = list(rows[0][4]) if rows else []
    print("\n| case | command | wall s | peak GiB | " + " | ".join(heads) + " | exit |")
    print("|---|---|---|---|" + "---|" * len(heads) + "---|")
    for name, command, wall, peak, cols, code in rows:
        print(f"| {name} | {command} | {wall:.1f} | {peak:.2f} | " + " | ".join(f"{v:.1f}" if v else "" for v in cols.values()) + f" | {code} |")

if __name__ == "__main__":
    main()
