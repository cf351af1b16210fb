"""The `optalloc` command line: it parses arguments and calls the engine's one path (`optalloc.Scenario`); no step of
the workflow is decided here.

  optalloc validate INSTANCE
  optalloc solve    INSTANCE -o OUT           baseline + every round + settlement
  optalloc allocate INSTANCE -o OUT           baseline limits only
  optalloc clear    INSTANCE -o OUT [--round R] [--previous DIR]
  optalloc settle   INSTANCE -o OUT [--previous DIR]
  optalloc generate -o DIR [...]                a seeded synthetic instance
  optalloc simulate [-o DIR] [--sellers N ...]  a seeded market simulation against the planner's LP alone

The nightly job, on a store (--db URL, or $OPTALLOC_DB, else sqlite:///optalloc.db):
  optalloc ingest   INSTANCE | --period P [--requests F] [--sales F] [--grant-sales F] | --history F [--period P]
  optalloc batch    [--date YYYY-MM-DD] [--workers N | --scheduler ADDRESS]
  optalloc export   --period P -o OUT           the stored results, as 'solve' writes them
  optalloc status                               periods (holds, failures), rounds and runs as JSON
  optalloc period   hold P [--reason TEXT] | release P   the batch skips a held period
  optalloc report   RUN_OR_OUTPUT_DIR -o report.html   a self-contained HTML page of a run or an output folder

Exit codes: 0 ok, 2 invalid input (or an output path it must not write), 3 infeasible model, 4 solver stopped
without an optimal answer, 5 store unavailable (unreachable, or its lock held by another run past --lock-timeout),
1 an internal error (a bug: please report it with the traceback `optalloc --debug ...` prints).
Every command that writes does so atomically: on any error nothing is written. `-o` replaces only a folder that
optalloc wrote itself (see optalloc.outputs), never the current folder, an input or the store's folder.

Start-up: the engine (pandas, Pyomo, HiGHS, SQLAlchemy, Dask) is imported inside the command that needs it, so
`--help`, `--version` and every command's `--help` answer at once.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path

from .cli_args import parser as build_parser
from .cli_args import solver_overrides
from .errors import InputError, OptallocError, Problem, StoreError
from .progress import set_quiet, stage
from .specs import GenerateSpec, SimulationSpec
from .store.urls import resolve_url

STORE_COMMANDS = ("ingest", "batch", "export", "status", "report", "period")
ENGINE_COMMANDS = ("solve", "allocate", "clear", "settle")
FORECAST_TABLES = ("needs", "performance")
# What each engine command writes: its tables (after the forecast's, when the needs came from history) and the parts
# of summary.json, the same whether the rounds were cleared now or read from --previous.
WRITES = {
    "solve": (None, None),
    "allocate": (("limits", "placements", "fc_prices"), ("baseline",)),
    "clear": (("limits", "grants", "grant_placements", "pools", "round_prices"), ("baseline", "rounds")),
    "clear --previous": (("limits", "grants", "grant_placements", "pools", "round_prices"), ("rounds",)),
    "settle": (("round_prices", "settlement"), ("rounds", "settlement")),
    "settle --previous": (("round_prices", "settlement"), ("settlement",)),
}


# ---------------------------------------------------------------- the engine's commands: one Scenario each


def make_executor(workers: int = 0, scheduler: str | None = None):
    """Where the markets are solved: in this process, or on Dask (`optalloc.batch.make_executor`)."""
    from .batch import make_executor as make

    return make(workers, scheduler)


def _options(args, instance):
    """The instance's solver options with the command line's over them, checked as the settings' are."""
    from pydantic import ValidationError

    from .schemas import pydantic_problems
    from .schemas import SolverOptions

    try:  # validated, not model_copy'd: an override is checked like the instance's own settings.solver
        return SolverOptions.model_validate({**instance.settings.solver.model_dump(), **solver_overrides(args)})
    except ValidationError as e:
        raise InputError(pydantic_problems(e, "command line", "solver.")) from None


def _with_settings(instance, settings: list[tuple[str, object]]):
    """The instance with the --set changes (each key once), checked as its settings are."""
    if not settings:
        return instance
    keys = [k for k, _ in settings]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise InputError(Problem(f"{twice[0]} is set twice; give each setting once", "--set", None, twice[0]))
    return instance.with_settings(source="--set", **dict(settings))


