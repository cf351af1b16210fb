"""The nightly batch job: everything that is due in the store, each result in its own transaction.

One run (`run_batch`, `optalloc batch`), holding the store's writer lock:
0. the forecast step: needs and performance scores from history for every period that has history but no needs;
1. baseline limits for every period that has none yet, a period at a time (its storage type x month markets side by
   side);
2. every round whose close date is before the run's date and that is not cleared, in order: a period's rounds
   go one after another (each holds the grants of the ones before), while its storage types (`clear_round`
   clears each type as its own market) and other periods are independent and are solved side by side;
3. settlement of every period whose rounds are all cleared and whose sales report is in.
Held periods (`optalloc period hold`) are skipped. A period whose step fails is recorded as failed (period, step,
error) and its later steps wait for the next run; the other periods go on (see `run_batch`).

What a run does is recorded in `runs`: its date, the hash of its inputs, solver and versions, options,
objective, timings per step and outcome. Re-running changes nothing but adds its own record (`nothing_to_do`);
a run killed at any point leaves every result it had not committed unwritten, and the next run does it.

Writes overlap solves: each result's transaction is handed to one writer thread (`_Writer`), which commits them in
the order they were handed over, while this thread goes on to the next market, round or settlement (the next round
takes the grants before it from memory, never from the store). HiGHS and the database drivers release the GIL, so
on a machine with two cores the writes mostly hide behind the solves. The first commit that fails stops the
writer (nothing after it is written) and the run raises its error, as if it had been written inline.

Scale-out: the markets of one baseline or one wave of rounds go to an executor, in-process (`SerialExecutor`) or on
Dask distributed (`DaskExecutor`: a LocalCluster of N worker processes, or an existing scheduler); a worker gets one
market's data (benchmarks/markets.py measures what each costs it). The work units are pure functions of their
inputs, and results are committed by this process in a fixed order, so the store ends the same whichever executor
ran them.
"""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date

import pandas as pd

import numpy as np

from . import tables, units
from .baseline import BaselineResult
from .clearing import RoundResult, clear_market
from .errors import StoreError, error_text
from .executors import DaskExecutor, SerialExecutor, make_executor  # noqa: F401 -- importable from optalloc.batch too
from .failpoints import failpoint
from .instance import Instance
from .progress import note
from .results_io import inputs_hash
from .scenario import Result, Scenario
from .schemas import SolverOptions
from .solver import one_blas_thread
from .store import Store

DEFAULT_TIME_LIMIT = 3600.0


# ---------------------------------------------------------------- the run


@dataclass
class BatchReport:
    run_id: int
    outcome: str  # ok | nothing_to_do | failed (some period failed; the others went on)
    steps: list[dict] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    objective: float = 0.0  # $: the rounds' objectives summed as round_prices shows them (each to the cent)
    failures: list[dict] = field(default_factory=list)  # {period_id, step, error, exit_code}, in the order they happened
    skipped: list[dict] = field(default_factory=list)  # {period_id, reason: held, hold_reason, held_since}

    @property
    def exit_code(self) -> int:
        """0, or the exit code of the failure of the first failed period by period id."""
        if not self.failures:
            return 0
        return min(self.failures, key=lambda f: f["period_id"])["exit_code"]


@dataclass
class _Failed:
    """A work unit's exception, returned instead of raised so that one period's failure leaves the others' results."""

    error: BaseException


