"""Series x weeks panels, the forecasting methods and cold start (models/forecast.md).

Every method maps the observed weeks `Y[:, :c]` (NaN before a series' first week) to weekly P50 and P90 of the
next H weeks. Quantiles never cross: P50 >= 0 and P90 >= P50.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

SEASON = 52
SCALE_WEEKS = 13
COLD_START_WEEKS = 8  # a series with fewer observed weeks borrows its forecast's shape from similar sellers
MATURE_WEEKS = 26
PANEL_WEEKS = 520  # the forecast reads the last ten years of history: every series is laid over each week of them
METHODS = ("seasonal_naive", "seasonal_yoy", "lightgbm")


@dataclass(frozen=True)
class Panel:
    keys: pd.DataFrame  # one row per series: seller_id, storage_type, category, size_band
    weeks: pd.DatetimeIndex  # consecutive Mondays
    y: np.ndarray  # shipped cube (series x weeks), NaN before the series' first week, 0 in weeks without a row
    on_hand: np.ndarray
    sales: np.ndarray

    def woy(self, extra: int = 0) -> np.ndarray:
        weeks = pd.date_range(self.weeks[0], periods=len(self.weeks) + extra, freq="7D")
        return weeks.isocalendar().week.to_numpy().astype(float)


def make_panel(history: pd.DataFrame) -> Panel:
    """Series x weeks arrays of the history's last PANEL_WEEKS weeks (older rows are left out: one stray row of an
    ancient week made the panel as wide as the centuries in between)."""
    h = history.reset_index(drop=True)
    week = pd.to_datetime(h["week"], format="%Y-%m-%d")  # parsed once (millions of rows), kept aligned with h's rows
    recent = (week > week.max() - pd.Timedelta(weeks=PANEL_WEEKS)).to_numpy()
    h = h[recent].sort_values(["seller_id", "storage_type", "week"], kind="stable")
    week = week.loc[h.index]
    weeks = pd.date_range(week.min(), week.max(), freq="7D")
    keys = h[["seller_id", "storage_type"]].drop_duplicates().reset_index(drop=True)
    i = pd.MultiIndex.from_frame(keys).get_indexer(pd.MultiIndex.from_frame(h[["seller_id", "storage_type"]]))
    t = ((week - weeks[0]).dt.days // 7).to_numpy()
    n, W = len(keys), len(weeks)
    arrays = []
    first = np.full(n, W)
    np.minimum.at(first, i, t)
    alive = np.arange(W)[None, :] >= first[:, None]
    for col in ("shipped_cube", "on_hand_cube", "sales"):
        a = np.where(alive, 0.0, np.nan)
        a[i, t] = h[col].to_numpy(dtype=float)
        arrays.append(a)
    attrs = h.groupby("seller_id", sort=True)[["category", "size_band"]].first()
    keys = keys.join(attrs, on="seller_id")
    keys[["category", "size_band"]] = keys[["category", "size_band"]].fillna("unknown")
    return Panel(keys, weeks, *arrays)


# ---------------------------------------------------------------- helpers


def _nanmean(a: np.ndarray, axis=1) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=axis)


def scale(Y: np.ndarray) -> np.ndarray:
    """A series' level: mean of its last 13 observed weeks (0 if it sold nothing)."""
    s = _nanmean(Y[:, -SCALE_WEEKS:])
    return np.nan_to_num(s, nan=0.0)


def age(Y: np.ndarray) -> np.ndarray:
    return (~np.isnan(Y)).sum(axis=1)


