"""Helpers to write tiny instances inline: only the fields a test is about need spelling out."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from optalloc.instance import Instance

ROOT = Path(__file__).resolve().parent.parent
INSTANCES = ROOT / "instances"
EMPTY_LIMITS = pd.Series(dtype=float, index=pd.MultiIndex.from_tuples([], names=["seller_id", "storage_type", "month"]))


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
