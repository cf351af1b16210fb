"""`Scenario`: one period of the programme and what has been computed of it — the one path every front-end takes.

    from optalloc import Scenario, compare

    base = Scenario.load("instances/small_network")
    result = base.optimize()                       # forecast where needs are missing -> baseline -> every round -> settlement
    result.statistics()                            # headline figures per round x storage type
    what_if = base.with_settings(request_cap_share=0.5).optimize()
    compare(result, what_if, names=["base", "wider caps"])
    result.write("out/small_network")              # the files `optalloc solve` writes, byte for byte
    result.report("out/small_network.html")

The workflow lives here and nowhere else (modelled on PyPSA's `Network.optimize()`): `optimize()` runs the steps in
order, each step is a method (`forecast`, `allocate`, `clear`, `settle`) that computes, records and returns its
result, and `resume` continues from an earlier result (an output folder, or what a store holds). The command line
parses arguments and calls these; the nightly batch opens transactions and calls these; neither decides what comes
after what. Every step publishes its tables in their units (money to the cent, cube to 0.001: `tables.round_table`),
so what a step returns is what its files and the store hold.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import wraps

import pandas as pd

from . import arguments
from .baseline import BaselineResult, allocate
from .clearing import ClearingResult, RoundResult, clear_market, combine_markets, concat_results, held_grants, round_markets
from .errors import InputError, Problem
from .instance import Instance
from .progress import stage
from .report import PeriodView, ReportData
from .schemas import SolverOptions
from .settlement import settle as settle_grants
from .solver import one_blas_thread
from .summary import build_summary, statistics


def _computing(method: Callable) -> Callable:
    """A step computes with numpy's BLAS on one thread, as the solver does (see solver.one_blas_thread)."""

    @wraps(method)
    def run(*args, **kwargs):
        with one_blas_thread():
            return method(*args, **kwargs)

    return run


@dataclass
class Forecast:
    """The needs and performance scores a period's forecast step computed from its history (as written: `needs`
    without floor_cube, indexed by seller_id, storage_type, month; `performance` by seller_id), and its summary."""

    needs: pd.DataFrame
    performance: pd.DataFrame
    summary: dict


