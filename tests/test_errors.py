"""One error path: faults a user can cause end in one line and the documented exit code, never a traceback."""

from __future__ import annotations

import os

import pytest

from conftest import INSTANCES, run_cli
from optalloc.cli import main


def optalloc(*args: str, env: dict | None = None):
    """The command, in this process."""
    return run_cli(*args, env=env)


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


@pytest.mark.parametrize("value", ["soon", "-1", "inf", "3e9", "0"])
def test_a_bad_dask_connect_timeout_is_exit_5_naming_it_before_any_work(tmp_path, value):
    """0 too: it made the client give up at once on a scheduler that was there."""
    db = f"sqlite:///{tmp_path / 'store.db'}"
    assert optalloc("ingest", str(INSTANCES / "small_network"), "--db", db, "-q").returncode == 0
    done = optalloc("batch", "--db", db, "--date", "2026-10-01", "--scheduler", "tcp://127.0.0.1:1", "-q",
                    env={"OPTALLOC_DASK_CONNECT_TIMEOUT": value})
    assert done.returncode == 5 and "Traceback" not in done.stderr
    assert "$OPTALLOC_DASK_CONNECT_TIMEOUT must be a number of seconds" in done.stderr
    from optalloc.store import Store

    assert list(Store(db).runs()["command"]) == ["ingest"]  # refused before the run began


@pytest.mark.parametrize("args", [["period", "hold", "P202610", "--reason", "\udcff"], ["period", "hold", "P\udcfe"],
                                  ["period", "release", "P\udcfe"], ["export", "--period", "P\udcff", "-o", "{out}"],
                                  ["ingest", "--period", "P\udcff", "--requests", "x.csv"]])
def test_command_line_text_that_is_not_utf8_is_exit_2_naming_it(tmp_path, args, real_process):
    """Bytes the locale cannot decode (a period id or hold reason typed in Latin-1, say) reach Python as lone
    surrogates; no store can keep them: exit 2 naming the argument (it was exit 5, a store error)."""
    db = f"sqlite:///{tmp_path / 'store.db'}"
    assert optalloc("ingest", str(INSTANCES / "small_network"), "--db", db, "-q").returncode == 0
    argv = [os.fsencode(a.format(out=tmp_path / "out")) for a in args]  # the raw bytes, as a shell passes them
    done = real_process.run(*argv, "--db", db, "-q", text=False)
    err = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 2 and "Traceback" not in err and "not UTF-8 text: b'" in err and "\\x" in err, err
    assert not (tmp_path / "out").exists()


def test_a_table_file_that_is_not_a_file_says_what_it_is(tmp_path):
    """A folder, a dangling symlink or a device given as --requests or --history was 'no such file'."""
    db = f"sqlite:///{tmp_path / 'store.db'}"
    assert optalloc("ingest", str(INSTANCES / "small_network"), "--db", db, "-q").returncode == 0
    (tmp_path / "dangling.csv").symlink_to(tmp_path / "nowhere.csv")
    cases = [(tmp_path, "is a folder, not a table file"), (tmp_path / "dangling.csv", "is a symlink to nothing that can be read"),
             ("/dev/null", "is not a regular file"), (tmp_path / "missing.csv", "no such file")]
    for path, message in cases:
        for flag in (["--period", "P202610", "--requests"], ["--history"]):
            done = optalloc("ingest", *flag, str(path), "--db", db, "-q")
            assert done.returncode == 2 and f"{path}: {message}" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_a_store_url_that_is_not_utf8_is_exit_2_naming_db(tmp_path, real_process):
    done = real_process.run("status", "--db", b"sqlite:///" + os.fsencode(tmp_path) + b"/s\xfd.db", "-q", text=False)
    err = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 2 and "--db: not UTF-8 text" in err and "Traceback" not in err, err  # it was exit 1
    assert list(tmp_path.iterdir()) == []


BAD_ARGS = [
    ["generate", "-o", "{out}", "--sellers", "-1"], ["generate", "-o", "{out}", "--requests", "-5"], ["generate", "-o", "{out}", "--months", "0"],
    ["generate", "-o", "{out}", "--rounds", "0"], ["generate", "-o", "{out}", "--tightness", "nan"], ["generate", "-o", "{out}", "--min-cube-share", "2"],
    ["generate", "-o", "{out}", "--sellers", "8", "--fcs", "2", "--requests", "10"],  # 3 regions, 2 FCs: a region with no FC
    ["simulate", "--sellers", "0"], ["simulate", "--forecast-error", "-1"], ["simulate", "--pool-share", "inf"], ["simulate", "--fcs", "2"],
    ["batch", "--lock-timeout", "nan"], ["batch", "--workers", "-1"],
]


@pytest.mark.parametrize("args", BAD_ARGS, ids=[" ".join(a[:1] + a[3:] if a[0] == "generate" else a) for a in BAD_ARGS])
def test_nonsense_arguments_are_exit_2_before_any_work(tmp_path, capsys, args):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main([a.format(out=out) for a in args] + ["-q"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err and ("argument --" in err or "--regions" in err)
    assert not out.exists()
