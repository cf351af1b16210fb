"""The store, on SQLite and PostgreSQL: migrations, ingest (idempotent, validated, all or nothing), refusals."""

import json
import os
import shutil
import subprocess

from datetime import datetime

import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import INSTANCES, examples, run_cli
from optalloc.errors import InputError, StoreError
from optalloc.io import load_instance
from optalloc.store import Store
from optalloc.store import tables as T
from optalloc.store.commits import AlreadyDone
from optalloc.store.connection import head_revision

SMALL = INSTANCES / "small_network"


def cli(*args: str, db: str, env: dict | None = None):
    """`optalloc ARGS --db DB -q`, in this process."""
    return run_cli(*args, "--db", db, "-q", env=env)


def row_counts(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar() for t in T.metadata.sorted_tables}


def test_the_migrated_schema_is_the_code_s_schema(store_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    store = Store(store_url)
    assert store.schema_revision() == head_revision() == "0004"
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), T.metadata)
    assert diff == []
    Store(store_url)  # opening an up-to-date store again migrates nothing and fails nothing
    assert store.schema_revision() == "0004"
    from alembic.script import ScriptDirectory

    from optalloc.store.connection import HEAD_REVISION, REVISIONS, alembic_config

    scripts = ScriptDirectory.from_config(alembic_config())  # the constants a store is opened with are the migrations' own
    assert scripts.get_current_head() == HEAD_REVISION and {s.revision for s in scripts.walk_revisions()} == REVISIONS


def test_an_ingested_instance_comes_back_exactly(store_url):
    inst = load_instance(SMALL)
    store = Store(store_url)
    counts = store.ingest(inst)
    assert counts["period_registered"] and counts["requests"] == 80 and counts["sales"] == 216
    back = store.instance(inst.period.period_id)
    assert back.period == inst.period and back.settings == inst.settings and back.name == inst.name
    for name in ("fcs", "sellers", "needs", "requests", "sales", "grant_sales"):
        ours, theirs = getattr(inst, name), getattr(back, name)
        key = list(ours.columns[:3])
        pd.testing.assert_frame_equal(ours.sort_values(key).reset_index(drop=True), theirs.sort_values(key).reset_index(drop=True), obj=name)


def test_tables_written_in_many_statements_come_back_exactly(store_url):
    """SQLite takes a table in INSERTs of as many rows as its bound-value limit allows: set to SQLite's default
    32,766, 2,978 requests of 11 values. 7,500 requests are three, the last one short; read back as one 2-D array
    they are the rows that went in, times to the microsecond and missing values (needs' floor_cube) included.
    PostgreSQL, by COPY, the same."""
    import sqlite3

    from optalloc.generate import GenerateSpec, generate

    inst = generate(GenerateSpec(sellers=1_500, fcs=6, regions=2, storage_types=2, months=2, rounds=2, requests=7_500, seed=3))
    inst.requests["submitted_at"] += pd.to_timedelta(range(len(inst.requests)), unit="us")  # every microsecond digit
    store = Store(store_url)
    if store.backend == "sqlite":  # this Python's SQLite may allow more (250,000): every new connection gets the default
        sa.event.listen(store.engine, "connect", lambda dbapi, _: dbapi.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 32_766))
        store.engine.dispose()
        with store.engine.connect() as conn:
            per = conn.connection.driver_connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // 11  # 9 columns, period, run
        assert 2 * per < len(inst.requests) < 3 * per
    store.ingest(inst)
    back = store.instance(inst.period.period_id)
    for name in ("fcs", "sellers", "needs", "requests", "sales"):
        ours, theirs = getattr(inst, name), getattr(back, name)
        assert len(ours) and (name != "needs" or ours["floor_cube"].isna().all())
        key = list(ours.columns[:3])
        pd.testing.assert_frame_equal(ours.sort_values(key).reset_index(drop=True), theirs.sort_values(key).reset_index(drop=True), obj=name)


SCRATCH = sa.MetaData()
ODD_VALUES = sa.Table(  # every kind of column the store has, to write hostile values into (period_id + key, as a bulk table)
    "odd_values", SCRATCH,
    sa.Column("period_id", sa.String(128), primary_key=True), sa.Column("row", sa.Integer(), primary_key=True),
    sa.Column("text", sa.Text(), nullable=True), sa.Column("months", sa.Text(), nullable=True),
    sa.Column("x", sa.Double(), nullable=True), sa.Column("n", sa.Integer(), nullable=True),
    sa.Column("flag", sa.Boolean(), nullable=False), sa.Column("at", sa.DateTime(timezone=True), nullable=True),
)
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8)
ODD_TEXT = st.one_of(st.none(), TEXT, st.sampled_from(["\\", "\\N", "\t", "a\nb", "\r\n", "", " ", "N", "\\\\t", "é😀", ";"]))
ODD_ROW = st.fixed_dictionaries({
    "text": ODD_TEXT,
    "months": st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00;"), min_size=1, max_size=4),
                       min_size=1, max_size=3).map(tuple),
    "x": st.one_of(st.none(), st.floats(allow_nan=False)),
    "n": st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
    "flag": st.booleans(),
    "at": st.one_of(st.none(), st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1))),
})


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(ODD_ROW, max_size=6), text_dtype=st.sampled_from([object, "string"]))
def test_hostile_values_written_in_bulk_come_back_exactly(store_url, rows, text_dtype):
    """Text with COPY's special characters (backslash, tab, line feeds, a literal \\N), NULLs (nullable integers too), floats of every size,
    times to the microsecond and list columns go in through `write_frame` and come back through `read_frame` as they
    were: on PostgreSQL as the COPY text Arrow makes, and, when a column is of a kind that text does not cover (here
    integers held as Python objects), as rows psycopg formats; on SQLite as INSERTs."""
    engine = sa.create_engine(store_url)
    try:
        _write_and_read_back(engine, rows, text_dtype)
    finally:
        engine.dispose()  # before the database is dropped, even when an assertion failed


