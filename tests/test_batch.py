"""The nightly batch job on SQLite and PostgreSQL: it equals `optalloc solve`, re-running changes nothing, a killed
run loses nothing and grants nothing twice, two runs at once clear each round once, Dask equals serial."""

import filecmp
import time
from datetime import date, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import INSTANCES, examples, run_cli
from optalloc.batch import DaskExecutor, SerialExecutor, run_batch
from optalloc.cli import run
from optalloc.io import load_instance
from optalloc.store import Store
from optalloc.store import tables as T

SMALL = INSTANCES / "small_network"
PERIOD = "P202610"
CLOSES = [date(2026, 9, 9), date(2026, 9, 16), date(2026, 9, 23)]  # small_network's round calendar


def cli(*args: str, db: str, env: dict | None = None):
    """`optalloc ARGS --db DB -q`, in this process."""
    return run_cli(*args, "--db", db, "-q", env=env)


def contents(store: Store) -> dict[str, list]:
    """Every row of every table but runs, in key order: what a run may change."""
    out = {}
    with store.engine.connect() as conn:
        for t in T.metadata.sorted_tables:
            if t is not T.runs:
                rows = conn.execute(sa.select(t)).all()
                out[t.name] = sorted((tuple(map(str, r)) for r in rows))
    return out


def results(store: Store) -> dict[tuple[str, str], list]:
    """Every period's result tables as the engine returns them (without the store's run ids and times)."""
    return {
        (p, name): frame.reset_index().astype(str).values.tolist() for p in store.period_ids() for name, frame in store.results(p).items()
    }


def in_rounds(store: Store, name: str = "grants") -> pd.Series:
    with store.engine.connect() as conn:
        frame = pd.read_sql(sa.select(T.RESULT_TABLES[name]), conn)
    return frame.groupby("round").size()


@pytest.fixture(scope="module")
def solved(tmp_path_factory):
    out = tmp_path_factory.mktemp("solve") / "out"
    assert run(["solve", str(SMALL), "-o", str(out), "-q"]) == 0
    return out


def split_requests(tmp_path) -> dict[int, str]:
    """small_network's requests, one file per round, as they would arrive week by week."""
    requests = pd.read_csv(SMALL / "requests.csv", dtype=str)
    files = {}
    for r, part in requests.groupby("round"):
        files[int(r)] = str(tmp_path / f"requests_round{r}.csv")
        part.to_csv(files[int(r)], index=False)
    return files


def register_without_requests_or_sales(db: str, tmp_path) -> None:
    """Ingest small_network's period (calendar, FCs, sellers, needs) with no requests or sales yet."""
    import shutil

    folder = tmp_path / "period_only"
    shutil.copytree(SMALL, folder)
    (folder / "requests.csv").unlink()
    (folder / "sales.csv").unlink()
    assert cli("ingest", str(folder), db=db).returncode == 0


def test_the_whole_lifecycle_through_the_batch_job_equals_optalloc_solve(store_url, tmp_path, solved):
    """Requests arrive round by round, the job runs nightly, the sales report comes in: the stored results, exported,
    are byte-identical to `optalloc solve` on the same instance."""
    register_without_requests_or_sales(store_url, tmp_path)
    files = split_requests(tmp_path)
    for r, close in zip((1, 2, 3), CLOSES):
        assert cli("ingest", "--period", PERIOD, "--requests", files[r], db=store_url).returncode == 0
        assert cli("batch", "--date", str(close - timedelta(days=1)), "--workers", "0", db=store_url).returncode == 0  # not closed yet
        assert len(in_rounds(Store(store_url))) == r - 1
        done = cli("batch", "--date", str(close + timedelta(days=1)), "--workers", "0", db=store_url)
        assert done.returncode == 0, done.stderr
        assert list(in_rounds(Store(store_url)).index) == list(range(1, r + 1))
    assert pd.isna(Store(store_url).periods().loc[PERIOD, "settled_run_id"])  # no sales report yet: not settled
    assert cli("ingest", "--period", PERIOD, "--sales", str(SMALL / "sales.csv"), db=store_url).returncode == 0
    assert cli("batch", "--date", "2027-01-05", "--workers", "0", db=store_url).returncode == 0
    out = tmp_path / "exported"
    assert cli("export", "--period", PERIOD, "-o", str(out), db=store_url).returncode == 0
    names = sorted(p.name for p in solved.iterdir())
    assert sorted(p.name for p in out.iterdir()) == names
    match, mismatch, errors = filecmp.cmpfiles(solved, out, names, shallow=False)
    assert mismatch == [] and errors == []
    outcomes = Store(store_url).runs().query("command == 'batch'")["outcome"].tolist()
    assert outcomes == ["ok", "ok", "nothing_to_do", "ok", "nothing_to_do", "ok", "ok"]  # the first run makes the baseline


