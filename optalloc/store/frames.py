"""Frames <-> tables: the engine's DataFrames as rows of the store, and back.

Rows move in bulk, without SQLAlchemy's per-row parameter handling (which cost more than the solves at 100,000
requests). PostgreSQL (on a UTF-8 connection) moves them by COPY both ways, as text Arrow makes and reads a column at
a time (`copy_text`, `_copied_columns`); SQLite is written by INSERTs of thousands of rows each and read as the
driver's tuples. The values are the ones SQLAlchemy's own INSERT and SELECT bind and return: each column's bind and
result processors for the dialect are applied (SQLite keeps datetimes as text, say), so a stored period reads back
the same whichever path wrote it (tests/test_store.py checks this on both databases, and each bulk path against the
row-by-row one).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import sqlalchemy as sa

from ..csvtext import utc_text
from ..errors import StoreError
from ..schemas import TABLE_KEYS
from ..tables import RESULTS
from . import tables as T
from .connection import one_line, statement_error

LIST_COLUMNS = {"months", "regions"}
BOOKKEEPING_COLUMNS = ["period_id", "run_id", "ingest_run_id"]  # the store's own columns, not the engine's


def _column_values(series: pd.Series, name: str) -> list:
    """A column as the values to bind: lists ';'-joined, times as UTC datetimes, a missing value as None."""
    if name in LIST_COLUMNS:
        return [";".join(v) for v in series]
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        values = series.dt.tz_convert("UTC").array.to_pydatetime().tolist()  # NaT too: made None below
    else:
        values = series.tolist()
    if isinstance(series.dtype, np.dtype) and series.dtype.kind in "biu":  # numpy integers and booleans: never missing
        return values
    for i in np.flatnonzero(series.isna().to_numpy()):
        values[i] = None
    return values


def _table_columns(frame: pd.DataFrame, table: sa.Table, constants: dict) -> tuple[pd.DataFrame, list[str]]:
    """The frame with its named index as columns, and the names of its columns that the table has (not those given
    as constants), in the table's order."""
    frame = frame.reset_index() if any(n is not None for n in frame.index.names) else frame
    return frame, [c.name for c in table.columns if c.name in frame.columns and c.name not in constants]


def frame_records(frame: pd.DataFrame, table: sa.Table, **constants) -> list[dict]:
    """Rows as dicts: the frame's columns that the table has, lists joined, NaN as NULL, times in UTC."""
    frame, names = _table_columns(frame, table, constants)
    columns = [_column_values(frame[n], n) for n in names]
    return [{**constants, **dict(zip(names, values))} for values in zip(*columns)] if names else []


def write_frame(conn: sa.Connection, table: sa.Table, frame: pd.DataFrame, **constants) -> None:
    """Insert the frame's rows (as `frame_records` makes them) with `constants` in every row, in bulk. A frame column
    the table does not have is a bug (a result column renamed in the engine and not in the store would be lost
    without a word): ValueError, and the transaction rolls back."""
    frame, names = _table_columns(frame, table, constants)
    if unknown := [c for c in frame.columns if c not in table.c]:
        raise ValueError(f"table {table.name} has no column {', '.join(map(repr, unknown))}: it would not be stored")
    if not names or not len(frame):
        return
    dialect = conn.dialect
    q = dialect.identifier_preparer
    into = f"{q.format_table(table)} ({', '.join(q.quote(n) for n in [*constants, *names])})"
    if dialect.name == "postgresql" and _utf8(conn) and (blocks := copy_text(frame, names, table, dialect, constants)) is not None:
        _copy_in(conn, f"COPY {into} FROM STDIN", blocks)
        return
    columns = [_bound(frame[n], n, table.c[n].type, dialect) for n in names]
    heads = [_bound_constant(table.c[k].type, dialect, v) for k, v in constants.items()]
    if dialect.name == "postgresql":  # a column the COPY text does not cover: rows that psycopg formats
        _copy_in(conn, f"COPY {into} FROM STDIN", zip(*[[v] * len(frame) for v in heads], *columns), by_row=True)
    else:
        _insert_many(conn, into, heads, columns)