def _lag(Y: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Y[:, cols] with NaN for columns outside the observed weeks."""
    c = Y.shape[1]
    ok = (cols >= 0) & (cols < c)
    out = np.full((Y.shape[0], len(cols)), np.nan)
    out[:, ok] = Y[:, cols[ok]]
    return out


def _smoothed(Y: np.ndarray) -> np.ndarray:
    """3-week centred mean (NaN-aware), so last year's value is not one noisy week."""
    padded = np.pad(Y, ((0, 0), (1, 1)), constant_values=np.nan)
    return _nanmean(np.stack([padded[:, :-2], padded[:, 1:-1], padded[:, 2:]]), axis=0)


def _smoothed_at(Y: np.ndarray, col: int) -> np.ndarray:
    """Column `col` of `_smoothed(Y)` (NaN outside Y's weeks), computed from the three weeks around it only."""
    c = Y.shape[1]
    if not 0 <= col < c:
        return np.full(len(Y), np.nan)
    return _nanmean(_lag(Y, np.array([col - 1, col, col + 1])), axis=1)


def _fallback(Y: np.ndarray, weeks: int = 4) -> np.ndarray:
    return np.nan_to_num(_nanmean(Y[:, -weeks:]), nan=0.0)


# ---------------------------------------------------------------- point methods and their empirical quantiles


def seasonal_naive_point(Y: np.ndarray, H: int) -> np.ndarray:
    """The same week last year; the mean of the last 4 weeks where there is no last year."""
    c = Y.shape[1]
    last_year = _lag(Y, c - 1 + np.arange(1, H + 1) - SEASON)
    return np.where(np.isnan(last_year), _fallback(Y)[:, None], last_year)


def seasonal_yoy_point(Y: np.ndarray, H: int) -> np.ndarray:
    """Last year's smoothed week times the year-over-year growth of the last 13 weeks (clipped to [1/3, 3])."""
    c = Y.shape[1]
    sm = _smoothed(Y)
    last_year = _lag(sm, c - 1 + np.arange(1, H + 1) - SEASON)
    recent = np.nansum(Y[:, -SCALE_WEEKS:], axis=1)
    before = np.nansum(_lag(Y, np.arange(c - SEASON - SCALE_WEEKS, c - SEASON)), axis=1)
    growth = np.where(before > 0, recent / np.where(before > 0, before, 1), 1.0).clip(1 / 3, 3)
    return np.where(np.isnan(last_year), _fallback(Y, 8)[:, None], last_year * growth[:, None])


POINT = {"seasonal_naive": seasonal_naive_point, "seasonal_yoy": seasonal_yoy_point}


def empirical_quantiles(point, Y: np.ndarray, H: int, shift_p50: bool) -> tuple[np.ndarray, np.ndarray]:
    """P50/P90 around a point method: the method's scaled errors on the last min(H, 13) observed weeks (forecast
    from just before them) give pooled offsets; P90 = point + q90(error) x scale (P50 likewise if shift_p50)."""
    c = Y.shape[1]
    yhat = point(Y, H)
    s = scale(Y)
    hc = min(H, SCALE_WEEKS, c - SCALE_WEEKS)
    q50_off, q90_off = 0.0, 0.0
    if hc > 0:
        inner = Y[:, : c - hc]
        err = (Y[:, c - hc :] - point(inner, hc)) / np.where(scale(inner) > 0, scale(inner), np.nan)[:, None]
        err = err[np.isfinite(err)]
        if err.size:
            q50_off, q90_off = np.quantile(err, [0.5, 0.9])
    q50 = yhat + (q50_off * s[:, None] if shift_p50 else 0.0)
    q90 = yhat + q90_off * s[:, None]
    return q50, q90


# ---------------------------------------------------------------- the global gradient-boosted quantile model


def _codes(values: pd.Series) -> np.ndarray:
    return pd.Categorical(values, categories=sorted(values.unique())).codes.astype(float)


def _base_features(Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Features known at the cutoff (all relative to the series' scale); and the scale."""
    c = Y.shape[1]
    s = scale(Y)
    d = np.where(s > 0, s, np.nan)
    recent = np.nansum(Y[:, -SCALE_WEEKS:], axis=1)
    before = np.nansum(_lag(Y, np.arange(c - SEASON - SCALE_WEEKS, c - SEASON)), axis=1)
    f = np.column_stack(
        [
            np.log1p(s),
            Y[:, -1] / d,
            (Y[:, -2] if c > 1 else np.full(len(Y), np.nan)) / d,
            _nanmean(Y[:, -4:]) / d,
            _nanmean(Y[:, -SEASON:]) / d,
            np.where(before > 0, recent / np.where(before > 0, before, 1), np.nan),
            np.nanmean(Y[:, -SCALE_WEEKS:] == 0, axis=1),
            np.minimum(age(Y), 104),
        ]
    )
    return f, s


def _horizon_features(Y: np.ndarray, base: np.ndarray, s: np.ndarray, h: int, woy: np.ndarray, static: np.ndarray) -> np.ndarray:
    c = Y.shape[1]
    d = np.where(s > 0, s, np.nan)
    col = c - 1 + h - SEASON
    n = len(Y)
    return np.column_stack(
        [base, np.full(n, h), np.full(n, woy[c - 1 + h]), _lag(Y, np.array([col]))[:, 0] / d, _smoothed_at(Y, col) / d, static]
    )


N_CATEGORICAL = 3  # the static columns: storage type, category, size band


CALIBRATION_MIN_WEEKS = 2 * SCALE_WEEKS + 2  # the shortest training window that is calibrated
CALIBRATION_SERIES = 20_000  # held-out series the shift is computed on (a seeded sample above that: 340,000 pairs at 17 weeks)


def conformal_shift(y: np.ndarray, q: np.ndarray, s: np.ndarray, tau: float = 0.9) -> float:
    """Split-conformal correction of a quantile forecast (Romano, Patterson & Candes 2019, "Conformalized quantile
    regression", one-sided): over the n held-out (series, week) pairs with a level (s > 0) and an actual, the scaled
    residuals r = (y - q) / s; the shift is their ceil((n + 1) tau)-th smallest value (the largest when that rank
    exceeds n). q + shift x s then covers a new pair with probability >= tau when pairs are exchangeable. 0 without
    pairs."""
    ok = (s[:, None] > 0) & ~np.isnan(y)
    r = np.sort(((y - q) / np.where(s > 0, s, 1.0)[:, None])[ok])
    n = r.size
    if not n:
        return 0.0
    return float(r[min(n, int(np.ceil((n + 1) * tau))) - 1])


def lightgbm_quantiles(Y: np.ndarray, H: int, woy: np.ndarray, keys: pd.DataFrame, *, seed: int = 0, threads: int = 1,
                       max_rows: int = 300_000, trees: int = 150, calibrate: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One global LightGBM model per quantile (0.5, 0.9) over all series and horizons (direct multi-horizon): the
    target is the week h ahead divided by the series' scale; features are lags, rolling means, last year's week,
    year-over-year growth, share of zero weeks, age, horizon, week of year of the target and the seller attributes.

    `calibrate`: the P90 is split-conformal calibrated. The last H weeks of the window are held out: a P90 model
    trained on the weeks before them forecasts them, and `conformal_shift` of its scaled errors is added (x scale) to
    the P90 of the model trained on the whole window (on at most CALIBRATION_SERIES held-out series with a level, a
    seeded sample). Skipped when fewer than CALIBRATION_MIN_WEEKS weeks remain."""
    q50, q90 = _lightgbm_fit(Y, H, woy, keys, seed=seed, threads=threads, max_rows=max_rows, trees=trees)
    cc = Y.shape[1] - H
    if calibrate and cc >= CALIBRATION_MIN_WEEKS:
        inner = Y[:, :cc]
        rows = np.flatnonzero(scale(inner) > 0)
        if len(rows) > CALIBRATION_SERIES:
            rows = np.sort(np.random.default_rng([seed, 9090]).choice(rows, CALIBRATION_SERIES, replace=False))
        _, held = _lightgbm_fit(inner, H, woy, keys, seed=seed, threads=threads, max_rows=max_rows, trees=trees, alphas=(0.9,),
                                predict_rows=rows)
        q90 = q90 + conformal_shift(Y[rows, cc:], held, scale(inner[rows])) * scale(Y)[:, None]
    return q50, q90


def _lightgbm_fit(Y: np.ndarray, H: int, woy: np.ndarray, keys: pd.DataFrame, *, seed: int, threads: int, max_rows: int, trees: int,
                  alphas: tuple[float, ...] = (0.5, 0.9), predict_rows: np.ndarray | None = None) -> tuple[np.ndarray | None, np.ndarray]:
    """The models of `lightgbm_quantiles` trained on Y's weeks, and their forecasts of the H weeks after them for the
    series `predict_rows` (default all; None for a quantile not in `alphas`)."""
    import lightgbm as lgb

    c = Y.shape[1]
    static = np.column_stack([_codes(keys["storage_type"]), _codes(keys["category"]), _codes(keys["size_band"])])
    rng = np.random.default_rng([seed, 5021])
    X_parts, t_parts = [], []
    cutoffs = list(range(c - 1, SCALE_WEEKS, -2))  # training cutoffs: every other week back from the end
    per_block = max(1, max_rows // max(1, len(cutoffs) * H))
    for ct in cutoffs:
        Yc = Y[:, :ct]
        base, s = _base_features(Yc)
        for h in range(1, H + 1):
            if ct - 1 + h >= c:
                continue
            target = Y[:, ct - 1 + h]
            ok = np.flatnonzero((s > 0) & ~np.isnan(target))
            if len(ok) > per_block:
                ok = np.sort(rng.choice(ok, per_block, replace=False))
            if not len(ok):
                continue
            X_parts.append(_horizon_features(Yc[ok], base[ok], s[ok], h, woy, static[ok]))
            t_parts.append(target[ok] / s[ok])
    if predict_rows is not None:
        Y, static = Y[predict_rows], static[predict_rows]
    base, s = _base_features(Y)
    Xf = np.concatenate([_horizon_features(Y, base, s, h, woy, static) for h in range(1, H + 1)])
    if not X_parts:  # too little history to train: seasonal naive
        return empirical_quantiles(seasonal_naive_point, Y, H, False)
    X, target = np.concatenate(X_parts), np.concatenate(t_parts)
    cat = list(range(X.shape[1] - N_CATEGORICAL, X.shape[1]))
    out = [None, None]
    for alpha in alphas:
        params = dict(objective="quantile", alpha=alpha, learning_rate=0.08, num_leaves=31, min_data_in_leaf=50, max_bin=63,
                      feature_fraction=0.9, bagging_fraction=0.8, bagging_freq=1, seed=seed, deterministic=True,
                      force_row_wise=True, num_threads=threads, verbose=-1)
        booster = lgb.train(params, lgb.Dataset(X, target, categorical_feature=cat, free_raw_data=True), num_boost_round=trees)
        pred = booster.predict(Xf, num_threads=threads).reshape(H, len(Y)).T
        out[(0.5, 0.9).index(alpha)] = np.maximum(pred, 0) * s[:, None]
    return out[0], out[1]


# ---------------------------------------------------------------- one call for every method, with cold start


def cold_start(q50: np.ndarray, q90: np.ndarray, Y: np.ndarray, keys: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Series with fewer than COLD_START_WEEKS observed weeks take the median forecast shape (forecast / scale) of
    mature series (>= 26 weeks) of the same storage type, category and size band (else same storage type, else
    all), times their own mean week. Returns the new quantiles and the mask of cold series."""
    a = age(Y)
    cold = (a >= 1) & (a < COLD_START_WEEKS)
    mature = a >= MATURE_WEEKS
    if not cold.any() or not mature.any():
        return q50, q90, cold
    s = scale(Y)
    own = np.nan_to_num(_nanmean(Y), nan=0.0)
    ok = mature & (s > 0)
    r50, r90 = q50[ok] / s[ok, None], q90[ok] / s[ok, None]
    q50, q90 = q50.copy(), q90.copy()
    todo = cold.copy()
    for cols in (["storage_type", "category", "size_band"], ["storage_type"], []):
        if not todo.any():
            break
        gkey = keys.groupby(cols, sort=True).ngroup().to_numpy() if cols else np.zeros(len(keys), dtype=int)
        mk = gkey[ok]
        for g in np.unique(gkey[todo]):
            peers = mk == g
            if peers.sum() < 3:
                continue
            members = todo & (gkey == g)
            q50[members] = own[members, None] * np.median(r50[peers], axis=0)[None, :]
            q90[members] = own[members, None] * np.median(r90[peers], axis=0)[None, :]
            todo &= ~members
    return q50, q90, cold


def forecast(method: str, Y: np.ndarray, H: int, woy: np.ndarray, keys: pd.DataFrame, *, seed: int = 0, threads: int = 1,
             **lgb_args) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weekly P50 and P90 for the H weeks after Y's last column, cold start applied, never crossing; and the cold mask."""
    if method == "seasonal_naive":
        q50, q90 = empirical_quantiles(seasonal_naive_point, Y, H, shift_p50=False)
    elif method == "seasonal_yoy":
        q50, q90 = empirical_quantiles(seasonal_yoy_point, Y, H, shift_p50=True)
    elif method == "lightgbm":
        q50, q90 = lightgbm_quantiles(Y, H, woy, keys, seed=seed, threads=threads, **lgb_args)
    else:
        raise ValueError(f"unknown method {method!r} (expected one of {', '.join(METHODS)})")
    q50, q90, cold = cold_start(q50, q90, Y, keys)
    q50 = np.maximum(np.nan_to_num(q50, nan=0.0), 0.0)
    q90 = np.maximum(np.nan_to_num(q90, nan=0.0), q50)
    return q50, q90, cold