def test_re_running_the_same_night_changes_nothing(store_url):
    store = Store(store_url)
    store.ingest(load_instance(SMALL))
    first = run_batch(store, date(2026, 9, 17))
    assert first.outcome == "ok" and [s["step"] for s in first.steps] == [f"{PERIOD} baseline", f"{PERIOD} round 1", f"{PERIOD} round 2"]
    # Price protection so far, recomputed with each round: round 1's protected price is the lower of rounds 1 and 2.
    stored = store.round_prices_with_protection(PERIOD)
    from optalloc.settlement import protected_prices

    pd.testing.assert_series_equal(stored["protected_price"], protected_prices(stored), check_names=False)
    assert (stored.loc[1, "protected_price"] <= stored.loc[1, "clearing_price"]).all()
    assert (stored.loc[1, "protected_price"] < stored.loc[1, "clearing_price"]).any()  # a cheaper round 2 lowered round 1's fee
    before = contents(store)
    second = run_batch(store, date(2026, 9, 17))
    assert second.outcome == "nothing_to_do" and second.steps == []
    assert contents(store) == before
    runs = store.runs()
    assert runs.loc[second.run_id, "outcome"] == "nothing_to_do" and runs.loc[first.run_id, "inputs_hash"] is not None


def test_a_killed_run_shows_as_killed_at_once_and_any_writer_records_it(store_url, real_process):
    """A run SIGKILLed stays 'running' in the store until a writer holding the lock records it: status says 'killed'
    as soon as nobody holds the lock (it said 'running' until the next batch), and ingest or period hold record it
    (only the batch did)."""
    import json

    assert cli("ingest", str(SMALL), db=store_url).returncode == 0
    killed = real_process.run("batch", "--date", "2026-10-01", "--workers", "0", "--db", store_url, "-q",
                              env={"OPTALLOC_FAILPOINT": "round-1-claimed:kill"})
    assert killed.returncode == -9
    store = Store(store_url)
    assert store.runs()["outcome"].tolist() == ["ok", "running"]
    shown = cli("status", db=store_url)
    assert [r["outcome"] for r in json.loads(shown.stdout)["runs"]] == ["ok", "killed"]
    with store.lock():  # while a writer holds the lock, a run marked running may be alive: shown as stored
        assert [r["outcome"] for r in json.loads(cli("status", db=store_url).stdout)["runs"]] == ["ok", "running"]
    assert cli("period", "hold", PERIOD, db=store_url).returncode == 0
    assert store.runs()["outcome"].tolist() == ["ok", "killed", "ok"]


def test_status_never_shows_a_run_that_finishes_while_it_reads_as_killed(store_url, monkeypatch):
    """A run finishing between status's read of the runs and its look at the lock was shown killed (136 of 1,576
    tries in a probe): status now reads the runs while holding the lock, if it is free, and else shows them as stored."""
    import threading

    store = Store(store_url)
    store.ingest(load_instance(SMALL))
    holding, read, done = threading.Event(), threading.Event(), threading.Event()

    def a_run():  # holds the lock with its run marked running; finishes once status has read the runs
        writer = Store(store_url)
        with writer.lock():
            with writer.transaction() as conn:
                run_id = writer.start_run(conn, "batch")
            holding.set()
            read.wait(30)
            with writer.transaction() as conn:
                writer.finish_run(conn, run_id, "nothing_to_do")
        done.set()

    runs = Store._latest_runs  # how status reads the runs

    def runs_then_finish(self, last):
        frame = runs(self, last)
        read.set()
        done.wait(30)  # the run has finished and let the lock go
        return frame

    thread = threading.Thread(target=a_run)
    thread.start()
    assert holding.wait(30)
    monkeypatch.setattr(Store, "_latest_runs", runs_then_finish)
    shown = Store(store_url, create=False).status()["runs"]
    thread.join()
    assert [r["outcome"] for r in shown] == ["ok", "running"]


