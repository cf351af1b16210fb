"""Mending a period: an operator discards a step's stored result (`optalloc period reset P --step forecast`), so the
next batch computes it again — a forecast whose needs no longer load, say, that failed the period every night.

A step is discarded only when no later step was computed from it (the baseline from the forecast's needs, a round
from the baseline's limits, a round after it from its grants, the settlement from the rounds): grants sellers were
told of are never taken back by accident. Reset the later step first. The reset is one transaction, recorded in
the run log as a run of its own ("reset": the step, the reason, who asked, from which host).
"""

from __future__ import annotations

import getpass
import re

import sqlalchemy as sa

from ..errors import InputError, Problem
from . import tables as T
from .commits import update_price_protection

STEPS = "forecast, baseline, round N or settlement"
_ROUND = re.compile(r"^round (\d+)$")


class Mend:
    """Resets of the store behind `db`, recorded in its run log `log`."""

    def __init__(self, db, log):
        self.db, self.log = db, log

    def reset(self, period_id: str, step: str, reason: str | None = None) -> dict:
        """Discard the stored result of `step` ("forecast", "baseline", "round N", "settlement") of the period, so the
        next batch computes it again. Call it holding the writer lock."""
        p, r = T.periods.c, T.rounds.c
        with self.db.transaction() as conn:
            row = conn.execute(sa.select(T.periods).where(p.period_id == period_id)).one_or_none()
            if row is None:
                known = sorted(conn.execute(sa.select(p.period_id)).scalars())
                raise InputError(Problem(f"no period {period_id!r} in the store (periods: {', '.join(known) or 'none'})", self.db.display_url,
                                         None, "period"))
            cleared = dict(conn.execute(sa.select(r.round, r.cleared_run_id).where(r.period_id == period_id, r.cleared_run_id.is_not(None))
                                        .order_by(r.round)).all())
            done, why = self._what(row, cleared, step)
            if done is None:
                raise InputError(Problem(f"cannot reset {step!r} of period {period_id}: {why}", "period reset", None, "--step"))
            run_id = self.log.start_run(conn, "reset")
            self._discard(conn, period_id, step)
            result = {"period_id": period_id, "step": step, "discarded_run_id": done, "reason": reason, "by": _who()}
            self.log.finish_run(conn, run_id, "ok", steps=[result])
        return {"run_id": run_id, **result}

    @staticmethod
    def _what(row, cleared: dict[int, int], step: str) -> tuple[int | None, str]:
        """The run whose result `step` would discard, or None and why it may not be."""
        if step == "forecast":
            if row.forecast_run_id is None:
                return None, "its needs were given, or have not been forecast yet"
            if row.baseline_run_id is not None:
                return None, f"its baseline (run {row.baseline_run_id}) was computed from the forecast; reset the baseline first"
            return row.forecast_run_id, ""
        if step == "baseline":
            if row.baseline_run_id is None:
                return None, "it has no baseline yet"
            if cleared:
                return None, f"round {min(cleared)} was cleared against these limits (grants were made); reset the rounds first, last first"
            return row.baseline_run_id, ""
        if m := _ROUND.match(step):
            n = int(m[1])
            if n not in cleared:
                return None, f"round {n} is not cleared"
            if n != max(cleared):
                return None, f"round {max(cleared)} holds its grants; reset the last round first"
            if row.settled_run_id is not None:
                return None, f"the period was settled (run {row.settled_run_id}) from its rounds; reset the settlement first"
            return cleared[n], ""
        if step == "settlement":
            if row.settled_run_id is None:
                return None, "it is not settled"
            return row.settled_run_id, ""
        return None, f"a step is {STEPS}"

    def _discard(self, conn: sa.Connection, period_id: str, step: str) -> None:
        def delete(table: sa.Table, *where) -> None:
            conn.execute(table.delete().where(table.c.period_id == period_id, *where))

        periods = T.periods.update().where(T.periods.c.period_id == period_id)
        if step == "forecast":
            delete(T.needs)
            delete(T.performance)
            conn.execute(periods.values(forecast_run_id=None, forecast=None))
        elif step == "baseline":
            for name in ("limits", "placements", "fc_prices"):
                delete(T.RESULT_TABLES[name])
            conn.execute(periods.values(baseline_run_id=None, baseline_objective=None, baseline_status=None))
        elif step == "settlement":
            delete(T.settlements)
            conn.execute(periods.values(settled_run_id=None))
        else:
            n = int(_ROUND.match(step)[1])
            for name in ("grants", "grant_placements", "pools", "round_prices"):
                table = T.RESULT_TABLES[name]
                delete(table, table.c["round"] == n)
            conn.execute(T.rounds.update().where(T.rounds.c.period_id == period_id, T.rounds.c["round"] == n)
                         .values(cleared_run_id=None, cleared_at=None))
            update_price_protection(conn, period_id)


def _who() -> str:
    """Who asked, as the operating system names the user (the run log keeps the host and process beside it)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
