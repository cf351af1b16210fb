"""The command line's arguments: one parser, its subcommands and their options, and the argument types that check
values before any work (one line, exit 2, for anything they refuse). Light: the engine is not imported to show
`--help`; settings' choices come from the schemas and the clearing rules' registry."""

from __future__ import annotations

import argparse
import json
import math
import typing
from datetime import date

from . import __version__
from .errors import InputError, Problem
from .specs import GenerateSpec, SimulationSpec
from .store.urls import DEFAULT_URL, URL_ENV

OUT_RULE = "written atomically; an existing folder is replaced only if optalloc wrote it"
OUT_HELP = f"output folder ({OUT_RULE})"
FORMATS = ["csv", "parquet"]
DEFAULT_TIME_LIMIT = 3600.0  # the batch's seconds per solve when the instance sets none (optalloc.batch has the same)


class UsageError(InputError):
    """A command line argparse refused: one line, exit 2 (argparse would print its usage and exit by itself)."""

    def __init__(self, message: str, command: str | None = None):
        self.text = message
        super().__init__(Problem(message, None))

    def __str__(self) -> str:
        return self.text


class _Parser(argparse.ArgumentParser):
    """argparse, whose refusals are one line (UsageError, exit 2) instead of its usage text and exit."""

    def error(self, message: str) -> typing.NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _choices(model, field: str) -> list[str]:
    """A settings field's choices, from its Literal (one list, the schema's)."""
    return list(typing.get_args(model.model_fields[field].annotation))


def _whole(lo: int, hi: int):
    """An argparse type: a whole number in [lo, hi]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo:,} and {hi:,}, got {value:,}")
        return value
    return parse


def _number(lo: float, hi: float, *, above: bool = False):
    """An argparse type: a finite number in [lo, hi] (above lo, if `above`)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value) or value > hi or value < lo or (above and value == lo):
            raise argparse.ArgumentTypeError(f"must be a finite number {'above' if above else 'from'} {lo:g} {'and at most' if above else 'to'} "
                                             f"{hi:g}, got {text!r}")
        return value
    return parse


def _date(text: str) -> date:
    """--date: a calendar day, YYYY-MM-DD."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {text!r}") from None


def _setting(text: str) -> tuple[str, object]:
    """--set KEY=VALUE: VALUE as JSON where it is JSON (0.2, [0.5, 1], null, true), else as text (welfare)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"not KEY=VALUE: {text!r}")
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    return key.strip(), parsed


COUNTS = {"sellers": (1, 100_000_000), "fcs": (1, 100_000), "regions": (1, 10_000), "storage-types": (1, 7), "months": (1, 12),
          "rounds": (1, 1_000), "requests": (0, 1_000_000_000), "seed": (0, 2**32 - 1), "history-weeks": (0, 520)}
SHARE = _number(0.0, 1.0)