def _write_and_read_back(engine: sa.Engine, rows: list[dict], text_dtype) -> None:
    from optalloc.store.frames import read_frame, write_frame

    SCRATCH.create_all(engine)
    frame = pd.DataFrame({"row": range(len(rows)), **{k: [r[k] for r in rows] for k in ("text", "months", "x", "n", "flag", "at")}})
    frame = frame.astype({"text": text_dtype, "months": object, "x": float, "n": "Int64", "flag": bool})
    frame["at"] = pd.to_datetime(frame["at"], utc=True).astype("datetime64[us, UTC]")
    for variant in (frame, frame.astype({"n": object})):  # the second: psycopg formats the rows
        with engine.begin() as conn:
            conn.execute(ODD_VALUES.delete())
            write_frame(conn, ODD_VALUES, variant, period_id="P\t1")
        with engine.connect() as conn:
            back = read_frame(conn, ODD_VALUES, "P\t1")
            pd.testing.assert_frame_equal(back, read_frame(conn, ODD_VALUES, "P\t1", copy=False))  # PostgreSQL: COPY = tuples
        back = back.drop(columns="period_id")
        assert len(back) == len(rows)
        assert [None if pd.isna(v) else v for v in back["text"]] == [r["text"] for r in rows]
        assert back["months"].tolist() == [r["months"] for r in rows]
        assert [None if pd.isna(v) else v for v in back["x"]] == [r["x"] for r in rows]  # -0.0 == 0.0 (SQLite keeps 0)
        assert [None if pd.isna(v) else v for v in back["n"]] == [r["n"] for r in rows] and back["flag"].tolist() == [r["flag"] for r in rows]
        assert back["at"].tolist() == frame["at"].tolist()
        if engine.dialect.name == "sqlite":  # times stored as the text SQLAlchemy's own INSERT would bind (queries compare it)
            bind = ODD_VALUES.c.at.type.dialect_impl(engine.dialect).bind_processor(engine.dialect)
            with engine.connect() as conn:
                stored = conn.exec_driver_sql("SELECT at FROM odd_values ORDER BY row").scalars().all()
            assert stored == [None if pd.isna(t) else bind(t.to_pydatetime()) for t in frame["at"]]


TEXT_FIRST = sa.Table("text_first", SCRATCH, sa.Column("period_id", sa.String(128), primary_key=True),
                      sa.Column("label", sa.Text(), primary_key=True), sa.Column("x", sa.Double(), nullable=True))


def test_a_leading_byte_order_mark_and_float32_values_come_back_as_the_driver_gives_them(store_url):
    """Two things a CSV reader or a float's shortest text could change: text whose first character is U+FEFF in the
    first column fetched (Arrow's CSV reader drops a byte order mark at the start of its input), and float32 values
    (written as the float64 the driver binds, not float32's shorter text)."""
    import numpy as np

    from optalloc.store.frames import read_frame, write_frame

    engine = sa.create_engine(store_url)
    try:
        SCRATCH.create_all(engine)
        frame = pd.DataFrame({"label": ["\ufeffa", "\ufeff"], "x": np.array([0.1, 1 / 3], dtype=np.float32)})
        with engine.begin() as conn:
            write_frame(conn, TEXT_FIRST, frame, period_id="P")
        with engine.connect() as conn:
            back = read_frame(conn, TEXT_FIRST, "P")
            assert back["label"].tolist() == ["\ufeff", "\ufeffa"]
            assert back["x"].tolist() == [float(np.float32(1 / 3)), float(np.float32(0.1))]
            pd.testing.assert_frame_equal(back, read_frame(conn, TEXT_FIRST, "P", copy=False))
    finally:
        engine.dispose()


def test_a_connection_not_in_utf8_moves_rows_through_psycopg_and_keeps_non_ascii_text(pg_server):
    """PostgreSQL: COPY's data travels in the client encoding, Arrow's text is UTF-8. On a LATIN1 connection rows are
    written and read as psycopg encodes them, so 'é' in an id is stored as 'é' (read back the same on a UTF-8
    connection) and found again by its period id. Text LATIN1 cannot hold ('€', a valid id) is a StoreError that
    says so, not a UnicodeEncodeError, and writes nothing."""
    from pgserver import fresh_database

    with fresh_database(pg_server) as url:
        _latin1_round_trip(url)
        _latin1_refuses_what_it_cannot_hold(url)


def _latin1_refuses_what_it_cannot_hold(store_url: str) -> None:
    from optalloc.store.frames import write_frame

    latin1 = sa.create_engine(store_url, connect_args={"options": "-c client_encoding=LATIN1"})
    frame = pd.DataFrame({"row": [0], "text": ["S€"], "months": [("2026-10",)], "x": [1.5], "n": [1], "flag": [True],
                          "at": pd.to_datetime(["2026-09-01T10:00:00Z"], utc=True)})
    try:
        with pytest.raises(StoreError, match="LATIN1|latin-1") as raised, latin1.begin() as conn:
            write_frame(conn, ODD_VALUES, frame, period_id="P€")
        assert "\n" not in str(raised.value)
        with latin1.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM odd_values WHERE period_id <> 'Pé'").scalar() == 0
    finally:
        latin1.dispose()


def _latin1_round_trip(store_url: str) -> None:
    from optalloc.store.frames import read_frame, write_frame

    latin1 = sa.create_engine(store_url, connect_args={"options": "-c client_encoding=LATIN1"})
    utf8 = sa.create_engine(store_url)
    try:
        SCRATCH.create_all(utf8)
        frame = pd.DataFrame({"row": [0, 1], "text": ["Sé", "ü\\t"], "months": [("2026-10",), ("é",)], "x": [1.5, float("nan")],
                              "n": [1, 2], "flag": [True, False], "at": pd.to_datetime(["2026-09-01T10:00:00.5Z", None], utc=True)})
        with latin1.begin() as conn:
            assert conn.connection.driver_connection.info.encoding != "utf-8"
            write_frame(conn, ODD_VALUES, frame, period_id="Pé")
        for engine in (latin1, utf8):
            with engine.connect() as conn:
                back = read_frame(conn, ODD_VALUES, "Pé")
            assert back["text"].tolist() == ["Sé", "ü\\t"] and back["months"].tolist() == [("2026-10",), ("é",)]
        with utf8.connect() as conn:
            assert conn.exec_driver_sql("SELECT period_id, text FROM odd_values ORDER BY row").all() == [("Pé", "Sé"), ("Pé", "ü\\t")]
    finally:
        latin1.dispose()
        utf8.dispose()


def test_every_stored_table_read_by_copy_equals_it_read_as_the_driver_s_tuples(store_url):
    """PostgreSQL reads a period's rows as COPY's CSV through Arrow; the driver's tuples (the way SQLite's rows come)
    give the same frames, column types and missing values included, for every input and result table of a period
    run through the batch (needs' floor_cube is all NULL, grants hold times)."""
    from datetime import date

    from optalloc.batch import run_batch
    from optalloc.store.frames import read_frame

    store = Store(store_url)
    store.ingest(load_instance(SMALL))
    run_batch(store, date(2027, 1, 5))
    tables = [*T.INPUT_TABLES.values(), *T.RESULT_TABLES.values(), T.performance]
    with store.engine.connect() as conn:
        for table in tables:
            for split_lists in (True, False):
                by_copy = read_frame(conn, table, "P202610", split_lists=split_lists)
                pd.testing.assert_frame_equal(by_copy, read_frame(conn, table, "P202610", split_lists=split_lists, copy=False), obj=table.name)
    assert sum(len(read_frame(store.engine.connect(), t, "P202610")) > 0 for t in tables) >= 10