def _bound(series: pd.Series, name: str, type_: sa.types.TypeEngine, dialect: sa.Dialect) -> list:
    """A column's values (`_column_values`) as SQLAlchemy's bind processor for the dialect makes them, without a
    Python call per value where the outcome is known: SQLite's text for UTC times (numpy writes
    SQLAlchemy's format), and a float or bool column's values as they are (the processors only check them)."""
    if dialect.name == "sqlite" and isinstance(type_, sa.DateTime) and isinstance(series.dtype, pd.DatetimeTZDtype):
        return utc_text(series, "us", sep=" ").tolist()
    values = _column_values(series, name)
    bind = type_.dialect_impl(dialect).bind_processor(dialect)
    if bind is None or (isinstance(type_, sa.Double) and series.dtype == np.float64) or (isinstance(type_, sa.Boolean) and series.dtype == bool):
        return values
    return [bind(v) for v in values]


def _bound_constant(type_: sa.types.TypeEngine, dialect: sa.Dialect, value):
    bind = type_.dialect_impl(dialect).bind_processor(dialect)
    return value if bind is None else bind(value)


def _insert_many(conn: sa.Connection, into: str, constants: list, columns: list[list]) -> None:
    """SQLite: as many rows per INSERT as its limit on bound values allows (SQLite's default 32,766: 3,640 rows of 9
    values), not one executemany step per row. sqlite3 releases the GIL around each step and takes it back after:
    one row at a time, beside a thread that is busy in Python (the batch solves the next round while its writer
    thread commits this one), each row waited for the GIL. 146,000 rows of 9: 0.33 s alone and minutes beside a
    busy thread by executemany; 0.24 and 0.55 s in INSERTs of 3,640 rows. The values are laid out once as a 2-D
    array (rows x columns, constants broadcast), so each INSERT's parameters are one slice of it, in row order."""
    n, width = len(columns[0]), len(constants) + len(columns)
    grid = np.empty((n, width), dtype=object)
    for j, value in enumerate(constants):
        grid[:, j] = value
    for j, values in enumerate(columns, start=len(constants)):
        column = np.empty(n, dtype=object)
        column[:] = values  # never a sequence: numbers, text, None
        grid[:, j] = column
    driver = conn.connection.driver_connection
    per = max(1, driver.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width)
    one = f"({', '.join(['?'] * width)})"
    for start in range(0, n, per):
        chunk = grid[start:start + per]
        conn.exec_driver_sql(f"INSERT INTO {into} VALUES {', '.join([one] * len(chunk))}", tuple(chunk.ravel().tolist()))


