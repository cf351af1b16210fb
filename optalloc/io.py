"""Loading instances from files: a JSON file or a folder of CSV/Parquet tables, arriving tables for a known period,
and history files. Loaders read and validate; they never build or solve. (Writing tables and reading results back:
`optalloc.results_io`.)
"""

from __future__ import annotations

import csv
import difflib
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from . import arguments
from .errors import InputError, Problem
from .instance import Instance
from .schemas import TABLES

META_FILE = "instance.json"
TABLE_SUFFIXES = (".csv", ".parquet")


def _not_utf8(e: UnicodeDecodeError, path: Path) -> InputError:
    return InputError(Problem(f"not UTF-8 (byte 0x{e.object[e.start]:02x} at offset {e.start}); save the file as UTF-8", str(path)))


def read_text(path: Path) -> str:
    """A file's text, UTF-8 (a leading BOM is dropped); unreadable, not a regular file (a folder, a device such as
    /dev/zero, which would be read for ever) or not UTF-8 is bad input naming the file."""
    if not path.is_file():
        raise InputError(Problem(f"cannot read file: it {'is a folder' if path.is_dir() else _not_a_file(path)}", str(path)))
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(Problem(f"cannot read file: {e.strerror}", str(path))) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise _not_utf8(e, path) from None


class _DuplicateKey(Exception):
    pass


def _one_of_each(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object's members, refusing a key given twice (json takes the last one without a word: a second
    "pool_share" silently replaced the first)."""
    doc = dict(pairs)
    if len(doc) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return doc


def read_json(path: Path) -> dict:
    """A JSON file holding one object; anything else is bad input naming the file: not JSON, a key twice in one
    object, a number of more digits than Python reads (4,300), nesting past the parser's depth."""
    text = read_text(path)
    try:
        doc = json.loads(text, object_pairs_hook=_one_of_each)
    except json.JSONDecodeError as e:
        raise InputError(Problem(f"not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})", str(path))) from None
    except _DuplicateKey as e:
        raise InputError(Problem(f"the key {e.args[0]!r} appears twice in one object; give each once", str(path))) from None
    except ValueError:  # int("1" * 5000): past sys.get_int_max_str_digits()
        raise InputError(Problem("not valid JSON: a number with more than 4,300 digits", str(path))) from None
    except RecursionError:
        raise InputError(Problem("not valid JSON: nested too deeply", str(path))) from None
    if not isinstance(doc, dict):
        raise InputError(Problem("must hold a JSON object", str(path)))
    return doc


def _name(value, default: str, path: Path) -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        raise InputError(Problem("must be text", str(path), None, "name"))
    return value


def load_instance(path: str | os.PathLike) -> Instance:
    """Load an instance from a JSON file or from a folder of tables (CSV or Parquet)."""
    path = Path(arguments.path(path))
    if path.is_dir():
        return _load_folder(path)
    if not path.exists():
        raise InputError(Problem("no such file or folder", str(path)))
    doc = read_json(path)
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
            # An empty list is an empty table, as a header-only CSV is.
            tables[t] = pd.DataFrame(rows) if rows else pd.DataFrame(columns=list(TABLES[t][0].model_fields))
    return Instance.from_tables(
        name=_name(doc.get("name"), path.stem, path),
        period=doc["period"],
        settings=doc.get("settings"),
        tables=tables,
        sources={"meta": str(path), **{t: f"{path}: {t}" for t in TABLES}},
    )


def _read_table(path: Path) -> pd.DataFrame:
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
            # A table written from an indexed DataFrame keeps its index (e.g. seller_id): it is a column like any other.
            return frame.reset_index() if any(n is not None for n in frame.index.names) else frame.reset_index(drop=True)
        frame = _read_csv(path)
    except UnicodeDecodeError as e:
        raise _not_utf8(e, path) from None
    except pd.errors.EmptyDataError:
        raise InputError(Problem("empty file: a table needs at least its header line", str(path))) from None
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - any reader failure on a user's file (corrupt Parquet, bad CSV) is bad input
        raise InputError(Problem(f"cannot read table: {reason_of(e)}", str(path))) from None
    if not isinstance(frame.index, pd.RangeIndex):  # pandas takes a first column without a header as the index
        raise InputError(Problem("rows have more fields than the header line names", str(path), None, None))
    return frame


# What pandas' reader gives for `dtype=str`: Arrow-backed text from pandas 3 on (object before).
TEXT_DTYPE = pd.Series([], dtype=str).dtype


