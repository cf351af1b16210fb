"""Errors optalloc raises on purpose.

Every error a user can cause names where it comes from: the file, the row and the
field for bad input; the FC, storage type and month for an infeasible model.
"""

from __future__ import annotations

from dataclasses import dataclass


class OptallocError(Exception):
    """Base class: the CLI turns these into a one-line message and a non-zero exit."""

    exit_code = 1


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, located as precisely as we can."""

    message: str
    file: str | None = None
    row: int | None = None  # 1-based data row (CSV: the header is row 0) or JSON list index
    field: str | None = None
    count: int = 1  # the problems this line stands for ("... 239,950 more rows with the same problem")

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(self.file)
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.field:
            where.append(f"field '{self.field}'")
        prefix = ", ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message


class InputError(OptallocError):
    """The instance is malformed or inconsistent. Carries every problem found."""

    exit_code = 2

    def __init__(self, problems: list[Problem] | Problem):
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        shown = self.problems[:20]
        total = sum(p.count for p in self.problems)  # every problem found, also those a line stands for
        more = total - sum(p.count for p in shown)
        text = "\n".join(f"  - {p}" for p in shown)
        if more:
            text += f"\n  ... and {more:,} more"
        if total == 1 and len(self.problems) == 1:  # one problem: one line
            super().__init__(f"invalid input: {self.problems[0]}")
        else:
            super().__init__(f"invalid input ({total:,} problem(s)):\n{text}")

    def __reduce__(self):  # errors cross process boundaries (Dask workers): rebuild from what __init__ took
        return (type(self), (self.problems,))


class InfeasibleError(OptallocError):
    """The model has no solution; `where` names the FC/storage type/month that breaks."""

    exit_code = 3

    def __init__(self, message: str, where: list[dict] | None = None):
        self.where = where or []
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (str(self), self.where))


class SolveError(OptallocError):
    """The solver stopped without an optimal answer (time limit, numerical trouble)."""

    exit_code = 4

    def __init__(self, message: str, status: str):
        self.status = status
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (str(self), self.status))


class StoreError(OptallocError):
    """The store cannot be opened or used (unreachable database, another run holds its lock)."""

    exit_code = 5


def error_text(e: BaseException) -> str:
    """An error as a run records it, on one line: optalloc's own as its message, anything else after its type's name
    (`store.connection.one_line` is the message alone, for store errors)."""
    text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
    return f"{type(e).__name__}: {text}" if not isinstance(e, OptallocError) else text or type(e).__name__
