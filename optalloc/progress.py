"""Progress on long work: one line per stage on stderr with its duration; silent when quiet.

Timings go to stderr only, never into output files (those must be byte-identical run to run).
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager

_quiet = True  # the library is silent; the CLI turns stage lines on unless --quiet
TIMINGS: dict[str, float] = {}


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def note(text: str) -> None:
    """An information line (not timed)."""
    if not _quiet:
        print(f"[optalloc] {text}", file=sys.stderr, flush=True)


def reset_timings() -> None:
    TIMINGS.clear()


@contextmanager
def stage(name: str):
    t0 = time.perf_counter()
    if not _quiet:
        print(f"[optalloc] {name} ...", file=sys.stderr, flush=True)
    # Stage names end in one of: prepare, build, solve, extract (benchmarks group by them).
    try:
        yield
    finally:
        dt = time.perf_counter() - t0
        TIMINGS[name] = TIMINGS.get(name, 0.0) + dt
        if not _quiet:
            print(f"[optalloc] {name}: done in {dt:.2f}s", file=sys.stderr, flush=True)
