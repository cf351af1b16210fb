"""The nightly batch job: everything that is due in the store, each result in its own transaction.

One run (`run_batch`, `optalloc batch`), holding the store's writer lock:
1. baseline limits for every period that has none yet;
2. every round whose close date is before the run's date and that is not cleared, in order: a period's rounds
   go one after another (each holds the grants of the ones before), while its storage types (`clear_round`
   clears each type as its own market) and other periods are independent and are solved side by side;
3. settlement of every period whose rounds are all cleared and whose sales report is in.

What a run does is recorded in `runs`: its date, the hash of its inputs, solver and versions, options,
objective, timings per step and outcome. Re-running changes nothing but adds its own record (`nothing_to_do`);
a run killed at any point leaves every result it had not committed unwritten, and the next run does it.

Scale-out: the solves of one wave go to an executor, in-process (`SerialExecutor`) or on Dask distributed
(`DaskExecutor`: a LocalCluster of N worker processes, or an existing scheduler). The work units are pure
functions of their inputs, and results are committed by this process in a fixed order, so the store ends
the same whichever executor ran them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date

import pandas as pd

from .baseline import BaselineResult, allocate
from .clearing import clear_market, combine_markets, held_grants
from .failpoints import failpoint
from .instance import Instance
from .progress import note
from .io import inputs_hash
from .schemas import SolverOptions
from .settlement import settle
from .errors import StoreError
from .store import Store

DEFAULT_TIME_LIMIT = 3600.0
CONNECT_TIMEOUT_ENV = "OPTALLOC_DASK_CONNECT_TIMEOUT"  # seconds to reach an existing Dask scheduler (--scheduler); default 30


class ClusterError(StoreError):
    """The Dask cluster cannot be reached (exit 5, like an unreachable store: nothing was done)."""
  # seconds per solve: the nightly job never waits on a stalled solve for ever


# ---------------------------------------------------------------- units of work (run on any worker)


def allocate_period(instance: Instance, options: SolverOptions) -> BaselineResult:
    return allocate(instance, options)


# ---------------------------------------------------------------- executors


class SerialExecutor:
    """Runs the work units one after another in this process."""

    description = "serial"

    def map(self, fn: Callable, calls: Sequence[tuple]) -> list:
        return [fn(*args) for args in calls]

    def close(self) -> None:
        pass


class DaskExecutor:
    """Runs the work units on Dask distributed: a LocalCluster of `workers` processes (one thread each, so every
    solve is single-threaded and deterministic), or the existing cluster at `scheduler`. Connects on first use:
    a night with nothing to do starts no cluster."""

    def __init__(self, workers: int | None = None, scheduler: str | None = None):
        self.workers, self.scheduler = workers or 2, scheduler
        self.description = f"dask scheduler {scheduler}" if scheduler else f"dask LocalCluster, {self.workers} workers"
        self.cluster = self.client = None

    def _connect(self):
        from distributed import Client, LocalCluster

        if self.client is None:
            if self.scheduler:
                timeout = float(os.environ.get(CONNECT_TIMEOUT_ENV, "30"))
                try:
                    self.client = Client(self.scheduler, timeout=timeout)
                except (OSError, TimeoutError, ValueError) as e:
                    raise ClusterError(f"cannot reach the Dask scheduler at {self.scheduler} within {timeout:g} s: {e}") from None
            else:
                self.cluster = LocalCluster(
                    n_workers=self.workers, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR
                )
                self.client = Client(self.cluster)
        return self.client

    def map(self, fn: Callable, calls: Sequence[tuple]) -> list:
        client = self._connect()
        # Each call's arguments (an instance's market, limits, held grants) go to the workers as data, not as part
        # of the task graph.
        arguments = client.scatter(list(calls), hash=False)
        futures = [client.submit(_apply, fn, args, pure=False) for args in arguments]
        return client.gather(futures)  # in submission order; a worker's exception is raised here

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _apply(fn: Callable, args: tuple):
    return fn(*args)


def make_executor(workers: int | None = None, scheduler: str | None = None) -> SerialExecutor | DaskExecutor:
    """An existing Dask cluster (`scheduler`), else a LocalCluster of `workers` processes (default: one per core);
    workers = 0 runs in this process."""
    if scheduler:
        return DaskExecutor(scheduler=scheduler)
    if workers is None:
        workers = os.cpu_count() or 1
    return DaskExecutor(workers) if workers > 0 else SerialExecutor()


# ---------------------------------------------------------------- the run


@dataclass
class BatchReport:
    run_id: int
    outcome: str  # ok | nothing_to_do
    steps: list[dict] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    objective: float = 0.0


class _Run:
    """One batch run's state: the store, the run's id, the periods loaded so far and what it did."""

    def __init__(self, store: Store, run_id: int, on: date, overrides: dict, executor):
        self.store, self.run_id, self.on, self.overrides, self.executor = store, run_id, on, overrides, executor
        self.instances: dict[str, Instance] = {}
        self._limits: dict[str, pd.Series] = {}
        self.report = BatchReport(run_id, "nothing_to_do")

    def instance(self, period_id: str) -> Instance:
        if period_id not in self.instances:
            self.instances[period_id] = self.store.instance(period_id)
        return self.instances[period_id]

    def limits(self, period_id: str) -> pd.Series:
        """The period's stored baseline limits (fixed once written), read once per run."""
        if period_id not in self._limits:
            self._limits[period_id] = self.store.results(period_id, ["limits"])["limits"]["limit_cube"]
        return self._limits[period_id]

    def options(self, period_id: str) -> SolverOptions:
        solver = self.instance(period_id).settings.solver
        return solver.model_copy(update={"time_limit": solver.time_limit or DEFAULT_TIME_LIMIT, **self.overrides})

    def step(self, what: str, seconds: float, **details) -> None:
        self.report.steps.append({"step": what, **details})
        self.report.timings[what] = round(seconds, 3)
        self.report.outcome = "ok"
        note(f"{what}: done in {seconds:.2f}s ({self.executor.description})")

    def baselines(self) -> None:
        periods = self.store.periods()
        todo = periods.index[periods["baseline_run_id"].isna()].tolist()
        if not todo:
            return
        t0 = time.perf_counter()
        results = self.executor.map(allocate_period, [(self.instance(p), self.options(p)) for p in todo])
        for p, result in zip(todo, results):
            self.store.commit_baseline(p, result, self.run_id)
            self.step(f"{p} baseline", time.perf_counter() - t0, period_id=p, objective=result.objective, status=result.status)

    def due_wave(self) -> list[tuple[str, int]]:
        """For each period, its first uncleared round if that round closed before the run's date."""
        rounds = self.store.rounds().reset_index()
        open_ = rounds[rounds["cleared_run_id"].isna()].sort_values(["period_id", "round"]).groupby("period_id").head(1)
        due = open_[open_["close_date"] < pd.Timestamp(self.on).date()]
        return list(zip(due["period_id"], due["round"].astype(int)))

    def clear_wave(self, wave: list[tuple[str, int]]) -> None:
        t0 = time.perf_counter()
        calls, owner = [], []
        for p, r in wave:
            inst = self.instance(p)
            limits = self.limits(p)
            held = held_grants(self.store.results(p, ["grants"])["grants"])
            for k in sorted(inst.fcs["storage_type"].unique()):
                of_k = limits.index.get_level_values("storage_type") == k
                calls.append((inst.of_storage_type(k), r, limits[of_k], held[held["storage_type"] == k], self.options(p), None))
                owner.append((p, r))
        note(f"wave {', '.join(f'{p} round {r}' for p, r in wave)}: {len(calls)} markets on {self.executor.description}")
        results = self.executor.map(clear_market, calls)
        for p, r in wave:
            result = combine_markets([res for res, o in zip(results, owner) if o == (p, r)])
            self.store.commit_round(p, result, self.run_id)
            failpoint(f"round-{r}-committed")
            objective = float(result.prices["objective"].sum())
            self.report.objective += objective
            self.step(f"{p} round {r}", time.perf_counter() - t0, period_id=p, round=r, objective=objective,
                      granted_cube=float(result.grants["granted_cube"].sum()), markets=sum(o == (p, r) for o in owner))

    def settlements(self) -> None:
        periods = self.store.periods()
        rounds = self.store.rounds().reset_index()
        all_cleared = rounds.groupby("period_id")["cleared_run_id"].apply(lambda s: bool(s.notna().all()))
        ready = periods[periods["settled_run_id"].isna() & periods["sales_received_at"].notna()].index
        for p in [p for p in ready if all_cleared.get(p, False)]:
            t0 = time.perf_counter()
            inst = self.instance(p)
            t = self.store.results(p, ["grants", "round_prices"])
            settlement = settle(t["grants"], t["round_prices"], self.limits(p), inst.sales, inst.grant_sales, inst.settings)
            self.store.commit_settlement(p, settlement, self.run_id)
            self.step(f"{p} settlement", time.perf_counter() - t0, period_id=p, grants=len(settlement),
                      reservation_fees=float(settlement["reservation_fee"].sum()), credits=float(settlement["credit"].sum()))


