"""Quantile loss (models/forecast.md): pinball loss, weighted quantile loss, coverage."""

from __future__ import annotations

import numpy as np


def pinball(y, q, tau: float) -> np.ndarray:
    """rho_tau(y - q) = max(tau (y - q), (tau - 1)(y - q)), elementwise."""
    d = np.asarray(y, dtype=float) - np.asarray(q, dtype=float)
    return np.maximum(tau * d, (tau - 1) * d)


def wql(y, q, tau: float) -> float:
    """Weighted quantile loss: 2 sum rho_tau(y - q) / sum |y| (NaN when every y is 0)."""
    y = np.asarray(y, dtype=float)
    denom = np.abs(y).sum()
    return float(2 * pinball(y, q, tau).sum() / denom) if denom > 0 else float("nan")


def coverage(y, q) -> float:
    """Share of actuals at or below the quantile."""
    y = np.asarray(y, dtype=float)
    return float((y <= np.asarray(q, dtype=float)).mean()) if y.size else float("nan")
