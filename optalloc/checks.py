"""Problems found in a table, collected row by row: what the validators of instances (`validate`) and of history
(`history`) share. Each problem names its file, row and field; one check reports at most MAX_PROBLEMS_PER_CHECK rows
and then says how many more have the same problem."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import Problem

MAX_PROBLEMS_PER_CHECK = 50  # per field and check, so one bad column cannot flood the report


class Collector:
    """The problems of one source (a file, or a table of a store)."""

    def __init__(self, source: str):
        self.source = source
        self.problems: list[Problem] = []

    def rows(self, mask: np.ndarray, row_numbers: np.ndarray, field: str, message) -> None:
        """Record a problem for every row where mask is true (message may depend on the row index)."""
        idx = np.flatnonzero(mask)
        for i in idx[:MAX_PROBLEMS_PER_CHECK]:
            text = message(i) if callable(message) else message
            self.problems.append(Problem(text, self.source, int(row_numbers[i]), field))
        if len(idx) > MAX_PROBLEMS_PER_CHECK:
            more = len(idx) - MAX_PROBLEMS_PER_CHECK
            self.problems.append(Problem(f"... {more:,} more rows with the same problem", self.source, None, field, count=more))

    def table(self, message: str, field: str | None = None) -> None:
        self.problems.append(Problem(message, self.source, None, field))


def fmt(v) -> str:
    """A cell's value in a message: text quoted and cut to 60 characters, numbers as %g."""
    if isinstance(v, str):
        text = repr(v)
        return text if len(text) <= 60 else text[:57] + "..."
    return f"{v:g}" if isinstance(v, (float, np.floating)) else f"{v}"


def membership(table: pd.DataFrame, column: str, allowed, source: str, what: str) -> list[Problem]:
    """Rows whose `column` names something not in `allowed` (an unknown seller, storage type, month...)."""
    out = Collector(source)
    allowed = pd.Index(allowed)
    bad = ~table[column].isin(allowed).to_numpy() & table[column].notna().to_numpy()  # blanks are reported already
    out.rows(bad, np.arange(1, len(table) + 1), column, lambda i: f"unknown {what} {fmt(table[column].iloc[i])}")
    return out.problems
