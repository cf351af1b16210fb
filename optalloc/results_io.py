"""Result tables written and read back: every table optalloc writes goes through `write_tables` (atomically, never
over a folder optalloc did not write: `optalloc.outputs`; every number rounded to its unit), and `--previous` and
`report` read results back through `read_result_table` and `read_previous`, checked to be whole and to belong to
their instance (the hashes of its inputs).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import arguments, progress, units
from . import tables as declared
from .csvtext import csv_chunks, utc_text
from .errors import InputError, Problem
from .instance import Instance
from .io import META_FILE, TABLE_SUFFIXES, read_json, read_text, reason_of
from .outputs import WrittenThenInterrupted, replace_folder
from .schemas import MAX_FEE, TABLE_KEYS, TABLES


def format_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Lists as ';'-joined text and times as ISO 8601 in UTC (to the second when every time is whole, else to the
    microsecond), so CSV output reads back as input. Each distinct list is joined once (requests share a few month
    lists), and times are written by numpy (the text pandas' per-value strftime writes, tests/test_loading.py)."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object and len(out) and isinstance(out[col].iloc[0], tuple):
            codes, distinct = pd.factorize(out[col])  # a missing list: code -1, the None appended last
            out[col] = np.array([*(";".join(v) for v in distinct), None], dtype=object)[codes]
        elif isinstance(out[col].dtype, pd.DatetimeTZDtype):
            out[col] = iso_utc(out[col])
    return out


def iso_utc(times: pd.Series) -> pd.Series:
    """UTC times as ISO 8601 text ending in Z, as pandas' strftime writes them: to the second when every one is
    whole, else to the microsecond (finer digits dropped); a missing time as NaN."""
    whole = bool((times.dt.tz_convert("UTC").dt.microsecond == 0).all())
    text = utc_text(times, unit="s" if whole else "us")
    present = text != None  # noqa: E711 -- elementwise, on an object array
    text[present] = text[present] + "Z"
    text[~present] = np.nan
    return pd.Series(text, index=times.index, dtype=object)


def json_text(doc) -> str:
    """JSON as optalloc writes it: keys in the order the document has them (summary.json is built in reading order:
    instance, baseline, rounds, settlement), two-space indent, and never NaN or Infinity (not JSON): a missing or
    non-finite number is written as null."""

    def finite(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: finite(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [finite(x) for x in v]
        return v

    return json.dumps(finite(doc), indent=2, sort_keys=False, allow_nan=False) + "\n"


def _parquet_table(frame: pd.DataFrame) -> pa.Table:
    """A table as Parquet holds it, the same whatever pandas dtype held its text: every text column Arrow `string`
    (a frame read back from a store holds Arrow-backed `large_string` text, one made by the engine Python `object`),
    and no pandas metadata (which names those dtypes), so `export` writes the bytes `solve` writes."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    schema = pa.schema([pa.field(f.name, pa.string() if pa.types.is_large_string(f.type) else f.type) for f in table.schema])
    return table.cast(schema).replace_schema_metadata(None)


def write_tables(
    out_dir: str | os.PathLike,
    tables: dict[str, pd.DataFrame],
    summary: dict,
    fmt: str = "csv",
    *,
    summary_name: str = "summary.json",
    inputs: tuple = (),
    store: str | None = None,
    round_units: bool = True,
) -> Path:
    """Write tables and `summary_name` into out_dir atomically (all or nothing).

    Every number column is rounded to its unit on the way out (`optalloc.units`: money to the cent, cube to 0.001);
    a float column without a declared unit is an error. `round_units=False` writes the frames as they are (an
    instance: its tables are inputs and are written exactly as held).

    out_dir is replaced only if it is new, empty or written by optalloc, and never if it is the current folder,
    an input (`inputs`) or the folder of the store (`store`): see `optalloc.outputs`.
    """

    arguments.path(out_dir, "out_dir")
    arguments.choice(fmt, ("csv", "parquet"), "fmt")
    if not isinstance(tables, dict) or not all(isinstance(f, pd.DataFrame) for f in tables.values()):
        raise InputError(Problem("tables is a dict of table name -> DataFrame", None, None, "tables"))
    if not isinstance(summary, dict):
        raise InputError(Problem(f"the summary is a dict (summary.json), not {type(summary).__name__}", None, None, "summary"))

    def write(tmp: Path) -> list[str]:
        names = []
        for name, frame in tables.items():
            frame = frame.reset_index()
            frame = format_frame(declared.round_table(name, frame) if round_units else frame)
            if fmt == "parquet":
                pq.write_table(_parquet_table(frame), tmp / f"{name}.parquet")
                names.append(f"{name}.parquet")
            else:
                with open(tmp / f"{name}.csv", "wb") as f:
                    f.writelines(csv_chunks(frame))
                names.append(f"{name}.csv")
        (tmp / summary_name).write_text(json_text(summary), encoding="utf-8")
        return [*names, summary_name]

    path = replace_folder(out_dir, write, inputs=inputs, store=store)
    try:
        progress.wrote(out_dir, len(tables), summary_name)
    except KeyboardInterrupt:  # the folder is in place: say so, not "nothing was written"
        raise WrittenThenInterrupted(path) from None
    return path


