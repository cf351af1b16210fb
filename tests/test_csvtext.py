"""optalloc.csvtext writes the bytes pandas' to_csv writes, whatever the frame (the input hashes and the CSV tables
depend on it: an old folder's inputs_hash must still compare)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from optalloc import csvtext
from optalloc.csvtext import csv_bytes
from conftest import examples

EDGE_FLOATS = [0.0, -0.0, 1e16, 1e-5, 1e-4, 0.1, 5e-324, 123456789.125, 2.0**53]
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(EDGE_FLOATS)
TEXT = st.text(max_size=8) | st.sampled_from(["S1", "a,b", 'say "hi"', "two\nlines", "cr\r", " lead", "", "é€"])


def expected(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False, lineterminator="\n").encode()


@st.composite
def frames(draw):
    n = draw(st.integers(0, 12))
    kinds = draw(st.lists(st.sampled_from(["float", "int", "bool", "str", "object", "missing_text", "float32"]),
                          min_size=1, max_size=5))
    data = {}
    for i, kind in enumerate(kinds):
        if kind == "float":
            data[f"c{i}"] = np.array(draw(st.lists(FLOATS, min_size=n, max_size=n)), dtype=float)
        elif kind == "float32":
            floats32 = st.floats(width=32, allow_nan=True)
            data[f"c{i}"] = np.array(draw(st.lists(floats32, min_size=n, max_size=n)), dtype=np.float32)
        elif kind == "int":
            data[f"c{i}"] = np.array(draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n)), dtype=np.int64)
        elif kind == "bool":
            data[f"c{i}"] = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
        elif kind == "str":
            data[f"c{i}"] = pd.Series(draw(st.lists(TEXT | st.none(), min_size=n, max_size=n)), dtype="str")
        elif kind == "object":
            data[f"c{i}"] = pd.Series(draw(st.lists(TEXT | st.none(), min_size=n, max_size=n)), dtype=object)
        else:
            data[f"c{i}"] = pd.Series([None] * n, dtype=object)
    return pd.DataFrame(data)


@settings(max_examples=examples(300), deadline=None)
@given(frames())
def test_the_same_bytes_as_pandas(frame):
    assert csv_bytes(frame) == expected(frame)


def test_blocks_of_rows_join_to_the_same_text(monkeypatch):
    monkeypatch.setattr(csvtext, "BLOCK_ROWS", 3)
    frame = pd.DataFrame({"seller_id": [f"S{i}" for i in range(10)], "p50_cube": np.arange(10) / 3, "round": np.arange(10)})
    assert len(list(csvtext.csv_chunks(frame))) == 1 + 4  # the header, then 4 blocks
    assert csv_bytes(frame) == expected(frame)


def test_text_the_csv_module_quotes_is_written_by_pandas():
    frame = pd.DataFrame({"name": ["plain", "a,b"], "x": [1.5, 2.0]})
    assert csv_bytes(frame) == expected(frame) == b'name,x\nplain,1.5\n"a,b",2.0\n'


def test_floats_at_every_scale_as_numpy_writes_them():
    """The float text (Arrow's cast, mended where it differs) against numpy's astype(str), which pandas uses: random
    mantissas at every exponent, whole numbers, the thresholds of the exponent notation, signed zeros."""
    rng = np.random.default_rng(0)
    values = np.concatenate([
        rng.random(20_000) * 10.0 ** rng.integers(-330, 309, 20_000),
        *(np.round(rng.random(4_000) * 10.0 ** rng.integers(-6, 20, 4_000), digits) for digits in range(5)),
        rng.integers(-(10**17), 10**17, 5_000).astype(float),
        [0.0, -0.0, 1e-4, 1e-4 * (1 - 2**-52), 1e15, 1e15 - 1, 1e16, 1e16 - 2, np.nextafter(1e15, 0), np.nextafter(1e-4, 1),
         np.nextafter(1e16, 0), 5e-324, 1.7976931348623157e308],
    ])
    values = np.concatenate([values, -values])
    frame = pd.DataFrame({"a": values, "b": values[::-1]})
    assert csv_bytes(frame) == expected(frame)