def test_ingesting_the_same_files_twice_adds_nothing(store_url):
    store = Store(store_url)
    store.ingest(load_instance(SMALL))
    before = row_counts(store)
    again = store.ingest(load_instance(SMALL))
    assert not again["period_registered"] and again["requests"] == again["sales"] == 0
    after = row_counts(store)
    assert after.pop("runs") == before.pop("runs") + 1  # the ingest is recorded, nothing else changes
    assert after == before


def test_a_request_for_a_cleared_round_is_refused_with_a_clear_message(store_url, tmp_path):
    assert cli("ingest", str(SMALL), db=store_url).returncode == 0
    assert cli("batch", "--date", "2026-09-12", "--workers", "0", db=store_url).returncode == 0  # clears round 1 only
    late = tmp_path / "late.csv"
    late.write_text(
        "request_id,seller_id,storage_type,months,max_fee_per_cube,max_cube,min_cube,round,submitted_at\n"
        "N1,S01,standard,2026-11,5.0,100,0,2,2026-09-14T10:00:00Z\n"
        "N2,S02,standard,2026-11,5.0,100,0,1,2026-09-08T10:00:00Z\n"
    )
    store = Store(store_url)
    before = row_counts(store)
    done = cli("ingest", "--period", "P202610", "--requests", str(late), db=store_url)
    assert done.returncode == 2
    assert f"{late}, row 2, field 'round': round 1 of period P202610 was already cleared (run 2); requests for it are refused" in done.stderr
    assert row_counts(store) == before  # all or nothing: N1 (round 2, open) was not written either
    late.write_text(late.read_text().rsplit("N2", 1)[0])
    assert cli("ingest", "--period", "P202610", "--requests", str(late), db=store_url).returncode == 0
    assert row_counts(store)["requests"] == before["requests"] + 1


@pytest.fixture
def folder(tmp_path):
    """An editable copy of the small_network instance."""
    dst = tmp_path / "inst"
    shutil.copytree(SMALL, dst)
    return dst


def edit(folder, table: str, row: int, field: str, value: str) -> None:
    frame = pd.read_csv(folder / f"{table}.csv", dtype=str, keep_default_na=False)
    frame.loc[row - 1, field] = value
    frame.to_csv(folder / f"{table}.csv", index=False)


def test_a_stored_request_id_with_other_values_is_refused(store_url, folder):
    store = Store(store_url)
    store.ingest(load_instance(SMALL))
    edit(folder, "requests", 5, "max_fee_per_cube", "9.99")
    with pytest.raises(InputError, match=rf"{folder}/requests.csv, row 5, field 'request_id': already in the store with other values \(request_id Q04\)"):
        store.ingest(load_instance(folder))


def test_a_negative_zero_is_read_as_zero_so_a_stored_period_hashes_as_its_files(store_url, folder):
    """SQLite keeps a whole REAL as an integer, which has no sign: a -0 in a file came back from the store as 0, so
    the stored period's inputs_hash and period_hash (which `--previous` checks) differed from the file's. Validation
    reads -0 as 0 on every path."""
    import numpy as np

    from optalloc.results_io import inputs_hash, period_hash

    edit(folder, "sellers", 1, "floor_cube", "-0")
    edit(folder, "needs", 1, "p50_cube", "-0.0")
    inst = load_instance(folder)
    assert inst.sellers["floor_cube"].iloc[0] == 0 and not np.signbit(inst.sellers["floor_cube"]).any()
    assert not np.signbit(inst.needs["p50_cube"]).any()
    store = Store(store_url)
    store.ingest(inst)
    back = store.instance("P202610")
    assert (inputs_hash(back), period_hash(back)) == (inputs_hash(inst), period_hash(inst))