def _isolated(fn: Callable, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 -- reported as the period's failure
        return _Failed(e)


class _Writer:
    """The run's writes, in order, on one background thread (inline when `background` is False: an in-memory SQLite
    store is one connection per thread, so another thread would not see it).

    `submit(fn, *args)` hands a write over and returns once the write before it is done: one write in flight while
    the run's thread solves the next, never a queue of results held in memory (at 2 M sellers a baseline's result
    is gigabytes). `wait()` returns when every write is done. The first write that raises stops the writer: its
    exception is raised by the next `submit` (before handing anything more over) or `wait`, in the run's thread.
    Progress notes of the writes (`note`) are printed by the run's thread, at its next `submit` or `wait`, so
    the two threads never write the progress display at once."""

    def __init__(self, background: bool):
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="optalloc-writer") if background else None
        self._last: Future | None = None  # the write handed over last (a failed one stays here, so it is raised again)
        self._notes: deque[str] = deque()

    def submit(self, fn: Callable, *args) -> None:
        self.wait()
        if self._pool is None:
            fn(*args)
        else:
            self._last = self._pool.submit(fn, *args)

    def note(self, text: str) -> None:
        if self._pool is None:
            note(text)
        else:
            self._notes.append(text)

    def _print_notes(self) -> None:
        while self._notes:
            note(self._notes.popleft())

    def wait(self) -> None:
        try:
            if self._last is not None:
                self._last.result()
        finally:
            self._print_notes()

    def stop(self) -> BaseException | None:
        """Drop a write not yet begun and wait for the one being written (a transaction ends committed or rolled
        back: Ctrl-C waits for it). Returns the error a write raised, if any."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._print_notes()
        last = self._last
        return last.exception() if last is not None and not last.cancelled() else None


class _Run:
    """One batch run's state: the store, the run's id, the periods loaded so far and what it did."""

    def __init__(self, store: Store, run_id: int, on: date, overrides: dict, executor):
        self.store, self.run_id, self.on, self.overrides, self.executor = store, run_id, on, overrides, executor
        # The periods and rounds as the run starts (read first: no thread is started if they cannot be). The run holds
        # the store's lock, which ingest, hold and release take too: until it ends nothing but its own commits changes
        # them, and it counts those itself (`_committing`).
        self._periods, self._stored_rounds = store.periods(), store.rounds()
        self.held = store.held_periods()
        self.scenarios: dict[str, Scenario] = {}  # each period loaded so far, resumed from what the store holds
        self._committing: set[tuple[str, int]] = set()  # rounds handed to the writer (cleared, for what is due next)
        self.writer = _Writer(background=not store.in_memory)
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="optalloc-hash")
        self._hashes: dict[str, Future] = {}  # each loaded period's input hash, computed beside the solves
        self._report_lock = threading.Lock()  # the report is written by both threads
        self.report = BatchReport(run_id, "nothing_to_do")
        self._objective_cents = 0  # the report's objective, summed exactly in cents
        self.failed: set[str] = set()
        self.report.skipped = [{"period_id": p, "reason": "held", "hold_reason": h["reason"], "held_since": h["since"]}
                               for p, h in sorted(self.held.items())]
        for p in sorted(self.held):
            note(f"{p}: held ({self.held[p]['reason'] or 'no reason given'}); skipped")

    def active(self, period_id: str) -> bool:
        return period_id not in self.held and period_id not in self.failed

    def fail(self, period_id: str, step: str, error: BaseException) -> None:
        """Record a period's failure (the run goes on with the others). A store error is not the period's: it aborts."""
        if isinstance(error, StoreError):
            raise error
        message = error_text(error)
        code = getattr(error, "exit_code", 1)
        self.writer.submit(self.store.record_failure, self.run_id, period_id, step, message, code)
        self.failed.add(period_id)
        with self._report_lock:
            self.report.failures.append({"period_id": period_id, "step": step, "error": message, "exit_code": code})
            self.report.outcome = "failed"
        note(f"{period_id} {step}: FAILED ({message}); its other steps wait for the next run")

    def attempt(self, period_id: str, step: str, build: Callable):
        """`build()`, or None after recording the period's failure (its data no longer loads, say)."""
        try:
            return build()
        except StoreError:
            raise
        except Exception as e:  # noqa: BLE001
            self.fail(period_id, "load" if period_id not in self.scenarios else step, e)
            return None

    def scenario(self, period_id: str) -> Scenario:
        """The period as the store holds it, resumed (`Scenario.resume`): read and validated here, before anything of
        it is solved, with its baseline limits and the grants and prices of its cleared rounds; its next step is what
        the run computes next. Reading the requests and the sales report on another thread beside the baseline (which
        does not need them) was measured slower: that thread's Python work takes the GIL the baseline's numpy calls
        keep releasing and taking back (docs/nightly.md)."""
        if period_id not in self.scenarios:
            instance = self.store.instance(period_id)
            self._hash(period_id, instance)
            row = self._periods.loc[period_id]
            baseline = None
            if pd.notna(row["baseline_run_id"]):
                limits = self.store.results(period_id, ["limits"])["limits"]
                baseline = BaselineResult(limits, None, None, float("nan"), "read", "store")
            rounds = []
            stored = self._stored_rounds
            if (stored["cleared_run_id"].notna() & (stored.index.get_level_values("period_id") == period_id)).any():
                t = self.store.results(period_id, ["grants", "round_prices"])
                grants, prices = t["grants"], t["round_prices"]
                for r in sorted(set(prices.index.get_level_values("round"))):
                    rounds.append(RoundResult(int(r), grants[grants.index.get_level_values("round") == r], None, None,
                                              prices[prices.index.get_level_values("round") == r]))
            self.scenarios[period_id] = Scenario.resume(instance, Result(instance, None, baseline, rounds), self.options(instance),
                                                        executor=self.executor)
        return self.scenarios[period_id]

    def _hash(self, period_id: str, instance: Instance) -> None:
        """The hash of the period's inputs as the run reads them, computed beside the solves (for the run's record)."""
        if (earlier := self._hashes.get(period_id)) is not None:
            earlier.cancel()
        self._hashes[period_id] = self._hasher.submit(inputs_hash, instance)

    def inputs_hash(self, wait: bool = True) -> str | None:
        """One hash over the inputs of the periods the run loaded (None when it loaded none). `wait=False` (a run
        that failed): None unless every period's hash is done, and None if one failed."""
        if not self.scenarios:
            return None
        futures = {p: self._hashes[p] for p in self.scenarios}
        if not wait and not all(f.done() and not f.cancelled() and f.exception() is None for f in futures.values()):
            return None
        return hashlib.sha256("".join(f"{p}:{f.result()};" for p, f in sorted(futures.items())).encode()).hexdigest()

    def stop_hashing(self) -> None:
        """Drop the hashes not yet begun and wait for the one being computed (seconds at 2 M sellers), so no thread of
        the run outlives it."""
        self._hasher.shutdown(wait=True, cancel_futures=True)

    def options(self, instance: Instance) -> SolverOptions:
        """The period's solver options, with a time limit (the nightly job never waits on a stalled solve for ever) and
        the command line's over them."""
        solver = instance.settings.solver
        return solver.model_copy(update={"time_limit": solver.time_limit or DEFAULT_TIME_LIMIT, **self.overrides})

    def step(self, what: str, seconds: float, **details) -> None:
        """Record a step as done, on the writer's thread once its result is committed. Its seconds run from the
        step's start to that commit, so they include waiting for the write before it, and a step's write overlaps
        the next step's solve: the steps' seconds add up to more than the run's."""
        with self._report_lock:
            self.report.steps.append({"step": what, **details})
            self.report.timings[what] = round(seconds, 3)
            if self.report.outcome != "failed":
                self.report.outcome = "ok"
        self.writer.note(f"{what}: done in {seconds:.2f}s ({self.executor.description})")

    def map(self, fn: Callable, calls: list[tuple]) -> list:
        return self.executor.map(_isolated, [(fn, *args) for args in calls]) if calls else []

    def forecasts(self) -> None:
        """The forecast step: a period with history but no needs (and no baseline yet) gets its needs and scores from
        its history, committed in one transaction; a period that has needs is never re-forecast. The periods'
        forecasts are computed side by side on the executor."""
        from .forecast.apply import forecast_period

        periods = self._periods
        todo, calls = [], []
        for p in periods.index[periods["baseline_run_id"].isna() & periods["forecast_run_id"].isna()]:
            if not self.active(p):
                continue
            scenario = self.attempt(p, "forecast", lambda p=p: self.scenario(p))
            if scenario is not None and scenario.needs_forecast:
                last = self.store.space_use_from(p)
                todo.append((p, last[0] if last else None))
                calls.append((scenario.instance, last[1] if last else None))
        if not todo:
            return
        t0 = time.perf_counter()
        results = self.map(forecast_period, calls)
        for (p, space_use_from), result in zip(todo, results):
            if isinstance(result, _Failed):
                self.fail(p, "forecast", result.error)
                continue
            forecast = self.attempt(p, "forecast", lambda p=p, result=result: self.scenarios[p].add_forecast(result))
            if forecast is None:
                continue
            self._hash(p, self.scenarios[p].instance)  # the period as it now is, with the needs and scores just made
            self.writer.submit(self._commit_forecast, p, forecast, space_use_from, t0)
        self.writer.wait()

    def _commit_forecast(self, p: str, forecast, space_use_from, t0: float) -> None:
        needs = forecast.needs.reset_index().assign(floor_cube=np.nan)
        self.store.commit_forecast(p, needs, forecast.performance.reset_index(), forecast.summary, self.run_id)
        summary = forecast.summary
        self.step(f"{p} forecast", time.perf_counter() - t0, period_id=p, method=summary["method"], series=summary["series"],
                  needs=len(needs), sellers_without_history=summary["sellers_without_history"],
                  history_weeks=summary["history_weeks"], space_use_from=space_use_from)

    def baselines(self) -> None:
        """Each period's baseline, one period after another: the scenario's `allocate` sends the period's (storage type,
        month) markets to the executor as it builds them, so a worker holds one market, never a whole period."""
        periods = self._periods
        for p in periods.index[periods["baseline_run_id"].isna()]:
            if not self.active(p) or (scenario := self.attempt(p, "baseline", lambda p=p: self.scenario(p))) is None:
                continue
            t0 = time.perf_counter()
            result = _isolated(scenario.allocate)
            if isinstance(result, _Failed):
                self.fail(p, "baseline", result.error)
                continue
            self.writer.submit(self._commit_baseline, p, result, t0)

    def _commit_baseline(self, p: str, result, t0: float) -> None:
        self.store.commit_baseline(p, result, self.run_id)
        self.step(f"{p} baseline", time.perf_counter() - t0, period_id=p, objective=units.value(result.objective, units.VALUE),
                  status=result.status)

    def due_wave(self) -> list[tuple[str, int]]:
        """For each period not held nor failed in this run, its first uncleared round if that round closed before the run's date."""
        rounds = self._rounds()
        open_ = rounds[rounds["cleared_run_id"].isna()].sort_values(["period_id", "round"]).groupby("period_id").head(1)
        due = open_[open_["close_date"] < pd.Timestamp(self.on).date()]
        return [(p, r) for p, r in zip(due["period_id"], due["round"].astype(int)) if self.active(p)]

    def _rounds(self) -> pd.DataFrame:
        """The rounds as the run started, with those this run has handed to the writer counted as cleared (by this run)."""
        rounds = self._stored_rounds.copy()
        rounds.loc[rounds.index.isin(list(self._committing)), "cleared_run_id"] = self.run_id
        return rounds.reset_index()

    def clear_wave(self, wave: list[tuple[str, int]]) -> None:
        """The wave's rounds (one per period), their storage types' markets all sent to the executor at once."""
        t0 = time.perf_counter()
        calls, owner, ready = [], [], []
        for p, r in wave:
            mine = self.attempt(p, f"round {r}", lambda p=p, r=r: list(self.scenario(p).round_calls(r)))
            if mine is None:
                continue
            ready.append((p, r))
            calls += mine
            owner += [(p, r)] * len(mine)
        note(f"wave {', '.join(f'{p} round {r}' for p, r in ready)}: {len(calls)} markets on {self.executor.description}")
        results = self.map(clear_market, calls)
        for p, r in ready:
            mine = [res for res, o in zip(results, owner) if o == (p, r)]
            failed = next((res for res in mine if isinstance(res, _Failed)), None)
            if failed is not None:
                self.fail(p, f"round {r}", failed.error)
                continue
            result = self.attempt(p, f"round {r}", lambda p=p, r=r, mine=mine: self.scenarios[p].add_round(r, mine))
            if result is None:
                continue
            self._committing.add((p, r))
            self.writer.submit(self._commit_round, p, result, len(mine), t0)

    def _commit_round(self, p: str, result, markets: int, t0: float) -> None:
        r = result.round
        self.store.commit_round(p, result, self.run_id)
        failpoint(f"round-{r}-committed")
        # Totals as the exported tables show them: each row rounded (cents, milli-cube), summed exactly.
        cents = int(units.steps(result.prices["objective"], units.MONEY).sum())
        with self._report_lock:
            self._objective_cents += cents
            self.report.objective = self._objective_cents / units.MONEY.scale
        self.step(f"{p} round {r}", time.perf_counter() - t0, period_id=p, round=r, objective=cents / units.MONEY.scale,
                  granted_cube=units.total(result.grants["granted_cube"], units.CUBE), markets=markets)

    def settlements(self) -> None:
        """Each period whose rounds are all cleared and whose sales report is in: the scenario's settlement."""
        periods = self._periods
        rounds = self._rounds()
        all_cleared = rounds.groupby("period_id")["cleared_run_id"].apply(lambda s: bool(s.notna().all()))
        ready = periods[periods["settled_run_id"].isna() & periods["sales_received_at"].notna()].index
        for p in [p for p in ready if all_cleared.get(p, False) and self.active(p)]:
            t0 = time.perf_counter()
            settlement = self.attempt(p, "settlement", lambda p=p: self.scenario(p).settle())
            if settlement is None:
                continue
            self.writer.submit(self._commit_settlement, p, settlement, t0)

    def _commit_settlement(self, p: str, settlement: pd.DataFrame, t0: float) -> None:
        self.store.commit_settlement(p, settlement, self.run_id)
        shown = tables.round_table("settlement", settlement)
        self.step(f"{p} settlement", time.perf_counter() - t0, period_id=p, grants=len(settlement),
                  reservation_fees=units.total(shown["reservation_fee"], units.MONEY), credits=units.total(shown["credit"], units.MONEY))


