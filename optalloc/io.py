"""Loading instances from files and writing results atomically.

Loaders read and validate; they never build or solve. Writers never leave half a result and never
replace a folder optalloc did not write (`optalloc.outputs`).
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import json
import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from . import progress, units
from . import tables as declared
from .csvtext import csv_chunks, utc_text
from .errors import InputError, Problem
from .instance import Instance
from .outputs import WrittenThenInterrupted, replace_folder
from .schemas import MAX_FEE, TABLE_KEYS, TABLES

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
    path = Path(path)
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
        raise InputError(Problem(f"cannot read table: {_reason(e)}", str(path))) from None
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


def _reason(e: Exception) -> str:
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
                raise InputError(Problem(f"cannot read result table: {_reason(e)}", str(path))) from None
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
RESULT_RANGES = {units.CUBE: (-1e18, 1e18), units.PER_CUBE: (0.0, MAX_FEE)}


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