def test_a_period_s_fcs_sellers_needs_and_calendar_are_fixed_once_ingested(store_url, folder):
    store = Store(store_url)
    store.ingest(load_instance(SMALL))
    edit(folder, "fcs", 1, "capacity_cube", "7000")
    with pytest.raises(InputError, match="period P202610 is already in the store with other fcs"):
        store.ingest(load_instance(folder))
    shutil.copy(SMALL / "fcs.csv", folder / "fcs.csv")
    meta = json.loads((folder / "instance.json").read_text())
    meta["period"]["round_close_dates"][2] = "2026-09-24"
    (folder / "instance.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="with other round_close_dates"):
        store.ingest(load_instance(folder))


def test_the_store_needs_a_round_calendar(store_url, folder):
    meta = json.loads((folder / "instance.json").read_text())
    del meta["period"]["round_close_dates"]
    (folder / "instance.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="field 'period.round_close_dates': the store needs period.round_close_dates"):
        Store(store_url).ingest(load_instance(folder))


def test_a_bad_table_file_names_file_row_and_field_and_writes_nothing(store_url, tmp_path):
    assert cli("ingest", str(SMALL), db=store_url).returncode == 0
    store = Store(store_url)
    before = row_counts(store)
    bad = tmp_path / "sales.csv"
    bad.write_text("seller_id,storage_type,month,sales,used_cube\nS00,standard,2026-10,100,10\nS-NOBODY,standard,2026-10,NaN,10\n")
    done = cli("ingest", "--period", "P202610", "--sales", str(bad), db=store_url)
    assert done.returncode == 2
    assert f"{bad}, row 2, field 'sales': " in done.stderr and f"{bad}, row 2, field 'seller_id': unknown seller 'S-NOBODY'" in done.stderr
    assert row_counts(store) == before


def test_sales_cannot_change_after_settlement(store_url, tmp_path):
    assert cli("ingest", str(SMALL), db=store_url).returncode == 0
    assert cli("batch", "--date", "2026-10-01", "--workers", "0", db=store_url).returncode == 0  # all rounds and the settlement
    extra = tmp_path / "sales.csv"
    extra.write_text("seller_id,storage_type,month,sales,used_cube\nS00,oversize,2026-10,100,10\n")
    done = cli("ingest", "--period", "P202610", "--sales", str(extra), db=store_url)
    assert done.returncode == 2 and "period P202610 was settled (run 2); its sales report can no longer change" in done.stderr


def test_a_result_is_claimed_in_its_own_transaction(store_url):
    """The second guard behind the lock: writing a round (or baseline) that is already written is refused, and
    the refused write leaves nothing."""
    from optalloc.batch import run_batch
    from datetime import date

    store = Store(store_url)
    store.ingest(load_instance(SMALL))
    run_batch(store, date(2026, 9, 12))
    rounds = store.round_results("P202610")
    before = row_counts(store)
    with pytest.raises(AlreadyDone, match="round 1 of period P202610 was already cleared"):
        store.commit_round("P202610", rounds[0], run_id=1)
    with pytest.raises(AlreadyDone, match="baseline of period P202610 was already written"):
        store.commit_baseline("P202610", store.baseline("P202610"), run_id=1)
    assert row_counts(store) == before


@pytest.mark.parametrize("moment", ["after the baseline is read", "while the grants are read"])
def test_an_export_reads_the_period_as_of_one_moment(store_url, monkeypatch, moment):
    """A batch that commits while an export is reading the period: everything read is of the store before that
    commit or after it, never a mix. Each part was read in its own transaction: a baseline committed after the
    export found none, with the round committed beside it, gave grants without limits; on PostgreSQL (each statement
    its own snapshot) round 2's prices came without its grants."""
    import threading
    from datetime import date

    import optalloc.store.reading as S
    from optalloc.batch import run_batch

    store = Store(store_url)
    store.ingest(load_instance(SMALL))
    night = date(2026, 9, 10)  # baseline and round 1
    if moment == "while the grants are read":
        run_batch(store, night)
        night = date(2026, 9, 17)  # round 2
    committed = []

    def commit_once():
        if not committed:
            committed.append(night)  # by another store object on another thread, as another process would
            batch = threading.Thread(target=run_batch, args=(Store(store_url), night))
            batch.start()
            batch.join()

    read, baseline = S.read_frame, Store.baseline

    def read_frame(conn, table, period_id, **kw):
        frame = read(conn, table, period_id, **kw)
        if table.name == "grants" and moment == "while the grants are read":
            commit_once()
        return frame

    def read_baseline(self, period_id):
        result = baseline(self, period_id)
        if moment == "after the baseline is read":
            commit_once()
        return result

    monkeypatch.setattr(S, "read_frame", read_frame)
    monkeypatch.setattr(Store, "baseline", read_baseline)
    from optalloc.scenario import Result

    result = Result.from_store(Store(store_url, create=False), "P202610")
    tables, summary = result.tables(), result.summary()
    monkeypatch.undo()
    assert committed and len(Store(store_url).round_results("P202610")) == (1 if night == date(2026, 9, 10) else 2)  # it did commit
    if moment == "after the baseline is read":  # the period before the night: nothing solved
        assert "limits" not in tables and "grants" not in tables and "rounds" not in summary
    else:
        assert set(tables["grants"].index.get_level_values("round")) == set(tables["round_prices"].index.get_level_values("round")) == {1}
        assert {r["round"] for r in summary["rounds"]} == {1} and "limits" in tables


def test_a_bulk_write_the_database_refuses_is_a_one_line_store_error_and_leaves_nothing(store_url):
    """Rows go in bulk (COPY on PostgreSQL, one executemany on SQLite), past SQLAlchemy's statement execution: a
    database error there is still the store's one-line StoreError (exit 5), and its transaction leaves nothing."""
    from optalloc.store.frames import write_frame

    store = Store(store_url)
    inst = load_instance(SMALL)
    store.ingest(inst)
    before = row_counts(store)
    with pytest.raises(StoreError, match=r"^store .*(UNIQUE|duplicate key)") as refused, store.transaction() as conn:
        run_id = store.start_run(conn, "ingest")  # written first, so the rollback has something to undo
        write_frame(conn, T.requests, inst.requests.tail(3), period_id=inst.period.period_id, ingest_run_id=run_id)  # stored already
    assert "\n" not in str(refused.value)
    assert row_counts(store) == before


def test_a_frame_column_the_table_lacks_is_refused_not_dropped(store_url):
    """write_frame wrote the columns the table has and dropped the others without a word: a result column renamed in
    the engine but not in the store would have been lost from every stored period."""
    from optalloc.store.frames import write_frame

    store = Store(store_url)
    inst = load_instance(SMALL)
    store.ingest(inst)
    before = row_counts(store)
    extra = inst.requests.head(3).assign(request_id=lambda f: f["request_id"] + "-new", priority=1)
    with pytest.raises(ValueError, match="table requests has no column 'priority'"), store.transaction() as conn:
        write_frame(conn, T.requests, extra, period_id=inst.period.period_id, ingest_run_id=1)
    assert row_counts(store) == before


def test_a_commit_the_database_refuses_is_a_store_error_not_one_of_opening_it(store_url):
    """A COMMIT that fails (here a deferred foreign key, checked only then) is reported as the store's error, not as
    "cannot open store" (an error without a statement was taken for one of connecting)."""
    store = Store(store_url)
    with store.transaction() as conn:
        conn.exec_driver_sql("CREATE TABLE probe (run_id INTEGER REFERENCES runs (run_id) DEFERRABLE INITIALLY DEFERRED)")
    with pytest.raises(StoreError) as refused:
        with store.transaction() as conn:
            conn.exec_driver_sql("INSERT INTO probe VALUES (999)")
    message = str(refused.value)
    assert message.startswith(f"store {store.display_url}: ") and "foreign key" in message.lower(), message
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM probe").scalar() == 0


def test_a_store_reached_through_a_symlink_takes_the_same_writer_lock(tmp_path):
    """The SQLite lock file is named after the store file's real path: a run through a symlink (or another spelling
    of the path) waited for nothing, and only the round's claim stopped it writing twice."""
    from optalloc.store import StoreLockTimeout

    real = tmp_path / "real" / "store.db"
    Store(f"sqlite:///{real}").ingest(load_instance(SMALL))
    (tmp_path / "link.db").symlink_to(real)
    spellings = [f"sqlite:///{tmp_path / 'link.db'}", f"sqlite:///{tmp_path / 'real' / '..' / 'real' / 'store.db'}"]
    with Store(f"sqlite:///{real}").lock():
        for url in spellings:
            with pytest.raises(StoreLockTimeout, match="another optalloc run holds the lock"):
                with Store(url, create=False).lock(timeout=0.2):
                    pass
    with Store(spellings[0], create=False).lock():  # and free again once released
        pass


def test_an_unreachable_store_is_exit_5_not_a_traceback():
    done = cli("status", db="postgresql://nobody@127.0.0.1:1/none")
    assert done.returncode == 5 and "cannot open store" in done.stderr and "Traceback" not in done.stderr
    with pytest.raises(StoreError, match="not a database URL"):
        Store("::not a url::")


# ---------------------------------------------------------------- opening a store: nothing is created by a reader, bad stores are exit 5


@pytest.mark.parametrize("command", [["status"], ["export", "--period", "P", "-o", "OUT"], ["report", "1", "-o", "OUT"],
                                     ["batch", "--workers", "0"], ["period", "hold", "P"], ["ingest", "--period", "P", "--requests", "REQ"],
                                     ["ingest", "--history", "REQ"]])
def test_status_on_a_missing_sqlite_path_creates_nothing(tmp_path, command):
    """A mistyped path (here in a missing folder too): exit 5 naming it, and no file or folder appears. Only an
    instance creates a store: tables and history for a period made one (refusing them, exit 2, after)."""
    path = tmp_path / "no-such-folder" / "typo.db"
    args = [a.replace("OUT", str(tmp_path / "out")).replace("REQ", str(SMALL / "requests.csv")) for a in command]
    done = cli(*args, db=f"sqlite:///{path}")
    assert done.returncode == 5 and f"no store at {path}" in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []
    flat = tmp_path / "typo.db"  # an existing folder: no file either
    done = cli(*args, db=f"sqlite:///{flat}")
    assert done.returncode == 5 and f"no store at {flat}" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_ingest_creates_a_new_store_and_its_folder(tmp_path):
    path = tmp_path / "new" / "store.db"
    assert cli("ingest", str(SMALL), db=f"sqlite:///{path}").returncode == 0
    assert path.is_file() and cli("status", db=f"sqlite:///{path}").returncode == 0


def test_the_store_names_its_sqlite_file_and_export_will_not_write_over_it(store_url, tmp_path):
    """Store.sqlite_file: the file an SQLite store lives in (what output folders must not hold), None for PostgreSQL
    and for an in-memory database. `export -o` into the folder holding the store is refused and changes nothing."""
    store = Store(store_url)
    store.ingest(load_instance(SMALL))
    assert Store("sqlite://").sqlite_file is None
    if store_url.startswith("sqlite"):
        assert store.sqlite_file == str(tmp_path / "store.db")
        before = {p.name: p.stat().st_size for p in tmp_path.iterdir()}
        done = cli("export", "--period", "P202610", "-o", str(tmp_path), db=store_url)
        assert done.returncode == 2 and "store.db" in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert {p.name: p.stat().st_size for p in tmp_path.iterdir()} == before
    else:
        assert store.sqlite_file is None


def test_status_on_an_empty_postgres_database_is_exit_5_and_creates_no_schema(store_url):
    done = cli("status", db=store_url)
    assert done.returncode == 5 and "Traceback" not in done.stderr
    engine = sa.create_engine(store_url.replace("postgresql://", "postgresql+psycopg://") if store_url.startswith("postgresql") else store_url)
    if store_url.startswith("sqlite"):
        assert "no store at" in done.stderr
    else:
        assert "no optalloc store at" in done.stderr
        with engine.connect() as conn:
            assert sa.inspect(conn).get_table_names() == []
        missing = store_url.rsplit("/", 1)[0] + "/no_such_database"
        done = cli("status", db=missing)
        assert done.returncode == 5 and "no_such_database" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
@pytest.mark.parametrize("command", [["ingest", str(SMALL)], ["batch", "--workers", "0"], ["status"]])
def test_writer_refuses_in_memory_store(url, command):
    done = cli(*command, db=url)
    assert done.returncode == 5 and "in-memory database" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("url, message", [
    ("sqlite:///file:m?mode=memory&cache=shared&uri=true", "SQLite URI filenames (file:..., uri=true) are not taken"),
    ("sqlite:///file:{tmp}/u.db?uri=true", "SQLite URI filenames (file:..., uri=true) are not taken"),
    ("sqlite:///{tmp}/a%00b.db", "a store's path cannot hold a NUL character"),
])
@pytest.mark.parametrize("command", [["ingest", str(SMALL)], ["status"]])
def test_sqlite_urls_that_are_not_a_plain_path_are_exit_5_and_create_nothing(tmp_path, monkeypatch, url, message, command):
    """An in-memory URI slipped past the in-memory check (ingest said it registered a period, and stored nothing), a
    file: URI put the lock beside another path than the database, and a NUL was exit 1."""
    monkeypatch.chdir(tmp_path)
    done = cli(*command, db=url.format(tmp=tmp_path))
    assert done.returncode == 5 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_store_is_created_whole_or_not_at_all(tmp_path, real_process):
    """ingest made the SQLite file empty, then its schema: killed in between, it left a zero-length file every later
    command refused. The schema is now made beside it and linked into place: killed before that, nothing is at the
    path, and the next ingest clears what was left and creates the store."""
    path = tmp_path / "store.db"
    killed = real_process.run("ingest", str(SMALL), "--db", f"sqlite:///{path}", "-q", env={"OPTALLOC_FAILPOINT": "store-file-made:kill"})
    assert killed.returncode == -9 and not path.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".new")]  # the half-made one, of a dead process
    done = real_process.run("ingest", str(SMALL), "--db", f"sqlite:///{path}", "-q")  # a process that ends: SQLite's side files go
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.db", "store.db.lock"]
    assert Store(f"sqlite:///{path}", create=False).period_ids() == ["P202610"]