COPY_BLOCK_ROWS = 50_000  # rows made into COPY text at a time: the server reads one block while the next is made
_ESCAPES = [("\\", "\\\\"), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")]  # COPY text: backslash first


def copy_text(frame: pd.DataFrame, names: list[str], table: sa.Table, dialect: sa.Dialect, constants: dict) -> Iterator[memoryview] | None:
    """PostgreSQL: the frame's rows (`constants`, then its columns `names`) as COPY's text format, in blocks; None when
    a column is not one of the kinds below (it is then written row by row, psycopg formatting each value).

    psycopg's `write_row` formats one row per Python call: 0.74 s of a 1.2 s ingest at 100,000 requests, all of it
    holding the GIL the batch's solves need. Here Arrow makes each column's text at once: floats as the shortest text
    that reads back as the same float, integers, true/false, times in UTC to the microsecond, text with COPY's
    escapes (backslash, line feed, carriage return, tab), NULL as \\N, list columns ';'-joined; then joins the
    columns with tabs and the rows with line feeds. tests/test_store.py checks that every value comes back exactly."""
    if any(_converts(table.c[n].type, dialect) for n in [*constants, *names]):
        return None
    if not all(_copy_kind(frame[n], n) for n in names) or not all(_copy_constant(v) is not None for v in constants.values()):
        return None
    heads = [pa.scalar(_copy_constant(v), pa.large_string()) for v in constants.values()]

    def blocks() -> Iterator[memoryview]:
        for start in range(0, len(frame), COPY_BLOCK_ROWS):
            texts = [_copy_column(frame[n].iloc[start:start + COPY_BLOCK_ROWS], n) for n in names]
            rows = pc.binary_join_element_wise(*heads, *texts, pa.scalar("", pa.large_string()), pa.scalar("\t", pa.large_string()))
            yield _lines(rows)

    return blocks()


def _converts(type_: sa.types.TypeEngine, dialect: sa.Dialect) -> bool:
    """Whether SQLAlchemy converts a value of this column type before the driver sees it (a Boolean's processor
    only checks that it is a bool, as the column's numpy dtype makes every value here)."""
    return type_.dialect_impl(dialect).bind_processor(dialect) is not None and not isinstance(type_, sa.Boolean)


def _copy_kind(col: pd.Series, name: str) -> bool:
    """Whether `_copy_column` writes this column."""
    dtype = col.dtype
    if name in LIST_COLUMNS:
        return isinstance(dtype, np.dtype) and dtype.kind == "O"
    if isinstance(dtype, pd.DatetimeTZDtype):
        return True
    if isinstance(dtype, np.dtype) and dtype.kind in "fiub":
        return True
    if isinstance(dtype, pd.StringDtype):
        return True
    if isinstance(dtype, (pd.Int64Dtype, pd.BooleanDtype, pd.Float64Dtype)):
        return True
    return isinstance(dtype, np.dtype) and dtype.kind == "O" and pd.api.types.infer_dtype(col, skipna=True) in ("string", "empty")


def _copy_constant(value) -> str | None:
    if isinstance(value, str):
        return _escaped(pa.array([value], pa.large_string()))[0].as_py()
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    return None


def _copy_column(col: pd.Series, name: str) -> pa.Array:
    """One column's values as COPY text, NULL as \\N."""
    if name in LIST_COLUMNS:
        text = _escaped(pa.array([None if v is None else ";".join(v) for v in col], pa.large_string()))
    elif isinstance(col.dtype, pd.DatetimeTZDtype):  # UTC, to the microsecond (as the other stores keep times)
        text = pc.cast(pa.array(col.dt.tz_convert("UTC").astype("datetime64[us, UTC]")), pa.large_string())
    elif isinstance(col.dtype, np.dtype) and col.dtype.kind == "f":  # as the float64 the drivers bind (float32's text is shorter)
        values = col.to_numpy().astype(np.float64, copy=False)
        text = pc.cast(pa.array(values, mask=np.isnan(values)), pa.large_string())
    elif isinstance(col.dtype, pd.StringDtype) or col.dtype == object:
        text = _escaped(pa.array(col.to_numpy(dtype=object), pa.large_string(), from_pandas=True))
    else:  # integers and booleans, numpy or nullable
        text = pc.cast(pa.array(col.to_numpy() if isinstance(col.dtype, np.dtype) else col.array), pa.large_string())
    return pc.fill_null(text, pa.scalar("\\N", pa.large_string()))


def _escaped(text: pa.Array) -> pa.Array:
    """Text with COPY's escapes, where any is needed (a backslash, line feed, carriage return or tab)."""
    if pc.any(pc.match_substring_regex(text, r"[\\\n\r\t]")).as_py():
        for raw, escaped in _ESCAPES:
            text = pc.replace_substring(text, raw, escaped)
    return text


def _lines(rows: pa.Array) -> memoryview:
    """The rows' text, each with its trailing tab made the line's line feed, as one buffer."""
    rows = pc.binary_replace_slice(rows, -1, 2**31 - 1, "\n")
    if isinstance(rows, pa.ChunkedArray):
        rows = rows.combine_chunks()
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int64)[rows.offset : rows.offset + len(rows) + 1]
    return memoryview(rows.buffers()[2])[offsets[0] : offsets[-1]]