def write_instance(instance: Instance, out_dir: str | os.PathLike, fmt: str = "parquet", **check) -> Path:
    """Write an instance as a table folder (used by `optalloc generate`)."""
    meta = {"name": instance.name, "period": instance.period.model_dump(mode="json", exclude_none=True), "settings": instance.settings.model_dump(exclude_defaults=True)}
    tables = {t: getattr(instance, t) for t in TABLES if len(getattr(instance, t)) or TABLES[t][1]}
    return write_tables(out_dir, {t: f.set_index(f.columns[0]) for t, f in tables.items()}, meta, fmt, summary_name=META_FILE,
                        round_units=False, **check)


# Result tables read back (by `clear --previous`, `settle --previous` and `report`), as `optalloc.tables` declares them.
RESULT_TABLES = declared.RESULTS


def _text_columns(table: declared.Table) -> list[str]:
    return [c.name for c in table.columns if c.kind in (declared.ID, declared.TEXT, declared.LIST, declared.TIME)]


def read_result_table(folder: str | os.PathLike, name: str, required: bool = True) -> pd.DataFrame | None:
    """Read one table written by `write_tables` (CSV or Parquet), indexed as it was written.

    A table that cannot be read, was cut short (a CSV not ending in a newline, as every written one does), lacks
    a column, or holds text where numbers belong is bad input naming the file (and row and field)."""
    folder, table = Path(folder), RESULT_TABLES[name]
    for suffix in TABLE_SUFFIXES:
        path = folder / f"{name}{suffix}"
        if path.exists():
            try:
                if suffix == ".csv":
                    if not read_text(path).endswith("\n"):
                        raise InputError(Problem("truncated: the last line is incomplete (the file does not end in a newline)", str(path)))
                    frame = pd.read_csv(path, dtype={c: str for c in _text_columns(table)}, keep_default_na=False, na_values=[""])
                else:
                    frame = pd.read_parquet(path)
            except InputError:
                raise
            except Exception as e:  # noqa: BLE001 - a corrupt file is bad input, not a crash
                raise InputError(Problem(f"cannot read result table: {reason_of(e)}", str(path))) from None
            missing = [c for c in table.names if c not in frame.columns]
            if missing:
                raise InputError(Problem(f"not an optalloc result table (missing {missing})", str(path)))
            frame = _check_result_columns(frame, table, str(path))
            if "months" in frame.columns:
                frame["months"] = frame["months"].map(lambda v: tuple(str(v).split(";")))
            if "submitted_at" in frame.columns:
                frame["submitted_at"] = pd.to_datetime(frame["submitted_at"], utc=True, format="ISO8601")
            return frame.set_index(list(table.keys)).sort_index()
    if required:
        raise InputError(Problem(f"missing result table {name}.csv (was this folder written by 'optalloc allocate/clear'?)", str(folder)))
    return None


# The range of what optalloc writes, by unit, for the result tables read back (`--previous`, `report`): a hand-edited
# limit of 1e308 was carried into the next round and written back as inf, and a fee of 1e308 broke the report's
# chart. Fees and prices are requests' fees, 0 to MAX_FEE. Cube: far beyond what valid inputs give (a request's cap is
# at most 1,000 x a limit of at most 101 x 1e12), far below what overflows a sum.
# Money: at most a fee of MAX_FEE per cube on a market of 1e15 cube (a round's objective; a grant's fee is far less).
RESULT_RANGES = {units.CUBE: (-1e18, 1e18), units.PER_CUBE: (0.0, MAX_FEE), units.MONEY: (0.0, MAX_FEE * 1e15)}