def _engine(args) -> int:
    """solve, allocate, clear, settle: load, check, one Scenario, write what the command writes."""
    from .outputs import check_folder
    from .scenario import Scenario

    previous = getattr(args, "previous", None)
    inputs = (args.instance, previous)
    check_folder(args.out, inputs=inputs)  # before any work: a refused target costs nothing
    with stage("load and validate"):
        from .io import load_instance

        instance = _with_settings(load_instance(args.instance), args.settings)
    options = _options(args, instance)
    round_ = getattr(args, "round", None)
    if round_ is not None and round_ not in instance.period.rounds:
        raise InputError(Problem(f"round {round_} is not a round of period {instance.period.period_id} "
                                 f"(its rounds: {', '.join(map(str, instance.period.rounds))})", "--round"))
    executor = make_executor(args.workers) if args.workers else None
    try:
        scenario = Scenario.resume(instance, previous, options, executor=executor) if previous else Scenario(instance, options, executor=executor)
        if args.command == "allocate":
            scenario.allocate()
        elif args.command == "clear" and previous:
            _clear_next(scenario, round_, Path(previous))
        elif args.command == "clear":
            scenario.optimize(through=round_, settle=False)
        elif args.command == "settle" and previous:
            if not scenario.rounds:
                raise InputError(Problem("no cleared rounds to settle (grants.csv / round_prices.csv missing)", str(previous)))
            scenario.settle()
        else:  # solve, settle
            scenario.optimize()
    finally:
        if executor is not None:
            executor.close()
    tables, parts = WRITES[f"{args.command} --previous" if previous else args.command]
    result = scenario.result
    if tables is not None and result.forecast is not None:
        tables = (*FORECAST_TABLES, *tables)
    result.write(args.out, args.format, tables=tables, parts=parts, inputs=inputs)
    return 0


def _clear_next(scenario, round_: int | None, previous: Path) -> None:
    """Exactly one more round after an earlier output folder: the next one (or --round, which must be it)."""
    prices = previous / "round_prices.csv"
    todo = scenario.next_round()
    r = round_ if round_ is not None else todo
    if r is None:
        raise InputError(Problem("every round of the period is already cleared", str(prices)))
    if r in scenario.cleared:
        row = [x.round for x in scenario.rounds].index(r) + 1
        raise InputError(Problem(f"round {r} was already cleared", str(prices), row, "round"))
    if r != todo:
        raise InputError(Problem(f"round {r} cannot be cleared before round {todo}", "--round"))
    scenario.clear(r)


def _validate(args) -> int:
    from .io import load_instance

    with stage("load and validate"):
        instance = load_instance(args.instance)
    print(json.dumps(instance.summary(), indent=2, sort_keys=True))
    return 0


def _forecast(args) -> int:
    from .forecast import run_forecast
    from .io import load_instance
    from .results_io import write_tables
    from .outputs import check_folder

    inputs = (args.instance, *([args.settlement] if args.settlement else []))  # -o may replace neither
    check_folder(args.out, inputs=inputs)
    with stage("load and validate"):
        instance = load_instance(args.instance)
    settlement = _read_settlement(args.settlement) if args.settlement else None
    with stage("forecast" + (" and backtest" if args.backtest else "")):
        result = run_forecast(instance, with_backtest=args.backtest, method=args.method, origins=args.origins, seed=args.seed,
                              threads=args.threads, settlement=settlement)
    with stage(f"write {args.out}"):
        write_tables(args.out, result.tables(), result.summary, fmt=args.format, inputs=inputs)
    return 0


def _read_settlement(path: str):
    """A settlement table given to `forecast --settlement`: its seller, credit and fee columns, money checked."""
    import numpy as np
    import pandas as pd

    try:
        settlement = pd.read_csv(path, dtype={"seller_id": str})
    except (OSError, ValueError) as e:
        raise InputError(Problem(f"cannot read table: {e}", path)) from None
    missing = [c for c in ("seller_id", "credit", "reservation_fee") if c not in settlement.columns]
    if missing:
        raise InputError(Problem(f"not a settlement table (missing {missing})", path))
    problems = []
    for c in ("credit", "reservation_fee"):  # each a finite number of $, 0 or more: text would fail deep in the forecast
        values = pd.to_numeric(settlement[c], errors="coerce").to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(values) | (values < 0)
        problems += [Problem("must be a finite number of $, 0 or more", path, int(i) + 1, c) for i in np.flatnonzero(bad)[:5]]
    if problems:
        raise InputError(problems)
    return settlement