def test_a_path_through_a_symlinked_folder_and_back_is_one_store_with_one_lock(tmp_path):
    """SQLite reads "link/../s.db" by text (the folder holding "link"), the kernel through the link (the folder above
    its target): the lock and a new store's file were beside one, the data in the other, and two writers ran at once.
    The store now opens the path the kernel resolves, for the data, the lock and its creation alike."""
    from optalloc.store import StoreLockTimeout

    (tmp_path / "deep" / "x" / "y").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "deep" / "x" / "y")
    through = f"sqlite:///{tmp_path / 'link' / '..' / 's.db'}"
    Store(through).ingest(load_instance(SMALL))
    real = tmp_path / "deep" / "x" / "s.db"
    assert real.is_file() and not (tmp_path / "s.db").exists()
    assert Store(f"sqlite:///{real}", create=False).period_ids() == ["P202610"]
    with Store(f"sqlite:///{real}", create=False).lock():
        with pytest.raises(StoreLockTimeout):
            with Store(through, create=False).lock(timeout=0.2):
                pass


def test_only_a_dead_creation_s_own_leftovers_are_removed(tmp_path):
    """A killed creation leaves `.NAME.PID.new` (and its -wal/-shm); the next removes exactly those, of processes
    that are gone, never a user's file or folder of a like name (it removed `.store.db.2026.newer.bak`)."""
    dead = 2**22 + 12345  # above Linux's largest pid
    keep = [".store.db.2026.newer.bak", f".store.db.{dead}.new.bak", f".store.db.{os.getpid()}9.news", ".store.db.x.new"]
    gone = [f".store.db.{dead}.new", f".store.db.{dead}.new-wal"]
    for name in keep + gone:
        (tmp_path / name).write_text("x")
    (tmp_path / f".store.db.{dead + 1}.new").mkdir()  # a folder of that name is left alone too
    Store(f"sqlite:///{tmp_path / 'store.db'}").ingest(load_instance(SMALL))
    left = sorted(p.name for p in tmp_path.iterdir() if p.name not in ("store.db-wal", "store.db-shm"))  # the open store's
    assert left == sorted([*keep, f".store.db.{dead + 1}.new", "store.db"])


