"""Loading instances from files and writing results atomically.

Loaders read and validate; they never build or solve. Writers never leave half a result and never
replace a folder optalloc did not write (`optalloc.outputs`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path

import pandas as pd

from . import progress
from .errors import InputError, Problem
from .instance import Instance
from .outputs import replace_folder
from .schemas import TABLES

META_FILE = "instance.json"
TABLE_SUFFIXES = (".csv", ".parquet")


def _read_json(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(Problem(f"cannot read file: {e.strerror}", str(path))) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(Problem(f"not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})", str(path))) from None
    if not isinstance(doc, dict):
        raise InputError(Problem("must hold a JSON object", str(path)))
    return doc


def load_instance(path: str | os.PathLike) -> Instance:
    """Load an instance from a JSON file or from a folder of tables (CSV or Parquet)."""
    path = Path(path)
    if path.is_dir():
        return _load_folder(path)
    if not path.exists():
        raise InputError(Problem("no such file or folder", str(path)))
    doc = _read_json(path)
    allowed = {"name", "period", "settings", *TABLES}
    problems = [Problem("unknown key", str(path), None, k) for k in doc if k not in allowed]
    if "period" not in doc:
        problems.append(Problem("required key is missing", str(path), None, "period"))
    if problems:
        raise InputError(problems)
    tables = {}
    for t in TABLES:
        if t in doc:
            rows = doc[t]
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise InputError(Problem("must be a list of objects (one per row)", str(path), None, t))
            tables[t] = pd.DataFrame(rows)
    return Instance.from_tables(
        name=str(doc.get("name", path.stem)),
        period=doc["period"],
        settings=doc.get("settings"),
        tables=tables,
        sources={"meta": str(path), **{t: f"{path}: {t}" for t in TABLES}},
    )


def _read_table(path: Path) -> pd.DataFrame:
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        # Read as text so ids keep their spelling ("007"); the validator converts numbers.
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise InputError(Problem(f"cannot read table: {e}", str(path))) from None


# Tables that arrive after a period is known: new requests, and the sales report.
ARRIVING_TABLES = ("requests", "sales", "grant_sales")


def load_arriving_tables(base: Instance, files: dict[str, str | os.PathLike]) -> Instance:
    """Read arriving tables (`requests`, `sales`, `grant_sales`; CSV or Parquet) and validate each against a known
    period: `base`'s calendar, FCs, sellers and needs, and for `grant_sales` its requests and the new ones.
    Problems name the file, its row and field. Returns `base` with those tables replaced by the files' rows."""
    new: dict[str, pd.DataFrame] = {}
    rows: dict[str, object] = {}
    for name in ARRIVING_TABLES:
        if name not in files:
            continue
        path = Path(files[name])
        if not path.is_file():
            raise InputError(Problem("no such file", str(path)))
        context = {t: getattr(base, t) for t in ("fcs", "sellers", "needs")}
        if name == "grant_sales":
            context["requests"] = pd.concat([new.get("requests", base.requests.iloc[:0]), base.requests]).drop_duplicates("request_id")
        checked = Instance.from_tables(
            period=base.period, settings=base.settings, name=base.name, tables={**context, name: _read_table(path)},
            sources={**base.sources, name: str(path)},
        )
        new[name], rows[name] = getattr(checked, name), checked.source_rows[name]
    return replace(base, **new, sources={**base.sources, **{t: str(files[t]) for t in new}}, source_rows={**base.source_rows, **rows})


def _load_folder(folder: Path) -> Instance:
    meta_path = folder / META_FILE
    if not meta_path.exists():
        raise InputError(Problem(f"a table folder needs {META_FILE} with the period (and optional settings)", str(meta_path)))
    meta = _read_json(meta_path)
    problems = [Problem("unknown key", str(meta_path), None, k) for k in meta if k not in {"name", "period", "settings"}]
    if "period" not in meta:
        problems.append(Problem("required key is missing", str(meta_path), None, "period"))
    tables, sources = {}, {"meta": str(meta_path)}
    for t in TABLES:
        found = [folder / f"{t}{s}" for s in TABLE_SUFFIXES if (folder / f"{t}{s}").exists()]
        if len(found) > 1:
            problems.append(Problem(f"both {found[0].name} and {found[1].name} exist; keep one", str(folder)))
            continue
        if found:
            tables[t] = _read_table(found[0])
            sources[t] = str(found[0])
        else:
            sources[t] = str(folder / f"{t}.csv")
    if problems:
        raise InputError(problems)
    return Instance.from_tables(
        name=str(meta.get("name", folder.name)), period=meta["period"], settings=meta.get("settings"), tables=tables, sources=sources
    )