PERIODS_ONLY = ("forecast_method", "reform_share")  # simulate's options that mean something only with --periods


def _simulate(args) -> int:
    import dataclasses

    import pandas as pd

    from . import tables
    from .results_io import write_tables
    from .outputs import check_folder
    from .simulate import markdown as sim_markdown
    from .simulate import simulate

    fields = {f: getattr(args, f) for f in SimulationSpec.__dataclass_fields__ if hasattr(args, f)}
    if args.regions > args.fcs:
        raise InputError(Problem(f"{args.regions} regions need at least as many FCs (--fcs {args.fcs})", "--regions"))
    given = [f"--{o.replace('_', '-')}" for o in PERIODS_ONLY if getattr(args, o) is not None]
    if args.periods is None and given:
        raise InputError(Problem(f"{given[0]} means something only with --periods N; add --periods or leave it out", given[0]))
    if args.format is not None and not args.out:
        raise InputError(Problem("--format says how -o DIR is written; without -o nothing is written", "--format"))
    fmt = args.format or "csv"
    if args.out:
        check_folder(args.out)
    if args.periods is not None and args.pool_share >= 1:
        raise InputError(Problem("with --periods the network is sized to --tightness x the forecast need net of the pool; "
                                 "--pool-share must be below 1", "--pool-share"))
    if args.periods is not None:
        from .forecast.loop import simulate_periods, space_per_need

        groups, by_period, summary = simulate_periods(SimulationSpec(**fields), args.periods, method=args.forecast_method or "lightgbm",
                                                      reform_share=0.5 if args.reform_share is None else args.reform_share)
        shown = groups.set_index(["period", "group"]).drop(columns="period_id")
        print(f"## optalloc simulate --periods {args.periods} (seed {args.seed}): who gets the space, period by period\n\n"
              f"{sim_markdown(shown, 'groups')}\n\n{space_per_need(groups)}\n\n"
              f"## forecast calibration and the market, per period\n\n{sim_markdown(by_period.set_index('period'), 'periods')}")
        if args.out:
            with stage(f"write {args.out}"):
                write_tables(args.out, {"groups": groups.set_index(["period", "group"]), "periods": by_period.set_index("period")}, summary,
                             fmt=fmt)
        return 0
    result = simulate(SimulationSpec(**fields))
    print(f"## optalloc simulate (seed {args.seed}): the pool's space, market vs planner's LP alone\n\n{sim_markdown(result.headline, 'headline')}\n\n"
          f"## by round of grant\n\n{sim_markdown(result.by_round, 'by_round')}")
    if args.out:
        headline = tables.round_table("headline", result.headline.reset_index()).set_index("metric")
        summary = {"spec": dataclasses.asdict(result.spec),
                   "headline": {m: {c: (None if pd.isna(v) else float(v)) for c, v in row.items()} for m, row in headline.iterrows()}}
        with stage(f"write {args.out}"):
            write_tables(args.out, result.tables(), summary, fmt=fmt)
    return 0


def _generate(args) -> int:
    from .generate import generate, generate_single_pool
    from .results_io import write_instance
    from .outputs import check_folder

    if not args.single_pool and args.regions > args.fcs:
        raise InputError(Problem(f"{args.regions} regions need at least as many FCs (--fcs {args.fcs}): a region without an FC "
                                 "would leave its sellers nowhere to go", "--regions"))
    check_folder(args.out)
    if args.single_pool:
        with stage(f"generate {args.requests} single-pool requests"):
            instance = generate_single_pool(args.requests, seed=args.seed)
    else:
        fields = {f: getattr(args, f) for f in GenerateSpec.__dataclass_fields__ if hasattr(args, f)}
        with stage(f"generate {args.sellers} sellers, {args.requests} requests"):
            instance = generate(GenerateSpec(**fields))
    with stage(f"write {args.out}"):
        write_instance(instance, args.out, fmt=args.format)
    return 0


# ---------------------------------------------------------------- the store's commands


READER_UPGRADE_WAIT = 5.0  # seconds a read-only command waits for the lock to upgrade an old store