def _placeholder(dialect: sa.Dialect) -> str:
    return "?" if dialect.paramstyle == "qmark" else "%s"


@contextmanager
def _driver_errors(conn: sa.Connection) -> Iterator[None]:
    """A database error raised by the driver where SQLAlchemy does not see it (a COPY on the psycopg connection, rows
    fetched from the driver's cursor after the query began) becomes the same one-line StoreError as any other
    statement's (`statement_error`, as store.py's `_store_errors`); so does text the driver cannot encode in the
    connection's client encoding (a non-UTF-8 PostgreSQL connection)."""
    url = conn.engine.url.render_as_string(hide_password=True)
    try:
        yield
    except conn.dialect.loaded_dbapi.Error as e:
        raise statement_error(url, e, lost=conn.dialect.is_disconnect(e, conn.connection.dbapi_connection, None)) from None
    except UnicodeError as e:
        encoding = getattr(getattr(conn.connection.driver_connection, "info", None), "encoding", None)
        raise StoreError(f"store {url}: text the connection's client encoding ({encoding}) cannot carry: {one_line(e)}") from None


def _copy_in(conn: sa.Connection, sql: str, data: Iterable, by_row: bool = False) -> None:
    """COPY FROM STDIN on the connection's own psycopg connection, inside its transaction: blocks of COPY text, or
    rows that psycopg formats (`by_row`)."""
    driver = conn.connection.driver_connection
    with _driver_errors(conn), driver.cursor() as cursor, cursor.copy(sql) as copy:
        for item in data:
            copy.write_row(item) if by_row else copy.write(item)


def read_frame(conn: sa.Connection, table: sa.Table, period_id: str, *, split_lists: bool = True, copy: bool = True) -> pd.DataFrame:
    """A period's rows with the DataFrame types the engine uses, sorted by primary key in Python's string order
    (the same on every database, whatever its collation). `split_lists=False` keeps list columns as the stored
    ';'-joined text, as a CSV table has them: the validator splits text lists once per distinct value.

    PostgreSQL sends the rows as COPY's CSV, which Arrow reads a column at a time (`copy=False`: as the driver's
    tuples, the way SQLite's rows come). The driver's rows become one 2-D object array in one C call (numpy), sliced
    into columns: transposing the rows in Python (`zip(*rows)`) took as long as fetching them. period_id is not
    fetched: it is the one asked for."""
    names = [c.name for c in table.columns]
    fetched = [c for c in table.columns if c.name != "period_id"]
    if conn.dialect.name == "postgresql" and copy and _utf8(conn) and all(_arrow_type(c) is not None for c in fetched):
        typed, n = _copied_columns(conn, table, fetched, period_id, split_lists)
    else:
        typed, n = _fetched_columns(conn, table, fetched, period_id, split_lists)
    if "period_id" in names:
        typed["period_id"] = pd.Series(np.full(n, period_id, dtype=object), dtype=None if n else object)
    frame = pd.DataFrame(typed, columns=names)
    keys = [c.name for c in table.primary_key.columns if c.name != "period_id"]
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


def _fetched_columns(conn: sa.Connection, table: sa.Table, fetched: list[sa.Column], period_id: str, split_lists: bool) -> tuple[dict, int]:
    dialect = conn.dialect
    q = dialect.identifier_preparer
    sql = (f"SELECT {', '.join(q.quote(c.name) for c in fetched)} FROM {q.format_table(table)} "
           f"WHERE {q.quote('period_id')} = {_placeholder(dialect)}")
    result = conn.exec_driver_sql(sql, (period_id,))
    try:
        with _driver_errors(conn):  # a row after the first is fetched here, out of SQLAlchemy's sight
            rows = result.cursor.fetchall()
        coltypes = [d[1] for d in result.cursor.description]
    finally:
        result.close()
    grid = np.empty((len(rows), len(fetched)), dtype=object)
    if rows:
        grid[:] = rows  # one C loop; a value is never a sequence (numbers, text, times, None)
    return {c.name: _typed(c, grid[:, j], dialect, coltype, split_lists) for j, (c, coltype) in enumerate(zip(fetched, coltypes))}, len(rows)