def format_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Lists as ';'-joined text and times as ISO 8601, so CSV output reads back as input."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object and len(out) and isinstance(out[col].iloc[0], tuple):
            out[col] = out[col].map(";".join)
        elif isinstance(out[col].dtype, pd.DatetimeTZDtype):
            whole = bool((out[col].dt.microsecond == 0).all())
            out[col] = out[col].dt.strftime("%Y-%m-%dT%H:%M:%SZ" if whole else "%Y-%m-%dT%H:%M:%S.%fZ")
    return out


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


def write_tables(
    out_dir: str | os.PathLike,
    tables: dict[str, pd.DataFrame],
    summary: dict,
    fmt: str = "csv",
    *,
    summary_name: str = "summary.json",
    inputs: tuple = (),
    store: str | None = None,
) -> Path:
    """Write tables and `summary_name` into out_dir atomically (all or nothing).

    out_dir is replaced only if it is new, empty or written by optalloc, and never if it is the current folder,
    an input (`inputs`) or the folder of the store (`store`): see `optalloc.outputs`.
    """

    def write(tmp: Path) -> list[str]:
        names = []
        for name, frame in tables.items():
            frame = format_frame(frame.reset_index())
            if fmt == "parquet":
                frame.to_parquet(tmp / f"{name}.parquet", index=False)
                names.append(f"{name}.parquet")
            else:
                frame.to_csv(tmp / f"{name}.csv", index=False, lineterminator="\n")
                names.append(f"{name}.csv")
        (tmp / summary_name).write_text(json_text(summary), encoding="utf-8")
        return [*names, summary_name]

    path = replace_folder(out_dir, write, inputs=inputs, store=store)
    progress.wrote(out_dir, len(tables), summary_name)
    return path


def write_instance(instance: Instance, out_dir: str | os.PathLike, fmt: str = "parquet", **check) -> Path:
    """Write an instance as a table folder (used by `optalloc generate`)."""
    meta = {"name": instance.name, "period": instance.period.model_dump(mode="json", exclude_none=True), "settings": instance.settings.model_dump(exclude_defaults=True)}
    tables = {t: getattr(instance, t) for t in TABLES if len(getattr(instance, t)) or TABLES[t][1]}
    return write_tables(out_dir, {t: f.set_index(f.columns[0]) for t, f in tables.items()}, meta, fmt, summary_name=META_FILE, **check)


# Result tables read back (by `clear --previous`, `settle --previous` and `report`): name -> index columns.
RESULT_TABLES = {
    "limits": ["seller_id", "storage_type", "month"],
    "placements": ["seller_id", "fc_id", "storage_type", "month"],
    "fc_prices": ["fc_id", "storage_type", "month"],
    "grants": ["round", "request_id"],
    "pools": ["round", "fc_id", "storage_type", "month"],
    "round_prices": ["round", "storage_type"],
    "grant_placements": ["round", "request_id", "fc_id"],
    "settlement": ["round", "request_id"],
}


def read_result_table(folder: str | os.PathLike, name: str, required: bool = True) -> pd.DataFrame | None:
    """Read one table written by `write_tables` (CSV or Parquet), indexed as it was written."""
    folder = Path(folder)
    for suffix in TABLE_SUFFIXES:
        path = folder / f"{name}{suffix}"
        if path.exists():
            if suffix == ".csv":
                frame = pd.read_csv(path, dtype={"seller_id": str, "request_id": str, "fc_id": str, "storage_type": str, "month": str, "months": str})
            else:
                frame = pd.read_parquet(path)
            missing = [c for c in RESULT_TABLES[name] if c not in frame.columns]
            if missing:
                raise InputError(Problem(f"not an optalloc result table (missing {missing})", str(path)))
            if "months" in frame.columns:
                frame["months"] = frame["months"].map(lambda v: tuple(str(v).split(";")))
            if "submitted_at" in frame.columns:
                frame["submitted_at"] = pd.to_datetime(frame["submitted_at"], utc=True, format="ISO8601")
            return frame.set_index(RESULT_TABLES[name]).sort_index()
    if required:
        raise InputError(Problem(f"missing result table {name}.csv (was this folder written by 'optalloc allocate/clear'?)", str(folder)))
    return None