KILL_POINTS = ["baseline-written", "round-1-claimed", "round-2-written", "round-2-committed", "settlement-written"]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_killed_run_loses_nothing_and_grants_nothing_twice(store_url, tmp_path, solved, point, real_process):
    """SIGKILL inside a transaction (or between two): what committed stays, the rest is as if never begun; the next
    run marks the dead one killed, does the rest, and the result is the uninterrupted one."""
    assert cli("ingest", str(SMALL), db=store_url).returncode == 0
    store = Store(store_url)
    killed = real_process.run("batch", "--date", "2026-10-01", "--workers", "0", "--db", store_url, "-q",
                              env={"OPTALLOC_FAILPOINT": f"{point}:kill"})
    assert killed.returncode == -9
    cleared = list(in_rounds(store).index) if len(in_rounds(store)) else []
    expected = {"baseline-written": [], "round-1-claimed": [], "round-2-written": [1], "round-2-committed": [1, 2], "settlement-written": [1, 2, 3]}
    assert cleared == expected[point]
    rounds = store.rounds().loc[PERIOD]
    assert rounds["cleared_run_id"].notna().tolist() == [r in cleared for r in (1, 2, 3)]  # the claim rolled back with its rows
    assert pd.isna(store.periods().loc[PERIOD, "settled_run_id"])

    again = cli("batch", "--date", "2026-10-01", "--workers", "0", db=store_url)
    assert again.returncode == 0, again.stderr
    runs = store.runs()
    assert runs["outcome"].tolist() == ["ok", "killed", "ok"]
    requests = pd.read_csv(SMALL / "requests.csv")
    assert in_rounds(store).to_dict() == requests.groupby("round").size().to_dict()  # every request audited once
    out = tmp_path / "exported"
    assert cli("export", "--period", PERIOD, "-o", str(out), db=store_url).returncode == 0
    for name in ("grants.csv", "round_prices.csv", "settlement.csv", "summary.json"):
        assert (out / name).read_text() == (solved / name).read_text(), name


def test_a_write_that_fails_on_the_writer_thread_stops_the_writes_after_it_and_fails_the_run(store_url, monkeypatch):
    """The batch hands each result's transaction to its writer thread and solves on meanwhile. Round 1's write fails
    after a second, by when round 2 (milliseconds) is solved and waiting to be handed over: no later write is tried,
    the run raises that error and is recorded failed; the baseline, written before, stays. The next run does the
    rest."""
    import threading

    from optalloc.errors import StoreError

    store = Store(store_url)
    store.ingest(load_instance(SMALL))
    tried, commit_round = [], Store.commit_round

    def failing(self, period_id, result, run_id):
        tried.append(result.round)
        if result.round == 1:
            time.sleep(1.0)
            raise StoreError("the disk is full (injected)")
        commit_round(self, period_id, result, run_id)

    monkeypatch.setattr(Store, "commit_round", failing)
    with pytest.raises(StoreError, match="the disk is full"):
        run_batch(store, date(2026, 10, 1))
    assert tried == [1]
    assert not any(t.name.startswith("optalloc-") for t in threading.enumerate())  # the writer and hasher threads ended
    assert store.rounds()["cleared_run_id"].isna().all() and pd.notna(store.periods().loc[PERIOD, "baseline_run_id"])
    assert in_rounds(store).empty
    run_row = store.runs().iloc[-1]
    assert run_row["outcome"] == "failed" and "the disk is full" in run_row["error"]
    assert run_row["inputs_hash"] is not None  # made beside the solves, done long before the failure
    monkeypatch.undo()
    again = run_batch(store, date(2026, 10, 1))
    assert again.outcome == "ok" and store.rounds()["cleared_run_id"].eq(again.run_id).all()


