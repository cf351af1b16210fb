"""Where the nightly job's time beyond `run_period` goes: the batch run with parts of the store's work taken away.

    python benchmarks/batch_parts.py                 # SQLite and a throwaway PostgreSQL, 3 repeats (~10 minutes)
    python benchmarks/batch_parts.py --repeat 5 --only sqlite
    python benchmarks/batch_parts.py --floor         # SQLite's own work on the period's rows, no Python (~1 minute)

The 100,000-request period of benchmarks/batch.py, in-process. Each variant patches the run (never the engine's
answer; every variant but "no bulk writes" leaves the same store):
- as is: `optalloc batch` as shipped;
- no read: `Store.instance` hands over the generated instance (the store still holds the same period);
- no hash: the run's input hash is a constant;
- no bulk writes: `write_frame` skips the bulk result tables (only fc_prices and round_prices are written);
- writer process: each commit is sent, pickled, to a second process with its own connection, which runs it (the
  run's writer thread only pickles and waits): what moving the writes out of this process's GIL would give.
`--floor` measures what SQLite itself spends on the rows one batch run reads and writes, with no Python in between:
each result table's rows inserted again under another period id by one `INSERT ... SELECT` (the same B-tree and
index work as the run's inserts, none of the parameter binding), and each input table scanned by one aggregate
`SELECT` over all its columns (the same page and record decoding as the run's read, no Python rows). Beside it,
0.3 x `run_period`: the store's whole allowance under the 1.3x target.
For each repeat a fresh store is ingested, `run_period` is timed, then the batch; printed: the fastest batch over the
fastest `run_period`, and the median of each batch over the `run_period` just before it (docs/performance.md, "The nightly job").
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import pickle
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the throwaway PostgreSQL server of the tests

COMMITS = ("commit_baseline", "commit_round", "commit_settlement", "record_failure")
VARIANTS = ("as is", "no read", "no read, no hash", "no read, no hash, no bulk writes", "writer process")


def _writer_process(url: str, pipe) -> None:
    """The writer process: runs each (commit, args) it is sent on its own Store, answers b"ok" or the pickled error."""
    from optalloc.store import Store

    store = Store(url)
    pipe.send_bytes(b"ready")
    while (message := pipe.recv_bytes()) != b"stop":
        name, args = pickle.loads(message)
        try:
            getattr(store, name)(*args)
            pipe.send_bytes(b"ok")
        except Exception as e:  # noqa: BLE001 -- raised again in the run
            pipe.send_bytes(pickle.dumps(e))


@contextmanager
def patched(variant: str, instance, url: str):
    import optalloc.batch as batch
    import optalloc.store.commits as store_module
    from optalloc.store import Store

    saved = [(Store, "instance", Store.instance), (batch, "inputs_hash", batch.inputs_hash),
             (store_module, "write_frame", store_module.write_frame), *((Store, name, getattr(Store, name)) for name in COMMITS)]
    writer = None
    try:
        if "no read" in variant:
            Store.instance = lambda self, period_id: instance
        if "no hash" in variant:
            batch.inputs_hash = lambda inst: "0" * 64
        if "no bulk writes" in variant:
            write = store_module.write_frame
            store_module.write_frame = lambda conn, table, *a, **k: write(conn, table, *a, **k) if table.name in ("fc_prices", "round_prices") else None
        if variant == "writer process":
            context = mp.get_context("spawn")
            ours, theirs = context.Pipe()
            writer = context.Process(target=_writer_process, args=(url, theirs), daemon=True)
            writer.start()
            assert ours.recv_bytes() == b"ready"

            def forwarded(name):
                def commit(self, *args):
                    ours.send_bytes(pickle.dumps((name, args), protocol=5))
                    if (answer := ours.recv_bytes()) != b"ok":
                        raise pickle.loads(answer)
                return commit

            for name in COMMITS:
                setattr(Store, name, forwarded(name))
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)
        if writer is not None:
            ours.send_bytes(b"stop")
            writer.join()


RESULT_TABLES = ("baseline_limits", "baseline_placements", "fc_prices", "grants", "grant_placements", "pools", "round_prices", "settlements")
INPUT_TABLES = ("fcs", "sellers", "needs", "requests", "sales")


def sqlite_floor(path: str, period_id: str, repeat: int) -> list[tuple[str, str, float]]:
    """(table, what, fastest seconds): SQLite's own work on the period's rows (see the module docstring)."""
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")  # as the store opens it
    out = []
    for table in (*RESULT_TABLES, *INPUT_TABLES):
        cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
        best = float("inf")
        for attempt in range(repeat):
            t = time.perf_counter()
            if table in RESULT_TABLES:
                copy = f"floor{attempt}"
                picked = ", ".join("?" if c == "period_id" else c for c in cols)
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(f"INSERT INTO {table} SELECT {picked} FROM {table} WHERE period_id = ?", (copy, period_id))
                conn.execute("COMMIT")
            else:
                conn.execute(f"SELECT count(*), {', '.join(f'max(length({c}))' for c in cols)} FROM {table} WHERE period_id = ?",
                             (period_id,)).fetchall()
            best = min(best, time.perf_counter() - t)
        out.append((table, "insert" if table in RESULT_TABLES else "scan", best))
    conn.close()
    return out


def floor(inst, in_memory, repeat: int) -> None:
    from optalloc.batch import run_batch
    from optalloc.store import Store

    memory = min(in_memory() for _ in range(repeat))
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/floor.db")
        store.ingest(inst)
        run_batch(store, date(2026, 10, 1))
        store.engine.dispose()
        parts = sqlite_floor(f"{tmp}/floor.db", inst.period.period_id, repeat)
    print("\n| table | SQLite's own work | seconds (fastest) |\n|---|---|---|")
    for table, what, seconds in parts:
        print(f"| {table} | {what} | {seconds:.3f} |")
    total = sum(s for _, _, s in parts)
    print(f"| **all** | | **{total:.3f}** |")
    print(f"\nrun_period {memory:.2f} s (fastest of {repeat}); the store's allowance under 1.3x: {0.3 * memory:.2f} s; "
          f"SQLite's own work alone: {total:.2f} s = {total / memory:.2f}x of run_period")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", choices=["sqlite", "postgresql"])
    ap.add_argument("--pg", help="PostgreSQL server URL (default: a throwaway one, as the tests start)")
    ap.add_argument("--floor", action="store_true", help="only SQLite's own work on the rows a batch run reads and writes")
    args = ap.parse_args()

    from optalloc.batch import run_batch
    from optalloc.generate import GenerateSpec, generate
    from optalloc.period import run_period
    from optalloc.store import Store
    from pgserver import find_bindir, fresh_database, throwaway_server

    spec = GenerateSpec(sellers=20_000, fcs=50, regions=10, storage_types=3, months=3, rounds=3, requests=100_000, min_cube_share=0.05, seed=7)
    inst = generate(spec)

    def in_memory() -> float:
        t = time.perf_counter()
        run_period(inst)
        return time.perf_counter() - t

    in_memory()  # imports and caches
    if args.floor:
        floor(inst, in_memory, args.repeat)
        return
    rows = []
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        stores = []
        if args.only != "postgresql":
            stores.append(("sqlite", lambda name: f"sqlite:///{tmp}/{name}.db"))
        if args.only != "sqlite":
            pg = args.pg or (stack.enter_context(throwaway_server(find_bindir())) if find_bindir() else None)
            if pg:
                stores.append(("postgresql", lambda name: stack.enter_context(fresh_database(pg))))
        for store_name, url_of in stores:
            for variant in VARIANTS:
                batches, memories, ratios = [], [], []
                for attempt in range(args.repeat):
                    url = url_of(f"{store_name}_{VARIANTS.index(variant)}_{attempt}")
                    store = Store(url)
                    store.ingest(inst)
                    with patched(variant, inst, url):
                        memory = in_memory()
                        t = time.perf_counter()
                        run_batch(store, date(2026, 10, 1))
                        seconds = time.perf_counter() - t
                    batches.append(seconds)
                    memories.append(memory)
                    ratios.append(seconds / memory)
                rows.append((store_name, variant, min(batches), min(memories), min(batches) / min(memories), statistics.median(ratios)))
                print(f"  {store_name} / {variant}: {min(batches):.2f}s", flush=True)

    print("\n| store | the batch run | batch s (fastest) | run_period s (fastest) | × in memory | × paired (median) |")
    print("|---|---|---|---|---|---|")
    for store_name, variant, batch_s, memory_s, ratio, paired in rows:
        print(f"| {store_name} | {variant} | {batch_s:.2f} | {memory_s:.2f} | {ratio:.2f} | {paired:.2f} |")
    print(f"\n{args.repeat} repeats each, a fresh store each time; 100,000 requests, 20,000 sellers, 3 storage types, 3 rounds.")


if __name__ == "__main__":
    main()