@dataclass
class Result:
    """What has been computed of a period: its forecast, baseline, rounds and settlement (each may be missing).

    `tables()` gives every table by name, as the files hold them; `statistics()` the headline figures;
    `summary()` the summary.json document; `write()` and `report()` the files."""

    instance: Instance
    forecast: Forecast | None = None
    baseline: BaselineResult | None = None
    rounds: list[RoundResult] = field(default_factory=list)
    settlement: pd.DataFrame | None = None

    @classmethod
    def from_store(cls, store, period_id: str, *, as_of_run: int | None = None) -> "Result":
        """A period as a store holds it (all of it, or as it stood when run `as_of_run` ended: only the results that
        run or an earlier one wrote), read as of one moment."""
        import json

        def kept(run_id) -> bool:
            return pd.notna(run_id) and (as_of_run is None or int(run_id) <= as_of_run)

        with store.snapshot():  # what a batch commits meanwhile is seen whole or not at all
            row = store.periods().loc[period_id]
            instance = store.instance(period_id)
            forecast = None
            if kept(row["forecast_run_id"]):
                t = store.forecast_tables(period_id)
                forecast = Forecast(t["needs"], t["performance"], json.loads(row["forecast"]) if row["forecast"] else {})
            baseline = store.baseline(period_id)  # None before the period's baseline is written
            if not kept(row["baseline_run_id"]):
                baseline = None
            cleared = store.rounds().loc[period_id]["cleared_run_id"]
            done = {int(r) for r, run_id in cleared.items() if kept(run_id)}
            rounds = [r for r in store.round_results(period_id) if r.round in done] if done else []
            settlement = store.results(period_id, ["settlement"])["settlement"] if kept(row["settled_run_id"]) else None
        return cls(instance, forecast, baseline, rounds, settlement)

    # ------------------------------------------------------------ the tables

    def _rounds(self, part: str) -> pd.DataFrame | None:
        frames = [getattr(r, part) for r in self.rounds if getattr(r, part) is not None]
        return concat_results(frames) if frames else None

    @property
    def grants(self) -> pd.DataFrame | None:
        return self._rounds("grants")

    @property
    def round_prices(self) -> pd.DataFrame | None:
        return self._rounds("prices")

    @property
    def pools(self) -> pd.DataFrame | None:
        return self._rounds("pools")

    @property
    def grant_placements(self) -> pd.DataFrame | None:
        return self._rounds("placements")

    @property
    def clearing(self):
        """The rounds as one `ClearingResult` (grants, placements, pools, round_prices across rounds)."""
        return ClearingResult(self.rounds)

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every table computed (or read back), by name, in the order files are written."""
        out: dict[str, pd.DataFrame] = {}
        if self.forecast is not None:
            out.update(needs=self.forecast.needs, performance=self.forecast.performance)
        if self.baseline is not None:
            out.update({k: v for k, v in self.baseline.tables().items() if v is not None})
        for name in ("grants", "grant_placements", "pools", "round_prices"):
            if (frame := getattr(self, name)) is not None:
                out[name] = frame
        if self.settlement is not None:
            out["settlement"] = self.settlement
        return out

    # ------------------------------------------------------------ what they add up to

    def statistics(self) -> pd.DataFrame:
        """The headline figures per round x storage type (`summary.statistics`)."""
        return statistics(self.round_prices, self.pools, self.settlement)

    def summary(self, parts: Iterable[str] | None = None, *, hash_inputs: bool = False) -> dict:
        """The summary.json document. `parts`: which of "baseline", "rounds", "settlement" it holds (default: each
        one computed here; a baseline read back as its limits alone has no figures to give). `hash_inputs`: with the
        inputs' hashes, as every written summary.json has them (`write` asks for them)."""
        if parts is not None and (isinstance(parts, (str, bytes)) or not hasattr(parts, "__iter__")
                                  or not set(parts) <= {"baseline", "rounds", "settlement"}):
            raise InputError(Problem(f"parts are some of 'baseline', 'rounds', 'settlement'; got {parts!r:.40}", None, None, "parts"))
        if parts is None:
            parts = [p for p, present in (("baseline", self.baseline is not None and self.baseline.complete),
                                          ("rounds", bool(self.rounds)), ("settlement", self.settlement is not None)) if present]
        parts = set(parts)
        return build_summary(self.instance, self.baseline if "baseline" in parts else None,
                             self.round_prices if "rounds" in parts else None, self.pools if "rounds" in parts else None,
                             self.settlement if "settlement" in parts else None, hash_inputs=hash_inputs)

    # ------------------------------------------------------------ the files

    def write(self, out: str | os.PathLike, fmt: str = "csv", *, tables: Iterable[str] | None = None, parts: Iterable[str] | None = None,
              inputs: tuple = (), store: str | None = None):
        """Write the tables (all of them, or those named) and summary.json into the folder `out`, as `optalloc solve`
        does: atomically, replacing only a folder optalloc wrote (see optalloc.outputs)."""
        from .results_io import write_tables

        if tables is not None and (isinstance(tables, (str, bytes)) or not hasattr(tables, "__iter__")):
            raise InputError(Problem(f"tables are a list of table names, not {tables!r:.40}", None, None, "tables"))
        all_tables = self.tables()
        chosen = all_tables if tables is None else {name: all_tables[name] for name in tables if name in all_tables}
        summary = self.summary(parts, hash_inputs=True)
        with stage(f"write {out}"):
            return write_tables(out, chosen, summary, fmt=fmt, inputs=inputs, store=store)

    def report(self, out: str | os.PathLike, *, heading: str | None = None, inputs: tuple = ()):
        """One self-contained HTML page of this result (`optalloc report`), written atomically."""
        from .report import write_report

        data = ReportData(heading=heading or f"optalloc report: {self.instance.name}", periods=[PeriodView(self.summary(), self.tables())])
        with stage(f"write {out}"):
            return write_report(data, out, inputs=inputs)


