"""Shared test helpers: tiny instances written inline (only the fields a test is about need spelling out), the
command run in this process or in a real one, the databases and the browser, and the test tiers.

Tiers: every test carries the markers of what it needs, set here from the fixtures it uses (never by hand):
`postgres` (a PostgreSQL server), `process` (a real `optalloc` process: kills, signals, locks held by another
process), `dask` (a Dask cluster), `browser` (headless Chromium), and `slow` (measured at 4 s or more in the last
`--record-durations` run, tests/durations.json). `--fast` runs the inner loop: none of postgres, browser, dask or
slow, with the `dev` hypothesis profile (a quarter of the examples). Hypothesis tests say their example count as
`examples(n)`: n under the `ci` profile (the default), n/4 under `dev`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from optalloc.instance import Instance

ROOT = Path(__file__).resolve().parent.parent
INSTANCES = ROOT / "instances"
EMPTY_LIMITS = None  # clear_round without a baseline: each request's cap is request_cap_cube


def fc(fc_id="F1", region="east", storage_type="standard", month="2026-10", capacity_cube=1000.0, pool_cube=None):
    row = dict(fc_id=fc_id, region=region, storage_type=storage_type, month=month, capacity_cube=capacity_cube)
    if pool_cube is not None:
        row["pool_cube"] = pool_cube
    return row


def seller(seller_id="S1", performance_score=500.0, productivity=10.0, regions="east", floor_cube=0.0):
    return dict(seller_id=seller_id, performance_score=performance_score, productivity=productivity, regions=regions, floor_cube=floor_cube)


def need(seller_id="S1", storage_type="standard", month="2026-10", p50_cube=100.0, **kw):
    return dict(seller_id=seller_id, storage_type=storage_type, month=month, p50_cube=p50_cube, **kw)


def request(request_id, fee, max_cube, seller_id="S1", round=1, minute=0, months="2026-10", min_cube=0.0, storage_type="standard"):
    return dict(
        request_id=request_id,
        seller_id=seller_id,
        storage_type=storage_type,
        months=months,
        max_fee_per_cube=fee,
        max_cube=max_cube,
        min_cube=min_cube,
        round=round,
        submitted_at=f"2026-09-01T00:{minute // 60:02d}:{minute % 60:02d}Z",
    )


def make(fcs=None, sellers=None, needs=None, requests=None, months=("2026-10",), rounds=(1,), settings=None, **tables) -> Instance:
    fcs = fcs if fcs is not None else [fc()]
    sellers = sellers if sellers is not None else [seller()]
    needs = needs if needs is not None else [need(s["seller_id"], month=m) for s in sellers for m in months]
    t = {"fcs": fcs, "sellers": sellers, "needs": needs, **tables}
    if requests is not None:
        t["requests"] = requests
    return Instance.from_tables(
        period={"period_id": "P", "months": list(months), "rounds": list(rounds)},
        tables=t,
        settings={"request_cap_cube": 1e9, **(settings or {})},
    )


@pytest.fixture
def worked_example() -> Instance:
    from optalloc.io import load_instance

    return load_instance(INSTANCES / "worked_example.json")


# ---------------------------------------------------------------- stores: SQLite and PostgreSQL


@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL server URL for the whole session (see tests/pgserver.py). Without one the PostgreSQL cases skip,
    except in CI ($CI set), where a missing server is a failure: the store must be tested on both databases."""
    import os

    from pgserver import ENV, find_bindir, throwaway_server

    if os.environ.get(ENV):
        yield os.environ[ENV]
        return
    bindir = find_bindir()
    if bindir is None:
        message = "no PostgreSQL: install Debian's postgresql package (as .ci/run does) or set " + ENV
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with throwaway_server(bindir) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """An empty store, once on an SQLite file and once on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    from pgserver import fresh_database

    with fresh_database(request.getfixturevalue("pg_server")) as url:
        yield url


@pytest.fixture(scope="session")
def chromium():
    """Debian's headless Chromium (.ci/run installs it), to check pages as a reader's browser shows them."""
    import os
    import shutil

    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "no Chromium: install Debian's chromium package (as .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def headless(chromium: str, *args: str, timeout: float = 120) -> str:
    """Run headless Chromium with the flags this closed network needs; return what it prints on stdout."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as profile:
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}"]
        done = subprocess.run([chromium, *flags, *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def raised(inst, seller_id: str, score_up: float, need_up: float):
    """`inst` with one seller's performance score raised by `score_up` (at most 1000) and its P50/P90 needs by the
    share `need_up`: the two tests of the baseline's monotonicity in score and forecast."""
    from dataclasses import replace

    import numpy as np

    sellers = inst.sellers.copy()
    mask = sellers["seller_id"] == seller_id
    sellers.loc[mask, "performance_score"] = np.minimum(1000.0, sellers.loc[mask, "performance_score"] + score_up)
    needs = inst.needs.copy()
    mine = needs["seller_id"] == seller_id
    needs.loc[mine, ["p50_cube", "p90_cube"]] = np.round(needs.loc[mine, ["p50_cube", "p90_cube"]] * (1 + need_up), 3)
    return replace(inst, sellers=sellers, needs=needs)


# ---------------------------------------------------------------- the command, in this process or a real one


@dataclass
class Done:
    """What one run of the command left, as `subprocess.CompletedProcess` has it."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args, env: dict | None = None, cwd: str | os.PathLike | None = None) -> Done:
    """`optalloc ARGS` in this process, as the installed command runs it: `main()`, its exit code and what it printed
    on stdout and stderr. `env`: variables set over the environment for the run; `cwd`: the folder it runs in. For
    everything a real process is not needed for (kills, signals, another process holding a lock, `python -m`)."""
    from optalloc.cli import main

    argv = [os.fsdecode(a) if isinstance(a, bytes) else str(a) for a in args]
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    try:
        os.environ.update(env or {})
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(argv)
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return Done(argv, code, out.getvalue(), err.getvalue())


def _default_sigint() -> None:
    """In a child: SIGINT back to its default. A test run started in the background (`nohup ... &`) ignores SIGINT,
    and a child would inherit that: the Ctrl-C tests would then wait for a signal that is never taken."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Processes:
    """Real `optalloc` processes (`python -m optalloc.cli ...`), each with SIGINT at its default."""

    command = [sys.executable, "-m", "optalloc.cli"]

    def run(self, *args, env: dict | None = None, umask: int | None = None, timeout: float = 300, text: bool = True,
            argv: list | None = None, **kw) -> subprocess.CompletedProcess:
        """The command with ARGS, to its end (`argv`: this whole command line instead, e.g. `python -m optalloc` or a
        bash script); `env` over the environment, unless it holds all of it (`env=dict(...)` with PATH)."""
        def start() -> None:
            _default_sigint()
            if umask is not None:
                os.umask(umask)

        environ = env if env is not None and "PATH" in env else {**os.environ, **(env or {})}
        return subprocess.run(argv or [*self.command, *args], capture_output=True, text=text, env=environ, preexec_fn=start,
                              timeout=timeout, **kw)

    def popen(self, *args, env: dict | None = None, python: bool = False, **kw) -> subprocess.Popen:
        """A process left running (`python=True`: `python ARGS`, e.g. `-c SCRIPT`, instead of the command)."""
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        cmd = [sys.executable, *args] if python else [*self.command, *args]
        environ = env if env is not None and "PATH" in env else {**os.environ, **(env or {})}
        return subprocess.Popen(cmd, env=environ, preexec_fn=_default_sigint, **kw)


@pytest.fixture
def real_process() -> Processes:
    """Real processes of the command (the test is marked `process`)."""
    return Processes()


# ---------------------------------------------------------------- tiers: markers from fixtures, hypothesis profiles

MARKERS = {
    "postgres": "needs a PostgreSQL server (tests/pgserver.py starts one)",
    "process": "starts real optalloc processes (kills, signals, locks held by another process)",
    "dask": "starts a Dask cluster",
    "browser": "opens pages in headless Chromium",
    "slow": "took 4 s or more in the last --record-durations run (tests/durations.json)",
}
FIXTURE_MARKERS = {"pg_server": "postgres", "real_process": "process", "dask_cluster": "dask", "own_dask_cluster": "dask",
                   "chromium": "browser"}
DURATIONS = Path(__file__).parent / "durations.json"
SLOW_SECONDS = 4.0
PROFILES = {"ci": 1.0, "dev": 0.25}  # hypothesis profile -> share of each test's examples
_profile = {"name": "ci"}


def examples(n: int) -> int:
    """A property test's example count: n under the `ci` profile, a quarter of it (at least 3) under `dev`."""
    return max(3, round(n * PROFILES[_profile["name"]])) if n >= 3 else n


for _name in PROFILES:
    hypothesis_settings.register_profile(_name, deadline=None)


def pytest_addoption(parser):
    parser.addoption("--fast", action="store_true", help="the inner loop: no postgres, browser, dask or slow tests; hypothesis profile dev")
    parser.addoption("--record-durations", action="store_true", help=f"write each test's duration to {DURATIONS.name} (marks slow tests)")


def pytest_configure(config):
    for name, meaning in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {meaning}")
    profile = os.environ.get("OPTALLOC_TEST_PROFILE") or ("dev" if config.getoption("--fast") else "ci")
    if profile not in PROFILES:
        raise pytest.UsageError(f"OPTALLOC_TEST_PROFILE must be one of {', '.join(PROFILES)}, not {profile!r}")
    _profile["name"] = profile
    hypothesis_settings.load_profile(profile)
    if config.getoption("--fast") and not config.option.markexpr:
        config.option.markexpr = " and ".join(f"not {m}" for m in ("postgres", "browser", "dask", "slow"))


def pytest_collection_modifyitems(config, items):
    slow = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        params = getattr(getattr(item, "callspec", None), "params", {})
        marks = {m for f, m in FIXTURE_MARKERS.items() if f in names}
        if params.get("store_url") == "postgresql":  # the fixture's PostgreSQL half (it asks for pg_server when it runs)
            marks.add("postgres")
        if slow.get(item.nodeid, 0.0) >= SLOW_SECONDS:
            marks.add("slow")
        for m in sorted(marks):
            item.add_marker(getattr(pytest.mark, m))


_durations: dict[str, float] = {}


def pytest_runtest_logreport(report):
    if report.when in ("setup", "call", "teardown"):
        _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session):
    if session.config.getoption("--record-durations") and not hasattr(session.config, "workerinput"):  # the controller, with every report
        DURATIONS.write_text(json.dumps({k: round(v, 2) for k, v in sorted(_durations.items())}, indent=0) + "\n")


@pytest.fixture(scope="session")
def dask_cluster():
    """A Dask LocalCluster of two worker processes, shared by the session: its scheduler's address."""
    import logging

    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR) as cluster:
        yield cluster.scheduler_address


@pytest.fixture
def own_dask_cluster():
    """For a test whose command starts a Dask LocalCluster of its own (`--workers N`): marks it `dask`."""
    return None
