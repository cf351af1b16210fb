"""One canonical order and one time precision on every path: `solve` on a file and ingest -> batch -> export on a store
give byte-identical results whatever order the rows come in and whatever digits the times carry."""

from __future__ import annotations

import filecmp
import json
import shutil

import pandas as pd

from conftest import INSTANCES, fc, make, request, run_cli
from optalloc.cli import run
from optalloc.clearing import clear_round
from optalloc.io import load_instance

SMALL = INSTANCES / "small_network"


def cli(*args: str):
    return run_cli(*args, "-q")


def shuffled_copy(tmp_path):
    """small_network with every table's rows in reverse order and nanosecond digits on every submitted_at."""
    folder = tmp_path / "shuffled"
    shutil.copytree(SMALL, folder)
    for path in folder.glob("*.csv"):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        if "submitted_at" in frame:
            frame["submitted_at"] = frame["submitted_at"].str.replace("Z", ".000000789Z", regex=False)
        frame.iloc[::-1].to_csv(path, index=False)
    return folder


def test_rows_in_any_order_and_nanosecond_times_give_the_same_bytes_on_every_path(store_url, tmp_path):
    original, shuffled = tmp_path / "original", tmp_path / "from_shuffled"
    assert run(["solve", str(SMALL), "-o", str(original), "-q"]) == 0
    folder = shuffled_copy(tmp_path)
    assert run(["solve", str(folder), "-o", str(shuffled), "-q"]) == 0
    assert cli("ingest", str(folder), "--db", store_url).returncode == 0
    done = cli("batch", "--date", "2027-01-05", "--workers", "0", "--db", store_url)
    assert done.returncode == 0, done.stderr
    exported = tmp_path / "exported"
    period = json.loads((SMALL / "instance.json").read_text())["period"]["period_id"]
    assert cli("export", "--period", period, "-o", str(exported), "--db", store_url).returncode == 0
    names = sorted(p.name for p in original.iterdir())
    for other in (shuffled, exported):
        assert sorted(p.name for p in other.iterdir()) == names
        match, mismatch, errors = filecmp.cmpfiles(original, other, names, shallow=False)
        assert mismatch == [] and errors == [], (other.name, mismatch)
    # Parquet too: text the store gives back as Arrow large_string was written as such (the values were equal).
    solved_pq, exported_pq = tmp_path / "solved_pq", tmp_path / "exported_pq"
    assert run(["solve", str(SMALL), "-o", str(solved_pq), "--format", "parquet", "-q"]) == 0
    assert cli("export", "--period", period, "-o", str(exported_pq), "--format", "parquet", "--db", store_url).returncode == 0
    names = sorted(p.name for p in solved_pq.iterdir())
    assert sorted(p.name for p in exported_pq.iterdir()) == names and "grants.parquet" in names
    match, mismatch, errors = filecmp.cmpfiles(solved_pq, exported_pq, names, shallow=False)
    assert mismatch == [] and errors == [], mismatch


def test_times_are_kept_to_the_microsecond_so_a_tie_there_goes_to_the_smaller_id():
    """Q1 and Q2 bid the same fee for a pool that fits one. Q2's time is 800 ns earlier, within the same microsecond:
    a store keeps microseconds, so both paths see a tie and serve the smaller request_id."""
    reqs = [request("Q1", 5.0, 10.0), request("Q2", 5.0, 10.0)]
    reqs[0]["submitted_at"] = "2026-09-01T00:00:00.000000900Z"
    reqs[1]["submitted_at"] = "2026-09-01T00:00:00.000000100Z"
    inst = make(fcs=[fc(capacity_cube=100.0, pool_cube=10.0)], requests=reqs)
    assert (inst.requests["submitted_at"].dt.nanosecond == 0).all()
    grants = clear_round(inst, 1, limits=None).grants["granted_cube"]
    assert grants.loc[(1, "Q1")] == 10.0 and grants.loc[(1, "Q2")] == 0.0


def test_the_store_names_the_file_row_of_a_shuffled_table(tmp_path, store_url):
    """Rows are kept in key order inside, but an ingest problem still names the user's own row."""
    from optalloc.io import load_arriving_tables
    from optalloc.store import Store

    store = Store(store_url)
    store.ingest(load_instance(SMALL))
    requests = pd.read_csv(SMALL / "requests.csv", dtype=str, keep_default_na=False).iloc[::-1].reset_index(drop=True)
    changed = requests.index[requests["request_id"] == requests["request_id"].min()][0]
    requests.loc[changed, "max_cube"] = "1.5"
    path = tmp_path / "requests.csv"
    requests.to_csv(path, index=False)
    instance = load_arriving_tables(store.instance(load_instance(SMALL).period.period_id), {"requests": path})
    try:
        store.ingest(instance, tables=["requests"])
    except Exception as e:  # InputError
        assert f"row {changed + 1}, field 'request_id'" in str(e) and "already in the store with other values" in str(e)
    else:
        raise AssertionError("a changed stored request was accepted")
