"""Progress on long work, through `logging`: the engine reports, a handler shows.

The engine marks its work with `stage(name)` (timed) and `note(text)`, which are records of the logger "optalloc"
(INFO for a stage's start and end, DEBUG for a note on one): it holds no display state of its own, and a program
using optalloc as a library sees them as any other logging, or not at all (optalloc adds only a NullHandler). Work
is reported by top-level stage: the part of a stage's name before ": " ("baseline" for "baseline: solve", "round 2"
for "round 2: prepare", "load and validate", "settle", ...).

The command line shows them with `ProgressHandler` (`show`), on stderr, in one of two displays:
- on a terminal (stderr is a TTY): one live line per top-level stage, overwritten in place (`\\r`) with the
  sub-stage running now and the engine's notes on it, and left as "<stage>: done in 0.12s" when it ends;
- otherwise (a log file, a pipe, CI): only the top-level lines, "[optalloc] <stage>: done in 0.12s", one each.
(A rich handler was considered: its live display would add a dependency for what these twenty lines do, and the
tests pin the exact text a terminal gets.) A command that writes ends with one line saying what it wrote where and
how long the whole command took (`wrote`). $OPTALLOC_PROGRESS=tty|plain forces a display. Timings go to stderr only,
never into output files (those must be byte-identical run to run); `timings()` collects every stage's seconds
(benchmarks group them by sub-stage name).
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger("optalloc")
logger.addHandler(logging.NullHandler())

# Notes that belong to a top-level stage of the engine (details: shown in the live line only).
_ENGINE_GROUP = re.compile(r"^(baseline|round \d+)$")
START, END, FAILED, NOTE, WROTE = "start", "end", "failed", "note", "wrote"


def _group_of(name: str) -> str:
    return name.split(": ", 1)[0]


@contextmanager
def stage(name: str) -> Iterator[None]:
    """A timed stage of work: a record when it starts and one when it ends (with its seconds, or that it failed)."""
    t0 = time.perf_counter()
    logger.info("%s ...", name, extra={"optalloc": START, "stage": name})
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        seconds = time.perf_counter() - t0
        logger.info("%s: %s after %.2fs", name, "failed" if failed else "done", seconds,
                    extra={"optalloc": FAILED if failed else END, "stage": name, "seconds": seconds})


def note(text: str) -> None:
    """An information line (not timed): a detail of the stage it names, or a line of its own."""
    logger.debug("%s", text, extra={"optalloc": NOTE, "stage": text})


def wrote(where, tables: int, extra: str | None = None) -> None:
    """The command's closing line: what it wrote where (and the handler adds how long the command took)."""
    _closing(f"wrote {tables} table{'s' if tables != 1 else ''}" + (f" and {extra}" if extra else "") + f" to {where}")


def wrote_file(where) -> None:
    """The closing line of a command that writes one file."""
    _closing(f"wrote {where}")


def _closing(text: str) -> None:
    logger.info("%s", text, extra={"optalloc": WROTE, "stage": text})


class ProgressHandler(logging.Handler):
    """Shows the engine's stages on a stream (stderr): a live line per stage on a terminal, one line per top-level
    stage otherwise (see the module docstring). Its state is its own: one handler, one command's display."""

    def __init__(self, stream=None, tty: bool | None = None):
        super().__init__(logging.DEBUG)
        self.stream = stream
        forced = os.environ.get("OPTALLOC_PROGRESS", "").lower()
        if tty is None:
            if forced in ("tty", "plain"):
                tty = forced == "tty"
            else:
                try:
                    tty = self._stream().isatty()
                except (AttributeError, ValueError):
                    tty = False
        self.tty = tty
        self.started = time.perf_counter()
        self.group: str | None = None  # the top-level stage being shown
        self.group_t0 = self.group_end = 0.0  # when it started, and when its last sub-stage ended (time after it is not counted)

    def _stream(self):
        return self.stream if self.stream is not None else sys.stderr

    def _write(self, text: str) -> None:
        try:
            stream = self._stream()
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):  # stderr closed or gone: progress is never worth failing for
            pass

    def _live(self, text: str) -> None:
        """Overwrite the terminal's current line (cut to its width: a wrapped line cannot be overwritten)."""
        width = shutil.get_terminal_size((100, 24)).columns
        line = f"[optalloc] {text}"
        if len(line) > width - 1:
            line = line[: max(width - 2, 10)] + "…"
        self._write(f"\r\x1b[K{line}")

    def close_group(self, final: str | None = None) -> None:
        """End the top-level stage being shown: its one line, with its duration (or `final` instead)."""
        if self.group is None:
            return
        text = final if final is not None else f"{self.group}: done in {max(self.group_end - self.group_t0, 0.0):.2f}s"
        if self.tty:
            self._live(text)
            self._write("\n")
        else:
            self._write(f"[optalloc] {text}\n")
        self.group = None

    def _enter(self, group: str) -> None:
        if group != self.group:
            self.close_group()
            self.group, self.group_t0 = group, time.perf_counter()
            self.group_end = self.group_t0

    def emit(self, record: logging.LogRecord) -> None:
        event, name = getattr(record, "optalloc", None), getattr(record, "stage", "")
        if event is None:
            return
        group = _group_of(name)
        if event == START:
            self._enter(group)
            if self.tty:
                self._live(f"{name} ...")
        elif event in (END, FAILED):
            if self.group == group:
                self.group_end = time.perf_counter()
                if event == FAILED:  # end the line, so the error message that follows starts on its own
                    self.close_group(f"{name}: failed after {record.seconds:.2f}s")
                elif name == group and not name.startswith("write "):  # a whole top-level stage: its line now
                    self.close_group()
        elif event == NOTE:
            if name != group and (group == self.group or _ENGINE_GROUP.match(group)):
                self._enter(group)
                if self.tty:
                    self._live(name)
                return
            self.close_group()
            self._write(f"\r\x1b[K[optalloc] {name}\n" if self.tty else f"[optalloc] {name}\n")
        elif event == WROTE:
            if self.group is not None and self.group.startswith("write "):  # the closing line says it
                if self.tty:
                    self._write("\r\x1b[K")
                self.group = None
            self.close_group()
            self._write(f"optalloc: {name} ({time.perf_counter() - self.started:.1f} s)\n")


_shown: ProgressHandler | None = None


def show(quiet: bool = False, stream=None) -> ProgressHandler | None:
    """Show progress on `stream` (stderr) from now on, as the command line does (none when `quiet`); replaces the
    display shown before (its last line is ended)."""
    global _shown
    hide()
    if quiet:
        return None
    _shown = ProgressHandler(stream)
    logger.addHandler(_shown)
    if logger.getEffectiveLevel() > logging.DEBUG or logger.level == logging.NOTSET:
        logger.setLevel(logging.DEBUG)
    return _shown


def hide() -> None:
    """Stop showing progress (the line being shown is ended)."""
    global _shown
    if _shown is not None:
        _shown.close_group()
        logger.removeHandler(_shown)
        _shown = None


def set_quiet(quiet: bool) -> None:
    """Start a command's progress display on stderr (none when quiet), its clock at zero."""
    show(quiet)


class _Timings(logging.Handler):
    def __init__(self, into: dict[str, float]):
        super().__init__(logging.DEBUG)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "optalloc", None) in (END, FAILED):
            self.into[record.stage] = self.into.get(record.stage, 0.0) + record.seconds


@contextmanager
def timings() -> Iterator[dict[str, float]]:
    """Every stage's seconds while the block runs, by stage name (summed over repeats)."""
    out: dict[str, float] = {}
    handler = _Timings(out)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


atexit.register(hide)