def _open_store(args, *, create: bool = False):
    """The store of a store command. Only ingest may create one; none may use an in-memory database (a writer would
    write into nothing, a reader would read an empty store)."""
    from .store import Store
    from .store.urls import is_in_memory

    url = resolve_url(args.db)
    if is_in_memory(url):
        raise StoreError(f"{url} is an in-memory database: nothing would be stored or found there; give a file (sqlite:///PATH) or a"
                         " PostgreSQL URL")
    # An old store is upgraded on opening, under the writers' lock: a writer waits its --lock-timeout, a reader a
    # moment (another command may be upgrading it; a batch holding the lock for an hour is not waited for).
    reader = args.command in ("status", "export", "report")  # they never write: a store on a read-only file system is read as it is
    return Store(url, create=create, lock_timeout=getattr(args, "lock_timeout", READER_UPGRADE_WAIT), readonly=reader)


def _report(args) -> int:
    from .outputs import check_file
    from .report import PAGE_START, load_output_folder, write_report
    from .scenario import load_store_run

    check_file(args.out, inputs=[args.source], signature=PAGE_START)
    if Path(args.source).is_dir():
        data = load_output_folder(args.source)
    elif args.source.isascii() and args.source.isdigit():  # str.isdigit takes "²" and "٣" too, which int() refuses or reads
        data = load_store_run(_open_store(args), int(args.source))
    else:
        raise InputError(Problem("neither an output folder nor a run id", args.source))
    with stage(f"write {args.out}"):
        write_report(data, args.out, inputs=(args.source,))
    return 0


