"""Messages that say what happened: each case a user can cause ends in one line naming what is wrong, the documented
exit code, and no traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pandas as pd
import pytest

from conftest import INSTANCES, run_cli

WORKED = str(INSTANCES / "worked_example.json")
SMALL = INSTANCES / "small_network"


def one_line_error(done, code: int) -> str:
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    return done.stderr


def test_a_symlink_loop_under_o_is_a_path_optalloc_cannot_write(tmp_path):
    """It was 'internal error ... please report it', exit 1."""
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for args in (["solve", WORKED, "-o", str(tmp_path / "loop" / "out")], ["solve", WORKED, "-o", str(tmp_path / "loop")]):
        err = one_line_error(run_cli(*args, "-q"), 2)
        assert "it cannot be resolved" in err and "symlink loop" in err
    out = tmp_path / "out"
    assert run_cli("solve", WORKED, "-o", str(out), "-q").returncode == 0
    err = one_line_error(run_cli("report", str(out), "-o", str(tmp_path / "loop" / "r.html"), "-q"), 2)
    assert "symlink loop" in err


def test_the_count_of_problems_is_the_true_count(tmp_path):
    """100,000 requests with a negative fee said 'invalid input (51 problem(s)) ... and 31 more'."""
    folder = tmp_path / "inst"
    shutil.copytree(SMALL, folder)
    requests = pd.read_csv(folder / "requests.csv", dtype=str)
    many = pd.concat([requests] * 1250, ignore_index=True)
    many["request_id"] = [f"Q{i:06d}" for i in range(len(many))]
    many["max_fee_per_cube"] = "-1"
    many.to_csv(folder / "requests.csv", index=False)
    err = one_line_error(run_cli("validate", str(folder), "-q"), 2)
    assert "invalid input (100,000 problem(s))" in err and "... and 99,980 more" in err  # 20 shown


@pytest.mark.parametrize("args, says", [
    (["batch", "--date", "2026-13-01"], "argument --date: not a date YYYY-MM-DD: '2026-13-01'"),
    (["batch", "--lock-timeout", "soon"], "argument --lock-timeout: not a number: 'soon'"),
    (["batch", "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "give one of them"),
    (["simulate", "--sellers", "-3"], "argument --sellers: must be between"),
    (["simulate", "--reform-share", "0.3"], "--reform-share means something only with --periods N"),
    (["simulate", "--forecast-method", "seasonal_naive"], "--forecast-method means something only with --periods N"),
    (["simulate", "--format", "parquet"], "--format says how -o DIR is written"),
    (["solve"], "the following arguments are required: instance, -o/--out"),
    (["nonsense"], "invalid choice: 'nonsense'"),
    (["period", "hold", "P", "--step", "forecast"], "--step goes with reset"),
])
def test_bad_arguments_are_one_line_and_exit_2(tmp_path, args, says):
    """argparse printed its multi-line usage; an option that does nothing without another was taken silently."""
    done = run_cli(*args, "--db", f"sqlite:///{tmp_path / 's.db'}", "-q") if args[0] in ("batch", "period") else run_cli(*args, "-q")
    err = one_line_error(done, 2)
    assert says in err and err.count("\n") == 1 and "usage:" not in err, err


@pytest.mark.parametrize("sid, kept", [(" S1 ", "S1"), ("S 1", "S 1")])
def test_spaces_around_an_id_are_dropped_as_documented(sid, kept):
    from conftest import make, need, seller

    assert list(make(sellers=[seller(sid)], needs=[need(sid)]).sellers["seller_id"]) == [kept]


@pytest.mark.parametrize("sid", ["S1\t", "\tS1", "S1\u00a0", "\u2003S1"])
def test_a_tab_or_a_no_break_space_around_an_id_is_refused_not_dropped(tmp_path, sid):
    """Ids lost their leading and trailing tabs and no-break spaces silently, while the docs said tabs are refused."""
    folder = tmp_path / "inst"
    shutil.copytree(SMALL, folder)
    sellers = pd.read_csv(folder / "sellers.csv", dtype=str)
    sellers.loc[0, "seller_id"] = sid.replace("S1", sellers.loc[0, "seller_id"])
    sellers.to_csv(folder / "sellers.csv", index=False)
    err = one_line_error(run_cli("validate", str(folder), "-q"), 2)
    assert "sellers.csv, row 1, field 'seller_id': must not begin or end with whitespace but spaces" in err


@pytest.fixture
def read_only_store(tmp_path):
    """A store with a settled period on a file system mounted read-only (needs root, as in CI; skipped without)."""
    import sqlite3

    db = tmp_path / "store.db"
    assert run_cli("ingest", WORKED, "--db", f"sqlite:///{db}", "-q").returncode == 0
    assert run_cli("batch", "--date", "2027-01-05", "--db", f"sqlite:///{db}", "-q").returncode == 0
    with sqlite3.connect(db) as conn:  # as a store closed by its last process: its write-ahead log folded in
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    mount = tmp_path / "ro"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a read-only file system needs root")
    try:
        shutil.copy(db, mount / "store.db")
        assert subprocess.run(["mount", "-o", "remount,ro", str(mount)], capture_output=True).returncode == 0
        yield f"sqlite:///{mount / 'store.db'}"
    finally:
        import gc

        gc.collect()  # the in-process commands' database connections to it, closed
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_store_on_a_read_only_file_system_is_read_and_writers_say_why_not(read_only_store, tmp_path):
    """status, export and report exited 5 'unable to open database file'; a writer now says the file system is
    read-only."""
    status = run_cli("status", "--db", read_only_store, "-q")
    assert status.returncode == 0, status.stderr
    assert [r["command"] for r in json.loads(status.stdout)["runs"]] == ["ingest", "batch"]
    assert run_cli("export", "--period", "2026Q4", "-o", str(tmp_path / "e"), "--db", read_only_store, "-q").returncode == 0
    assert (tmp_path / "e" / "settlement.csv").exists()
    assert run_cli("report", "2", "-o", str(tmp_path / "r.html"), "--db", read_only_store, "-q").returncode == 0
    for args in (["batch", "--date", "2027-01-06"], ["period", "hold", "2026Q4"], ["ingest", WORKED]):
        err = one_line_error(run_cli(*args, "--db", read_only_store, "-q"), 5)
        assert "its folder is on a read-only file system" in err


def test_a_killed_ingest_leaves_its_run_to_be_recorded_killed(tmp_path, real_process):
    """A killed `ingest --history` left no run record: its run was written in the transaction that died with it."""
    db = f"sqlite:///{tmp_path / 'store.db'}"
    assert run_cli("ingest", str(SMALL), "--db", db, "-q").returncode == 0
    weekly = tmp_path / "weekly.csv"
    weekly.write_text("seller_id,storage_type,week,shipped_cube,sales,on_hand_cube\nS00,standard,2026-08-31,1,2,3\n")
    killed = real_process.run("ingest", "--history", str(weekly), "--db", db, "-q", env={"OPTALLOC_FAILPOINT": "ingest-written:kill"})
    assert killed.returncode == -9
    runs = json.loads(run_cli("status", "--db", db, "-q").stdout)["runs"]
    assert [(r["command"], r["outcome"]) for r in runs] == [("ingest", "ok"), ("ingest", "killed")]
    from optalloc.store import Store

    assert Store(db).history_weeks()[2] == 0  # its rows went with it


def test_a_batch_that_cannot_record_its_failure_says_so_even_when_quiet(tmp_path, monkeypatch):
    """A batch that hit a full disk stayed 'running' with nothing said: now a warning on stderr, -q or not."""
    from optalloc.errors import StoreError
    from optalloc.store import Store

    db = f"sqlite:///{tmp_path / 'store.db'}"
    assert run_cli("ingest", WORKED, "--db", db, "-q").returncode == 0

    def full(self, *args, **kwargs):
        raise StoreError("database or disk is full (a test)")

    monkeypatch.setattr(Store, "commit_baseline", full)
    monkeypatch.setattr(Store, "finish_run", full)
    done = run_cli("batch", "--date", "2027-01-05", "--db", db, "-q")
    assert done.returncode == 5
    assert "warning: run 2 could not be recorded as failed (database or disk is full (a test))" in done.stderr
