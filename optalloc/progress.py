"""Progress on long work, on stderr; silent when quiet (the library's default: the CLI turns it on unless -q).

Work is reported by top-level stage: the part of a stage's name before ": " ("baseline" for "baseline: solve",
"round 2" for "round 2: prepare", "load and validate", "settle", ...). Two displays:

- on a terminal (stderr is a TTY): one live line per top-level stage, overwritten in place (`\\r`) with the
  sub-stage running now and the engine's notes on it, and left as "<stage>: done in 0.12s" when it ends;
- otherwise (a log file, a pipe, CI): only the top-level lines, "[optalloc] <stage>: done in 0.12s", one each.

A command that writes ends with one line saying what it wrote where and how long the whole command took
(`wrote`), e.g. "optalloc: wrote 9 tables and summary.json to out/small_network (0.8 s)".
$OPTALLOC_PROGRESS=tty|plain forces a display. Timings go to stderr only, never into output files (those must
be byte-identical run to run); TIMINGS keeps every stage's seconds (benchmarks group them by sub-stage name).
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import sys
import time
from contextlib import contextmanager

_quiet = True  # the library is silent; the CLI turns progress on unless --quiet
_tty = False
_started = time.perf_counter()
_group: str | None = None  # the top-level stage being shown
_group_t0 = 0.0
_group_end = 0.0  # when its last sub-stage ended (time after it, outside any stage, is not counted)
TIMINGS: dict[str, float] = {}

# Notes that belong to a top-level stage of the engine (details: shown in the live line only).
_ENGINE_GROUP = re.compile(r"^(baseline|round \d+)$")


def set_quiet(quiet: bool) -> None:
    """Start a command's progress: quiet or not, the display chosen for stderr now, the clock reset."""
    global _quiet, _tty, _started
    _close()
    _quiet = quiet
    forced = os.environ.get("OPTALLOC_PROGRESS", "").lower()
    if forced in ("tty", "plain"):
        _tty = forced == "tty"
    else:
        try:
            _tty = sys.stderr.isatty()
        except (AttributeError, ValueError):
            _tty = False
    _started = time.perf_counter()


def _group_of(name: str) -> str:
    return name.split(": ", 1)[0]


def _write(text: str) -> None:
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed or gone: progress is never worth failing for
        pass


def _live(text: str) -> None:
    """Overwrite the terminal's current line (cut to its width: a wrapped line cannot be overwritten)."""
    width = shutil.get_terminal_size((100, 24)).columns
    line = f"[optalloc] {text}"
    if len(line) > width - 1:
        line = line[: max(width - 2, 10)] + "…"
    _write(f"\r\x1b[K{line}")


def _close(final: str | None = None) -> None:
    """End the top-level stage being shown: its one line, with its duration (or `final` instead)."""
    global _group
    if _group is None:
        return
    if not _quiet:
        text = final if final is not None else f"{_group}: done in {max(_group_end - _group_t0, 0.0):.2f}s"
        if _tty:
            _live(text)
            _write("\n")
        else:
            _write(f"[optalloc] {text}\n")
    _group = None


def _enter(group: str) -> None:
    global _group, _group_t0, _group_end
    if group != _group:
        _close()
        _group, _group_t0 = group, time.perf_counter()
        _group_end = _group_t0


def note(text: str) -> None:
    """An information line (not timed). A note on the stage being shown, or on the engine's baseline and rounds,
    is a detail (the live line on a terminal, nothing otherwise); any other note gets a line of its own."""
    if _quiet:
        return
    group = _group_of(text)
    if text != group and (group == _group or _ENGINE_GROUP.match(group)):
        _enter(group)
        if _tty:
            _live(text)
        return
    _close()
    if _tty:
        _write(f"\r\x1b[K[optalloc] {text}\n")
    else:
        _write(f"[optalloc] {text}\n")


def reset_timings() -> None:
    TIMINGS.clear()


@contextmanager
def stage(name: str):
    global _group, _group_end
    t0 = time.perf_counter()
    group = _group_of(name)
    if not _quiet:
        _enter(group)
        if _tty:
            _live(f"{name} ...")
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        end = time.perf_counter()
        TIMINGS[name] = TIMINGS.get(name, 0.0) + end - t0
        if not _quiet and _group == group:
            _group_end = end
            if failed:  # end the line, so the error message that follows starts on its own
                _close(f"{name}: failed after {end - t0:.2f}s")
            elif name == group and not name.startswith("write "):  # a whole top-level stage: its line now, not at the next one
                _close()


def _finish(text: str) -> None:
    global _group
    if _quiet:
        return
    if _group is not None and _group.startswith("write "):  # the closing line says it
        if _tty:
            _write("\r\x1b[K")
        _group = None
    _close()
    _write(f"optalloc: {text} ({time.perf_counter() - _started:.1f} s)\n")


def wrote(where: str | os.PathLike, tables: int, extra: str | None = None) -> None:
    """The command's closing line: what it wrote where, and how long the command took."""
    _finish(f"wrote {tables} table{'s' if tables != 1 else ''}" + (f" and {extra}" if extra else "") + f" to {where}")


def wrote_file(where: str | os.PathLike) -> None:
    """The closing line of a command that writes one file."""
    _finish(f"wrote {where}")


atexit.register(_close)