class Scenario:
    """One period of the programme: its inputs, and the steps computed so far (see the module docstring).

    `options` (SolverOptions, default the instance's `settings.solver`) say how models are solved; `executor`
    (anything with `map(fn, calls)`, e.g. `optalloc.batch.make_executor(2)`) solves the markets of a baseline or a
    round in parallel, with the same answer."""

    def __init__(self, instance: Instance, options: SolverOptions | dict | None = None, *, executor=None):
        arguments.instance(instance)
        self.given = instance  # as given: `with_settings` starts again from it
        self.instance = instance  # with the forecast's needs and scores, once forecast
        self.options = arguments.options(options, instance)
        self._options = options  # as given (None: the instance's settings.solver, also after `with_settings`)
        self.executor = arguments.executor(executor)
        self.forecast_result: Forecast | None = None
        self.baseline: BaselineResult | None = None
        self.rounds: list[RoundResult] = []
        self.settlement: pd.DataFrame | None = None

    # ------------------------------------------------------------ making one

    @classmethod
    def load(cls, path: str | os.PathLike, options: SolverOptions | dict | None = None, *, executor=None) -> "Scenario":
        """A scenario of the instance at `path` (a JSON file, or a folder of CSV/Parquet tables)."""
        from .io import load_instance

        return cls(load_instance(path), options, executor=executor)

    @classmethod
    def from_tables(cls, *, options: SolverOptions | dict | None = None, executor=None, **instance) -> "Scenario":
        """A scenario of an instance built from DataFrames or lists of row dicts (`Instance.from_tables`' arguments)."""
        return cls(Instance.from_tables(**instance), options, executor=executor)

    def with_settings(self, **changes) -> "Scenario":
        """A new scenario of the same inputs with some settings changed (a what-if), nothing computed yet. A setting
        that an explicit column of the inputs overrides is refused (it would change nothing)."""
        return Scenario(self.given.with_settings(**changes), self._options, executor=self.executor)

    def with_pool_share(self, share: float) -> "Scenario":
        """A new scenario whose every pool is `share` of its FC's capacity, pools given with the inputs set aside (the
        what-if "a pool of 20% of capacity"; `with_settings(pool_share=...)` is refused where every pool is given)."""
        return Scenario(self.given.with_pool_share(share), self._options, executor=self.executor)

    @classmethod
    def resume(cls, instance: Instance, previous, options: SolverOptions | dict | None = None, *, executor=None) -> "Scenario":
        """A scenario that continues from `previous`: a `Result`, or an output folder of `optalloc allocate`, `clear`
        or `solve` (checked to belong to `instance`: its summary.json's period_hash). Its baseline limits and cleared
        rounds are kept; the next `clear()` clears the round after them."""
        scenario = cls(instance, options, executor=executor)
        if isinstance(previous, Result):
            if previous.instance.period != instance.period:
                raise InputError(Problem("the previous result is of another period", "previous", None, "period"))
            result = previous
            scenario.forecast_result = previous.forecast
            scenario.instance = previous.instance if previous.forecast is not None else instance
        else:
            scenario.forecast()  # a folder belongs to the period as forecast (its period_hash covers the needs)
            result = read_result(previous, scenario.instance)
        scenario.baseline = result.baseline
        scenario.rounds = list(result.rounds)
        scenario.settlement = result.settlement
        return scenario

    # ------------------------------------------------------------ the steps, in their order

    @property
    def needs_forecast(self) -> bool:
        """History but no needs, not yet forecast: the needs come from the history."""
        return self.forecast_result is None and not len(self.instance.needs) and len(self.instance.history) > 0

    @_computing
    def forecast(self, settlement: pd.DataFrame | None = None) -> Forecast | None:
        """Needs and performance scores from the history, where the inputs have history but no needs (else None).
        `settlement`: the last settled period's, which scores the use of granted space."""
        if not self.needs_forecast:
            return None
        from .forecast.apply import forecast_period

        with stage(f"forecast ({self.instance.settings.forecast_method})"):
            return self.add_forecast(forecast_period(self.instance, settlement))

    def add_forecast(self, result) -> Forecast:
        """Record a forecast of this period (`forecast.apply.forecast_period`'s result, computed here or on a worker):
        its needs and scores go into the instance, its tables into the result."""
        from .forecast.apply import forecast_tables, with_forecast

        needs, perf = forecast_tables(result)
        self.instance = with_forecast(self.instance, result)
        self.forecast_result = Forecast(needs.drop(columns="floor_cube").set_index(["seller_id", "storage_type", "month"]),
                                        perf.set_index("seller_id"), result.summary)
        return self.forecast_result

    @_computing
    def allocate(self) -> BaselineResult:
        """The baseline limits (forecasting the needs first where they come from history)."""
        if self.baseline is not None:
            return self.baseline
        self.forecast()
        self.baseline = allocate(self.instance, self.options, executor=self.executor)
        return self.baseline

    @property
    def cleared(self) -> list[int]:
        return [r.round for r in self.rounds]

    def next_round(self) -> int | None:
        """The first round of the period not cleared yet (None when all are)."""
        return next((r for r in self.instance.period.rounds if r not in self.cleared), None)

    def _check_round(self, round_) -> int:
        """The next round to clear: a round of the period, not cleared, the first of those not cleared."""
        round_ = arguments.round_of(round_, self.instance)
        if round_ in self.cleared:
            raise InputError(Problem(f"round {round_} was already cleared", None, None, "round"))
        if round_ != self.next_round():
            raise InputError(Problem(f"round {round_} cannot be cleared before round {self.next_round()}", None, None, "round"))
        return round_

    def round_calls(self, round_: int) -> list[tuple]:
        """The round's markets (one per storage type) as calls of `clearing.clear_market`, for an executor: the next
        round, holding the grants of the rounds before it, against the baseline's limits. `add_round` takes their
        results. (`clear` is these two; the batch sends several periods' markets to its executor at once.)"""
        round_ = self._check_round(round_)
        limits = self.allocate().limits["limit_cube"]
        held = held_grants(*[r.grants for r in self.rounds])
        return list(round_markets(self.instance, round_, limits, held, self.options, None, split_limits=self.executor is not None))

    def add_round(self, round_: int, parts: list[RoundResult]) -> RoundResult:
        """Record the round cleared from its markets' results (from `round_calls`)."""
        result = parts[0] if len(parts) == 1 else combine_markets(parts)
        self.rounds.append(result)
        self.settlement = None  # settled before this round: no longer the period's settlement
        return result

    @_computing
    def clear(self, round_: int | None = None) -> RoundResult:
        """Clear the next round (`round_`, if given, must be it), holding the grants of the rounds before it."""
        round_ = self.next_round() if round_ is None else round_
        if round_ is None:
            raise InputError(Problem("every round of the period is already cleared", None, None, "round"))
        calls = self.round_calls(round_)
        many = self.executor is not None and len(calls) > 1
        parts = self.executor.map(clear_market, calls) if many else [clear_market(*call) for call in calls]
        return self.add_round(round_, parts)

    @_computing
    def settle(self) -> pd.DataFrame:
        """Price protection, fees, credits and net of every grant of the rounds cleared so far."""
        if not self.rounds:
            raise InputError(Problem("no cleared rounds to settle", None, None, "rounds"))
        result = self.result
        limits = self.allocate().limits["limit_cube"]
        with stage("settle"):
            self.settlement = settle_grants(result.grants, result.round_prices, limits, self.instance.sales, self.instance.grant_sales,
                                            self.instance.settings)
        return self.settlement

    @_computing
    def optimize(self, *, through: int | None = None, settle: bool = True) -> Result:
        """The period's steps in order: forecast where needs are missing, the baseline, every round not cleared yet
        (through round `through`), and the settlement once every round is cleared (unless `settle=False`)."""
        if through is not None:
            arguments.round_of(through, self.instance, "through")
        if not isinstance(settle, bool):
            raise InputError(Problem(f"settle is True or False, not {settle!r}", None, None, "settle"))
        self.allocate()
        while (r := self.next_round()) is not None and (through is None or r <= through):
            self.clear(r)
        if settle and self.next_round() is None and self.settlement is None:
            self.settle()
        return self.result

    @property
    def result(self) -> Result:
        """What has been computed so far."""
        return Result(self.instance, self.forecast_result, self.baseline, list(self.rounds), self.settlement)


