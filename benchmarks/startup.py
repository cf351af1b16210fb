"""How long the command line takes to answer, each command in a fresh process (median of 5, wall clock): the
commands that do no engine work must answer in at most 0.5 s.

    python benchmarks/startup.py            # prints a Markdown table; exit 1 if a command is over its target

The store commands run on a small store made first (the worked example, ingested). Run it alone: the other core busy
slows every start.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0.5
REPEATS = 5


def seconds(args: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "optalloc", *args], capture_output=True, text=True)
    took = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"optalloc {' '.join(args)} failed: {done.stderr}")
    return took


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{tmp}/store.db"
        subprocess.run([sys.executable, "-m", "optalloc", "ingest", str(ROOT / "instances/worked_example.json"), "--db", db, "-q"], check=True,
                       stdout=subprocess.DEVNULL)
        commands = [["--help"], ["--version"], ["status", "--db", db], ["period", "hold", "2026Q4", "--db", db, "-q"],
                    ["period", "release", "2026Q4", "--db", db, "-q"]]
        commands += [[c, "--help"] for c in ("validate", "solve", "allocate", "clear", "settle", "generate", "simulate", "forecast", "ingest",
                                             "batch", "export", "status", "period", "report")]
        rows, over = [], 0
        for args in commands:
            runs = [seconds(args) for _ in range(REPEATS)]
            median = statistics.median(runs)
            over += median > TARGET
            rows.append(f"| `optalloc {' '.join(a if not a.startswith('sqlite') else 'STORE' for a in args)}` | {median:.3f} | {min(runs):.3f} |"
                        f" {'yes' if median <= TARGET else 'NO'} |")
    print(f"| command | median s (of {REPEATS}) | fastest s | within {TARGET} s |\n|---|---|---|---|")
    print("\n".join(rows))
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
