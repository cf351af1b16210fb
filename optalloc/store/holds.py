"""Holds and failures: a period an operator holds is skipped by the batch until released; a period whose step failed
is recorded with its step and error until a later run writes a result of it."""

from __future__ import annotations

import sqlalchemy as sa

from ..errors import InputError, Problem
from . import tables as T
from .connection import json_value, now


class Holds:
    """Holds and failures of the store behind `db`, recorded in its run log `log`."""

    def __init__(self, db, log):
        self.db, self.log = db, log

    def hold(self, period_id: str, reason: str | None = None) -> dict:
        """Hold a period: `batch` skips it until released. Recorded as a run; holding a held period keeps its
        since-time (and changes the reason when one is given). Call it holding the writer lock."""
        return self._set_hold(period_id, hold=True, reason=reason)

    def release(self, period_id: str) -> dict:
        return self._set_hold(period_id, hold=False, reason=None)

    def _set_hold(self, period_id: str, *, hold: bool, reason: str | None) -> dict:
        with self.db.transaction() as conn:
            row = conn.execute(sa.select(T.periods.c.held_at, T.periods.c.hold_reason).where(T.periods.c.period_id == period_id)).one_or_none()
            if row is None:
                known = sorted(conn.execute(sa.select(T.periods.c.period_id)).scalars())
                raise InputError(Problem(f"no period {period_id!r} in the store (periods: {', '.join(known) or 'none'})", self.db.display_url,
                                         None, "period"))
            run_id = self.log.start_run(conn, "hold" if hold else "release")
            was_held = row.held_at is not None
            if hold:
                values = {"hold_reason": reason if reason is not None else row.hold_reason}
                if not was_held:
                    values["held_at"] = now()
            else:
                values = {"held_at": None, "hold_reason": None}
            conn.execute(T.periods.update().where(T.periods.c.period_id == period_id).values(**values))
            result = {"run_id": run_id, "period_id": period_id, "held": hold, "was_held": was_held}
            if hold:
                result["reason"] = values["hold_reason"]
            self.log.finish_run(conn, run_id, "ok", steps=[{k: v for k, v in result.items() if k != "run_id"}])
        return result

    def held_periods(self) -> dict[str, dict]:
        with self.db.reading() as conn:
            rows = conn.execute(sa.select(T.periods.c.period_id, T.periods.c.held_at, T.periods.c.hold_reason)
                                .where(T.periods.c.held_at.is_not(None))).all()
        return {r.period_id: {"since": json_value(r.held_at), "reason": r.hold_reason} for r in rows}

    def record_failure(self, run_id: int, period_id: str, step: str, error: str, exit_code: int) -> None:
        with self.db.transaction() as conn:
            conn.execute(T.period_failures.insert().values(run_id=run_id, period_id=period_id, step=step, error=error, exit_code=exit_code,
                                                           failed_at=now()))

    def current_failures(self) -> dict[str, dict]:
        """Each period whose last attempt failed: its latest failure, unless a later run has written a result of it since."""
        with self.db.reading() as conn:
            failures = conn.execute(sa.select(T.period_failures).order_by(T.period_failures.c.run_id)).all()
            if not failures:
                return {}
            periods = {r.period_id: r for r in conn.execute(sa.select(T.periods.c.period_id, T.periods.c.baseline_run_id,
                                                                                T.periods.c.settled_run_id)).all()}
            cleared = dict(conn.execute(sa.select(T.rounds.c.period_id, sa.func.max(T.rounds.c.cleared_run_id)).group_by(T.rounds.c.period_id)).all())
        latest = {f.period_id: f for f in failures}
        out = {}
        for pid, f in latest.items():
            p = periods.get(pid)
            later = max([x for x in (p.baseline_run_id, p.settled_run_id, cleared.get(pid)) if x is not None], default=0) if p else 0
            if later <= f.run_id:
                out[pid] = {"run_id": f.run_id, "step": f.step, "error": f.error, "exit_code": f.exit_code, "failed_at": json_value(f.failed_at)}
        return out