def _copied_columns(conn: sa.Connection, table: sa.Table, fetched: list[sa.Column], period_id: str, split_lists: bool) -> tuple[dict, int]:
    """PostgreSQL: `COPY (SELECT ...) TO STDOUT` as CSV, read by Arrow with each column's type. Floats are sent as
    the shortest text that reads back as the same float (extra_float_digits > 0), times as UTC text to the
    microsecond (to_char, whatever the session's time zone and date style), NULL as an unquoted empty field and the
    empty string quoted. Each line starts with a constant field: Arrow's reader drops a byte order mark at the start
    of its input, which would otherwise be the first value's. The columns are those `_typed` makes of the driver's
    tuples (tests/test_store.py)."""
    from psycopg import sql as psql

    q = conn.dialect.identifier_preparer
    select = [f"to_char({q.quote(c.name)} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')" if isinstance(c.type, sa.DateTime)
              else q.quote(c.name) for c in fetched]  # every DateTime column is timezone=True (`_arrow_type`)
    query = psql.SQL("COPY (SELECT 0, {} FROM {} WHERE {} = {}) TO STDOUT WITH (FORMAT csv)").format(
        psql.SQL(", ".join(select)), psql.SQL(q.format_table(table)), psql.SQL(q.quote("period_id")), psql.Literal(period_id))
    driver = conn.connection.driver_connection
    data = bytearray()
    conn.exec_driver_sql("SET LOCAL extra_float_digits = 3")
    with _driver_errors(conn), driver.cursor() as cursor, cursor.copy(query) as copy:
        for block in copy:
            data += block
    if not data:
        return {c.name: _from_arrow(c, pa.array([], type=_arrow_type(c)), split_lists) for c in fetched}, 0
    try:
        names = [c.name for c in fetched]
        arrow = pcsv.read_csv(pa.BufferReader(pa.py_buffer(data)), read_options=pcsv.ReadOptions(column_names=["", *names]),
                              parse_options=pcsv.ParseOptions(newlines_in_values=True),
                              convert_options=pcsv.ConvertOptions(column_types={c.name: _arrow_type(c) for c in fetched}, null_values=[""],
                                                                  include_columns=names,
                                                                  strings_can_be_null=True, quoted_strings_can_be_null=False,
                                                                  true_values=["t"], false_values=["f"]))
    except pa.ArrowInvalid as e:  # the server sent what COPY's CSV of these columns cannot be: say so as any store error
        raise statement_error(conn.engine.url.render_as_string(hide_password=True), e, lost=False) from None
    return {c.name: _from_arrow(c, arrow.column(c.name).combine_chunks(), split_lists) for c in fetched}, arrow.num_rows


def _arrow_type(c: sa.Column) -> pa.DataType | None:
    """The Arrow type COPY's CSV of the column is read as; None for a type the COPY read does not cover (the table
    is then read as the driver's tuples)."""
    if isinstance(c.type, sa.DateTime):
        return pa.timestamp("us") if c.type.timezone else None
    if isinstance(c.type, sa.Double):
        return pa.float64()
    if isinstance(c.type, sa.Boolean):
        return pa.bool_()
    if isinstance(c.type, sa.Integer):
        return pa.int64()
    if isinstance(c.type, sa.String):  # Text too
        return pa.large_string()
    return None


def _utf8(conn: sa.Connection) -> bool:
    """Whether the connection's client encoding is UTF-8: COPY's data travels in it, and Arrow's text is UTF-8 (on any
    other encoding rows go through psycopg, which encodes them)."""
    return conn.connection.driver_connection.info.encoding == "utf-8"


