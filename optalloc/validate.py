"""Column-wise validation of instance tables against the row models in `optalloc.schemas`.

Checking a million rows one pydantic object at a time takes minutes; checking each column once
takes well under a second. The rules are read from the row models' field definitions (type,
bounds, pattern, optional/default), so there is one definition of what a valid row is.
Every problem is located as (file, row, field); rows are 1-based data rows.

The module is long because each kind of column (numbers, times, lists, ids) has its own vectorised checks and
messages, and the cross-table checks need the typed tables those produce; the rules themselves stay in schemas.py.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import annotated_types as at
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic.fields import FieldInfo

from . import units
from .checks import Collector, fmt, membership
from .errors import InputError, Problem
from .history import check_history
from .schemas import PATTERN_RULES, TABLE_KEYS, TABLES, Period, Row

LIST_SEPARATOR = ";"


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    kind: str  # "str" | "float" | "int" | "datetime" | "list"
    required: bool
    default: object
    nullable: bool
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None  # for str, or for every item of a list


def _metadata_bounds(metadata: list, spec: dict) -> None:
    for m in metadata:
        if isinstance(m, at.Ge):
            spec["ge"] = m.ge
        elif isinstance(m, at.Gt):
            spec["gt"] = m.gt
        elif isinstance(m, at.Le):
            spec["le"] = m.le
        elif isinstance(m, at.MinLen):
            spec["min_length"] = m.min_length
        elif isinstance(m, at.MaxLen):
            spec["max_length"] = m.max_length
        elif getattr(m, "pattern", None):
            spec["pattern"] = m.pattern


def _unwrap(annotation) -> tuple[object, list, bool]:
    """Return (base type, metadata of Annotated layers, nullable)."""
    nullable = False
    metadata: list = []
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(annotation))
        annotation = args[0]
    if typing.get_origin(annotation) is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        for e in extra:
            metadata.extend(e.metadata if isinstance(e, FieldInfo) else [e])
        annotation = base
    return annotation, metadata, nullable


def column_specs(model: type[Row]) -> list[ColumnSpec]:
    specs = []
    for name, field in model.model_fields.items():
        base, metadata, nullable = _unwrap(field.annotation)
        spec: dict = {}
        _metadata_bounds(metadata + list(field.metadata), spec)
        if typing.get_origin(base) is list:
            (item,) = typing.get_args(base)
            _, item_meta, _ = _unwrap(item)
            item_spec: dict = {}
            _metadata_bounds(item_meta, item_spec)
            kind = "list"
            spec["pattern"] = item_spec.get("pattern")
            spec["max_length"] = item_spec.get("max_length")
        else:
            kind = {str: "str", float: "float", int: "int", datetime: "datetime"}[base]
        specs.append(
            ColumnSpec(
                name=name,
                kind=kind,
                required=field.is_required(),
                default=None if field.is_required() else field.default,
                nullable=nullable,
                **spec,
            )
        )
    return specs


def _all_text(series: pd.Series) -> bool:
    """True when every non-missing value is a string (as CSV readers give), so vectorized str methods apply."""
    if pd.api.types.is_string_dtype(series.dtype) and series.dtype != object:
        return True
    if series.dtype != object:
        return False
    present = series.dropna()
    return bool(present.map(type).eq(str).all())


def _as_text(series: pd.Series) -> pd.Series:
    """Stripped text (pandas string dtype, missing stays missing)."""
    return series.astype("string").str.strip(" ")


def _arrow_text(series: pd.Series) -> pa.ChunkedArray | None:
    """The Arrow strings behind a pyarrow-backed text column (what the CSV and Parquet readers give), else None:
    Arrow's kernels then check millions of cells without a Python call per cell."""
    dtype = series.dtype
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        return pa.chunked_array(pa.array(series.array))
    return None


