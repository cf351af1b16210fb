"""The fast load path gives what the plain one gives: Arrow's CSV reader against pandas' reader, and validation of
Arrow-backed text (checked once per distinct value, numbers parsed by Arrow) against validation of Python strings
(checked row by row). Same frames, same typed tables, same problems, on hostile cells."""

from __future__ import annotations

import csv
import io

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optalloc.io import TEXT_DTYPE, _read_csv
from optalloc.validate import validate_table
from conftest import examples

CELLS = st.one_of(
    st.sampled_from(["", " ", "S1", " S1 ", "S2", "s-1", "a;b", "R1;R2", " R1 ; R1", "2026-10", "2026-10;2026-11", "1", "2.5",
                     " 7 ", "1e3", "nan", "inf", "-1", "1,000", "0x10", "1_000", "\u00e9t\u00e9", "x\ty", "\"q\"", "007", "1e400"]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=6),
)


def _csv_text(header: list[str], rows: list[list[str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _plain(frame: pd.DataFrame) -> list[list]:
    return [[None if (v is None or (isinstance(v, float) and np.isnan(v))) else v for v in row] for row in frame.astype(object).values.tolist()]


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(CELLS, min_size=3, max_size=3), min_size=1, max_size=8))
def test_arrow_reader_reads_what_pandas_reads(tmp_path, rows):
    path = tmp_path / "t.csv"
    path.write_text(_csv_text(["a", "b", "c"], rows), encoding="utf-8")
    fast = _read_csv(path)
    plain = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8-sig")
    assert list(fast.columns) == list(plain.columns)
    assert _plain(fast) == _plain(plain)


@pytest.mark.parametrize("text", [
    "\ufeffseller_id,x\nS1,1\n",  # a byte-order mark
    "seller_id,x\nS1,1,2\n",  # more fields than the header: pandas takes the first as index (refused later)
    "seller_id,x\nS1\n",  # fewer fields: pandas fills the rest with blanks
    "seller_id,\nS1,2\n",  # an empty header name
    "seller_id,x\n\nS1,1\n\n",  # blank lines
    'seller_id,x\n"S\n1",1\n',  # a line break inside quotes
])
def test_files_arrow_refuses_are_read_by_pandas(tmp_path, text):
    """(A header naming a column twice is refused before either reader: test_hostile_input.)"""
    path = tmp_path / "t.csv"
    path.write_text(text, encoding="utf-8")
    plain = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8-sig")
    fast = _read_csv(path)
    assert list(fast.columns) == list(plain.columns) and _plain(fast) == _plain(plain)
    assert type(fast.index) is type(plain.index)


TABLE_COLUMNS = {
    "sellers": ["seller_id", "performance_score", "productivity", "regions", "floor_cube"],
    "needs": ["seller_id", "storage_type", "month", "p50_cube", "p90_cube", "floor_cube"],
    "requests": ["request_id", "seller_id", "storage_type", "months", "max_fee_per_cube", "max_cube", "min_cube", "round", "submitted_at"],
}


@settings(max_examples=examples(60), deadline=None)
@given(table=st.sampled_from(sorted(TABLE_COLUMNS)), data=st.data())
def test_validation_of_arrow_text_equals_validation_of_python_strings(table, data):
    cols = TABLE_COLUMNS[table]
    cells = st.one_of(CELLS, st.sampled_from(["2026-09-01T10:00:00Z", "12", "0", "500", "S1;S1", "Q1"]))
    rows = data.draw(st.lists(st.lists(cells, min_size=len(cols), max_size=len(cols)), min_size=1, max_size=10))
    rows = rows + rows[: data.draw(st.integers(0, len(rows)))]  # repeats: one verdict per distinct value, read back per row
    objects = pd.DataFrame(rows, columns=cols).replace("", None).astype(object)
    arrow = objects.astype(TEXT_DTYPE) if isinstance(TEXT_DTYPE, pd.StringDtype) else objects.astype(pd.StringDtype("pyarrow"))
    typed_a, problems_a = validate_table(table, arrow, "t.csv")
    typed_o, problems_o = validate_table(table, objects, "t.csv")
    assert [(p.row, p.field, p.message) for p in problems_a] == [(p.row, p.field, p.message) for p in problems_o]
    pd.testing.assert_frame_equal(typed_a, typed_o)
    # and each row's verdict is the verdict it gets alone: checking distinct values once never mixes rows up
    alone = sorted((i + 1, p.field, p.message) for i in range(len(rows))
                   for p in validate_table(table, arrow.iloc[[i]].reset_index(drop=True), "t.csv")[1])
    assert sorted((p.row, p.field, p.message) for p in problems_a) == alone


KEY_TEXT = st.text(alphabet=st.sampled_from(["a", "b", "B", "é", "Z", "0", "_", "ж", "😀"]), min_size=0, max_size=3)


@settings(max_examples=examples(200), deadline=None)
@given(rows=st.lists(st.tuples(KEY_TEXT, KEY_TEXT, st.integers(0, 3)), min_size=0, max_size=12), presort=st.booleans())
def test_rows_already_in_key_order_are_kept_and_others_sorted_exactly_as_sort_values_would(rows, presort):
    """canonical_order skips the sort when every row's key is >= the one before (one comparison per column); the
    rows and the input row numbers it returns are those of a stable sort_values, sorted input or not, ties included."""
    from optalloc.instance import canonical_order

    weeks = pd.Timestamp("2026-01-05") + pd.to_timedelta([7 * w for _, _, w in rows], unit="D")
    frame = pd.DataFrame({"seller_id": pd.Series([s for s, _, _ in rows], dtype=object),
                          "storage_type": pd.Series([t for _, t, _ in rows], dtype=object), "week": weeks,
                          "row": range(len(rows))})
    if presort:
        frame = frame.sort_values(["seller_id", "storage_type", "week"], kind="stable")
    expected = frame.sort_values(["seller_id", "storage_type", "week"], kind="stable")
    ordered, source_rows = canonical_order(frame, "history")
    pd.testing.assert_frame_equal(ordered, expected.reset_index(drop=True))
    assert source_rows.tolist() == [frame.index.get_loc(i) + 1 for i in expected.index]


@settings(max_examples=examples(200), deadline=None)
@given(times=st.lists(st.one_of(st.none(), st.datetimes(min_value=pd.Timestamp("1900-01-01").to_pydatetime(),
                                                        max_value=pd.Timestamp("2200-01-01").to_pydatetime())), max_size=6),
       whole=st.booleans(), zone=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York"]))
def test_times_are_written_as_pandas_strftime_writes_them(times, whole, zone):
    """format_frame writes times with Arrow's strftime: the text pandas' strftime gives (UTC, Z; to the second when
    every time is whole, else to the microsecond), whatever zone the column is in, a missing time left missing."""
    from optalloc.results_io import format_frame

    series = pd.Series(pd.to_datetime(times), dtype="datetime64[ns]").dt.tz_localize("UTC")
    if whole:
        series = series.dt.floor("s")
    series = series.dt.tz_convert(zone)
    utc = series.dt.tz_convert("UTC")
    all_whole = bool((utc.dt.microsecond == 0).all())
    expected = utc.dt.strftime("%Y-%m-%dT%H:%M:%SZ" if all_whole else "%Y-%m-%dT%H:%M:%S.%fZ")
    got = format_frame(pd.DataFrame({"at": series}))["at"]
    assert [None if pd.isna(v) else v for v in got] == [None if pd.isna(v) else v for v in expected]


SPECIAL = ["\x00", "\t", "\n", "\x1f", "\x7f", "\x80", "\x9f", "\xa0", "\u00ad", "\u061c", "\u180e", "\u200b", "\u200f", "\u2028", "\u202e",
           "\u2060", "\u206f", "\ufeff", "\ufff9", "\ufffb", "\ufffc", ";", "-", "0", "9", "a", "é", "😀", "\u2066"]


@settings(max_examples=examples(300), deadline=None)
@given(values=st.lists(st.one_of(st.none(), st.text(st.one_of(st.sampled_from(SPECIAL), st.characters(blacklist_categories=("Cs",))),
                                                    max_size=6), st.sampled_from(["2026-01", "2026-13", "2026-1", "١٢٣٤-01"])),
                       min_size=1, max_size=8))
def test_arrow_regex_verdicts_equal_python_re_on_the_validation_patterns(values):
    """Ids and months are checked by Arrow's regex kernel (RE2) on pyarrow-backed text: for every pattern the
    validator uses, the same verdict as Python's re.fullmatch, control, invisible and non-ASCII characters included."""
    import re

    from optalloc.schemas import ID_PATTERN, MONTH_PATTERN
    from optalloc.validate import _fullmatch

    text = pd.Series(values, dtype=pd.StringDtype("pyarrow"))
    for pattern in (ID_PATTERN, MONTH_PATTERN):
        expected = [True if v is None else re.fullmatch(pattern, v) is not None for v in values]
        assert _fullmatch(text, pattern, missing=True).tolist() == expected


def test_lists_are_joined_once_each_and_a_missing_list_stays_missing_and_patterns_must_be_anchored():
    """format_frame joins each distinct list once and reads the text back by row (a missing list stays missing,
    not the last list's text); a validation pattern Arrow's search would not match whole is refused."""
    from optalloc.results_io import format_frame
    from optalloc.validate import re2_pattern

    got = format_frame(pd.DataFrame({"months": [("2026-10", "2026-11"), ("2026-12",), None, ("2026-12",)]}))["months"]
    assert [None if pd.isna(v) else v for v in got] == ["2026-10;2026-11", "2026-12", None, "2026-12"]
    with pytest.raises(ValueError, match="anchored"):
        re2_pattern("[a-z]+")