def _from_arrow(c: sa.Column, values: pa.Array, split_lists: bool) -> pd.Series | np.ndarray | pd.api.extensions.ExtensionArray:
    """One column read by Arrow as `_typed` makes it from the driver's values (a NULL as NaN, NaT, None or <NA>)."""
    if isinstance(c.type, sa.DateTime):
        return pd.Series(values.to_numpy(zero_copy_only=False)).dt.tz_localize("UTC").astype("datetime64[us, UTC]")
    if isinstance(c.type, sa.Double):
        return values.to_numpy(zero_copy_only=False).astype(float)
    if isinstance(c.type, sa.Boolean):
        return pc.fill_null(values, False).to_numpy(zero_copy_only=False)
    if isinstance(c.type, sa.Integer):
        if not c.nullable:
            return pc.fill_null(values, 0).to_numpy(zero_copy_only=False).astype(np.int64)
        return pd.arrays.IntegerArray(pc.fill_null(values, 0).to_numpy(zero_copy_only=False).astype(np.int64),
                                      pc.is_null(values).to_numpy(zero_copy_only=False))
    if c.name in LIST_COLUMNS and split_lists:
        return _split_lists(values.to_pylist())
    if values.null_count == len(values):
        return pd.Series([None] * len(values), dtype=object)
    return pd.Series(values.to_pandas())


def _typed(c: sa.Column, values: np.ndarray, dialect: sa.Dialect, coltype, split_lists: bool = True) -> pd.Series | np.ndarray:
    """One column as read (an object array of the driver's values) with the type the engine uses. The values are
    the ones SQLAlchemy's result processor for the dialect would return; times stored as text (SQLite) are parsed
    in one vectorised call, not one processor call per row."""
    if isinstance(c.type, sa.DateTime):
        if len(values) and isinstance(values[0], str):  # SQLite: UTC as 'YYYY-MM-DD HH:MM:SS.ffffff'
            return pd.Series(pd.to_datetime(values, utc=True, format="ISO8601")).astype("datetime64[us, UTC]")
        return pd.Series(pd.to_datetime(list(values), utc=True)).astype("datetime64[us, UTC]")
    convert = c.type.dialect_impl(dialect).result_processor(dialect, coltype)
    if convert is not None:
        values = np.fromiter((convert(v) for v in values), dtype=object, count=len(values))
    if isinstance(c.type, sa.Double):
        return values.astype(float)  # NULL is NaN
    if isinstance(c.type, sa.Boolean):
        return values.astype(bool)
    if isinstance(c.type, sa.Integer):
        return values.astype(np.int64) if not c.nullable else pd.array(values.tolist(), dtype="Int64")
    if c.name in LIST_COLUMNS and split_lists:
        return _split_lists(values)
    return pd.Series(np.ascontiguousarray(values), dtype=None if len(values) else object)  # text: pandas infers its str type


def _split_lists(values) -> pd.Series:
    """Stored ';'-joined lists as tuples (None stays None)."""
    return pd.Series([None if v is None else tuple(v.split(";")) for v in values], dtype=object)


def result_frame(frame: pd.DataFrame, table: sa.Table) -> pd.DataFrame:
    """A stored result as the engine returns it: its index is the table's key after period_id."""
    declared = next(t for t in RESULTS.values() if t.store == table.name)
    extra = [c.name for c in declared.stored_only]  # e.g. the store's running price protection, not a clearing result
    return frame.drop(columns=[*BOOKKEEPING_COLUMNS, *extra], errors="ignore").set_index(list(declared.keys)).sort_index()


def canonical_records(frame: pd.DataFrame, name: str) -> list[dict]:
    keys = TABLE_KEYS[name]
    table = T.INPUT_TABLES[name]
    return frame_records(frame.sort_values(keys, kind="stable").reset_index(drop=True), table)