def test_an_instance_that_does_not_validate_creates_no_store(tmp_path):
    bad = tmp_path / "inst"
    shutil.copytree(SMALL, bad)
    with open(bad / "fcs.csv", "a") as f:
        f.write("junk\n")
    done = cli("ingest", str(bad), db=f"sqlite:///{tmp_path / 'new' / 'store.db'}")
    assert done.returncode == 2 and "fcs.csv, row" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inst"]


@pytest.mark.parametrize("content", [b"", b"\x8f\x00 not a database at all " * 40, b"SQLite format 3\x00" + b"\xff" * 3000])
@pytest.mark.parametrize("command", [["ingest", str(SMALL)], ["status"]])
def test_zero_length_and_corrupt_sqlite_files_are_exit_5(tmp_path, content, command):
    path = tmp_path / "store.db"
    path.write_bytes(content)
    done = cli(*command, db=f"sqlite:///{path}")
    assert done.returncode == 5 and str(path) in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert path.read_bytes() == content  # not treated as a new store


def test_text_another_tool_stored_undecodable_is_exit_5_naming_the_store(tmp_path):
    """A stored id that is not UTF-8 (written by another tool) fails when its row is fetched, after the query has
    started: exit 5 naming the store and the column, as any store error, wherever the row is (first or later)."""
    import sqlite3

    path = tmp_path / "store.db"
    assert cli("ingest", str(SMALL), db=f"sqlite:///{path}").returncode == 0
    with sqlite3.connect(path) as conn:
        rowids = [r for (r,) in conn.execute("SELECT rowid FROM needs ORDER BY rowid")]
        conn.execute("UPDATE needs SET seller_id = CAST(X'53C3' AS TEXT) WHERE rowid = ?", (rowids[len(rowids) // 2],))
    done = cli("batch", "--date", "2026-10-01", "--workers", "0", db=f"sqlite:///{path}")
    assert done.returncode == 5 and str(path) in done.stderr and "UTF-8" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_an_sqlite_database_of_something_else_is_not_taken_over(tmp_path):
    import sqlite3

    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE mine (x)")
    done = cli("ingest", str(SMALL), db=f"sqlite:///{path}")
    assert done.returncode == 5 and "not an optalloc store" in done.stderr


def test_a_malformed_url_is_exit_5():
    for url in ("postgresql://u@h:notaport/db", "nosuchdb://x/y"):
        done = cli("status", db=url)
        assert done.returncode == 5 and "Traceback" not in done.stderr, done.stderr


def test_a_store_created_by_0001_upgrades(store_url):
    from alembic import command

    from optalloc.store.connection import alembic_config as _alembic_config
    from optalloc.store.urls import resolve_url

    engine = sa.create_engine(resolve_url(store_url))
    cfg = _alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(sa.text("INSERT INTO runs (run_id, command, started_at, outcome, solver, solver_version, optalloc_version, options, host, pid)"
                             " VALUES (1, 'ingest', '2026-11-30 00:00:00+00:00', 'ok', 'highs', '1', '0', '{}', 'h', 1)"))
        conn.execute(sa.text("INSERT INTO periods (period_id, name, months, settings, ingested_at) VALUES ('P', 'p', '2026-10', '{}',"
                             " '2026-11-30 00:00:00+00:00')"))
    engine.dispose()
    done = cli("status", db=store_url)  # an existing store: opening it upgrades it
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["schema_revision"] == "0004" and status["periods"][0]["held"] is None and status["periods"][0]["failure"] is None


def store_at_revision(url: str, revision: str) -> None:
    """An empty store at an older schema revision, as an older optalloc left it."""
    from alembic import command

    from optalloc.store.connection import alembic_config as _alembic_config
    from optalloc.store.urls import resolve_url

    engine = sa.create_engine(resolve_url(url))
    with engine.begin() as conn:
        cfg = _alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    engine.dispose()


HOLD_THE_LOCK = """
import sys, time
from optalloc.store import Store
store = Store(sys.argv[1], migrate=False, create=False)
with store.lock():
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_an_old_store_whose_lock_a_writer_holds_is_not_waited_on_by_readers_and_writers_wait_their_lock_timeout(store_url, real_process):
    """Opening a store at an older schema revision upgrades it, under the writers' lock. A reader (status, export,
    report) does not wait for a writer to finish (it waited 60 s, then told the user to raise a --lock-timeout it does
    not have); a writer waits its own --lock-timeout (it waited 60 s whatever was asked)."""
    import time

    store_at_revision(store_url, "0003")
    holder = real_process.popen("-c", HOLD_THE_LOCK, store_url, "30", python=True, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for args in (["status"], ["batch", "--date", "2026-10-01", "--lock-timeout", "1"]):
            t0 = time.monotonic()
            done = cli(*args, db=store_url)
            took = time.monotonic() - t0
            assert done.returncode == 5 and "schema revision 0003" in done.stderr and "retry when it is done" in done.stderr, done.stderr
            assert took < 15, (args, took)
    finally:
        holder.kill()
        holder.wait()
    assert Store(store_url, migrate=False, create=False).schema_revision() == "0003"  # nothing was changed
    done = cli("status", db=store_url)  # the lock free: opening upgrades, as before
    assert done.returncode == 0 and json.loads(done.stdout)["schema_revision"] == head_revision()


def test_migration_0004_drops_the_bulk_tables_foreign_keys_and_keeps_their_rows(store_url):
    """0004 takes the per-row foreign keys off the bulk tables (inputs, history, results) and keeps the control
    tables' ones; downgraded to 0003 a store with a whole period in it gets them back, and upgraded again it has
    the same rows and reads back the same results."""
    from datetime import date

    from alembic import command

    from optalloc.batch import run_batch
    from optalloc.store.connection import alembic_config as _alembic_config

    store = Store(store_url)
    store.ingest(load_instance(SMALL))
    run_batch(store, date(2026, 12, 1))
    before, results = row_counts(store), store.results("P202610")
    bulk = [*T.INPUT_TABLES, "history", "performance", *(t.name for t in T.RESULT_TABLES.values())]

    def references() -> dict[str, set]:
        with store.engine.connect() as conn:
            inspector = sa.inspect(conn)
            return {t: {(fk["constrained_columns"][0], fk["referred_table"]) for fk in inspector.get_foreign_keys(t)}
                    for t in inspector.get_table_names()}

    control = {t: refs for t, refs in references().items() if t not in bulk}
    assert control["rounds"] == {("period_id", "periods"), ("cleared_run_id", "runs")}
    assert all(not references()[t] for t in bulk)
    cfg = _alembic_config()
    with store.transaction() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0003")
    old = references()
    assert old["baseline_limits"] == {("period_id", "periods"), ("run_id", "runs")} and old["history"] == {("ingest_run_id", "runs")}
    assert old["requests"] == {("period_id", "periods"), ("ingest_run_id", "runs")}
    assert all(old[t] for t in bulk) and row_counts(store) == before
    store.engine.dispose()
    store = Store(store_url)  # opening it upgrades it
    assert store.schema_revision() == "0004" and row_counts(store) == before
    assert {t: refs for t, refs in references().items() if t not in bulk} == control and all(not references()[t] for t in bulk)
    again = store.results("P202610")
    assert all(again[name].equals(frame) for name, frame in results.items())


def test_a_period_stored_before_forecast_method_existed_is_re_ingested_as_the_same(store_url, tmp_path):
    """A store written before migration 0003 holds settings without forecast_method: re-ingesting the period's files
    compares the missing field as its default (not "other settings"), and the period reads back with the default;
    a setting that really differs is still refused."""
    store = Store(store_url)
    inst = load_instance(SMALL)
    store.ingest(inst)
    with store.transaction() as conn:
        doc = json.loads(conn.execute(sa.select(T.periods.c.settings)).scalar_one())
        assert doc.pop("forecast_method") == "lightgbm"
        conn.execute(T.periods.update().values(settings=json.dumps(doc, sort_keys=True)))
    again = cli("ingest", str(SMALL), db=store_url)
    assert again.returncode == 0 and json.loads(again.stdout)["period_registered"] is False, again.stderr
    assert Store(store_url).instance(inst.period.period_id).settings == inst.settings
    other = tmp_path / "other"
    shutil.copytree(SMALL, other)
    meta = json.loads((other / "instance.json").read_text())
    meta.setdefault("settings", {})["credit_rate"] = 0.2
    (other / "instance.json").write_text(json.dumps(meta))
    refused = cli("ingest", str(other), db=store_url)
    assert refused.returncode == 2 and "with other settings" in refused.stderr


def test_unanswering_postgres_endpoint_times_out():
    """An endpoint that accepts TCP and never answers: exit 5 naming the host, within the connect timeout."""
    import socket
    import threading
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    held = []

    def accept():
        while True:
            try:
                held.append(server.accept()[0])  # and say nothing
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        t0 = time.monotonic()
        done = cli("status", db=f"postgresql://u@127.0.0.1:{port}/db", env={"OPTALLOC_DB_CONNECT_TIMEOUT": "2"})
        took = time.monotonic() - t0
    finally:
        server.close()
        for s in held:
            s.close()
    assert done.returncode == 5 and "127.0.0.1" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert took < 30, took  # the default without a timeout: for ever


def batch_asleep_in_round_1(url: str, real_process) -> tuple[subprocess.Popen, Store]:
    """small_network ingested at `url`, and a batch in its own process that has committed the baseline and sleeps 6 s
    inside round 1's transaction (a failpoint); the process and the store."""
    import time

    assert cli("ingest", str(SMALL), db=url).returncode == 0
    batch = real_process.popen("batch", "--db", url, "--date", "2026-10-01", "--workers", "0", "-q",
                               env={"OPTALLOC_FAILPOINT": "round-1-claimed:sleep=6"}, text=True)
    store = Store(url)
    deadline = time.monotonic() + 120
    while pd.isna(store.periods().loc["P202610", "baseline_run_id"]):  # then round 1, whose transaction sleeps
        time.sleep(0.2)
        assert time.monotonic() < deadline and batch.poll() is None
    time.sleep(1.0)
    return batch, store


def test_a_connection_lost_mid_run_is_exit_5_and_the_run_is_recorded_failed(pg_server, tmp_path, real_process):
    import psycopg
    from pgserver import fresh_database

    with fresh_database(pg_server) as url:
        batch, store = batch_asleep_in_round_1(url, real_process)
        store.engine.dispose()
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(pg_server, autocommit=True) as conn:
            killed = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                                  (name,)).fetchall()
        assert killed
        out, err = batch.communicate(timeout=120)
        assert batch.returncode == 5 and "Traceback" not in err and "connection" in err.lower(), err
        runs = Store(url).runs()
        assert runs["outcome"].tolist()[-1] == "failed"
        assert Store(url).rounds()["cleared_run_id"].isna().all()  # round 1's transaction died with its connection


def _terminate_lock_session(server_url: str) -> int:
    """End the PostgreSQL session that holds the store's writer lock (as an administrator or idle_session_timeout
    would); its pid."""
    import psycopg

    from optalloc.store.lock import LOCK_KEY

    with psycopg.connect(server_url, autocommit=True) as conn:
        pid = conn.execute("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = %s", (LOCK_KEY,)).fetchone()[0]
        assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
    return pid


def test_a_transaction_after_the_lock_s_session_ended_is_refused_and_rolled_back(pg_server):
    from pgserver import fresh_database

    with fresh_database(pg_server) as url:
        store = Store(url)
        store.ingest(load_instance(SMALL))
        before = row_counts(store)
        with store.lock():
            with store.transaction() as conn:  # the lock is held: writes commit
                store.start_run(conn, "batch")
            _terminate_lock_session(pg_server)
            with pytest.raises(StoreError, match="lost the store's writer lock"):
                with store.transaction() as conn:
                    store.start_run(conn, "batch")
            with store.lock(timeout=0):  # the lock was free for anyone to take: this process takes it again
                pass
        assert row_counts(store)["runs"] == before["runs"] + 1  # the refused transaction's run was rolled back


def test_a_batch_whose_lock_session_ends_stops_with_exit_5_before_committing_more(pg_server, real_process):
    """The session holding the advisory lock is ended while round 1's transaction is open: the batch must not commit
    it, nor anything after it (another writer could have taken the lock and entered), and says why; `period hold`,
    which could take the lock meanwhile, holds the period the batch then leaves alone."""
    from pgserver import fresh_database

    with fresh_database(pg_server) as url:
        batch, store = batch_asleep_in_round_1(url, real_process)
        _terminate_lock_session(pg_server)
        held = cli("period", "hold", "P202610", "--reason", "intruder", "--lock-timeout", "3", db=url)
        assert held.returncode == 0, held.stderr  # the lock was free: another writer got in
        out, err = batch.communicate(timeout=120)
        assert batch.returncode == 5 and "lost the store's writer lock" in err and "Traceback" not in err, err
        assert store.rounds()["cleared_run_id"].isna().all()  # round 1 rolled back, no round after it
        assert pd.isna(store.periods().loc["P202610", "settled_run_id"])
        run = store.runs().query("command == 'batch'").iloc[-1]
        assert run["outcome"] == "failed" and "lost the store's writer lock" in run["error"]  # its own record, written without the lock


def test_a_run_whose_lock_session_ends_after_its_last_commit_still_finishes_ok(pg_server, monkeypatch):
    """Everything committed, then the lock's session ends (here while the run waits for its input hash): the run's
    own record is still written (it is the run's row; its work is done), not left 'running' with exit 5."""
    from datetime import date

    import optalloc.batch as batch
    from pgserver import fresh_database

    real = batch._Run.inputs_hash

    def hash_then_lose_the_lock(self, wait=True):
        _terminate_lock_session(pg_server)
        return real(self, wait)

    with fresh_database(pg_server) as url:
        store = Store(url)
        store.ingest(load_instance(SMALL))
        monkeypatch.setattr(batch._Run, "inputs_hash", hash_then_lose_the_lock)
        report = batch.run_batch(store, date(2026, 12, 1))
        assert report.outcome == "ok"
        run = store.runs().iloc[-1]
        assert run["outcome"] == "ok" and not pd.isna(run["finished_at"]) and not pd.isna(run["inputs_hash"])


def test_the_lock_session_is_not_ended_by_the_server_s_idle_session_timeout(pg_server):
    """The lock's session sits idle for the whole run; a database with idle_session_timeout (PostgreSQL 14+) ended it
    mid-run, and the run stopped at its next commit every night."""
    import psycopg

    from pgserver import fresh_database

    with fresh_database(pg_server) as url:
        assert cli("ingest", str(SMALL), db=url).returncode == 0
        with psycopg.connect(pg_server, autocommit=True) as conn:
            if conn.info.server_version < 140000:
                pytest.skip("idle_session_timeout is PostgreSQL 14's")
            conn.execute(f'ALTER DATABASE "{url.rsplit("/", 1)[1]}" SET idle_session_timeout = \'2s\'')
        done = cli("batch", "--date", "2026-10-01", "--workers", "0", db=url, env={"OPTALLOC_FAILPOINT": "round-1-claimed:sleep=4"})
        assert done.returncode == 0, done.stderr
        assert not Store(url).rounds()["cleared_run_id"].isna().any()


def test_readers_opening_an_old_store_at_once_all_get_it_upgraded(store_url, real_process):
    """After a deploy, several read-only commands open the old store together: one upgrades it, the others wait a
    moment or find it upgraded; none fails (with no wait at all, two of three exited 5)."""
    store_at_revision(store_url, "0003")
    readers = [real_process.popen("status", "--db", store_url, "-q", text=True) for _ in range(3)]
    done = [(r.wait(timeout=120), r.stderr.read()) for r in readers]
    assert all(code == 0 for code, _ in done), done


def test_a_store_of_a_newer_optalloc_is_refused_at_once_saying_so(store_url, real_process):
    """A schema revision this optalloc does not know was reported, after waiting for the lock, as "older than this
    optalloc's": retrying never helps; the store was written by a newer optalloc."""
    from optalloc.store.urls import resolve_url

    Store(store_url).ingest(load_instance(SMALL))
    engine = sa.create_engine(resolve_url(store_url))
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    holder = real_process.popen("-c", HOLD_THE_LOCK, store_url, "30", python=True, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for args in (["status"], ["batch", "--date", "2026-10-01", "--lock-timeout", "20"]):
            done = cli(*args, db=store_url)
            assert done.returncode == 5 and "revision 0099, which this optalloc" in done.stderr and "newer optalloc" in done.stderr, done.stderr
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("value, expected", [("0", None), ("0.0001", 1), ("2.5", 3), ("2147483", 2_147_483), ("-1", None), ("soon", None)])
def test_the_connect_timeout_is_whole_seconds_above_0(monkeypatch, value, expected):
    """libpq's connect_timeout is whole seconds, and its 0 waits for ever: a connect timeout of 0 is refused naming
    the variable (it hung `status` on an endpoint that never answers), a positive one is never 0 s."""
    from optalloc.store.connection import connect_args as _connect_args

    monkeypatch.setenv("OPTALLOC_DB_CONNECT_TIMEOUT", value)
    if expected is None:
        with pytest.raises(StoreError, match=r"\$OPTALLOC_DB_CONNECT_TIMEOUT must be a number of seconds"):
            _connect_args("postgresql")
    else:
        assert _connect_args("postgresql")["connect_timeout"] == expected


@pytest.mark.parametrize("value, expected", [("0", 0), ("0.0001", 1), ("2.5", 2500), ("2147483", 2_147_483_000), ("2147484", None),
                                             ("1e9", None), ("-1", None), ("inf", None), ("nan", None), ("soon", None)])
def test_the_statement_timeout_is_whole_milliseconds_postgresql_can_hold(monkeypatch, value, expected):
    """0 is no timeout, and a positive one never becomes 0 ms; past PostgreSQL's 32-bit milliseconds it is refused
    naming the variable (PostgreSQL refused every connection: "value exceeds integer range")."""
    from optalloc.store.connection import connect_args as _connect_args

    monkeypatch.setenv("OPTALLOC_DB_STATEMENT_TIMEOUT", value)
    if expected is None:
        with pytest.raises(StoreError, match=r"\$OPTALLOC_DB_STATEMENT_TIMEOUT must be a number of seconds"):
            _connect_args("postgresql")
    else:
        assert _connect_args("postgresql")["options"] == f"-c statement_timeout={expected}"


def test_the_longest_statement_timeout_is_one_postgresql_accepts(pg_server, monkeypatch):
    from pgserver import fresh_database

    monkeypatch.setenv("OPTALLOC_DB_STATEMENT_TIMEOUT", "2147483")
    with fresh_database(pg_server) as url:
        store = Store(url)
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "2147483s"
        store.engine.dispose()


def test_a_statement_past_the_statement_timeout_is_exit_5(pg_server, monkeypatch):
    from pgserver import fresh_database

    monkeypatch.setenv("OPTALLOC_DB_STATEMENT_TIMEOUT", "0.5")
    with fresh_database(pg_server) as url:
        store = Store(url)
        with pytest.raises(StoreError, match="statement timeout"):
            with store.engine.connect() as conn:
                conn.execute(sa.text("SELECT pg_sleep(3)"))
        store.engine.dispose()