def test_the_batch_and_run_period_compute_on_one_blas_thread_and_give_the_callers_setting_back(monkeypatch):
    """numpy's BLAS runs on one thread inside `run_batch` and `run_period` (its idle threads spun on the core the
    batch's writer needs, and a threaded dot product sums in a core-count-dependent order); the caller's setting is
    back afterwards. Seen from the baseline's solve, with the caller at 2 threads."""
    from threadpoolctl import threadpool_info, threadpool_limits

    import optalloc.scenario
    from optalloc.period import run_period

    def blas_threads() -> list[int]:
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    if not blas_threads():
        pytest.skip("numpy has no BLAS that threadpoolctl can limit")
    seen = []
    real = optalloc.scenario.allocate  # both take the one path: Scenario.allocate
    monkeypatch.setattr(optalloc.scenario, "allocate", lambda *a, **k: (seen.append(blas_threads()), real(*a, **k))[1])
    with threadpool_limits(limits=2, user_api="blas"):
        store = Store("sqlite://")
        store.ingest(load_instance(SMALL))
        assert run_batch(store, date(2026, 10, 1)).outcome == "ok"
        run_period(load_instance(SMALL))
        assert all(n == 2 for n in blas_threads())
    assert len(seen) == 2 and all(n == 1 for threads in seen for n in threads)


def test_ctrl_c_after_a_round_is_committed_says_that_it_stays(store_url, real_process):
    """Ctrl-C in the middle of a run: exit 130, the run recorded failed, round 1 (committed before) kept, and the
    message says so (it said "nothing was written")."""
    import signal

    assert cli("ingest", str(SMALL), db=store_url).returncode == 0
    batch = real_process.popen("batch", "--db", store_url, "--date", "2026-10-01", "--workers", "0", "-q",
                               env={"OPTALLOC_FAILPOINT": "round-1-committed:sleep=4"}, text=True)
    store = Store(store_url)
    deadline = time.monotonic() + 120
    while store.rounds()["cleared_run_id"].notna().sum() < 1:
        assert time.monotonic() < deadline and batch.poll() is None
        time.sleep(0.05)
    batch.send_signal(signal.SIGINT)
    _, err = batch.communicate(timeout=120)
    assert batch.returncode == 130 and "Traceback" not in err, err
    assert "optalloc: interrupted; the steps committed before it stay ('optalloc status')" in err
    run = store.runs().iloc[-1]
    assert run["outcome"] == "failed" and run["error"].startswith("KeyboardInterrupt")
    cleared = store.rounds()["cleared_run_id"]
    assert cleared.notna().tolist() == [True, False, False]


def test_a_run_whose_periods_cannot_be_read_is_recorded_failed_not_left_running(store_url, monkeypatch):
    """The run's first reads (periods, rounds, holds) fail: the run is recorded failed with the error, and no thread
    of it was started (it was left "running", then marked "killed" by the next run)."""
    import threading

    from optalloc.errors import StoreError

    store = Store(store_url)
    store.ingest(load_instance(SMALL))

    def lost(self):
        raise StoreError("lost the connection to store (a test)")

    monkeypatch.setattr(Store, "held_periods", lost)
    threads = threading.active_count()
    with pytest.raises(StoreError, match="a test"):
        run_batch(store, date(2026, 10, 1))
    assert threading.active_count() == threads
    run = store.runs().iloc[-1]
    assert run["command"] == "batch" and run["outcome"] == "failed" and "a test" in run["error"]


