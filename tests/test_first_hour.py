"""A planner's first hour: the README's commands run as written, on a fresh checkout's files."""

import filecmp
import os
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

from conftest import INSTANCES, run_cli
from optalloc.cli import run

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
NIGHTLY = (ROOT / "docs" / "nightly.md").read_text(encoding="utf-8")
OUTPUTS = (ROOT / "docs" / "outputs.md").read_text(encoding="utf-8")


def fenced_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def commands(block: str) -> list[str]:
    """The block's commands, comments and continuation-only comment lines dropped."""
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_ci_runs_exactly_the_readme_test_command():
    two = fenced_blocks(README.split("## Two commands", 1)[1])[0]
    solve_cmd, test_cmd = commands(two)
    assert solve_cmd.startswith("python3 -m venv .venv && .venv/bin/pip install") and ".venv/bin/optalloc solve" in solve_cmd
    assert test_cmd.startswith("python3 -m venv .venv && ")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test_cmd in ci.splitlines()
    assert "python3-venv" in ci and "python3-venv" in README


def test_readme_leaves_no_store_or_report_in_the_checkout():
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    for name in ("/optalloc.db", "/optalloc.db.lock", "/report.html"):
        assert name in ignored
    for block in fenced_blocks(README + NIGHTLY + OUTPUTS):
        for cmd in commands(block):
            assert "sqlite:///optalloc.db" not in cmd or "default" in block, cmd
            if cmd.startswith("optalloc report"):
                assert " -o out/" in cmd, cmd


def test_the_nightly_job_section_runs_as_written(tmp_path, real_process):
    """docs/nightly.md's block, run line by line in bash from a folder holding the shipped instances; then the
    export equals `optalloc solve` of the same instance, byte for byte (when tonight is after round 3 closed)."""
    block = fenced_blocks(NIGHTLY)[0]
    cmds = commands(block)
    solve = commands(fenced_blocks(README.split("## Two commands", 1)[1])[0])[0].split(" && ")[-1].replace(".venv/bin/optalloc", "optalloc")
    reports = commands(fenced_blocks(OUTPUTS.split("## Reports", 1)[1])[0])
    assert cmds[0] == "export OPTALLOC_DB=sqlite:///out/optalloc.db"
    for cmd in cmds[1:]:
        assert cmd.startswith("optalloc "), cmd
        for arg in cmd.split():
            if arg.startswith("instances/"):
                assert (ROOT / arg).exists(), arg
    (tmp_path / "instances").symlink_to(INSTANCES)
    script = f'set -euo pipefail\noptalloc() {{ "{sys.executable}" -m optalloc.cli "$@"; }}\n' + "\n".join([*cmds, solve, *reports]) + "\n"
    env = {k: v for k, v in os.environ.items() if k != "OPTALLOC_DB"}
    done = real_process.run(argv=["bash", "-c", script], cwd=tmp_path, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "out" / "optalloc.db").exists() and (tmp_path / "out" / "P202610" / "grants.csv").exists()
    # ... and docs/outputs.md's Reports block after it: the run it names is the first batch, and both pages land in out/
    assert sorted(p.name for p in tmp_path.iterdir()) == ["instances", "out"]
    page = (tmp_path / "out" / "run3.html").read_text()
    assert "run 3 (batch, 2026-09-10)" in page and (tmp_path / "out" / "report.html").exists()
    from optalloc.store import Store

    settled = Store(f"sqlite:///{tmp_path / 'out' / 'optalloc.db'}").periods()["settled_run_id"].notna().all()
    assert settled or date.today() < date(2026, 9, 24)
    if settled:
        assert run(["solve", str(INSTANCES / "small_network"), "-o", str(tmp_path / "solved"), "-q"]) == 0
        names = sorted(p.name for p in (tmp_path / "solved").iterdir() if not p.name.startswith("."))
        match, mismatch, errors = filecmp.cmpfiles(tmp_path / "solved", tmp_path / "out" / "P202610", names, shallow=False)
        assert mismatch == [] and errors == [], (mismatch, errors)


def test_arrivals_do_not_break_the_instance_folder():
    assert run(["validate", str(INSTANCES / "small_network"), "-q"]) == 0


def _all_parsers():
    import argparse

    from optalloc.cli_args import parser as _parser

    todo, seen = [("optalloc", _parser())], []
    while todo:
        name, p = todo.pop()
        seen.append((name, p))
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [(f"{name} {sub}", sp) for sub, sp in action.choices.items()]
    return seen


def test_every_option_has_a_help_text():
    missing = []
    for name, p in _all_parsers():
        for action in p._actions:
            if action.option_strings and action.option_strings != ["-h", "--help"] and not (action.help or "").strip():
                missing.append(f"{name} {'/'.join(action.option_strings)}")
            if not action.option_strings and action.dest != "command" and not (action.help or "").strip():
                missing.append(f"{name} {action.dest}")
    assert missing == []
    vague = [f"{name} {'/'.join(a.option_strings)}" for name, p in _all_parsers() for a in p._actions
             if (a.help or "").startswith("default") or a.help == a.dest]
    assert vague == []


def test_generate_writes_csv_by_default_as_every_command(tmp_path):
    assert run(["generate", "-o", str(tmp_path / "g"), "--sellers", "5", "--fcs", "2", "--regions", "1", "--requests", "5", "-q"]) == 0
    assert (tmp_path / "g" / "requests.csv").exists() and not list((tmp_path / "g").glob("*.parquet"))
    assert run(["validate", str(tmp_path / "g"), "-q"]) == 0