def re2_pattern(pattern: str) -> str:
    """A validation pattern in RE2's syntax, for Arrow's regex kernels: `\\uXXXX` written `\\x{XXXX}`, and the
    lone-surrogate range dropped (UTF-8 text, all Arrow holds, cannot contain one). Same verdicts on Arrow text as
    Python's re (tests/test_loading.py). Arrow's kernel searches: the pattern must be anchored (^...$) to match whole."""
    if not (pattern.startswith("^") and pattern.endswith("$")):
        raise ValueError(f"a validation pattern must be anchored with ^...$: {pattern!r}")
    return re.sub(r"\\u([0-9a-fA-F]{4})", r"\\x{\1}", pattern.replace(r"\ud800-\udfff", ""))


def _fullmatch(text: pd.Series, pattern: str, missing: bool) -> np.ndarray:
    """Whether each value matches `pattern` whole (`missing` where there is no value): by Arrow's regex kernel on
    pyarrow-backed text, one C pass (pandas falls back to a Python call per value for a pattern RE2 cannot read)."""
    arrow = _arrow_text(text)
    if arrow is not None:
        return pc.fill_null(pc.match_substring_regex(arrow, re2_pattern(pattern)), missing).to_numpy(zero_copy_only=False).astype(bool)
    return text.str.fullmatch(pattern).fillna(missing).to_numpy(dtype=bool)


def _factorized(col: pd.Series) -> tuple[np.ndarray, pd.Series]:
    """(codes, distinct values) of a column: ids, months and region lists repeat on many rows, so each check runs
    once per distinct value and its verdict is read back by code (-1 = missing). Values that cannot be hashed
    (which the type check has already reported) get one code per row."""
    try:
        codes, uniques = pd.factorize(col.reset_index(drop=True), use_na_sentinel=True)
    except TypeError:
        return np.arange(len(col)), col.reset_index(drop=True)
    return codes, pd.Series(uniques)


def _by_row(per_value: np.ndarray, codes: np.ndarray, missing=False) -> np.ndarray:
    """A per-distinct-value array read back onto the rows (`missing` where the row has no value)."""
    return np.append(per_value, np.array([missing], dtype=per_value.dtype))[codes]


def _per_distinct(col: pd.Series, verdict: Callable[[object], bool]) -> np.ndarray:
    """`verdict` of each row's value, called once per distinct value (a request's months, a seller's regions: a few
    hundred distinct lists over millions of rows); False where the row has no value."""
    codes, distinct = _factorized(col)
    return _by_row(np.fromiter((verdict(v) for v in distinct), dtype=bool, count=len(distinct)), codes)


def _is_blank(series: pd.Series) -> np.ndarray:
    arrow = _arrow_text(series)
    if arrow is not None:
        blank = pc.or_kleene(pc.is_null(arrow), pc.equal(pc.utf8_trim_whitespace(arrow), ""))
        return pc.fill_null(blank, True).to_numpy(zero_copy_only=False).astype(bool)
    if _all_text(series):
        return (series.isna() | series.astype("string").str.strip().eq("")).fillna(True).to_numpy(dtype=bool)  # only whitespace: blank
    if series.dtype == object:
        return series.map(lambda v: v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v.strip())).to_numpy(dtype=bool)
    return series.isna().to_numpy(dtype=bool)


def _edge_space(text: pd.Series) -> np.ndarray:
    """Where text (leading and trailing spaces already dropped) still begins or ends with whitespace: a tab, a no-break
    space. Ids lose their spaces silently (documented), but not a character that only looks like one."""
    return text.str.strip().ne(text).fillna(False).to_numpy(dtype=bool)