def compare(*results: Result, names: Iterable[str] | None = None) -> pd.DataFrame:
    """Scenarios side by side: each result's `statistics()` (rows: round x storage type), columns (figure, scenario)."""
    if any(not isinstance(r, Result) for r in results):
        raise InputError(Problem("compare takes Results (what Scenario.optimize() returns)", None, None, "results"))
    if names is None:
        names = [f"scenario {i + 1}" for i in range(len(results))]
    elif isinstance(names, (str, bytes)) or not hasattr(names, "__iter__"):
        raise InputError(Problem(f"names are a list of texts, one per result, not {names!r:.40}", None, None, "names"))
    names = list(names)
    if len(names) != len(results) or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise InputError(Problem(f"names are {len(results)} different texts, one per result; got {names!r:.60}", None, None, "names"))
    stats = [r.statistics() for r in results]
    figures = list(stats[0].columns) if stats else []
    out = pd.concat(stats, axis=1, keys=names, names=["scenario", "figure"]).swaplevel(axis=1)
    return out.reindex(columns=pd.MultiIndex.from_product([figures, names], names=["figure", "scenario"]))


def read_result(folder: str | os.PathLike, instance: Instance) -> Result:
    """An output folder of an earlier command, as a Result of `instance` (`io.read_previous` checks that it is whole
    and belongs to the instance): its limits, and its rounds with whatever of their tables it holds."""
    from .results_io import read_previous

    previous = read_previous(folder, instance, ("limits",))
    limits = previous["limits"]
    baseline = BaselineResult(limits, None, None, float("nan"), "read", "file")
    rounds = []
    prices = previous["round_prices"]
    if prices is not None:
        for r in sorted(set(prices.index.get_level_values("round"))):
            def of(name: str, r=r) -> pd.DataFrame | None:
                frame = previous[name]
                return None if frame is None else frame[frame.index.get_level_values("round") == r]

            rounds.append(RoundResult(int(r), of("grants"), of("grant_placements"), of("pools"), of("round_prices")))
    return Result(instance, None, baseline, rounds, None)