def test_two_runs_at_once_clear_each_round_once(store_url, real_process):
    """Run A holds the lock (stalled inside round 1's transaction); run B, started meanwhile, waits for it, then finds
    nothing to do. A third run with a short --lock-timeout gives up with exit 5 and writes nothing."""
    assert cli("ingest", str(SMALL), db=store_url).returncode == 0
    base = ["batch", "--db", store_url, "--date", "2026-10-01", "--workers", "0", "-q"]
    a = real_process.popen(*base, env={"OPTALLOC_FAILPOINT": "round-1-claimed:sleep=10"})
    store = Store(store_url)
    deadline = time.monotonic() + 60
    while not (store.runs()["command"] == "batch").any():  # A has the lock once its run is recorded
        assert time.monotonic() < deadline and a.poll() is None
        time.sleep(0.1)
    impatient = cli("batch", "--date", "2026-10-01", "--workers", "0", "--lock-timeout", "0.5", db=store_url)
    assert impatient.returncode == 5 and "another optalloc run holds the lock" in impatient.stderr
    b = real_process.popen(*base)
    time.sleep(1.0)
    assert a.poll() is None  # B is under way while A still holds the lock
    assert a.wait(timeout=300) == 0 and b.wait(timeout=300) == 0
    runs = store.runs().query("command == 'batch'")
    assert runs["outcome"].tolist() == ["ok", "nothing_to_do"]
    assert runs["started_at"].iloc[1] >= runs["finished_at"].iloc[0]  # B started its work only after A finished
    requests = pd.read_csv(SMALL / "requests.csv")
    assert in_rounds(store).to_dict() == requests.groupby("round").size().to_dict()
    assert store.rounds()["cleared_run_id"].tolist() == [runs.index[0]] * 3


def test_a_failing_run_is_recorded_and_commits_nothing_of_what_failed(store_url, tmp_path):
    import json
    import shutil

    folder = tmp_path / "inst"
    shutil.copytree(SMALL, folder)
    sellers = pd.read_csv(folder / "sellers.csv", dtype=str)
    sellers["floor_cube"] = "1000000"  # floors far above capacity: the baseline is infeasible
    sellers.to_csv(folder / "sellers.csv", index=False)
    assert cli("ingest", str(folder), db=store_url).returncode == 0
    done = cli("batch", "--date", "2026-10-01", "--workers", "0", db=store_url)
    assert done.returncode == 3 and "infeasible" in done.stderr.lower()
    store = Store(store_url)
    run_row = store.runs().iloc[-1]
    assert run_row["outcome"] == "failed" and "infeasible" in run_row["error"].lower() and json.loads(run_row["steps"]) == []
    assert pd.isna(store.periods().loc[PERIOD, "baseline_run_id"]) and len(in_rounds(store)) == 0


def test_dask_gives_the_serial_answer_across_periods_and_storage_types(tmp_path, dask_cluster):
    """Two periods (the worked example and small_network, two storage types) cleared in the same waves: a Dask
    cluster of two worker processes leaves exactly what the in-process run leaves."""
    stores = {}
    for name, executor in [("serial", SerialExecutor()), ("dask", DaskExecutor(scheduler=dask_cluster))]:
        store = Store(f"sqlite:///{tmp_path / name}.db")
        store.ingest(load_instance(INSTANCES / "worked_example.json"))
        store.ingest(load_instance(SMALL))
        try:
            report = run_batch(store, date(2026, 10, 1), executor=executor)
        finally:
            executor.close()
        assert report.outcome == "ok"
        assert [s["step"] for s in report.steps if "round 1" in s["step"]] == ["2026Q4 round 1", f"{PERIOD} round 1"]
        stores[name] = store
    assert results(stores["dask"]) == results(stores["serial"])
    assert f"dask scheduler {dask_cluster}" in stores["dask"].runs()["options"].iloc[-1]


KILLING_PRELOAD = """
import os
import optalloc.baseline
import optalloc.clearing.solve

def _die(*args, **kwargs):
    os._exit(9)  # the worker process dies inside the task, as when the kernel's OOM killer takes it

if os.environ["KILL_IN"] == "baseline":
    optalloc.baseline.solve_market = _die
else:
    optalloc.clearing.solve.clear_market = _die
"""


