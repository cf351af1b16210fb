"""The in-memory instance: validated tables plus the period and settings.

Build one with `Instance.from_tables` (DataFrames or lists of row dicts, e.g. from a notebook)
or with the loaders in `optalloc.io`. Either way the same checks run, so an `Instance` that
exists is valid: every id it references exists, every month is in the period.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from pydantic import ValidationError

from .errors import InputError, Problem
from .schemas import TABLE_KEYS, TABLES, Period, Settings, id_problem, pydantic_problems  # noqa: F401 -- as optalloc.instance had it
from .units import CUBE, floor_to_grid
from .validate import check_instance, raise_if, snap_to_grid, validate_table


def canonical_order(frame: pd.DataFrame, table: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows sorted by the table's key (Python's string order, as the store sorts them), and the 1-based input row
    of each."""
    keys = TABLE_KEYS[table]
    if _keys_ascending(frame, keys):  # as the store and optalloc's own files hold them: no sort
        return frame.reset_index(drop=True), np.arange(1, len(frame) + 1)
    ordered = frame.sort_values(keys, kind="stable")
    return ordered.reset_index(drop=True), ordered.index.to_numpy() + 1


def _keys_ascending(frame: pd.DataFrame, keys: list[str]) -> bool:
    """Whether each row's key is >= the one before it, comparing key columns left to right (the order a stable
    `sort_values(keys)` gives; rows with equal keys keep their order either way). One vectorised comparison per
    column, against a sort of every column (at 2 M sellers, 15 M rows of needs)."""
    if len(frame) < 2:
        return True
    tied = np.ones(len(frame) - 1, dtype=bool)  # pairs whose keys are equal so far
    for k in keys:
        values = frame[k].to_numpy()
        before, after = values[:-1], values[1:]
        if (tied & (before > after)).any():
            return False
        tied &= before == after
        if not tied.any():
            break
    return True


