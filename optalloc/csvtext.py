"""CSV text as `DataFrame.to_csv(index=False, lineterminator="\\n")` writes it, byte for byte, made column by column.

pandas writes CSV row by row through the csv module: at 2 M sellers the needs table alone (15 M rows) took most of a
minute, once for the input hashes of summary.json and again for the tables. Here each column becomes text the way
pandas makes it (`pandas.core.indexes.base.get_values_for_csv` with the defaults: numbers through numpy's `astype(str)`,
the shortest text that reads back as the same float; a missing value as the empty string; booleans as True/False)
and Arrow's kernels join the columns and the rows, a block of rows at a time. The csv module only ever quotes a field
that holds a comma, a quote or a line break, or the one field of a one-column row: a frame with any of those, or a
column of a type not handled here, is written by pandas itself. tests/test_csvtext.py checks the two against each other
on generated frames.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

BLOCK_ROWS = 500_000  # rows made into text at a time (a float column's text is 128 bytes a row in numpy before Arrow)
_QUOTED = r'[,"\r\n]'  # what the csv module quotes (QUOTE_MINIMAL: the delimiter, the quote character, line breaks)


def csv_chunks(frame: pd.DataFrame) -> Iterator[bytes | memoryview]:
    """The UTF-8 bytes of `frame.to_csv(index=False, lineterminator="\\n")`, in pieces (the header, then blocks of rows)."""
    columns = [frame.iloc[:, i] for i in range(frame.shape[1])]
    names = [str(c) for c in frame.columns]
    texts = [_whole_text(c) for c in columns]  # a text column's Arrow text, made once; None for numbers (per block)
    if len(columns) < 2 or any(t is False for t in texts) or any(_quoted(t) for t in texts if t is not None) \
            or _quoted(pa.array(names, type=pa.large_string())):
        yield frame.to_csv(index=False, lineterminator="\n").encode()
        return
    yield (",".join(names) + "\n").encode()
    for start in range(0, len(frame), BLOCK_ROWS):
        block = [_text(c.iloc[start : start + BLOCK_ROWS]) if t is None else t.slice(start, BLOCK_ROWS) for c, t in zip(columns, texts)]
        rows = pc.binary_join_element_wise(*block, _large(""), _large(","))  # "a,b," (the last "," becomes "\n")
        yield _body(rows)


def csv_bytes(frame: pd.DataFrame) -> bytes:
    return b"".join(csv_chunks(frame))


def _whole_text(col: pd.Series) -> pa.Array | None | bool:
    """A text column as Arrow text; None for a number or boolean column (made into text a block at a time); False for
    a column of any other kind (pandas writes the frame)."""
    dtype = col.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "fiub":
        return None
    inferred = pd.api.types.infer_dtype(col, skipna=True) if dtype == np.dtype(object) else None
    if isinstance(dtype, pd.StringDtype) or inferred in ("string", "empty"):
        return _arrow(col)
    return False


def _quoted(text: pa.Array) -> bool:
    """Whether the csv module would quote any of these fields."""
    return bool(pc.any(pc.match_substring_regex(text, _QUOTED)).as_py())


def _arrow(col: pd.Series) -> pa.Array:
    """Text column as Arrow large strings, a missing value as the empty string."""
    if isinstance(col.dtype, pd.StringDtype):
        array = pa.array(col.array, type=pa.large_string(), from_pandas=True)
    else:
        array = pa.array(col.to_numpy(dtype=object), type=pa.large_string(), from_pandas=True)
    return pc.fill_null(array, "")


def _text(col: pd.Series) -> pa.Array:
    """A number or boolean column as text."""
    values = col.to_numpy()
    if values.dtype.kind == "b":
        return pa.array(np.where(values, "True", "False"), type=pa.large_string())
    if values.dtype.kind in "iu":  # the decimal digits, as str(int)
        return pc.cast(pa.array(values), pa.large_string())
    text = _float_text(values) if values.dtype == np.float64 else pa.array(values.astype(str), type=pa.large_string())
    return pc.if_else(pa.array(np.isnan(values)), _large(""), text)


def _float_text(values: np.ndarray) -> pa.Array:
    """float64 as numpy's `astype(str)` writes it (Python's repr), several times faster. numpy writes the shortest
    digits that read back as the same float, positionally for 1e-4 <= |x| < 1e16 and with an exponent otherwise. Arrow's
    cast gives the same shortest digits; where it writes them positionally, only a whole number's ".0" is missing.
    Wherever Arrow writes an exponent, or numpy would, numpy itself writes the value (few, in cube and fees)."""
    text = pc.cast(pa.array(values), pa.large_string())
    finite = np.isfinite(values)
    size = np.abs(np.where(finite, values, 1.0))
    arrow_exponent = pc.fill_null(pc.match_substring(text, "e"), False).to_numpy(zero_copy_only=False)
    by_numpy = finite & (size != 0) & ((size < 1e-4) | (size >= 1e16) | arrow_exponent)
    no_point = finite & ~by_numpy & ~pc.fill_null(pc.match_substring(text, "."), False).to_numpy(zero_copy_only=False)
    if no_point.any():
        text = pc.if_else(pa.array(no_point), pc.binary_join_element_wise(text, _large(".0"), _large("")), text)
    if by_numpy.any():
        text = pc.replace_with_mask(text, pa.array(by_numpy), pa.array(values[by_numpy].astype(str), type=pa.large_string()))
    return text


def _large(text: str) -> pa.Scalar:
    return pa.scalar(text, pa.large_string())


def _body(rows: pa.Array) -> memoryview:
    """The rows' text, each with its trailing "," made the line's "\\n", as one buffer."""
    rows = pc.binary_replace_slice(rows, -1, 2**31 - 1, "\n")  # the last character (the ",") becomes "\n"
    if isinstance(rows, pa.ChunkedArray):
        rows = rows.combine_chunks()
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int64)[rows.offset : rows.offset + len(rows) + 1]
    return memoryview(rows.buffers()[2])[offsets[0] : offsets[-1]]


def utc_text(times: pd.Series, unit: str = "us", sep: str = "T") -> np.ndarray:
    """Times as UTC ISO 8601 text without a zone, to the second (unit "s") or the microsecond ("us"; finer digits
    dropped), the date and time joined by `sep`; None where a time is missing. numpy's datetime_as_string writes
    100,000 in ~20 ms; pandas' and Arrow's strftime took ~110 ms."""
    values = times.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype(f"datetime64[{unit}]")
    text = np.datetime_as_string(values, unit=unit)
    if sep != "T":
        text = np.char.replace(text, "T", sep, count=1)
    out = text.astype(object)
    out[np.isnat(values)] = None
    return out