@pytest.mark.parametrize("where", ["baseline", "round"])
def test_a_dask_worker_lost_mid_task_stops_the_run_with_exit_5_and_blames_no_period(tmp_path, where, real_process, own_dask_cluster):
    """A worker process that dies inside a market's task (its scattered market goes with it) is the cluster's
    failure, in the baseline as in a round: exit 5, the run recorded failed, no period failure recorded against the
    period (which would hold it back as if its data were bad), and what was committed before stays. It was exit 1
    either way: a period failure in the baseline, an 'internal error' in a round."""
    preload = tmp_path / "kill_worker.py"
    preload.write_text(KILLING_PRELOAD)
    db = f"sqlite:///{tmp_path / 'store.db'}"
    assert cli("ingest", str(SMALL), db=db).returncode == 0
    env = {"KILL_IN": where, "DASK_DISTRIBUTED__WORKER__PRELOAD": f'["{preload}"]'}
    done = real_process.run("batch", "--date", "2026-10-01", "--workers", "1", "--db", db, "-q", env=env)
    assert done.returncode == 5 and "Dask cluster failed" in done.stderr and "internal error" not in done.stderr, done.stderr
    store = Store(db)
    assert store.runs()["outcome"].iloc[-1] == "failed"
    assert store.current_failures() == {}
    baseline_done = not pd.isna(store.periods().loc[PERIOD, "baseline_run_id"])
    assert baseline_done == (where == "round") and len(in_rounds(store)) == 0


def test_the_batch_solves_in_its_own_process_unless_given_workers(tmp_path):
    """Like every command, `batch` runs in-process by default (a LocalCluster's start-up is more than the shipped
    instance's whole run); `--workers N` asks for a cluster, which starts only when there is work (here none)."""
    import json

    db = f"sqlite:///{tmp_path / 'a.db'}"
    assert cli("ingest", str(SMALL), db=db).returncode == 0
    assert cli("batch", "--date", "2026-10-01", db=db).returncode == 0
    assert cli("batch", "--date", "2026-10-01", "--workers", "3", db=db).returncode == 0
    runs = Store(db).runs()
    assert [json.loads(o)["executor"] for o in runs["options"].iloc[-2:]] == ["serial", "dask LocalCluster, 3 workers"]
    assert list(runs["outcome"].iloc[-2:]) == ["ok", "nothing_to_do"]