def _has_rows(table) -> bool:
    return table is not None and len(table) > 0


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Instance:
    name: str
    period: Period
    settings: Settings
    fcs: pd.DataFrame
    sellers: pd.DataFrame
    needs: pd.DataFrame
    requests: pd.DataFrame
    sales: pd.DataFrame
    grant_sales: pd.DataFrame
    history: pd.DataFrame = field(default_factory=pd.DataFrame)  # optional: see optalloc.history
    sources: dict[str, str] = field(default_factory=dict, compare=False)
    # Each table's rows are in canonical (key) order; source_rows[t][i] is the 1-based row of its file that row i
    # came from, so later checks (the store's ingest) still name the user's row.
    source_rows: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)
    # Which rows of fcs (canonical order) were given a pool_cube; the others' pool is pool_share x capacity.
    pool_given: np.ndarray | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_tables(
        cls,
        *,
        period: Period | dict,
        tables: dict[str, pd.DataFrame | list[dict]],
        settings: Settings | dict | None = None,
        name: str = "instance",
        sources: dict[str, str] | None = None,
    ) -> "Instance":
        """Validate tables (column-wise) and cross-references; raise InputError listing every problem."""
        if not isinstance(tables, dict) or not all(isinstance(t, str) for t in tables):
            raise InputError(Problem(f"tables is a dict of table name -> DataFrame or list of row dicts, not {type(tables).__name__}",
                                     None, None, "tables"))
        for t, table in tables.items():
            if table is not None and not isinstance(table, (pd.DataFrame, list, tuple)):
                raise InputError(Problem(f"a table is a DataFrame or a list of row dicts, not {type(table).__name__}", None, None, f"tables.{t}"))
            if isinstance(table, (list, tuple)) and not all(isinstance(row, dict) for row in table):
                raise InputError(Problem("a list of rows holds one dict per row", None, None, f"tables.{t}"))
        if not isinstance(name, str):
            raise InputError(Problem(f"the name is text, not {type(name).__name__}", None, None, "name"))
        if sources is not None and not (isinstance(sources, dict) and all(isinstance(v, str) for v in sources.values())):
            raise InputError(Problem("sources is a dict of table name -> where it came from (text)", None, None, "sources"))
        if not isinstance(period, (Period, dict)):
            raise InputError(Problem(f"the period is a dict (period_id, months, rounds) or a Period, not {type(period).__name__}", None, None,
                                     "period"))
        if settings is not None and not isinstance(settings, (Settings, dict)):
            raise InputError(Problem(f"settings are a dict or a Settings, not {type(settings).__name__}", None, None, "settings"))
        sources = {"meta": "instance", **{t: t for t in TABLES}, **(sources or {})}
        problems: list[Problem] = []
        explicit = set(settings) if isinstance(settings, dict) else set()  # settings a user wrote (a Settings object: none)
        try:
            period = period if isinstance(period, Period) else Period.model_validate(period)
        except ValidationError as e:
            problems += pydantic_problems(e, sources.get("meta", "instance"), "period.")
        try:
            settings = settings if isinstance(settings, Settings) else Settings.model_validate({} if settings is None else settings)
        except ValidationError as e:
            problems += pydantic_problems(e, sources.get("meta", "instance"), "settings.")
        if (why := id_problem(name)) is not None:
            problems.append(Problem(f"instance name {why}: {_short(name)}", sources.get("meta", "instance"), None, "name"))
        for t in tables:
            if t not in TABLES:
                problems.append(Problem(f"unknown table (expected: {', '.join(TABLES)})", sources.get(t, t)))
        typed: dict[str, pd.DataFrame] = {}
        for t, (_, required) in TABLES.items():
            raw = tables.get(t)
            if raw is None:
                if required and not (t == "needs" and _has_rows(tables.get("history"))):
                    problems.append(Problem("required table is missing", sources[t]))
                    continue
                raw = pd.DataFrame(columns=[c for c in TABLES[t][0].model_fields if TABLES[t][0].model_fields[c].is_required()])
            frame = raw if isinstance(raw, pd.DataFrame) else pd.DataFrame(list(raw))
            if t == "needs" and len(frame) == 0 and _has_rows(tables.get("history")):
                pass  # needs come from the history: `optalloc.forecast.apply.with_forecast` (solve and the batch run it)
            elif required and len(frame) == 0:  # no FCs, sellers or needs: nothing to allocate (the solver would fail)
                problems.append(Problem("required table has no rows", sources[t]))
                continue
            table, found = validate_table(t, frame, sources[t])
            problems += found
            typed[t] = table
        table_level = any(p.row is None for p in problems) or not isinstance(period, Period) or len(typed) < len(TABLES)
        if not table_level:  # rows with bad cells still allow the cross-table checks: report everything at once
            problems += check_instance(typed, period, sources)
        if not problems and isinstance(settings, Settings):
            problems += _settings_that_lie(explicit, settings, typed, sources.get("meta", "instance"))
        raise_if(problems)
        source_rows = {}
        for t in TABLES:  # one canonical order, whatever order the rows came in: the same answer from any source
            typed[t], source_rows[t] = canonical_order(typed[t], t)
        typed["fcs"], typed["requests"] = typed["fcs"].copy(), typed["requests"].copy()
        snap_to_grid(typed)  # fees in whole cents, cube in whole milli-cube, from here on
        fcs = typed["fcs"]
        missing_pool = fcs["pool_cube"].isna()
        pool_given = ~missing_pool.to_numpy()
        # A derived pool counts its whole milli-cube only: the rules work in whole milli-cube.
        fcs.loc[missing_pool, "pool_cube"] = floor_to_grid(fcs.loc[missing_pool, "capacity_cube"].to_numpy() * settings.pool_share, CUBE)
        return cls(
            name=name,
            period=period,
            settings=settings,
            fcs=fcs,
            sellers=typed["sellers"],
            needs=typed["needs"],
            requests=typed["requests"],
            sales=typed["sales"],
            grant_sales=typed["grant_sales"],
            history=typed["history"],
            sources=sources,
            source_rows=source_rows,
            pool_given=pool_given,
        )

    def file_row(self, table: str, i: int) -> int:
        """The 1-based row of `table`'s file that row i (canonical order) came from."""
        rows = self.source_rows.get(table)
        return int(rows[i]) if rows is not None and i < len(rows) else i + 1

    def with_settings(self, source: str = "settings", **changes) -> "Instance":
        """A copy with some settings replaced, checked as an instance's settings are (`source` names where the
        changes come from in a message, e.g. "--set"). A pool derived from pool_share is derived again; a setting
        that an explicit column overrides is refused (`_settings_that_lie`)."""
        if not isinstance(source, str):
            raise InputError(Problem(f"with_settings takes settings by name (with_settings(pool_share=0.2)), not {source!r}", "settings"))
        try:
            settings = Settings.model_validate({**self.settings.model_dump(), **changes})
        except ValidationError as e:
            raise InputError(pydantic_problems(e, source, "settings." if source == "settings" else "")) from None
        tables = {"fcs": self.fcs.assign(pool_cube=self.fcs["pool_cube"].where(self._pool_given())), "needs": self.needs}
        raise_if(_settings_that_lie(set(changes), settings, tables, source))
        fcs = self.fcs
        if settings.pool_share != self.settings.pool_share and not self._pool_given().all():
            derived = ~self._pool_given()
            fcs = fcs.copy()
            fcs.loc[derived, "pool_cube"] = floor_to_grid(fcs.loc[derived, "capacity_cube"].to_numpy() * settings.pool_share, CUBE)
        return replace(self, settings=settings, fcs=fcs)

    def with_pool_share(self, share: float) -> "Instance":
        """A copy whose every pool is `share` of its FC's capacity (floored to whole milli-cube), the pool_cube column
        given with the inputs set aside: the what-if "a pool of 20% of capacity" on an instance that gives each pool."""
        try:
            settings = Settings.model_validate({**self.settings.model_dump(), "pool_share": share})
        except ValidationError as e:
            raise InputError(pydantic_problems(e, "with_pool_share", "")) from None
        fcs = self.fcs.assign(pool_cube=floor_to_grid(self.fcs["capacity_cube"].to_numpy() * settings.pool_share, CUBE))
        return replace(self, settings=settings, fcs=fcs, pool_given=np.zeros(len(fcs), dtype=bool))

    def _pool_given(self) -> np.ndarray:
        """Which fcs rows were given their pool_cube (all, for an instance made without from_tables)."""
        given = self.pool_given
        return given if given is not None and len(given) == len(self.fcs) else np.ones(len(self.fcs), dtype=bool)

    def of_storage_type(self, storage_type: str) -> "Instance":
        """The market of one storage type: its FCs, needs, requests and sales (sellers and settings unchanged).
        Capacity never moves between storage types, so each type's market can be solved on its own."""
        fcs, needs, requests, sales = (_of_storage_type(t, storage_type) for t in (self.fcs, self.needs, self.requests, self.sales))
        grant_sales = self.grant_sales[self.grant_sales["request_id"].isin(requests["request_id"])].reset_index(drop=True)
        return replace(self, fcs=fcs, needs=needs, requests=requests, sales=sales, grant_sales=grant_sales)

    def round_market(self, storage_type: str, round_: int) -> "Instance":
        """What clearing one round's market of one storage type reads: that type's FCs and that round's requests of it,
        the sellers (their regions place their grants, held ones too), the period and settings. Needs, sales and history
        are left empty: a worker is sent this market, not the period (at 2 M sellers 0.22-0.26 GB, not 0.9)."""
        requests = _of_storage_type(self.requests[self.requests["round"] == round_], storage_type)
        return replace(self, fcs=_of_storage_type(self.fcs, storage_type), requests=requests, needs=self.needs.iloc[:0],
                       sales=self.sales.iloc[:0], grant_sales=self.grant_sales.iloc[:0], history=self.history.iloc[:0], source_rows={})

    def summary(self) -> dict:
        return {
            "name": self.name,
            "period_id": self.period.period_id,
            "months": list(self.period.months),
            "rounds": list(self.period.rounds),
            "fcs": int(self.fcs["fc_id"].nunique()),
            "storage_types": sorted(self.fcs["storage_type"].unique().tolist()),
            "sellers": len(self.sellers),
            "requests": len(self.requests),
        }