def _utf8(text: str) -> bool:
    """Whether a command-line value is text the store can keep (bytes the locale could not decode arrive as lone
    surrogates, which no UTF-8 database takes: that was exit 5, a store error)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _store_command(args) -> int:
    for where, value in (("--period", getattr(args, "period", None)), ("period_id", getattr(args, "period_id", None)),
                         ("--reason", getattr(args, "reason", None)), ("--step", getattr(args, "step", None)), ("--db", resolve_url(getattr(args, "db", None)))):
        if value is not None and not _utf8(value):
            raise InputError(Problem(f"not UTF-8 text: {value.encode('utf-8', 'surrogateescape')!r}", where))
    if args.command == "report":
        return _report(args)
    if args.command == "export":
        from .outputs import check_folder

        check_folder(args.out)  # before the store is opened: a refused target costs nothing
    if args.command == "ingest":
        return _ingest(args)
    if args.command == "batch":
        return _batch(args)
    if args.command == "period":  # the arguments first: a refused command opens no store
        if args.reason is not None and args.action == "release":
            raise InputError(Problem("--reason goes with hold or reset, not release", "--reason"))
        if (args.step is None) == (args.action == "reset"):
            raise InputError(Problem("--step goes with reset (and reset needs it: forecast, baseline, round N or settlement)", "--step"))
    store = _open_store(args)
    if args.command == "period":
        with store.lock(args.lock_timeout):
            store.mark_dead_runs()
            if args.action == "hold":
                done = store.hold(args.period_id, args.reason)
            elif args.action == "release":
                done = store.release(args.period_id)
            else:
                done = store.reset(args.period_id, args.step, args.reason)
        print(json.dumps(done, indent=2, sort_keys=True))
    elif args.command == "export":
        from .scenario import Result

        Result.from_store(store, args.period).write(args.out, args.format, store=store.sqlite_file)
    else:  # status
        print(json.dumps(store.status(), indent=2, sort_keys=True, default=str))
    return 0


def _ingest(args) -> int:
    from .io import ARRIVING_TABLES, load_arriving_tables, load_history_file, load_instance

    files = {t: getattr(args, t) for t in ARRIVING_TABLES if getattr(args, t)}
    if bool(args.instance) == bool(args.period or files or args.history):
        raise InputError(Problem("give either an instance, or --period with table files (--requests, --sales, --grant-sales), or"
                                 " --history FILE", "ingest"))
    if files and not args.period:
        raise InputError(Problem("--period is needed with --requests, --sales or --grant-sales: name the stored period the files "
                                 "belong to ('optalloc status' lists them)", "ingest"))
    if args.period and not files and not args.history:
        raise InputError(Problem("nothing to ingest: name at least one table file", "--period"))
    instance = None
    if args.instance:  # before the store is opened: an instance that does not validate creates no store
        with stage("load and validate"):
            instance = load_instance(args.instance)
    store = _open_store(args, create=instance is not None)  # only an instance creates a store
    with store.lock(args.lock_timeout):
        store.mark_dead_runs()  # holding the lock: a run still marked running died
        if instance is not None:
            counts = store.ingest(instance)
        else:  # every file is checked before anything is written, and all of them are written in one transaction
            history = None
            with stage("load and validate"):
                base = store.instance(args.period) if args.period else None
                if args.history:
                    sellers, types = (base.sellers["seller_id"], base.fcs["storage_type"].unique()) if base else store.known_sellers_and_types()
                    if base is None and not len(sellers):
                        raise InputError(Problem("the store has no period yet: ingest an instance first (history names its sellers)",
                                                 args.history))
                    frame, rows = load_history_file(args.history, sellers, types, base.period if base else None)
                    history = (frame, args.history, lambda i: int(rows[i]))
                arriving = load_arriving_tables(base, files) if files else None
            counts = store.ingest(arriving, tables=list(files), history=history) if files else store.ingest_history(*history)
    print(json.dumps(counts, indent=2, sort_keys=True))
    return 0


def _batch(args) -> int:
    import dataclasses

    from .batch import run_batch

    if args.scheduler and args.workers:
        raise InputError(Problem("--scheduler runs the solves on an existing cluster, --workers starts one: give one of them", "--workers"))
    on = args.date or datetime.now(UTC).date()
    store = _open_store(args)
    executor = make_executor(args.workers, args.scheduler)
    try:
        report = run_batch(store, on, overrides=solver_overrides(args), executor=executor, lock_timeout=args.lock_timeout)
    finally:
        executor.close()
    print(json.dumps(dataclasses.asdict(report), indent=2, sort_keys=True))
    for f in report.failures:
        print(f"optalloc: error: period {f['period_id']} failed at {f['step']}: {f['error']}", file=sys.stderr)
    return report.exit_code


# ---------------------------------------------------------------- entry points


def run(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare `optalloc`: the overview of commands
        parser.print_help()
        return 0
    set_quiet(args.quiet)
    if args.command in ("generate", *STORE_COMMANDS):  # no BLAS work, or their own (the batch's run holds one thread)
        return _generate(args) if args.command == "generate" else _store_command(args)
    from .solver import one_blas_thread

    with one_blas_thread():  # every command computes as `solve` does (see solver.one_blas_thread)
        if args.command == "simulate":
            return _simulate(args)
        if args.command == "forecast":
            return _forecast(args)
        if args.command == "validate":
            return _validate(args)
        return _engine(args)


def main(argv: list[str] | None = None) -> None:
    """Run a command; every failure ends in one line on stderr and its exit code (the traceback only with --debug)."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args[:1] or os.environ.get("OPTALLOC_DEBUG", "") not in ("", "0")
    # What a failure leaves: every command writes all or nothing, but a batch commits step by step.
    batch = next((a for a in args if not a.startswith("-")), None) == "batch"
    left = "; the steps committed before it stay ('optalloc status')" if batch else "; nothing was written"
    try:
        code = run(argv)
    except OptallocError as e:
        if debug:
            traceback.print_exc()
        print(f"optalloc: error: {e}", file=sys.stderr)
        code = e.exit_code
    except KeyboardInterrupt as e:
        path = getattr(e, "path", None)  # outputs.WrittenThenInterrupted: the result was in place
        written = f"; {path} was written in full" if path is not None else left
        print(f"optalloc: interrupted{written}", file=sys.stderr)
        code = 130
    except BrokenPipeError:  # the reader went away (`optalloc status | head`): not an error of ours
        _silence_stdout()
        code = 0
    except OSError as e:
        if debug:
            traceback.print_exc()
        where = f"{e.filename}: " if e.filename else ""
        print(f"optalloc: error: {where}{e.strerror or e}{left}", file=sys.stderr)
        code = 2
    except Exception as e:  # a bug: say so in one line, keep the traceback for --debug
        if debug:
            traceback.print_exc()
        print(f"optalloc: internal error: {type(e).__name__}: {e} (run again with 'optalloc --debug ...' for the traceback, and "
              f"please report it){left}", file=sys.stderr)
        code = 1
    sys.exit(code)


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so Python's exit flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    main()