def _split_text_lists(col: pd.Series) -> tuple[pd.Series, pd.Series]:
    """';'-separated text -> (items: one row per item, indexed by row position; tuples per row, sorted)."""
    items = _as_text(col).reset_index(drop=True).str.split(LIST_SEPARATOR, regex=False).explode().str.strip(" ")
    items = items[items.notna() & items.ne("")]
    counts = items.groupby(level=0).size().reindex(range(len(col)), fill_value=0).to_numpy()
    values = items.to_numpy(dtype=object)
    tuples: list[tuple] = [()] * len(col)
    if (counts <= 1).all():  # the common case: one item per row
        for i, v in zip(np.flatnonzero(counts == 1).tolist(), values.tolist()):
            tuples[i] = (v,)
    else:
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        for i, (a, k) in enumerate(zip(starts.tolist(), counts.tolist())):
            tuples[i] = tuple(sorted(values[a : a + k]))
    return items, pd.Series(tuples, dtype=object)


def _split_list(value) -> tuple[str, ...] | None:
    if isinstance(value, (list, tuple, np.ndarray)):
        items = [str(v).strip(" ") for v in value]
    elif isinstance(value, str):
        items = [v.strip(" ") for v in value.split(LIST_SEPARATOR)]
    else:
        return None
    return tuple(v for v in items if v)


def _rule(pattern: str) -> str:
    return PATTERN_RULES.get(pattern, f"match {pattern}")


FIRST_TIME, LAST_TIME = pd.Timestamp("0001-01-01", tz="UTC").as_unit("us"), pd.Timestamp("9999-12-31 23:59:59.999999", tz="UTC").as_unit("us")
EXPECTED = {"float": "number", "int": "number", "str": "text", "list": "list or ';'-separated text", "datetime": "ISO 8601 date-time"}


def _type_name(v) -> str | None:
    """The name of a value's type when it is never acceptable as a number, an id or a list item (else None)."""
    if isinstance(v, (bool, np.bool_)):
        return "boolean"
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "bytes"
    if isinstance(v, (datetime, np.datetime64, pd.Timestamp)) or type(v).__name__ == "date":
        return "timestamp"
    if isinstance(v, (pd.Timedelta, np.timedelta64)) or type(v).__name__ == "timedelta":
        return "duration"
    if isinstance(v, dict):
        return "object"
    return None