@settings(max_examples=examples(6), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(nights=st.lists(st.integers(min_value=0, max_value=30), min_size=1, max_size=4))
def test_whatever_nights_it_runs_on_the_store_ends_the_same(tmp_path_factory, nights):
    """Runs on any nights (in any order, repeated or not), then one after every close: the same results as a single run."""
    tmp = tmp_path_factory.mktemp("nights")
    once = Store(f"sqlite:///{tmp / 'once.db'}")
    once.ingest(load_instance(SMALL))
    run_batch(once, date(2026, 10, 1))
    many = Store(f"sqlite:///{tmp / 'many.db'}")
    many.ingest(load_instance(SMALL))
    for n in nights:
        run_batch(many, date(2026, 9, 1) + timedelta(days=n))
        cleared = many.rounds().loc[PERIOD]["cleared_run_id"].notna().tolist()
        assert cleared == sorted(cleared, reverse=True)  # rounds clear in order, never with a gap
    run_batch(many, date(2026, 10, 1))
    assert results(many) == results(once)


def test_a_run_records_the_hash_of_its_inputs(tmp_path):
    import hashlib
    from dataclasses import replace

    from optalloc.batch import inputs_hash

    inst = load_instance(SMALL)
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    store.ingest(inst)
    assert inputs_hash(store.instance(PERIOD)) == inputs_hash(inst)  # files and store: the same inputs, the same hash
    report = run_batch(store, date(2026, 9, 12))
    assert store.runs().loc[report.run_id, "inputs_hash"] == hashlib.sha256(f"{PERIOD}:{inputs_hash(inst)};".encode()).hexdigest()
    cheaper = replace(inst, requests=inst.requests.assign(max_fee_per_cube=inst.requests["max_fee_per_cube"] - 0.01))
    assert inputs_hash(cheaper) != inputs_hash(inst)


# ---------------------------------------------------------------- fault isolation, hold and release


def infeasible_copy(tmp_path, period_id: str = "P202609"):
    """small_network under another period id, with sellers' floors far above capacity: its baseline is infeasible."""
    import json
    import shutil

    folder = tmp_path / period_id
    shutil.copytree(SMALL, folder)
    meta = json.loads((folder / "instance.json").read_text())
    meta["period"]["period_id"] = period_id
    (folder / "instance.json").write_text(json.dumps(meta))
    sellers = pd.read_csv(folder / "sellers.csv", dtype=str)
    sellers["floor_cube"] = "1000000"
    sellers.to_csv(folder / "sellers.csv", index=False)
    return folder


def status(db: str) -> dict:
    import json

    done = cli("status", db=db)
    assert done.returncode == 0, done.stderr
    return {p["period_id"]: p for p in json.loads(done.stdout)["periods"]}


def test_one_infeasible_period_does_not_block_the_others(store_url, tmp_path):
    import json

    assert cli("ingest", str(infeasible_copy(tmp_path)), db=store_url).returncode == 0
    assert cli("ingest", str(SMALL), db=store_url).returncode == 0
    done = cli("batch", "--date", "2026-10-01", "--workers", "0", db=store_url)
    assert done.returncode == 3 and "Traceback" not in done.stderr
    assert "period P202609 failed at baseline: " in done.stderr and "infeasible" in done.stderr.lower()
    report = json.loads(done.stdout)
    assert report["outcome"] == "failed" and [(f["period_id"], f["step"], f["exit_code"]) for f in report["failures"]] == [("P202609", "baseline", 3)]
    assert [s["step"] for s in report["steps"]] == [f"{PERIOD} baseline", f"{PERIOD} round 1", f"{PERIOD} round 2", f"{PERIOD} round 3",
                                                     f"{PERIOD} settlement"]
    store = Store(store_url)
    run_row = store.runs().iloc[-1]
    assert run_row["outcome"] == "failed" and run_row["error"].startswith("P202609 baseline: ")
    periods = status(store_url)
    assert periods["P202609"]["failure"]["step"] == "baseline" and periods["P202609"]["failure"]["run_id"] == report["run_id"]
    # Run ids are whole numbers, also in a column where another period has none (pandas made them 2.0).
    assert periods["P202609"]["baseline_run_id"] is None and type(periods[PERIOD]["baseline_run_id"]) is int
    assert "infeasible" in periods["P202609"]["failure"]["error"].lower() and periods[PERIOD]["failure"] is None
    assert pd.isna(store.periods().loc["P202609", "baseline_run_id"])
    # The next night it fails again (still recorded, still exit 3) and blocks nothing; held, it is skipped.
    again = cli("batch", "--date", "2026-10-02", "--workers", "0", db=store_url)
    assert again.returncode == 3 and json.loads(again.stdout)["steps"] == []
    assert cli("period", "hold", "P202609", "--reason", "floors above capacity", db=store_url).returncode == 0
    held = cli("batch", "--date", "2026-10-03", "--workers", "0", db=store_url)
    assert held.returncode == 0, held.stderr
    report = json.loads(held.stdout)
    assert report["outcome"] == "nothing_to_do" and report["skipped"][0]["period_id"] == "P202609"
    assert report["skipped"][0]["reason"] == "held" and report["skipped"][0]["hold_reason"] == "floors above capacity"


def test_a_failed_round_is_recorded_with_its_period_and_step(store_url, tmp_path):
    """A solver stopped at its limit in one period's round (exit 4) while the other period clears all its rounds."""
    import json
    import shutil

    other = tmp_path / "P202611"
    shutil.copytree(SMALL, other)
    meta = json.loads((other / "instance.json").read_text())
    meta["period"]["period_id"] = "P202611"
    (other / "instance.json").write_text(json.dumps(meta))
    assert cli("ingest", str(SMALL), db=store_url).returncode == 0
    assert cli("ingest", str(other), db=store_url).returncode == 0
    store = Store(store_url)
    run_batch(store, date(2026, 9, 1))  # both baselines, no round due yet
    from optalloc import batch as B

    real = B.clear_market

    def stalls(market, r, *args):
        if market.period.period_id == PERIOD and r == 2:
            from optalloc.errors import SolveError

            raise SolveError("time limit reached", "time_limit")
        return real(market, r, *args)

    B.clear_market = stalls
    try:
        report = run_batch(store, date(2026, 10, 1))
    finally:
        B.clear_market = real
    assert report.outcome == "failed" and report.exit_code == 4
    assert [(f["period_id"], f["step"]) for f in report.failures] == [(PERIOD, "round 2")]
    assert store.rounds().loc[PERIOD]["cleared_run_id"].notna().tolist() == [True, False, False]
    assert store.rounds().loc["P202611"]["cleared_run_id"].notna().tolist() == [True, True, True]
    assert store.current_failures()[PERIOD]["step"] == "round 2"
    fixed = run_batch(store, date(2026, 10, 1))  # the next run (the limit raised, say) does the rest
    assert fixed.outcome == "ok" and PERIOD not in store.current_failures()


def test_held_period_is_skipped_and_released(store_url):
    import json

    assert cli("ingest", str(SMALL), db=store_url).returncode == 0
    unknown = cli("period", "hold", "NOPE", db=store_url)
    assert unknown.returncode == 2 and "no period 'NOPE'" in unknown.stderr and "Traceback" not in unknown.stderr
    held = cli("period", "hold", PERIOD, "--reason", "sales report disputed", db=store_url)
    assert held.returncode == 0, held.stderr
    shown = status(store_url)[PERIOD]["held"]
    assert shown["reason"] == "sales report disputed" and shown["since"].endswith("+00:00")
    # In UTC whatever the session's time zone (PostgreSQL returns times in it; the report read them as they came).
    done = cli("batch", "--date", "2026-10-01", "--workers", "0", db=store_url, env={"PGTZ": "America/New_York", "TZ": "Asia/Tokyo"})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["outcome"] == "nothing_to_do" and report["steps"] == [] and report["skipped"][0]["reason"] == "held"
    assert report["skipped"][0]["held_since"] == shown["since"]
    store = Store(store_url)
    assert pd.isna(store.periods().loc[PERIOD, "baseline_run_id"]) and len(in_rounds(store)) == 0
    assert cli("period", "release", PERIOD, db=store_url).returncode == 0
    assert status(store_url)[PERIOD]["held"] is None
    done = cli("batch", "--date", "2026-10-01", "--workers", "0", db=store_url)
    assert done.returncode == 0 and json.loads(done.stdout)["outcome"] == "ok"
    assert store.runs()["command"].tolist() == ["ingest", "hold", "batch", "release", "batch"]


def test_a_period_whose_data_no_longer_loads_fails_alone(store_url, tmp_path):
    """A stored period that no longer validates (as after a stricter release): step 'load', exit 2, the others go on."""
    import json
    import shutil

    from optalloc.errors import InputError, Problem

    other = tmp_path / "P202611"
    shutil.copytree(SMALL, other)
    meta = json.loads((other / "instance.json").read_text())
    meta["period"]["period_id"] = "P202611"
    (other / "instance.json").write_text(json.dumps(meta))
    store = Store(store_url)
    store.ingest(load_instance(SMALL))
    store.ingest(load_instance(other))
    real = store.instance

    def instance(period_id):
        if period_id == "P202611":
            raise InputError(Problem("no longer valid", "sellers", 3, "productivity"))
        return real(period_id)

    store.instance = instance
    report = run_batch(store, date(2026, 10, 1))
    assert report.outcome == "failed" and report.exit_code == 2
    assert [(f["period_id"], f["step"]) for f in report.failures] == [("P202611", "load")]
    assert "\n" not in report.failures[0]["error"] and "no longer valid" in report.failures[0]["error"]
    assert store.rounds().loc[PERIOD]["cleared_run_id"].notna().all() and pd.notna(store.periods().loc[PERIOD, "settled_run_id"])