def _seconds(text: str) -> float:
    """--time-limit: a finite number of seconds above 0 (NaN, infinity, 0 and negatives are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0 or value > 1e7:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds above 0 (at most 1e7), got {text!r}")
    return value


def _add_solver_args(p: argparse.ArgumentParser, time_limit_default: str = "none") -> None:
    from .schemas import SolverOptions

    g = p.add_argument_group("solver")
    g.add_argument("--time-limit", type=_seconds, help=f"seconds per solve, above 0 (default: {time_limit_default})")
    g.add_argument("--backend", choices=_choices(SolverOptions, "backend"), help="model build path (default: auto, by size)")
    g.add_argument("--lp-method", choices=_choices(SolverOptions, "lp_method"),
                   help="HiGHS LP algorithm (default: auto, measured per model: interior point for the baseline, dual simplex for rounds)")
    g.add_argument("--allow-nonoptimal", action="store_true", help="publish a result stopped at a limit")
    g.add_argument("--solver-log", action="store_true", help="show the solver's own log")


def solver_overrides(args) -> dict:
    """The solver options given on the command line (they override the instance's settings.solver)."""
    changes = {}
    for arg, key in [("time_limit", "time_limit"), ("backend", "backend"), ("lp_method", "lp_method")]:
        if getattr(args, arg, None) is not None:
            changes[key] = getattr(args, arg)
    if getattr(args, "allow_nonoptimal", False):
        changes["allow_nonoptimal"] = True
    if getattr(args, "solver_log", False):
        changes["log"] = True
    return changes


def parser() -> argparse.ArgumentParser:
    from . import rules

    parser = _Parser(prog="optalloc", description="Fulfillment-center capacity allocation and reservation clearing.")
    parser.add_argument("--version", action="version", version=f"optalloc {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error (also: $OPTALLOC_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def cmd(name: str, help_: str, writes: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("instance", help="instance JSON file or folder of tables")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
        if writes:
            p.add_argument("-o", "--out", required=True, help=OUT_HELP)
            p.add_argument("--format", choices=FORMATS, default="csv", help="table format (default csv)")
            p.add_argument("--set", dest="settings", metavar="KEY=VALUE", type=_setting, action="append", default=[],
                           help="change a setting for this run (repeatable), checked as the instance's settings are, e.g. "
                                f"--set pool_share=0.2 or --set clearing_rule=welfare (rules: {', '.join(rules.names())})")
            _add_solver_args(p)
            p.add_argument("--workers", type=_whole(0, 4096), default=0,
                           help="solve the markets (storage type x month for the baseline, storage type for a round) on a Dask "
                                "LocalCluster of N worker processes: the same answer, in parallel (default 0: in this process)")
        return p

    cmd("validate", "check an instance and print its summary", writes=False)
    cmd("solve", "baseline allocation, every round, settlement")
    cmd("allocate", "baseline allocation only")
    p = cmd("clear", "clear rounds: all, through --round, or one more round after --previous")
    p.add_argument("--round", type=int, help="clear through this round (with --previous: exactly this round)")
    p.add_argument("--previous", help="output folder of an earlier allocate/clear: continue from it")
    p = cmd("settle", "price protection, fees and credits")
    p.add_argument("--previous", help="output folder of an earlier clear: settle its grants instead of re-clearing")

    g = sub.add_parser("generate", help="write a seeded synthetic instance", description="Write a seeded synthetic instance (a folder of tables).")
    g.add_argument("-o", "--out", required=True, help="instance folder to write (" + OUT_RULE + ")")
    g.add_argument("--format", choices=FORMATS, default="csv", help="table format (default csv, as every command; parquet for big instances)")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    defaults = GenerateSpec()
    for name, help_ in [
        ("sellers", "sellers"), ("fcs", "fulfillment centers"), ("regions", "regions"), ("storage-types", "storage types (1-7)"),
        ("months", "months in the period"), ("rounds", "rounds in the period"), ("requests", "reservation requests"), ("seed", "random seed"),
        ("history-weeks", "weeks of seller history to write beside the instance (0 = none)"),
    ]:
        g.add_argument(f"--{name}", type=_whole(*COUNTS[name]), default=getattr(defaults, name.replace("-", "_")), help=f"{help_} (default %(default)s)")
    for name, help_ in [
        ("min-cube-share", "share of requests with a min_cube"), ("multi-month-share", "share of requests naming several months"),
        ("tightness", "FC capacity as a multiple of total P50 need"), ("second-region-share", "share of sellers using a second region"),
    ]:
        kind = _number(0.0, 1000.0, above=True) if name == "tightness" else SHARE
        g.add_argument(f"--{name}", type=kind, default=getattr(defaults, name.replace("-", "_")), help=f"{help_} (default %(default)s)")
    g.add_argument("--single-pool", action="store_true", help="one FC, type, month and round of divisible requests (the sort-shaped round)")
    _store_commands(sub)
    _simulate_command(sub)
    _forecast_command(sub)
    return parser


def _forecast_command(sub) -> None:
    from .schemas import Settings

    p = sub.add_parser("forecast", help="needs (P50/P90 cube per month) and performance scores from the instance's history",
                       description="Forecast each seller's weekly shipped cube (P50/P90), turn it into cube to hold per month "
                                   "(models/forecast.md) and score inventory performance; --backtest picks the method on rolling origins.")
    p.add_argument("instance", help="an instance (JSON or folder) with a history table")
    p.add_argument("-o", "--out", required=True, help=OUT_HELP)
    p.add_argument("--format", choices=FORMATS, default="csv", help="table format (default csv)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--backtest", action="store_true", help="score every method on rolling origins, write backtest.csv, use the best")
    p.add_argument("--method", choices=[m for m in _choices(Settings, "forecast_method") if m != "backtest"], default="lightgbm",
                   help="the method without --backtest (default %(default)s)")
    p.add_argument("--origins", type=_whole(1, 52), default=3, help="backtest origins, 4 weeks apart (default %(default)s)")
    p.add_argument("--settlement", metavar="FILE", help="settlement.csv of the last period: credits over fees score the use of granted space")
    p.add_argument("--seed", type=_whole(0, 2**32 - 1), default=0, help="random seed of the gradient-boosted model (default %(default)s)")
    p.add_argument("--threads", type=_whole(1, 256), default=1, help="LightGBM threads (results are reproducible for a given number)")


def _simulate_command(sub) -> None:
    from .schemas import Settings

    p = sub.add_parser("simulate", help="a seeded market simulation, cleared and settled by the engine, against the planner's LP alone",
                       description="Sellers with private productivity and forecast error bid for extra space over the rounds; the "
                                   "engine clears and settles; the pool's use is compared with the planner's LP allocating it.")
    p.add_argument("-o", "--out", help="also write the tables and summary.json to this folder (" + OUT_RULE + ")")
    p.add_argument("--format", choices=FORMATS, help="table format with -o (default csv)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    defaults = SimulationSpec()
    for name, help_ in [("sellers", "sellers in the market"), ("fcs", "fulfillment centers"), ("regions", "regions the FCs are in"),
                        ("storage_types", "storage types, each its own market (1-7)"), ("rounds", "rounds in the period"), ("seed", "random seed")]:
        p.add_argument(f"--{name.replace('_', '-')}", type=_whole(*COUNTS[name.replace("_", "-")]), default=getattr(defaults, name),
                       help=f"{help_} (default %(default)s)")
    for name, help_ in [("tightness", "FC capacity / forecast need"), ("pool_share", "share of capacity in the pool"),
                        ("forecast_error", "sd of log(true need / forecast)"), ("productivity_error", "sd of log(true / estimated productivity)"),
                        ("margin", "profit per $ of sales")]:
        kind = {"tightness": _number(0.0, 1000.0, above=True), "pool_share": SHARE}.get(name, _number(0.0, 100.0))
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=getattr(defaults, name), help=f"{help_} (default %(default)s)")
    g = p.add_argument_group("several periods (history -> forecast -> limits -> market -> next history)")
    g.add_argument("--periods", type=_whole(1, 40), help="run this many periods (1-40) with a seeded 104-week history instead of the "
                                                         "one-period market comparison")
    g.add_argument("--forecast-method", choices=_choices(Settings, "forecast_method"),
                   help="with --periods: how each period's needs are forecast (default lightgbm)")
    g.add_argument("--reform-share", type=SHARE, help="with --periods: share of overstocking sellers who reform (default 0.5)")


def _store_commands(sub) -> None:
    """The nightly job's commands, on the store (an SQLite file by default, PostgreSQL by URL)."""

    def cmd(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--db", help=f"store URL (default: ${URL_ENV}, else {DEFAULT_URL}); postgresql://user@host/db for PostgreSQL")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
        return p

    def lock_timeout(p: argparse.ArgumentParser) -> None:
        p.add_argument("--lock-timeout", type=_number(0.0, 1e7), default=600.0, help="seconds to wait for another run to finish (default %(default)s)")

    p = cmd("ingest", "add a period, new requests or a sales report to the store (validated as by 'validate')")
    p.add_argument("instance", nargs="?", help="an instance (JSON or folder): registers its period, adds its requests and sales")
    p.add_argument("--period", help="with table files (needed with them): the stored period they belong to, e.g. P202610")
    for table in ("requests", "sales", "grant_sales"):
        p.add_argument(f"--{table.replace('_', '-')}", metavar="FILE", help=f"a {table} table (CSV or Parquet) for --period")
    p.add_argument("--history", metavar="FILE", help="weeks of seller history (CSV or Parquet) to append to the store's history (weekly:"
                                                      " stored weeks given again identically are skipped, changed ones refused); with"
                                                      " --period checked against that period, else against every stored period's sellers")
    lock_timeout(p)
    p = cmd("batch", "the nightly job: baselines, every round closed before --date, settlements; each in its own transaction")
    p.add_argument("--date", type=_date, help="the night to run for, YYYY-MM-DD (default: today, UTC)")
    p.add_argument("--workers", type=_whole(0, 4096), default=0,
                   help="Dask LocalCluster worker processes for the markets' solves (default 0: in this process)")
    p.add_argument("--scheduler", help="address of an existing Dask scheduler to run the solves on (instead of --workers)")
    lock_timeout(p)
    _add_solver_args(p, time_limit_default=f"the instance's, else {DEFAULT_TIME_LIMIT:g}")
    p = cmd("export", "write a stored period's results as 'optalloc solve' writes them")
    p.add_argument("--period", required=True, help="the stored period to export, e.g. P202610 ('optalloc status' lists them)")
    p.add_argument("-o", "--out", required=True, help=OUT_HELP)
    p.add_argument("--format", choices=FORMATS, default="csv", help="table format (default csv)")
    cmd("status", "print the store's periods (with holds and failures), rounds and latest runs as JSON")
    p = cmd("period", "hold a period (the batch skips it until released), release it, or reset a step (the batch computes it again)")
    p.add_argument("action", choices=["hold", "release", "reset"],
                   help="hold: the batch skips the period; release: it is processed again; reset: discard the stored result of --step")
    p.add_argument("period_id", help="the stored period, e.g. P202610 ('optalloc status' lists them)")
    p.add_argument("--step", help="with reset: forecast, baseline, round N (the last cleared) or settlement; a step later steps were "
                                  "computed from is refused until they are reset")
    p.add_argument("--reason", help="with hold or reset: why (shown by 'optalloc status' and kept in the run log)")
    lock_timeout(p)
    p = cmd("report", "one self-contained HTML page: supply/demand curves, utilization, segments, fees and credits")
    p.add_argument("source", metavar="RUN_OR_OUTPUT_DIR", help="an output folder of 'solve' or 'export', or a run id in the store (--db)")
    p.add_argument("-o", "--out", required=True, help="the HTML file to write (atomically; an existing file is replaced only if it is an "
                                                       "optalloc report)")