def _settings_that_lie(explicit: set[str], settings: Settings, tables: dict[str, pd.DataFrame], source: str) -> list[Problem]:
    """Settings given explicitly that an explicit column of the inputs overrides, so they would change nothing (and
    summary.json would report them as if they had): pool_share where every FC row has its pool_cube; forecast_method
    where the needs are given (nothing is forecast)."""
    problems = []
    fcs = tables.get("fcs")
    if "pool_share" in explicit and fcs is not None and len(fcs) and "pool_cube" in fcs and fcs["pool_cube"].notna().all():
        problems.append(Problem(f"pool_share {settings.pool_share:g} would change nothing: every row of the fcs table has its own "
                                "pool_cube, which overrides it. Change the pool_cube column instead, or leave pool_cube out to derive "
                                "each pool from pool_share" + (" (in Python: with_pool_share)" if source == "settings" else ""), source, None, "pool_share"))
    needs = tables.get("needs")
    if "forecast_method" in explicit and needs is not None and len(needs):
        problems.append(Problem(f"forecast_method {settings.forecast_method!r} would change nothing: the needs table is given, so nothing"
                                " is forecast. Leave the needs table out to forecast them from the history, or drop forecast_method",
                                source, None, "forecast_method"))
    return problems


def _of_storage_type(frame: pd.DataFrame, storage_type: str) -> pd.DataFrame:
    """A table's rows of one storage type, renumbered."""
    return frame[frame["storage_type"] == storage_type].reset_index(drop=True)