def _read_csv(path: Path) -> pd.DataFrame:
    """A CSV table, every column as text, so ids keep their spelling ("007"); the validator converts numbers.

    Arrow's reader (multi-threaded; 3 s where pandas took 85 s on the 2 M-seller needs file) reads a well-formed
    file. A file it refuses (ragged rows, an empty header name, bad UTF-8, no header) is read again by pandas, whose
    conventions the error messages follow, so the outcome never depends on which reader ran. A header naming a
    column twice is refused first (pandas would rename the second)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            names = next(csv.reader(fh), None)
    except (UnicodeDecodeError, csv.Error):
        names = None
    if names and len(set(names)) < len(names):  # pandas would rename the second one ("productivity.1") and call it unknown
        twice = next(n for i, n in enumerate(names) if n in names[:i])
        raise InputError(Problem("the header line names this column twice", str(path), None, twice))
    if names and all(names):  # (each name once: checked above)
        try:
            table = pa_csv.read_csv(path, convert_options=pa_csv.ConvertOptions(
                column_types={n: pa.string() for n in names}, null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=True))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, UnicodeDecodeError):
            table = None
        if table is not None and table.column_names == names:
            text = isinstance(TEXT_DTYPE, pd.StringDtype)
            return table.to_pandas(types_mapper=lambda t: TEXT_DTYPE if text and pa.types.is_string(t) else None)
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8-sig")


def reason_of(e: Exception) -> str:
    """An exception of a reader as a short reason (its first line, at most 200 characters)."""
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]


# Tables that arrive after a period is known: new requests, and the sales report.
ARRIVING_TABLES = ("requests", "sales", "grant_sales")


def _not_a_file(path: Path) -> str:
    """Why a table file given by name cannot be read as one."""
    if path.is_dir():
        return "is a folder, not a table file"
    if path.exists():  # through a symlink too: one to a device is not dangling
        return "is not a regular file (a device or a pipe, say)"
    if path.is_symlink():
        return "is a symlink to nothing that can be read (dangling, or a loop)"
    return "no such file"


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
            raise InputError(Problem(_not_a_file(path), str(path)))
        context = {t: getattr(base, t) for t in ("fcs", "sellers", "needs")}
        if not len(base.needs):  # a period whose needs the batch forecasts from its history
            context["history"] = base.history
        if name == "grant_sales":
            context["requests"] = pd.concat([new.get("requests", base.requests.iloc[:0]), base.requests]).drop_duplicates("request_id")
        checked = Instance.from_tables(
            period=base.period, settings=base.settings, name=base.name, tables={**context, name: _read_table(path)},
            sources={**base.sources, name: str(path)},
        )
        new[name], rows[name] = getattr(checked, name), checked.source_rows[name]
    return replace(base, **new, sources={**base.sources, **{t: str(files[t]) for t in new}}, source_rows={**base.source_rows, **rows})


def load_history_file(path: str | os.PathLike, seller_ids, storage_types, period=None) -> tuple[pd.DataFrame, np.ndarray]:
    """A `history` table file (CSV or Parquet) checked as an instance's history is: its row model, no duplicate
    (seller, storage type, week), known sellers and storage types, weeks that are Mondays (and before `period`, when
    given). Problems name the file, row and field. Returns the rows in key order and each one's row in the file."""
    from .history import check_history
    from .instance import canonical_order
    from .validate import check_keys, validate_table

    path = Path(path)
    if not path.is_file():
        raise InputError(Problem(_not_a_file(path), str(path)))
    table, problems = validate_table("history", _read_table(path), str(path))
    if not any(p.row is None for p in problems):
        problems += check_keys("history", table, str(path))
        problems += check_history(table, pd.Index(seller_ids), pd.Index(storage_types), period, str(path))
    if problems:
        raise InputError(problems)
    return canonical_order(table, "history")


INSTANCE_FILES = (META_FILE, *(f"{t}{s}" for t in TABLES for s in TABLE_SUFFIXES))


def unknown_files(folder: Path) -> list[Problem]:
    """Files of an instance folder that are neither instance.json nor a table (dot-files are ignored): a misspelt
    table would otherwise be silently missing."""
    problems = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.name in INSTANCE_FILES or entry.is_dir():  # folders (arrivals/) are the user's
            continue
        near = difflib.get_close_matches(entry.name, INSTANCE_FILES, n=1, cutoff=0.6) or difflib.get_close_matches(
            entry.name.lower(), INSTANCE_FILES, n=1, cutoff=0.6)
        hint = f" (did you mean {near[0]}?)" if near else f" (expected {META_FILE} and TABLE.csv or TABLE.parquet for tables {', '.join(TABLES)})"
        problems.append(Problem(f"not a table of an instance{hint}", str(entry)))
    return problems


def _load_folder(folder: Path) -> Instance:
    meta_path = folder / META_FILE
    if not meta_path.exists():
        raise InputError(Problem(f"a table folder needs {META_FILE} with the period (and optional settings)", str(meta_path)))
    meta = read_json(meta_path)
    problems = unknown_files(folder)
    problems += [Problem("unknown key", str(meta_path), None, k) for k in meta if k not in {"name", "period", "settings"}]
    if "period" not in meta:
        problems.append(Problem("required key is missing", str(meta_path), None, "period"))
    tables, sources = {}, {"meta": str(meta_path)}
    for t in TABLES:
        found = [folder / f"{t}{s}" for s in TABLE_SUFFIXES if (folder / f"{t}{s}").exists()]
        if len(found) > 1:
            problems.append(Problem(f"both {found[0].name} and {found[1].name} exist; keep one", str(folder)))
            continue
        if found:
            if not found[0].is_file():
                problems.append(Problem("not a file", str(found[0])))
                continue
            try:
                tables[t] = _read_table(found[0])
            except InputError as e:  # keep going: report every unreadable table at once
                problems += e.problems
                continue
            sources[t] = str(found[0])
        else:
            sources[t] = str(folder / f"{t}.csv")
    if problems:
        raise InputError(problems)
    return Instance.from_tables(
        name=_name(meta.get("name"), folder.name, meta_path), period=meta["period"], settings=meta.get("settings"), tables=tables, sources=sources
    )