def _column_type(series: pd.Series) -> str | None:
    """The name of a typed column's dtype (as Parquet gives) when it does not hold numbers or text, else None."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        inner = _column_type(pd.Series(dtype.categories))
        return f"categorical of {inner}" if inner else None
    if isinstance(dtype, pd.DatetimeTZDtype) or dtype.kind == "M":
        return "timestamp"
    if dtype.kind == "m":
        return "duration"
    if dtype.kind == "b" or isinstance(dtype, pd.BooleanDtype):
        return "boolean"
    if dtype.kind in ("S", "V"):
        return "bytes"
    if dtype.kind == "c":
        return "complex"
    name = str(dtype)
    if "binary" in name:
        return "bytes"
    if "timestamp" in name or "date" in name:
        return "timestamp"
    if "duration" in name:
        return "duration"
    if "bool" in name:
        return "boolean"
    return None


def _wrong_value_types(spec: "ColumnSpec", col: pd.Series) -> np.ndarray:
    """Rows (of an object column, e.g. from JSON or mixed Parquet) whose value has a type the field never takes."""
    if col.dtype != object:
        return np.zeros(len(col), dtype=bool)
    if spec.kind == "datetime":
        def bad(v) -> bool:
            if _type_name(v) not in (None, "timestamp"):
                return True
            return isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and not pd.isna(v)  # a number is no time

        return col.map(bad).to_numpy(dtype=bool)
    if spec.kind == "list":
        return col.map(lambda v: _type_name(v) is not None).to_numpy(dtype=bool)
    return col.map(lambda v: _type_name(v) is not None or isinstance(v, (list, tuple, np.ndarray))).to_numpy(dtype=bool)


def _value_type(v) -> str:
    return _type_name(v) or ("list" if isinstance(v, (list, tuple, np.ndarray)) else "number" if isinstance(v, (int, float)) else type(v).__name__)


def validate_table(name: str, frame: pd.DataFrame, source: str) -> tuple[pd.DataFrame, list[Problem]]:
    """Check one table's columns against its row model; return the typed table and the problems.

    The returned table has exactly the model's columns in the model's order, with canonical dtypes:
    ids and months as str, numbers as float64/int64, lists as tuples, times as UTC timestamps.
    """
    model, _ = TABLES[name]
    out = Collector(source)
    specs = column_specs(model)
    known = {s.name for s in specs}
    for col in frame.columns:
        if col not in known:
            out.table(f"unknown column (expected some of: {', '.join(sorted(known))})", str(col))
    frame = frame.reset_index(drop=True)
    row_numbers = np.arange(1, len(frame) + 1)
    typed: dict[str, pd.Series] = {}
    for spec in specs:
        if spec.name not in frame.columns:
            if spec.required:
                out.table("required column is missing", spec.name)
            else:
                typed[spec.name] = _default_column(spec, len(frame))
            continue
        col = frame[spec.name]
        wrong = _column_type(col)
        if spec.kind == "datetime" and col.dtype.kind in "iuf" and col.notna().any():
            wrong = "number"
        mixed = col.dtype == object and not _all_text(col)  # e.g. JSON values, or Parquet binary (bytes objects)
        if wrong is None and mixed:
            names = col.dropna().map(_type_name)
            if len(names) and names.notna().all() and names.nunique() == 1:
                wrong = names.iloc[0]
        if wrong is not None and not (spec.kind == "datetime" and wrong == "timestamp"):
            out.table(f"column has type {wrong}; expected {EXPECTED[spec.kind]}", spec.name)
            continue
        if isinstance(col.dtype, pd.CategoricalDtype):
            col = col.astype(object).where(col.notna(), None)
        bad_type = _wrong_value_types(spec, col) if mixed else np.zeros(len(col), dtype=bool)
        if bad_type.any():
            out.rows(bad_type, row_numbers, spec.name,
                     lambda i: f"value has type {_value_type(col.iloc[i])}; expected {EXPECTED[spec.kind]}")
            col = col.where(~bad_type, None)
        blank = _is_blank(col)
        if spec.required:
            out.rows(blank & ~bad_type, row_numbers, spec.name, "value is missing")
        typed[spec.name] = _typed_column(spec, col, blank, row_numbers, out)
    if any(p.row is None for p in out.problems):  # a missing or unknown column: no typed table
        return frame, out.problems
    return pd.DataFrame(typed, columns=[s.name for s in specs]), out.problems


def _default_column(spec: ColumnSpec, n: int) -> pd.Series:
    if spec.kind == "float":
        return pd.Series(np.full(n, np.nan if spec.default is None else float(spec.default)))
    return pd.Series([spec.default] * n, dtype=object)


def _safe_float(v) -> float:
    if v is None or isinstance(v, bool):
        return np.nan
    try:
        return float(v)
    except OverflowError:  # an int beyond float range (JSON allows any digits)
        return np.inf if v > 0 else -np.inf
    except (TypeError, ValueError):
        return np.nan


def _to_float(col: pd.Series) -> np.ndarray:
    arrow = _arrow_text(col)
    if arrow is not None:  # Arrow parses a subset of what pandas does, to the same values; anything else goes below
        try:
            return pc.cast(pc.utf8_trim_whitespace(arrow), pa.float64()).to_numpy(zero_copy_only=False).astype("float64")
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    try:
        return pd.to_numeric(col, errors="coerce").astype("float64").to_numpy()
    except (OverflowError, TypeError, ValueError):
        return np.array([_safe_float(v) for v in col], dtype="float64")


def _typed_column(spec: ColumnSpec, col: pd.Series, blank: np.ndarray, rows: np.ndarray, out: Collector) -> pd.Series:
    name = spec.name
    if spec.kind == "float" or spec.kind == "int":
        values = _to_float(col)
        bad = np.isnan(values) & ~blank
        out.rows(bad, rows, name, lambda i: f"not a number: {fmt(col.iloc[i])}")
        inf = np.isinf(values)
        out.rows(inf, rows, name, "must be finite")
        if not spec.required and spec.default is not None:
            values = np.where(blank, spec.default, values)
        ok = np.isfinite(values)
        with np.errstate(invalid="ignore"):
            if spec.ge is not None:
                out.rows(ok & (values < spec.ge), rows, name, lambda i: f"must be >= {spec.ge:g}, got {values[i]:g}")
            if spec.gt is not None:
                out.rows(ok & (values <= spec.gt), rows, name, lambda i: f"must be > {spec.gt:g}, got {values[i]:g}")
            if spec.le is not None:
                out.rows(ok & (values > spec.le), rows, name, lambda i: f"must be <= {spec.le:g}, got {values[i]:g}")
        if spec.kind == "int":
            frac = ok & (values != np.round(values))
            out.rows(frac, rows, name, lambda i: f"must be a whole number, got {values[i]:g}")
            fits = ok & (np.abs(np.nan_to_num(values, posinf=0.0, neginf=0.0)) < 2.0**62)
            return pd.Series(np.where(fits, values, 0).astype("int64"))
        # -0 is 0: SQLite keeps a whole REAL as an integer, which has no sign, so a -0.0 would come back from a store
        # as 0.0 and the period's inputs_hash (and period_hash, which --previous checks) would differ from the file's.
        return pd.Series(values + 0.0)
    if spec.kind == "datetime":
        # Times are kept to the microsecond (what every store holds): finer digits are dropped here, on every path,
        # so a tie at the microsecond goes to the smaller request_id whether the request came from a file or a store.
        if isinstance(col.dtype, pd.DatetimeTZDtype):
            parsed = col.dt.tz_convert("UTC").reset_index(drop=True)
        else:
            text = col.astype("string")
            # Digits past the microsecond are dropped before parsing, as they are after it: with them pandas reads the
            # whole column in nanoseconds, whose range (years 1677-2262) refused every other time outside it.
            given = text.str.replace(r"(\.\d{6})\d+", r"\1", regex=True) if _all_text(col) else col
            parsed = pd.to_datetime(given, errors="coerce", utc=True, format="ISO8601").reset_index(drop=True)
            # pandas also reads "now" and "today" (the clock: the same file would give other output on every run)
            dated = text.str.match(r"\s*\d{4}-\d{2}").fillna(False).to_numpy(dtype=bool)
            bad = (parsed.isna().to_numpy() | ~dated) & ~blank
            out.rows(bad, rows, name, lambda i: f"not an ISO 8601 date-time: {fmt(col.iloc[i])}")
            parsed = parsed.where(~bad)
        # Written back as ISO 8601 text in UTC with a four-digit year (files, summary, stores): years 0001 to 9999
        outside = (parsed.notna() & ((parsed < FIRST_TIME) | (parsed > LAST_TIME))).to_numpy(dtype=bool)
        if outside.any():  # shown by numpy: a Timestamp past 9999 cannot format itself
            shown = np.datetime_as_string(parsed.dt.tz_localize(None).to_numpy(), unit="s")
            out.rows(outside, rows, name, lambda i: f"{shown[i]}Z (UTC) is outside the years 0001 to 9999")
        return parsed.where(~outside).dt.floor("us")
    if spec.kind == "list":  # each distinct list checked once (sellers share region lists, requests month lists)
        if _all_text(col):  # the fast path for tables read from CSV
            codes, distinct = _factorized(col)
            items, tuples = _split_text_lists(distinct)
            bad_type = np.zeros(len(distinct), dtype=bool)
        else:  # lists or single strings, e.g. from JSON
            codes, distinct = np.arange(len(col)), col.reset_index(drop=True)
            lists = distinct.map(_split_list)
            bad_type = lists.isna().to_numpy(dtype=bool) & ~blank
            items = lists.dropna().explode().dropna().astype(object)
            tuples = lists.map(lambda v: tuple(sorted(v)) if v is not None else ())
        out.rows(_by_row(bad_type, codes), rows, name, "must be a list (';'-separated in tables)")
        count = items.groupby(level=0).size().reindex(range(len(distinct)), fill_value=0).to_numpy()
        out.rows(_by_row(count == 0, codes, True) & ~blank & ~_by_row(bad_type, codes), rows, name, "must name at least one item")
        if spec.max_length:
            badl = np.zeros(len(distinct), dtype=bool)
            badl[items.index[items.astype("string").str.len().gt(spec.max_length).fillna(False).to_numpy(dtype=bool)]] = True
            out.rows(_by_row(badl, codes), rows, name, f"items must be at most {spec.max_length} characters long")
        if spec.pattern:
            edge = np.zeros(len(distinct), dtype=bool)
            edge[items.index[_edge_space(items.astype("string"))]] = True
            out.rows(_by_row(edge, codes), rows, name, lambda i: f"items must not begin or end with whitespace but spaces (a tab or a no-break "
                                                                 f"space, say): {fmt(col.iloc[i])}")
            badp = np.zeros(len(distinct), dtype=bool)
            badp[items.index[~_fullmatch(items.astype("string"), spec.pattern, missing=False) & ~_edge_space(items.astype("string"))]] = True
            out.rows(_by_row(badp, codes), rows, name, lambda i: f"items must be {_rule(spec.pattern)}: {fmt(col.iloc[i])}")
        dup = np.zeros(len(distinct), dtype=bool)
        dup[items.index[items.to_frame().assign(r=items.index).duplicated().to_numpy()]] = True
        out.rows(_by_row(dup, codes), rows, name, "lists an item twice")
        per_value = np.empty(len(distinct) + 1, dtype=object)
        per_value[:-1] = tuples.to_numpy(dtype=object)
        per_value[-1] = ()
        return pd.Series(per_value[codes], dtype=object)
    # str: each distinct value checked once (an id repeats on many rows); rows share the checked value's object
    codes, distinct = _factorized(col)
    if distinct.dtype.kind == "f":  # ids read as floats by a reader, e.g. "7" -> 7.0
        distinct = distinct.map(lambda v: None if pd.isna(v) else (str(int(v)) if float(v).is_integer() else str(v)))
    as_str = _as_text(distinct.map(lambda v: v if v is None or isinstance(v, str) else str(v)) if not _all_text(distinct) else distinct)
    long_ = np.zeros(len(col), dtype=bool)
    if spec.max_length:
        long_ = _by_row(as_str.str.len().gt(spec.max_length).fillna(False).to_numpy(dtype=bool), codes)
        out.rows(long_, rows, name, f"longer than {spec.max_length} characters")
    if spec.pattern:
        edge = _by_row(_edge_space(as_str), codes) & ~blank
        out.rows(edge, rows, name, lambda i: f"must not begin or end with whitespace but spaces (a tab or a no-break space, say), which "
                                             f"would make it another id than it looks: {fmt(col.iloc[i])}")
        ok = _by_row(_fullmatch(as_str, spec.pattern, missing=True), codes, True)
        out.rows(~ok & ~blank & ~long_ & ~edge, rows, name, lambda i: f"must be {_rule(spec.pattern)}: {fmt(col.iloc[i])}")
    return pd.Series(_by_row(as_str.astype(object).where(as_str.notna(), None).to_numpy(dtype=object), codes, None), dtype=object)


def check_keys(name: str, table: pd.DataFrame, source: str) -> list[Problem]:
    out = Collector(source)
    keys = TABLE_KEYS[name]
    dup = table.duplicated(subset=keys, keep="first").to_numpy()
    rows = np.arange(1, len(table) + 1)
    field = keys[0] if len(keys) == 1 else "+".join(keys)
    out.rows(dup, rows, field, lambda i: f"duplicate id {', '.join(fmt(v) for v in table.loc[i, keys])} (each must appear once)")
    return out.problems


def check_instance(tables: dict[str, pd.DataFrame], period: Period, sources: dict[str, str]) -> list[Problem]:
    """Cross-table checks: ids that must exist, months inside the period, consistent FCs."""
    problems: list[Problem] = []
    for name, table in tables.items():
        problems += check_keys(name, table, sources[name])
    fcs, sellers, needs = tables["fcs"], tables["sellers"], tables["needs"]
    months = pd.Index(period.months)
    storage_types = fcs["storage_type"].unique()
    regions = fcs["region"].unique()

    out = Collector(sources["fcs"])
    rows = np.arange(1, len(fcs) + 1)
    region_count = fcs.groupby("fc_id")["region"].transform("nunique").to_numpy()
    out.rows(region_count > 1, rows, "region", "an FC must have one region in every row")
    pool = fcs["pool_cube"].to_numpy()
    cap = fcs["capacity_cube"].to_numpy()
    with np.errstate(invalid="ignore"):
        out.rows(pool > cap, rows, "pool_cube", lambda i: f"pool {pool[i]:g} exceeds capacity {cap[i]:g}")
    problems += out.problems
    problems += membership(fcs, "month", months, sources["fcs"], "month (not in the period)")

    out = Collector(sources["sellers"])
    known_regions = set(regions)
    unknown = _per_distinct(sellers["regions"], lambda rs: not any(r in known_regions for r in rs))
    out.rows(unknown, np.arange(1, len(sellers) + 1), "regions", lambda i: f"no FC in any of the regions {list(sellers['regions'].iloc[i])}")
    problems += out.problems

    problems += membership(needs, "seller_id", sellers["seller_id"], sources["needs"], "seller")
    problems += membership(needs, "storage_type", storage_types, sources["needs"], "storage type")
    problems += membership(needs, "month", months, sources["needs"], "month (not in the period)")

    if "requests" in tables:
        req = tables["requests"]
        src = sources["requests"]
        problems += membership(req, "seller_id", sellers["seller_id"], src, "seller")
        problems += membership(req, "storage_type", storage_types, src, "storage type")
        problems += membership(req, "round", period.rounds, src, "round (not in the period)")
        out = Collector(src)
        rows = np.arange(1, len(req) + 1)
        month_set = set(period.months)
        bad_m = _per_distinct(req["months"], lambda ms: any(m not in month_set for m in ms))
        out.rows(bad_m, rows, "months", lambda i: f"months {list(req['months'].iloc[i])} are not all in the period")
        mn, mx = req["min_cube"].to_numpy(), req["max_cube"].to_numpy()
        out.rows(mn > mx, rows, "min_cube", lambda i: f"min_cube {mn[i]:g} exceeds max_cube {mx[i]:g}")
        problems += out.problems
    if "sales" in tables:
        s = tables["sales"]
        problems += membership(s, "seller_id", sellers["seller_id"], sources["sales"], "seller")
        problems += membership(s, "storage_type", storage_types, sources["sales"], "storage type")
        problems += membership(s, "month", months, sources["sales"], "month (not in the period)")
    if "grant_sales" in tables:
        ids = tables["requests"]["request_id"] if "requests" in tables else []
        problems += membership(tables["grant_sales"], "request_id", ids, sources["grant_sales"], "request")
    if "history" in tables:
        problems += check_history(tables["history"], sellers["seller_id"], storage_types, period, sources["history"])
    problems += check_units(tables, sources)
    return problems


# Units the clearing rule computes in exactly (models/clearing.md, "Units"): fees in whole cents per cube, cube in
# whole thousandths. A value within 1e-6 of a step of the grid is on it (CSV/JSON round-off of a decimal), and the
# instance holds it as its grid value (`snap_to_grid`).
UNIT_GRID = {"fcs": {"capacity_cube": units.CUBE, "pool_cube": units.CUBE},
             "requests": {"max_fee_per_cube": units.PER_CUBE, "max_cube": units.CUBE, "min_cube": units.CUBE}}
UNIT_NAMES = {units.PER_CUBE: "a whole number of cents ($ per cube with at most 2 decimals)",
              units.CUBE: "a multiple of 0.001 cube (at most 3 decimals)"}
# The most cube one market may hold or ask for at once: the whole world's warehouse space is ~1e10 cube. Within it
# every sum the rules make in milli-cube fits a 64-bit integer with room to spare (1e18 of 9.2e18).
MAX_MARKET_CUBE = 1e15


def off_grid(x: np.ndarray, unit: units.Unit) -> np.ndarray:
    """Where finite values are not within float noise (1e-6 of a step) of `unit`'s grid."""
    with np.errstate(invalid="ignore", over="ignore"):  # a value near 1e308 is refused by its bound already
        k = x * unit.scale
        return np.isfinite(x) & (np.abs(k - np.rint(k)) > 1e-6 + 1e-12 * np.abs(k))