def _check_result_columns(frame: pd.DataFrame, table: declared.Table, source: str) -> pd.DataFrame:
    """The declared columns of a result table read back: numbers where numbers belong (within what optalloc writes),
    whole numbers where counts belong, no blank keys, parseable times, True/False; else InputError naming row and
    field. Columns the table does not declare are not read."""
    problems: list[Problem] = []
    frame = frame[table.names].copy()
    rows = np.arange(1, len(frame) + 1)

    def report(mask: np.ndarray, field: str, message: str) -> None:
        for i in np.flatnonzero(mask)[:5]:
            problems.append(Problem(message, source, int(rows[i]), field))

    for column in table.columns:
        col, values = column.name, frame[column.name]
        missing = values.isna().to_numpy()
        if col in table.keys:
            report(missing, col, "value is missing (a key column)")
        if column.kind == declared.TEXT and not column.nullable and col not in table.keys:
            frame[col] = values.astype(object).where(~missing, "")  # an empty cell is the empty text it was (a reason, say)
        elif column.kind == declared.TIME:
            parsed = pd.to_datetime(values, utc=True, format="ISO8601", errors="coerce")
            report(parsed.isna().to_numpy() & ~missing, col, "not an ISO 8601 date-time")
        elif column.kind == declared.BOOL:
            if values.dtype.kind != "b":
                known = values.map(lambda v: v in (True, False) or str(v) in ("True", "False")).to_numpy(dtype=bool)
                report(~known, col, "not True or False")
                frame[col] = values.map(lambda v: v is True or str(v) == "True")
        elif column.kind in (declared.NUMBER, declared.INT):
            if values.dtype.kind in "iu":
                continue
            number = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float) if values.dtype.kind != "f" else values.to_numpy()
            report(np.isnan(number) & ~missing, col, "not a number")
            report(np.isinf(number), col, "not a finite number")
            if (bounds := RESULT_RANGES.get(column.unit)) is not None:  # what optalloc can have written
                with np.errstate(invalid="ignore"):
                    report(np.isfinite(number) & ((number < bounds[0]) | (number > bounds[1])), col,
                           f"out of range for an optalloc result ({bounds[0]:g} to {bounds[1]:g})")
            if column.kind == declared.INT:
                with np.errstate(invalid="ignore"):
                    whole = np.isfinite(number) & (number == np.round(number)) & (np.abs(number) < 2.0**53)
                report(np.isfinite(number) & ~whole, col, "not a whole number")
                if whole.all():
                    frame[col] = number.astype("int64")
            elif values.dtype.kind != "f":
                frame[col] = number
    if problems:
        raise InputError(problems)
    return frame


PERIOD_TABLES = ("fcs", "sellers", "needs")  # fixed once a period is known (requests and sales arrive later)


def input_hashes(instance: Instance, *table_sets: tuple[str, ...]) -> list[str]:
    """sha256 of a period's inputs, one per set of tables: calendar and settings as JSON, then each table of the set
    in key order as the CSV text `write_tables` would write (the tables in `TABLES` order, whatever order a set names
    them in). Equal inputs, equal hash, whichever store or file they came from. Each table's text is made once,
    however many sets hold it (at 2 M sellers, 15 M rows of needs)."""
    meta = json.dumps({"period": instance.period.model_dump(mode="json"), "settings": instance.settings.model_dump(mode="json")},
                      sort_keys=True).encode()
    hashes = [hashlib.sha256(meta) for _ in table_sets]
    for name in TABLES:
        holders = [h for h, tables in zip(hashes, table_sets) if name in tables]
        if not holders:
            continue
        for h in holders:
            h.update(f"\n{name}\n".encode())
        for chunk in csv_chunks(format_frame(getattr(instance, name).sort_values(TABLE_KEYS[name], kind="stable"))):
            for h in holders:
                h.update(chunk)
    return [h.hexdigest() for h in hashes]


def inputs_hash(instance: Instance, tables: tuple[str, ...] = tuple(TABLES)) -> str:
    """The hash of `tables` of a period's inputs (all of them by default); see `input_hashes`."""
    return input_hashes(instance, tables)[0]