def test_ingest_of_table_files_without_period_says_period_is_needed(tmp_path, capsys):
    from optalloc.cli import main

    db = f"sqlite:///{tmp_path / 'store.db'}"
    try:
        main(["ingest", "--db", db, "--requests", str(INSTANCES / "small_network" / "arrivals" / "round1_requests.csv"), "-q"])
    except SystemExit as e:
        assert e.code == 2
    err = capsys.readouterr().err
    assert "--period is needed" in err and "None" not in err


def _documented_fields() -> set[str]:
    section = OUTPUTS.split("`summary.json` is in reading order", 1)[1].split("\n## ", 1)[0]
    fields = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            fields |= set(re.findall(r"`([a-z_]+(?:\[\])?(?:\.[a-z_*]+)?)`", line.split(" | ")[0]))
    return fields


def _paths(doc: dict) -> set[str]:
    out = set()
    for key, value in doc.items():
        if key == "settings":
            out.add("settings.*")
        elif isinstance(value, dict):
            out |= {f"{key}.{k}" for k in value}
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            out |= {f"{key}[].{k}" for row in value for k in row}
        else:
            out.add(key)
    return out


def test_summary_is_in_reading_order_every_field_documented_with_pools_per_round(tmp_path):
    import json

    import pandas as pd

    out = tmp_path / "o"
    assert run(["solve", str(INSTANCES / "small_network"), "-o", str(out), "-q"]) == 0
    text = (out / "summary.json").read_text()
    summary = json.loads(text)
    assert list(summary) == ["optalloc_version", "inputs_hash", "period_hash", "instance", "settings", "baseline", "rounds", "settlement"]
    assert list(summary["rounds"][0])[:7] == ["round", "storage_type", "requests", "granted_requests", "granted_cube",
                                             "pool_available_cube", "pool_left_cube"]
    undocumented = _paths(summary) - _documented_fields()
    assert undocumented == set()
    # Every documented field has a unit column.
    section = OUTPUTS.split("`summary.json` is in reading order", 1)[1].split("\n## ", 1)[0]
    assert all(len(line.split(" | ")) == 3 for line in section.splitlines() if line.startswith("| `"))
    # The pool left is the pool available less what the round's grants use (cube x months), per round and type.
    grants = pd.read_csv(out / "grants.csv")
    used = (grants["granted_cube"] * grants["months"].str.split(";").map(len)).groupby([grants["round"], grants["storage_type"]]).sum()
    for rec in summary["rounds"]:
        assert abs(rec["pool_available_cube"] - rec["pool_left_cube"] - used[(rec["round"], rec["storage_type"])]) < 1e-6, rec
    assert summary["rounds"][0]["pool_available_cube"] > 0
    again = tmp_path / "again"
    assert run(["solve", str(INSTANCES / "small_network"), "-o", str(again), "-q"]) == 0
    assert (again / "summary.json").read_text() == text


def _solve_cmd(out) -> list[str]:
    return [sys.executable, "-m", "optalloc.cli", "solve", str(INSTANCES / "small_network"), "-o", str(out)]


def test_progress_off_a_terminal_is_one_line_per_top_level_stage_and_a_closing_line(tmp_path):
    done = run_cli(*_solve_cmd(tmp_path / "o")[3:], env={"OPTALLOC_PROGRESS": ""})  # stderr is no terminal
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert "\r" not in done.stderr and "\x1b" not in done.stderr
    stages = [re.sub(r": done in [0-9.]+s$", "", line.removeprefix("[optalloc] ")) for line in lines[:-1]]
    assert stages == ["load and validate", "baseline", "round 1", "round 2", "round 3", "settle", "summary"]
    assert re.fullmatch(rf"optalloc: wrote 8 tables and summary\.json to {re.escape(str(tmp_path / 'o'))} \([0-9.]+ s\)", lines[-1])


def test_progress_on_a_terminal_is_a_live_line_per_stage_overwritten_in_place(tmp_path, real_process):
    import pty  # noqa: F401  (a pseudo-terminal: stderr.isatty() is true in the child)

    master, slave = os.openpty()
    env = {k: v for k, v in os.environ.items() if k != "OPTALLOC_PROGRESS"}
    proc = real_process.popen(*_solve_cmd(tmp_path / "o")[3:], stdout=subprocess.DEVNULL, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=300) == 0
    text = b"".join(chunks).decode()
    assert "\r\x1b[K[optalloc] baseline: solve ..." in text  # the live line, overwritten in place
    lines = [line.rsplit("\r\x1b[K", 1)[-1] for line in text.replace("\r\n", "\n").split("\n") if line]
    assert [re.sub(r": done in [0-9.]+s$", "", line.removeprefix("[optalloc] ")) for line in lines[:-1]] == [
        "load and validate", "baseline", "round 1", "round 2", "round 3", "settle", "summary"]
    assert lines[-1].startswith("optalloc: wrote 8 tables and summary.json to ")


def test_a_failing_stage_ends_its_live_line_before_the_error(tmp_path, capsys, monkeypatch):
    import pytest

    from optalloc import progress

    monkeypatch.setenv("OPTALLOC_PROGRESS", "tty")
    progress.show()
    with pytest.raises(RuntimeError):
        with progress.stage("baseline: solve"):
            raise RuntimeError("boom")
    progress.hide()
    err = capsys.readouterr().err
    assert re.search(r"\r\x1b\[K\[optalloc\] baseline: solve: failed after [0-9.]+s\n$", err), repr(err)
