"""One error path: faults a user can cause end in one line and the documented exit code, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import INSTANCES


def optalloc(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "optalloc.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_an_unreachable_dask_scheduler_is_exit_5_and_the_run_is_recorded_failed(tmp_path):
    db = f"sqlite:///{tmp_path / 'store.db'}"
    assert optalloc("ingest", str(INSTANCES / "small_network"), "--db", db, "-q").returncode == 0
    done = optalloc("batch", "--db", db, "--date", "2026-10-01", "--scheduler", "tcp://127.0.0.1:1", "-q",
                    env={"OPTALLOC_DASK_CONNECT_TIMEOUT": "2"})
    assert done.returncode == 5 and "Traceback" not in done.stderr
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:1" in done.stderr
    from optalloc.store import Store

    runs = Store(db).runs()
    assert runs["outcome"].iloc[-1] == "failed" and "Dask scheduler" in runs["error"].iloc[-1]