# ---------------------------------------------------------------- a stored run, for its report


def period_as_of(store, period_id: str, run_id: int) -> PeriodView:
    """A stored period as it stood when run `run_id` ended: the baseline, rounds and settlement written by that run or
    earlier ones (every result names the run that wrote it); later runs' results are left out."""
    result = Result.from_store(store, period_id, as_of_run=run_id)
    tables = {name: frame for name, frame in result.tables().items() if name not in ("needs", "performance")}
    return PeriodView(result.summary(hash_inputs=True), tables)


def _run_title(run_id: int, record: dict) -> str:
    """'run 3 (batch, 2026-09-10)'; a run without a night (an ingest) is named by when it started."""
    when = record.get("run_date")
    if not when:
        started = record.get("started_at")
        when = f"started {str(started).replace('T', ' ')[:16]} UTC" if started else "no date recorded"
    return f"run {run_id} ({record.get('command')}, {when})"


def _claimed_by(store, run_id: int) -> list[str]:
    """The periods where `run_id` wrote a forecast, baseline, round or settlement."""
    periods, rounds = store.periods(), store.rounds().reset_index()
    claims = periods[["forecast_run_id", "baseline_run_id", "settled_run_id"]].eq(run_id).fillna(False).any(axis=1)
    cleared = rounds["cleared_run_id"].eq(run_id).fillna(False).to_numpy(dtype=bool)
    return sorted({*periods.index[claims.to_numpy(dtype=bool)], *rounds.loc[cleared, "period_id"]})


def load_store_run(store, run_id: int) -> ReportData:
    """A run recorded in the store: its record, and the periods it touched as they stood when it ended."""
    from .store.connection import json_value

    runs = store.runs_seen_now()
    if run_id not in runs.index:
        raise InputError(Problem(f"no run {run_id} in the store (runs: {', '.join(map(str, runs.index[-5:]))} ...)", store.display_url, None, "run"))
    record = runs.loc[run_id].to_dict()
    steps = record.get("steps")
    if isinstance(steps, str):
        touched = sorted({s["period_id"] for s in json.loads(steps) if "period_id" in s})
    else:  # a run that died wrote no steps: the periods whose results it committed before it died
        touched = _claimed_by(store, int(run_id))
    periods = [period_as_of(store, pid, int(run_id)) for pid in touched]
    record = {"run_id": int(run_id), **{k: json_value(v) for k, v in record.items()}}
    later = int(runs.index.max()) > int(run_id)
    notes = [] if touched else ["This run changed nothing (nothing was due)."]
    if touched:
        notes.append(f"Each period is shown as it stood when run {run_id} ended: its baseline, rounds and settlement as written by this run "
                     "or earlier ones" + (" (results of later runs are left out)" if later else "") + "; the period's inputs (the counts "
                     "of requests and sellers) are as stored now.")
    return ReportData(heading=f"optalloc report: {_run_title(int(run_id), record)}", periods=periods, run=record, notes=notes)
