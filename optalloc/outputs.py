"""Output folders that can never eat a user's files.

Every command that writes (`solve`, `allocate`, `clear`, `settle`, `export`, `generate`, `simulate`) writes one
folder through `replace_folder`, and `report` one file through `replace_file`. The rules:

- **What may be replaced.** A path that does not exist, an empty folder, or a folder optalloc itself wrote: it
  holds the marker file `.optalloc-output`, which lists the files optalloc put there, and nothing else. A
  folder with any other file in it, a file where a folder is wanted (or a folder where a file is wanted), the
  current folder or any folder above it, an input of the run or a folder above one, and a folder holding the
  store are refused (`OutputError`, exit 2) before any work is done (`check_folder`).
- **Never half a result.** The new folder is written beside the target (`.NAME.<pid>.partial`) and then
  swapped in with one atomic `renameat2(RENAME_EXCHANGE)`: at every moment the path holds the old complete
  result or the new complete one, whenever the process is killed. Where the file system cannot exchange,
  the old folder is renamed aside to `.NAME.<pid>.old` first, and a later run that finds the path missing
  puts the old folder back (`recover`).
- **Leftovers.** `.NAME.<pid>.partial` and `.NAME.<pid>.old` folders of processes that are no longer alive
  are removed (or restored, as above) by the next write to the same path.
- Folders are created with the mode the umask gives, like any other program's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import OptallocError
from .failpoints import failpoint

MARKER = ".optalloc-output"
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.(?P<kind>partial|old)$")


class OutputError(OptallocError):
    """The output path cannot be written safely (exit 2, like bad input; raised before any work is done)."""

    exit_code = 2

    def __init__(self, path: str, why: str):
        self.path, self.why = path, why
        super().__init__(f"will not write {path}: {why}")

    def __reduce__(self):
        return (type(self), (self.path, self.why))


def _refuse(path: Path, why: str) -> OutputError:
    return OutputError(str(path), why)


def _resolved(path: Path, given: Path) -> Path:
    """`path` with its symlinks followed; a loop of them is a path optalloc cannot write (OutputError, exit 2)."""
    try:
        return path.resolve()
    except (RuntimeError, OSError) as e:  # Python raises RuntimeError for a symlink loop
        raise _refuse(given, f"it cannot be resolved ({e}): a symlink loop, say") from None


def _is_within(inner: Path, outer: Path) -> bool:
    """True when `inner` is `outer` or lies below it (both resolved)."""
    return inner == outer or outer in inner.parents


def read_marker(folder: Path) -> dict | None:
    """The marker of a folder optalloc wrote (None when there is none or it is not ours)."""
    try:
        doc = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("written_by") == "optalloc" and isinstance(doc.get("files"), list) else None


def digest(path: Path) -> dict:
    """What a written file holds: its size and sha256 (the marker records them; a file changed since is the user's)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return {"bytes": path.stat().st_size, "sha256": h.hexdigest()}


def _unchanged(path: Path, recorded) -> bool:
    """Whether the file at `path` still holds what optalloc wrote there (`recorded`: its digest in the marker)."""
    if not isinstance(recorded, dict) or not path.is_file() or path.is_symlink():
        return False
    try:
        if path.stat().st_size != recorded.get("bytes"):  # a size that differs needs no hash
            return False
        return digest(path) == recorded
    except OSError:
        return False


def _foreign_files(folder: Path) -> list[str]:
    """Names in `folder` that are not optalloc's as it wrote them: every name when the folder has no marker; a name the
    marker does not list; a listed file whose contents changed since (marked "(changed)"), or that an optalloc which
    recorded no contents wrote (marked so: it cannot be told from an edited one)."""
    names = sorted(p.name for p in folder.iterdir())
    marker = read_marker(folder)
    if marker is None:
        return names
    contents = marker.get("contents")
    out = []
    for n in names:
        if n == MARKER:
            continue
        if n not in marker["files"]:
            out.append(n)
        elif not isinstance(contents, dict):
            out.append(f"{n} (written by an older optalloc, which kept no record of its contents)")
        elif not _unchanged(folder / n, contents.get(n)):
            out.append(f"{n} (changed since optalloc wrote it)")
    return out


NAME_MAX = 255  # bytes in one file name (Linux and macOS file systems)


def check_folder(out: str | os.PathLike, *, inputs: Iterable[str | os.PathLike | None] = (), store: str | os.PathLike | None = None) -> Path:
    """Refuse (OutputError) an output folder that `replace_folder` must not replace, and one it could not create.
    Call it before the work: a refused target costs nothing. Returns the resolved path."""
    given = Path(out)
    path = _resolved(given, given)
    cwd = Path.cwd().resolve()
    if _is_within(cwd, path):
        raise _refuse(given, "it is the current folder or a folder above it (name a new folder, e.g. -o out)")
    for item in inputs:
        if item is None:
            continue
        src = _resolved(Path(item), given)
        if _is_within(src, path):
            raise _refuse(given, f"it is an input of this run, or a folder above one ({item})")
        if path.parent == src and src.is_dir() and path.suffix.lower() in (".csv", ".parquet", ".json"):
            # a folder named like a file the instance folder is read by (grants.csv): the instance would no longer load
            raise _refuse(given, f"inside the instance folder {item}, a name ending in {path.suffix} is read as one of its files")
    if store is not None and _is_within(_resolved(Path(store), given), path):
        raise _refuse(given, f"it holds the store {store}")
    most = NAME_MAX - len(f"..{2**22}.partial")  # it is written first as .NAME.PID.partial (Linux pids are below 2**22)
    if len(os.fsencode(path.name)) > most:
        raise _refuse(given, f"its name is too long to write it beside its place: at most {most} bytes")
    if path.exists() or path.is_symlink():
        if not path.is_dir() or path.is_symlink():
            raise _refuse(given, "it exists and is not a folder")
        foreign = _foreign_files(path)
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise _refuse(given, f"the folder holds files optalloc did not write, or that changed since it wrote them ({shown});"
                                 " name a new or empty folder, or move those files out")
    _probe(given, _existing_ancestor(path.parent))
    return path


def _probe(given: Path, parent: Path) -> None:
    """Create and remove a folder in `parent`: the one test of writability that holds for every user (root
    included, for whom permission bits say nothing) and every file system (read-only mounts, /proc)."""
    if not parent.is_dir():
        raise _refuse(given, f"{parent} is not a folder")
    probe = parent / f".optalloc-probe.{os.getpid()}"
    try:
        os.mkdir(probe)
        os.rmdir(probe)
    except OSError as e:
        raise _refuse(given, f"cannot create folders in {parent} ({e.strerror})") from None


def check_file(out: str | os.PathLike, *, inputs: Iterable[str | os.PathLike | None] = (), signature: str) -> Path:
    """Refuse an output file that is a folder, an input, or an existing file that optalloc did not write: one that
    does not begin with `signature`, the exact first bytes optalloc writes (a file that merely quotes them, say a
    source file or notes about the report, is someone else's)."""
    given = Path(out)
    path = _resolved(given, given)
    if path.is_dir():
        raise _refuse(given, "it is a folder; name the file to write, e.g. -o report.html")
    for item in inputs:
        if item is not None and _resolved(Path(item), given) == path:
            raise _refuse(given, f"it is an input of this run ({item})")
    if path.exists():
        try:
            with open(path, "rb") as f:
                head = f.read(len(signature.encode()))
        except OSError as e:
            raise _refuse(given, f"cannot read the existing file ({e.strerror})") from None
        if head != signature.encode():
            raise _refuse(given, "the file exists and was not written by optalloc")
        if not sealed_whole(path):
            raise _refuse(given, "the file changed since optalloc wrote it (its contents no longer match the seal optalloc put at its"
                                 " end); name another file, or move this one away")
    _probe(given, _existing_ancestor(path.parent))
    return path


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


# ---------------------------------------------------------------- atomic replacement


def process_alive(pid: int) -> bool:
    """Whether `pid` names a process still running here (its half-written leftovers are not removed under it)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(path: Path) -> None:
    """Tidy the leftovers of killed writes to `path`: put a moved-aside old result back if the path is missing,
    and remove partial and old folders whose process is gone."""
    parent = path.parent
    if not parent.is_dir():
        return
    leftovers = []
    for entry in parent.iterdir():
        m = _LEFTOVER.match(entry.name)
        if m and m["name"] == path.name and entry.is_dir() and not process_alive(int(m["pid"])):
            leftovers.append((m["kind"], entry))
    for kind, entry in sorted(leftovers, key=lambda e: e[1].name):
        if kind == "old" and not path.exists() and read_marker(entry) is not None:
            entry.rename(path)  # the killed run had moved the old result aside and not yet put the new one in
        else:
            shutil.rmtree(entry, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _libc():
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = lib.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _libc()


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE). False where the system cannot."""
    if _renameat2 is None or os.environ.get("OPTALLOC_NO_EXCHANGE"):
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_folder(out: str | os.PathLike, write: Callable[[Path], Iterable[str]], **check) -> Path:
    """Write a new folder at `out` with `write(tmp)` (which returns the names it wrote) and swap it in atomically.
    `check` goes to `check_folder` (inputs=, store=); the target is checked again here, right before writing."""
    path = check_folder(out, **check)
    recover(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    tmp = path.parent / f".{path.name}.{pid}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.mkdir(tmp)  # mode 0o777 less the umask, as the folder will have
    try:
        names = sorted(set(write(tmp)))
        contents = {n: digest(tmp / n) for n in names}
        (tmp / MARKER).write_text(json.dumps({"written_by": "optalloc", "files": names, "contents": contents}, indent=1) + "\n",
                                  encoding="utf-8")
        _fsync_dir(tmp)
        failpoint("output-written")
        aside = None  # the old result, once the new one is in its place
        if path.exists():
            if exchange(tmp, path):
                aside = tmp
            else:
                aside = path.parent / f".{path.name}.{pid}.old"
                path.rename(aside)
                try:
                    failpoint("output-moved-aside")
                    tmp.rename(path)
                except BaseException:  # interrupted (Ctrl-C) or refused: the old result goes back, the path is never left empty
                    if not path.exists():
                        aside.rename(path)
                    raise
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:  # the new result is in place: what is left is tidying, and an interrupt now must not say nothing was written
        failpoint("output-exchanged")
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
        _fsync_dir(path.parent)
    except KeyboardInterrupt:
        raise WrittenThenInterrupted(path) from None
    return path


class WrittenThenInterrupted(KeyboardInterrupt):
    """Interrupted after the new result was in place, while the old one was being removed (the next write to the
    path removes what is left of it)."""

    def __init__(self, path: Path):
        super().__init__(str(path))
        self.path = path


SEAL = "<!-- optalloc sha256 {} -->\n"  # the last line of a page optalloc writes: the sha256 of everything before it


def seal(data: bytes) -> bytes:
    """`data` with its seal appended (a file optalloc may replace later only while it still matches)."""
    if not data.endswith(b"\n"):
        data += b"\n"
    return data + SEAL.format(hashlib.sha256(data).hexdigest()).encode()


def sealed_whole(path: Path) -> bool:
    """Whether the file ends in the seal of everything before it (nothing was changed, added or cut since)."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    body, _, last = data.rstrip(b"\n").rpartition(b"\n")
    return data.endswith(b"\n") and last + b"\n" == SEAL.format(hashlib.sha256(body + b"\n").hexdigest()).encode()


def replace_file(out: str | os.PathLike, data: bytes, **check) -> Path:
    """Write one file atomically (a temporary sibling renamed into place), sealed (`seal`). `check` goes to
    `check_file`."""
    path = check_file(out, **check)
    data = seal(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.partial"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
