"""`-o` never eats a user's files: what a writer may replace, what it refuses before any work, and a replacement
that leaves the old or the new complete result at the path whenever the process is killed (real SIGKILLs)."""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

import pytest

from conftest import INSTANCES, run_cli
from optalloc.cli import main
from optalloc.outputs import MARKER, read_marker

SMALL = str(INSTANCES / "small_network")
WORKED = str(INSTANCES / "worked_example.json")


def cli(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code, capsys.readouterr().err


def optalloc(*args: str, cwd: Path | None = None, env: dict | None = None):
    """The command, in this process."""
    return run_cli(*args, cwd=cwd, env=env)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# Every writer, with the arguments it needs besides -o (all refuse before any work, so each case is fast).
WRITERS = {
    "solve": ["solve", WORKED],
    "allocate": ["allocate", WORKED],
    "clear": ["clear", WORKED],
    "settle": ["settle", WORKED],
    "generate": ["generate", "--sellers", "5", "--fcs", "2", "--regions", "1", "--requests", "5"],
    "simulate": ["simulate", "--sellers", "20", "--fcs", "2", "--regions", "1"],
}


@pytest.mark.parametrize("command", sorted(WRITERS))
def test_every_writer_refuses_a_folder_holding_files_it_did_not_write(tmp_path, capsys, command):
    target = tmp_path / "thesis"
    target.mkdir()
    (target / "chapter1.tex").write_text("years of work")
    code, err = cli([*WRITERS[command], "-o", str(target), "-q"], capsys)
    assert code == 2
    assert f"will not write {target}" in err and "chapter1.tex" in err
    assert snapshot(target) == {"chapter1.tex": b"years of work"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis"]  # no partial or old folder beside it


@pytest.mark.parametrize("command", sorted(WRITERS))
def test_every_writer_refuses_the_current_folder_and_the_folders_above_it(tmp_path, capsys, monkeypatch, command):
    here = tmp_path / "work" / "here"
    here.mkdir(parents=True)
    monkeypatch.chdir(here)
    for target in (".", str(here), "..", str(tmp_path)):
        code, err = cli([*WRITERS[command], "-o", target, "-q"], capsys)
        assert code == 2 and "current folder or a folder above it" in err, target
    assert here.is_dir() and list(here.iterdir()) == []


def test_export_refuses_the_folder_of_the_store(tmp_path, monkeypatch):
    """`optalloc export -o "$PWD"` where optalloc.db lives deleted the store on main."""
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "optalloc.db"
    db.write_bytes(b"a store")
    done = optalloc("export", "--period", "P", "-o", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert db.read_bytes() == b"a store"


def test_the_input_and_the_folders_above_it_are_refused(tmp_path, capsys):
    inst = tmp_path / "inst"
    shutil.copytree(SMALL, inst)
    before = snapshot(inst)
    for target in (inst, tmp_path):
        code, err = cli(["solve", str(inst), "-o", str(target), "-q"], capsys)
        assert code == 2 and "an input of this run" in err
    code, err = cli(["solve", WORKED, "-o", str(tmp_path / "out"), "-q"], capsys)
    assert code == 0
    code, err = cli(["clear", WORKED, "--previous", str(tmp_path / "out"), "-o", str(tmp_path / "out"), "-q"], capsys)
    assert code == 2 and "an input of this run" in err  # --previous is an input too
    code, err = cli(["forecast", str(inst), "--settlement", str(tmp_path / "out" / "settlement.csv"), "-o", str(tmp_path / "out"), "-q"], capsys)
    assert code == 2 and "an input of this run" in err  # and forecast's --settlement (its folder was replaced)
    assert (tmp_path / "out" / "settlement.csv").is_file()
    assert snapshot(inst) == before


def test_a_file_is_never_replaced_by_a_folder(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("keep me")
    code, err = cli(["solve", WORKED, "-o", str(path), "-q"], capsys)
    assert code == 2 and "exists and is not a folder" in err
    assert path.read_text() == "keep me"


def test_an_unwritable_target_is_refused_before_solving(tmp_path, capsys):
    """/proc refuses new folders even to root (for whom permission bits say nothing), so the probe is real."""
    (tmp_path / "afile").write_text("x")
    for target, why in [("/proc/optalloc-out", "cannot create folders in /proc"), (str(tmp_path / "afile" / "out"), "is not a folder")]:
        code, err = cli(["solve", SMALL, "-o", target], capsys)
        assert code == 2 and why in err
        assert "baseline" not in err  # refused before any work: no stage ran


def test_a_folder_optalloc_wrote_is_replaced_and_one_a_user_added_to_is_not(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(["allocate", WORKED, "-o", str(out), "-q"], capsys)[0] == 0
    assert read_marker(out)["files"] == ["fc_prices.csv", "limits.csv", "placements.csv", "summary.json"]
    assert cli(["solve", WORKED, "-o", str(out), "-q"], capsys)[0] == 0
    assert "settlement.csv" in snapshot(out)
    (out / "my-analysis.ipynb").write_text("{}")
    code, err = cli(["solve", WORKED, "-o", str(out), "-q"], capsys)
    assert code == 2 and "my-analysis.ipynb" in err
    (out / "my-analysis.ipynb").unlink()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli(["solve", WORKED, "-o", str(empty), "-q"], capsys)[0] == 0  # an empty folder is fine to fill


def test_report_replaces_only_its_own_pages(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(["solve", WORKED, "-o", str(out), "-q"], capsys)[0] == 0
    page = tmp_path / "report.html"
    assert cli(["report", str(out), "-o", str(page), "-q"], capsys)[0] == 0
    assert cli(["report", str(out), "-o", str(page), "-q"], capsys)[0] == 0  # its own page: replaced
    other = tmp_path / "index.html"
    other.write_text("<html>my site</html>")
    # A file that quotes the page's generator tag is not a page optalloc wrote (the tag anywhere in the first 4 KB
    # was taken as proof: `report -o optalloc/report.py` replaced the package's source with a page).
    source = tmp_path / "report.py"
    source.write_text((Path(__file__).parent.parent / "optalloc" / "report.py").read_text())
    notes = tmp_path / "notes.html"
    notes.write_text('<p>our pages carry <meta name="generator" content="optalloc report"></p>')
    kept = {f: f.read_text() for f in (other, source, notes)}
    for target, why in [(other, "was not written by optalloc"), (source, "was not written by optalloc"),
                        (notes, "was not written by optalloc"), (out, "it is a folder")]:
        code, err = cli(["report", str(out), "-o", str(target), "-q"], capsys)
        assert code == 2 and why in err
    assert {f: f.read_text() for f in kept} == kept


def test_folders_follow_the_umask(tmp_path, real_process):
    done = real_process.run("allocate", WORKED, "-o", str(tmp_path / "out"), "-q", umask=0o027)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "out" / "limits.csv").stat().st_mode & 0o777 == 0o640


# ---------------------------------------------------------------- killed mid-replacement


KILLS = [
    ("output-written", {}),  # the new folder complete beside the old one, nothing swapped yet
    ("output-exchanged", {}),  # swapped in one atomic step; the old one not yet removed
    ("output-moved-aside", {"OPTALLOC_NO_EXCHANGE": "1"}),  # file systems without exchange: old moved aside, new not yet in
]


def old_and_new(tmp_path: Path) -> tuple[Path, dict, dict]:
    """An output folder holding `allocate`'s result (old), and what `solve` writes (new, in a folder beside it)."""
    out = tmp_path / "out"
    assert optalloc("allocate", WORKED, "-o", str(out), "-q").returncode == 0
    fresh = tmp_path / "fresh"
    assert optalloc("solve", WORKED, "-o", str(fresh), "-q").returncode == 0
    return out, snapshot(out), snapshot(fresh)


@pytest.mark.parametrize("where, env", KILLS, ids=[k[0] for k in KILLS])
def test_a_kill_during_replacement_loses_nothing_and_the_next_run_tidies_up(tmp_path, where, env, real_process):
    out, old, new = old_and_new(tmp_path)

    killed = real_process.run("solve", WORKED, "-o", str(out), "-q", env={"OPTALLOC_FAILPOINT": f"{where}:kill", **env})
    assert killed.returncode == -9
    if where == "output-moved-aside":
        assert not out.exists()  # the one window the fallback has; the next write puts the old result back
        leftover = [p for p in tmp_path.iterdir() if p.name.startswith(".out.") and p.name.endswith(".old")]
        assert len(leftover) == 1 and snapshot(leftover[0]) == old
    else:
        assert snapshot(out) in (old, new)  # the old or the new complete result, never a mix or nothing
    assert any(p.name.startswith(".out.") for p in tmp_path.iterdir())  # the killed run's leftovers

    again = optalloc("solve", WORKED, "-o", str(out), "-q", env=env)
    assert again.returncode == 0, again.stderr
    assert snapshot(out) == new
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "out"]  # leftovers recovered or removed


INTERRUPTS = [
    ("output-moved-aside", {"OPTALLOC_NO_EXCHANGE": "1"}, "old", "nothing was written"),  # the old result goes back
    ("output-exchanged", {}, "new", "was written in full"),  # the new result is in; only tidying was interrupted
]


@pytest.mark.parametrize("where, env, left, says", INTERRUPTS, ids=[i[0] for i in INTERRUPTS])
def test_ctrl_c_during_replacement_leaves_a_whole_result_and_says_which(tmp_path, where, env, left, says, real_process):
    """Ctrl-C (SIGINT: Python's KeyboardInterrupt, which the command handles, unlike a kill) between moving the old
    result aside and moving the new one in left the path missing and said "nothing was written"; just after the swap
    it said "nothing was written" of a result that was in place."""
    import signal
    import time

    out, old, new = old_and_new(tmp_path)
    run = real_process.popen("solve", WORKED, "-o", str(out), "-q", stdout=None, text=True,
                             env={"OPTALLOC_FAILPOINT": f"{where}:sleep=30", **env})
    deadline = time.monotonic() + 120
    while not ((where == "output-moved-aside" and not out.exists()) or (where == "output-exchanged" and snapshot(out) == new)):
        assert time.monotonic() < deadline and run.poll() is None
        time.sleep(0.05)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130 and says in err and "Traceback" not in err, err
    assert snapshot(out) == (old if left == "old" else new)


@pytest.mark.parametrize("command", ["solve", "report"])
def test_ctrl_c_after_the_result_is_in_place_says_it_was_written(tmp_path, capsys, monkeypatch, command):
    """An interrupt while the closing note is printed (the result already in place) said "nothing was written"."""
    from optalloc import progress

    out = tmp_path / "out"
    assert cli(["solve", WORKED, "-o", str(out), "-q"], capsys)[0] == 0
    page = tmp_path / "r.html"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(progress, "wrote" if command == "solve" else "wrote_file", interrupted)
    args = ["solve", WORKED, "-o", str(tmp_path / "again")] if command == "solve" else ["report", str(out), "-o", str(page)]
    code, err = cli(args, capsys)
    assert code == 130 and "was written in full" in err and "nothing was written" not in err, err
    assert (tmp_path / "again" / "summary.json").exists() if command == "solve" else page.exists()


def test_the_marker_lists_exactly_what_was_written(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli(["solve", SMALL, "-o", str(a), "-q", "--format", "parquet"], capsys)[0] == 0
    assert cli(["solve", SMALL, "-o", str(b), "-q", "--format", "parquet"], capsys)[0] == 0
    names = sorted(p.name for p in a.iterdir())
    assert set(read_marker(a)["files"]) | {MARKER} == set(names)
    assert filecmp.cmpfiles(a, b, names, shallow=False)[1] == []  # byte-identical, marker included


# ---------------------------------------------------------------- one error path


def test_a_bug_is_one_line_and_exit_1_and_debug_shows_the_traceback(monkeypatch, capsys):
    import optalloc.cli as cli_module

    def boom(argv):
        raise RuntimeError("something nobody expected")

    monkeypatch.setattr(cli_module, "run", boom)
    code, err = cli(["validate", WORKED], capsys)
    assert code == 1 and "internal error: RuntimeError: something nobody expected" in err and "Traceback" not in err
    code, err = cli(["--debug", "validate", WORKED], capsys)
    assert code == 1 and "Traceback" in err


def test_a_reader_that_goes_away_is_not_an_error(real_process):
    """`optalloc validate X | head -c1`: the pipe closes before optalloc writes."""
    p = real_process.popen("validate", SMALL, "-q")
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 0 and "Traceback" not in err and "Exception ignored" not in err


def test_bare_optalloc_prints_the_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert all(c in out for c in ("solve", "batch", "report", "simulate"))


# ---------------------------------------------------------------- an edited output is the user's


@pytest.mark.parametrize("edit", ["append", "rewrite same size", "truncate"])
def test_an_output_edited_since_optalloc_wrote_it_is_not_replaced(tmp_path, capsys, edit):
    """`solve -o out`, `echo note >> out/limits.csv`, `solve -o out` replaced the folder and the note was gone: the
    marker listed names, not contents. Now it records each file's size and sha256, and a file that changed is the
    user's: refused (exit 2) naming it, nothing written."""
    out = tmp_path / "out"
    assert cli(["solve", WORKED, "-o", str(out), "-q"], capsys)[0] == 0
    assert cli(["solve", WORKED, "-o", str(out), "-q"], capsys)[0] == 0  # untouched: replaced
    limits = out / "limits.csv"
    text = limits.read_bytes()
    if edit == "append":
        limits.write_bytes(text + b"note\n")
    elif edit == "rewrite same size":
        limits.write_bytes(text.replace(b"10000.0,", b"10000.1,", 1))
    else:
        limits.write_bytes(text[:-5])
    before = snapshot(out)
    code, err = cli(["solve", WORKED, "-o", str(out), "-q"], capsys)
    assert code == 2 and "limits.csv (changed since optalloc wrote it)" in err, err
    assert snapshot(out) == before


def test_an_edited_report_page_is_not_replaced(tmp_path, capsys):
    out, page = tmp_path / "out", tmp_path / "r.html"
    assert cli(["solve", WORKED, "-o", str(out), "-q"], capsys)[0] == 0
    assert cli(["report", str(out), "-o", str(page), "-q"], capsys)[0] == 0
    assert cli(["report", str(out), "-o", str(page), "-q"], capsys)[0] == 0  # untouched: replaced
    page.write_text(page.read_text().replace("</body>", "<p>my notes</p></body>"))
    code, err = cli(["report", str(out), "-o", str(page), "-q"], capsys)
    assert code == 2 and "changed since optalloc wrote it" in err
    assert "my notes" in page.read_text()