def run_batch(
    store: Store,
    on: date,
    *,
    overrides: dict | None = None,
    executor: SerialExecutor | DaskExecutor | None = None,
    lock_timeout: float = 600.0,
) -> BatchReport:
    """Do everything due in the store on the night of `on` (see the module docstring). Raises on the first failure,
    after recording it; what committed before it stays, and the next run picks up the rest."""
    executor = executor or SerialExecutor()
    overrides = overrides or {}
    with store.lock(lock_timeout):
        killed = store.mark_dead_runs()
        if killed:
            note(f"{killed} earlier run(s) had died without finishing; marked killed")
        with store.transaction() as conn:
            run_id = store.start_run(conn, "batch", run_date=on, options={"overrides": overrides, "executor": executor.description})
        run = _Run(store, run_id, on, overrides, executor)
        try:
            run.baselines()
            while wave := run.due_wave():
                run.clear_wave(wave)
            run.settlements()
        except BaseException as e:
            with store.transaction() as conn:
                store.finish_run(conn, run_id, "failed", error="".join(traceback.format_exception_only(e)).strip(), steps=run.report.steps,
                                 timings=run.report.timings, inputs_hash=_hash(run))
            raise
        with store.transaction() as conn:
            store.finish_run(conn, run_id, run.report.outcome, steps=run.report.steps, timings=run.report.timings,
                             objective=run.report.objective, inputs_hash=_hash(run))
        return run.report


def _hash(run: _Run) -> str | None:
    """One hash over the inputs of the periods the run loaded (None when it loaded none)."""
    if not run.instances:
        return None
    return hashlib.sha256("".join(f"{p}:{inputs_hash(i)};" for p, i in sorted(run.instances.items())).encode()).hexdigest()