def check_units(tables: dict[str, pd.DataFrame], sources: dict[str, str]) -> list[Problem]:
    """Fees a whole number of cents, cube a multiple of 0.001; max_cube at least 0.001; no market above
    MAX_MARKET_CUBE (an FC table's capacity of one storage type and month, a round's asks of one storage type).
    Names file, row and field."""
    problems: list[Problem] = []
    for name, fields in UNIT_GRID.items():
        if name not in tables:
            continue
        table, out = tables[name], Collector(sources[name])
        rows = np.arange(1, len(table) + 1)
        for field, unit in fields.items():
            if field not in table:
                continue
            x = pd.to_numeric(table[field], errors="coerce").to_numpy(float)
            out.rows(off_grid(x, unit), rows, field, lambda i, x=x, unit=unit: f"{float(x[i])!r} is not {UNIT_NAMES[unit]}")
        if name == "requests" and "max_cube" in table:
            x = pd.to_numeric(table["max_cube"], errors="coerce").to_numpy(float)
            with np.errstate(invalid="ignore"):
                out.rows(np.rint(x * 1000) < 1, rows, "max_cube", lambda i, x=x: f"max_cube {float(x[i])!r} is below the smallest grant, 0.001 cube")
        problems += out.problems
    problems += _market_totals(tables.get("fcs"), ["storage_type", "month"], "capacity_cube", sources.get("fcs"), "capacity of one storage type and month")
    problems += _market_totals(tables.get("requests"), ["round", "storage_type"], "max_cube", sources.get("requests"),
                               "max_cube asked in one round of one storage type")
    return problems


def _market_totals(table: pd.DataFrame | None, by: list[str], field: str, source: str | None, what: str) -> list[Problem]:
    if table is None or not len(table) or field not in table or any(c not in table for c in by):
        return []
    x = pd.to_numeric(table[field], errors="coerce")
    totals = x.groupby([table[c] for c in by]).sum()
    return [Problem(f"the {what} ({', '.join(map(str, key))}) adds up to {total:g} cube, above {MAX_MARKET_CUBE:g}", source, None, field)
            for key, total in totals[totals > MAX_MARKET_CUBE].items()]


def snap_to_grid(tables: dict[str, pd.DataFrame]) -> None:
    """Fees and cube as their grid values, in place (the tables have passed `check_units`)."""
    for name, fields in UNIT_GRID.items():
        if name in tables:
            for field, unit in fields.items():
                if field in tables[name]:
                    tables[name][field] = units.on_grid(tables[name][field].to_numpy(float), unit)


def raise_if(problems: list[Problem]) -> None:
    if problems:
        raise InputError(problems)