def period_hash(instance: Instance) -> str:
    """The hash of what is fixed once a period is known: calendar, settings, FCs, sellers and needs. summary.json
    carries it (`period_hash`), and `--previous` checks it: the next round's requests and the sales report may
    arrive after a folder was written, but the period it belongs to may not change."""
    return inputs_hash(instance, PERIOD_TABLES)


def read_previous(folder: str | os.PathLike, instance: Instance, tables: tuple[str, ...]) -> dict[str, pd.DataFrame | None]:
    """The result tables of an earlier output folder (`--previous`), checked to be whole and to belong to `instance`:
    its summary.json carries the same `inputs_hash`, every table is readable and complete, round_prices has the
    rounds the summary lists, grants has every request each round audited, limits covers every need.
    `tables` names the ones required; the others are read when present. InputError names the file otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(Problem("no such output folder", str(folder), None, "--previous"))
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        raise InputError(Problem("not an optalloc output folder (no summary.json)", str(summary_path)))
    summary = read_json(summary_path)
    expected = period_hash(instance)
    found = summary.get("period_hash")
    if found is None:
        raise InputError(Problem("has no period_hash: written by an older optalloc, or not by optalloc; write it again", str(summary_path)))
    if found != expected:
        raise InputError(Problem(f"was written for another period or instance (period_hash {str(found)[:12]}..., this instance's is "
                                 f"{expected[:12]}...): its calendar, settings, FCs, sellers or needs differ", str(summary_path), None,
                                 "period_hash"))
    out = {name: read_result_table(folder, name, required=name in tables) for name in
           ("limits", "grants", "pools", "round_prices", "grant_placements")}
    prices, grants, limits = out["round_prices"], out["grants"], out["limits"]
    listed = _listed_rounds(summary.get("rounds"), str(summary_path))
    if prices is not None or listed:
        have = set() if prices is None else {(int(r), str(k)) for r, k in prices.index}
        if have != listed:
            raise InputError(Problem(f"incomplete: has {len(have)} round/storage-type rows, summary.json lists {len(listed)}",
                                     _table_path(folder, "round_prices")))
        if grants is None and have:
            raise InputError(Problem("missing result table grants (round_prices lists cleared rounds)", str(folder)))
    if prices is not None and grants is not None:
        audited = grants.groupby([grants.index.get_level_values("round"), grants["storage_type"]]).size()
        want = prices["requests"].astype(float)
        got = audited.reindex(want.index).fillna(0)
        if (got.to_numpy() != want.to_numpy()).any() or len(audited) > len(want):
            raise InputError(Problem("incomplete: fewer (or more) requests than round_prices.requests counts", _table_path(folder, "grants")))
    if limits is not None:
        keys = pd.MultiIndex.from_frame(instance.needs[["seller_id", "storage_type", "month"]])
        if len(limits) != len(keys) or not keys.isin(limits.index).all():
            raise InputError(Problem(f"incomplete: {len(limits)} limits for {len(keys)} needs of the instance", _table_path(folder, "limits")))
    return out


def _listed_rounds(rounds, source: str) -> set[tuple[int, str]]:
    """summary.json's cleared (round, storage type) pairs; a list of objects with a whole round and a storage type
    text, else InputError naming the field (a damaged summary was exit 1)."""
    if rounds is None:
        return set()
    if not isinstance(rounds, list):
        raise InputError(Problem("must be a list of the rounds cleared", source, None, "rounds"))
    out = set()
    for i, r in enumerate(rounds):
        if not isinstance(r, dict):
            raise InputError(Problem("must be an object", source, None, f"rounds[{i}]"))
        if "round" not in r:
            continue
        n, k = r["round"], r.get("storage_type")
        if isinstance(n, bool) or not isinstance(n, int):
            raise InputError(Problem("must be a whole number", source, None, f"rounds[{i}].round"))
        if not isinstance(k, str):
            raise InputError(Problem("must be text", source, None, f"rounds[{i}].storage_type"))
        out.add((n, k))
    return out


def _table_path(folder: Path, name: str) -> str:
    for suffix in TABLE_SUFFIXES:
        if (folder / f"{name}{suffix}").exists():
            return str(folder / f"{name}{suffix}")
    return str(folder / f"{name}.csv")