def _record_failed(store: Store, run_id: int, error: BaseException, report: BatchReport, inputs_hash: str | None) -> None:
    """Record the run as failed with what it did, if the store can still be reached (it may be what failed). Also
    after the run lost the writers' lock: the row is the run's own (another writer only marks it killed)."""
    try:
        with store.transaction(check_lock=False) as conn:
            store.finish_run(conn, run_id, "failed", error=error_text(error), steps=report.steps, timings=report.timings,
                             inputs_hash=inputs_hash)
    except StoreError as lost:  # on stderr even with -q: the run's record says 'running' until the next command takes the lock
        print(f"optalloc: warning: run {run_id} could not be recorded as failed ({lost}); the next command that takes the store's lock"
              " records it as killed", file=sys.stderr)


def run_batch(
    store: Store,
    on: date,
    *,
    overrides: dict | None = None,
    executor: SerialExecutor | DaskExecutor | None = None,
    lock_timeout: float = 600.0,
) -> BatchReport:
    """Do everything due in the store on the night of `on` (see the module docstring), but for held periods.

    Fault isolation: a period whose load, forecast, baseline, round or settlement fails is recorded as failed (its id, step and
    error, in `period_failures` and the report) and its later steps wait for the next run; the other periods go on.
    The run's outcome is then `failed`. A store error (the database is lost, say) aborts the run: it is recorded as
    failed when the store can still be reached, and raised. What committed before any failure stays."""
    executor = executor or SerialExecutor()
    overrides = overrides or {}
    with one_blas_thread(), store.lock(lock_timeout):
        killed = store.mark_dead_runs()
        if killed:
            note(f"{killed} earlier run(s) had died without finishing; marked killed")
        with store.transaction() as conn:
            run_id = store.start_run(conn, "batch", run_date=on, options={"overrides": overrides, "executor": executor.description})
        try:
            run = _Run(store, run_id, on, overrides, executor)
        except BaseException as e:  # the periods could not be read: the run is failed, not left running (then "killed")
            _record_failed(store, run_id, e, BatchReport(run_id, "failed"), None)
            raise
        try:
            run.forecasts()
            run.baselines()
            while wave := run.due_wave():
                run.clear_wave(wave)
            run.settlements()
            run.writer.wait()
            inputs = run.inputs_hash()  # computed beside the solves
        except BaseException as e:
            if (lost_write := run.writer.stop()) is not None and lost_write is not e:
                note(f"a write failed after the run had failed: {error_text(lost_write)}")
            _record_failed(store, run_id, e, run.report, run.inputs_hash(wait=False))
            raise
        finally:
            run.writer.stop()
            run.stop_hashing()
        error = "; ".join(f"{f['period_id']} {f['step']}: {f['error']}" for f in run.report.failures) or None
        with store.transaction(check_lock=False) as conn:  # the run's own row: its work is committed, lock or not
            store.finish_run(conn, run_id, run.report.outcome, steps=run.report.steps, timings=run.report.timings,
                             objective=run.report.objective, inputs_hash=inputs, error=error)
        return run.report
