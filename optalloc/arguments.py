"""What the public functions are given, checked at the door: a wrong type or value is optalloc's InputError in one
line naming the argument (`run_period(None)`, `allocate(instance, "highspy")` and a DataFrame as limits raised
AttributeError or TypeError from deep inside, and NaN or infinite limits were taken silently)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .errors import InputError, Problem
from .schemas import SolverOptions, pydantic_problems

LIMIT_INDEX = ["seller_id", "storage_type", "month"]


def _refuse(argument: str, message: str) -> InputError:
    return InputError(Problem(message, None, None, argument))


def _kind(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def instance(value, argument: str = "instance"):
    """An Instance (optalloc.load_instance or Instance.from_tables)."""
    from .instance import Instance

    if not isinstance(value, Instance):
        raise _refuse(argument, f"needs an Instance (optalloc.load_instance(path) or Instance.from_tables(...)), not {_kind(value)}")
    return value


def options(value, inst, argument: str = "options") -> SolverOptions:
    """SolverOptions, a dict of them (checked as the settings' are), or None (the instance's settings.solver)."""
    if value is None:
        return inst.settings.solver
    if isinstance(value, SolverOptions):
        return value
    if isinstance(value, dict):
        from pydantic import ValidationError

        try:
            return SolverOptions.model_validate({**inst.settings.solver.model_dump(), **value})
        except ValidationError as e:
            raise InputError(pydantic_problems(e, argument, "solver.")) from None
    hint = f"; for a backend: SolverOptions(backend={value!r})" if isinstance(value, str) else ""
    raise _refuse(argument, f"needs SolverOptions (or a dict of them), not {_kind(value)}{hint}")


def executor(value, argument: str = "executor"):
    if value is not None and not callable(getattr(value, "map", None)):
        raise _refuse(argument, f"an executor has a map(fn, calls) method (optalloc.batch.make_executor), not {_kind(value)}")
    return value


def round_of(value, inst, argument: str = "round") -> int:
    """A round of the instance's period, as a whole number."""
    rounds = inst.period.rounds
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise _refuse(argument, f"a round is a whole number, one of {', '.join(map(str, rounds))}; got {_kind(value)}")
    if int(value) not in rounds:
        raise _refuse(argument, f"round {int(value)} is not a round of period {inst.period.period_id} (its rounds: "
                                f"{', '.join(map(str, rounds))})")
    return int(value)


def limits(value, inst, argument: str = "limits") -> pd.Series:
    """Baseline limits per (seller_id, storage_type, month): a Series (allocate(...).limits["limit_cube"]), the limits
    DataFrame itself, or None (no baseline: each request's cap is request_cap_cube). Each a finite number of cube, 0 or
    more; every need of the instance has its limit."""
    if value is None:
        return pd.Series(dtype=float, index=pd.MultiIndex.from_tuples([], names=LIMIT_INDEX))
    if isinstance(value, pd.DataFrame):
        if "limit_cube" not in value.columns:
            raise _refuse(argument, "a limits DataFrame has a limit_cube column (allocate(...).limits); got columns "
                                    f"{list(value.columns)[:6]}")
        value = value["limit_cube"]
    if not isinstance(value, pd.Series):
        raise _refuse(argument, f"needs the baseline's limits (allocate(...).limits), a Series of them, or None; not {_kind(value)}")
    if list(value.index.names) != LIMIT_INDEX:
        raise _refuse(argument, f"limits are indexed by {', '.join(LIMIT_INDEX)} (allocate(...).limits); got an index of "
                                f"{list(value.index.names)}")
    numbers = pd.to_numeric(value, errors="coerce").to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(numbers) | (numbers < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _refuse(argument, f"every limit is a finite number of cube, 0 or more; {int(bad.sum())} are not, the first "
                                f"{value.index[i]}: {value.iloc[i]!r}")
    needs = pd.MultiIndex.from_frame(inst.needs[LIMIT_INDEX]) if len(inst.needs) else None
    if needs is not None and len(value) and not needs.isin(value.index).all():
        missing = needs[~needs.isin(value.index)]
        raise _refuse(argument, f"no limit for {len(missing)} need(s) of the instance, the first {missing[0]}: pass the baseline's limits "
                                "for this instance (allocate(instance).limits), or None for none")
    if needs is not None and not len(value):
        raise _refuse(argument, "no limits: pass the baseline's limits (allocate(instance).limits), or None to clear without a baseline")
    return value.astype(float)


def frame(value, argument: str, columns: list[str] | None = None, *, optional: bool = True) -> pd.DataFrame | None:
    """A DataFrame (or None, when optional) holding `columns`."""
    if value is None and optional:
        return None
    if not isinstance(value, pd.DataFrame):
        raise _refuse(argument, f"needs a DataFrame{' or None' if optional else ''}, not {_kind(value)}")
    missing = [c for c in (columns or []) if c not in value.columns and c not in (value.index.names or [])]
    if missing:
        raise _refuse(argument, f"a table without the columns {missing}")
    return value


def choice(value, allowed, argument: str):
    if not isinstance(value, str) or value not in allowed:
        raise _refuse(argument, f"one of {', '.join(map(str, allowed))}; not {_kind(value)}")
    return value


def path(value, argument: str = "path"):
    import os

    if not isinstance(value, (str, os.PathLike)) or (isinstance(value, str) and not value):
        raise _refuse(argument, f"needs a path (text or pathlib.Path), not {_kind(value)}")
    return value


def whole(value, argument: str, lo: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise _refuse(argument, f"a whole number of at least {lo}, not {_kind(value)}")
    return int(value)


def finite(value, argument: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not math.isfinite(float(value)):
        raise _refuse(argument, f"a finite number, not {_kind(value)}")
    return float(value)
