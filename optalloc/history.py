"""The `history` table: what sellers did per storage type and week; its checks and a seeded generator.

A history row is (seller_id, storage_type, week = the week's Monday) with shipped_cube, sales and on_hand_cube, and
optional seller attributes (category, size_band) that cold start groups by. Weeks missing inside a series' span
count as zero sales; a series starts at its first row (a launch) and stops at the last week of the table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .checks import Collector, membership
from .errors import Problem
from .schemas import Period

COVER_WEEKS = 6.0  # weeks of demand a seller holds: need (cube to hold) = COVER_WEEKS x weekly shipped cube
LEAD_WEEKS = 4  # history ends this many weeks before the period starts (limits are published before it)
CATEGORIES = ["toys", "home", "apparel", "electronics", "beauty", "sports", "books"]
# Peak strength by category: toys and electronics peak hardest at the holidays.
HOLIDAY_PEAK = {"toys": 2.5, "home": 0.8, "apparel": 0.9, "electronics": 1.6, "beauty": 0.7, "sports": 0.4, "books": 0.9}


def check_history(history: pd.DataFrame, seller_ids, storage_types, period: Period | None, source: str) -> list[Problem]:
    """Rows name known sellers and storage types; weeks are ISO dates, Mondays, before the period (with no period, as
    for a history file appended to the store, only Mondays)."""
    problems = membership(history, "seller_id", seller_ids, source, "seller")
    problems += membership(history, "storage_type", storage_types, source, "storage type")
    out = Collector(source)
    rows = np.arange(1, len(history) + 1)
    text = history["week"]
    weeks = pd.to_datetime(text, format="%Y-%m-%d", errors="coerce")
    dated = text.astype("string").str.fullmatch(r"\d{4}-\d{2}-\d{2}").fillna(False)  # pandas reads "now" and "today" too
    weeks = weeks.where(dated)
    bad = (weeks.isna() & text.notna()).to_numpy()
    out.rows(bad, rows, "week", lambda i: f"not an ISO date (YYYY-MM-DD): {text.iloc[i]!r}")
    ok = weeks.notna().to_numpy()
    dow = weeks.dt.day_of_week.to_numpy()
    out.rows(ok & (dow != 0), rows, "week", lambda i: f"{text.iloc[i]} is a {weeks.iloc[i].day_name()}; a week is named by its Monday")
    if period is None:
        return problems + out.problems
    start = pd.Timestamp(period.months[0] + "-01")
    out.rows(ok & (weeks >= start).to_numpy(), rows, "week", lambda i: f"{text.iloc[i]} is not before the period (it starts {start.date()})")
    return problems + out.problems


def history_end(first_month: str) -> pd.Timestamp:
    """The last Monday of a generated history: LEAD_WEEKS before the week the period starts in."""
    start = pd.Timestamp(first_month + "-01")
    monday = start - pd.Timedelta(days=start.day_of_week)
    return monday - pd.Timedelta(weeks=LEAD_WEEKS)


def generate_history(series: pd.DataFrame, weeks: int, first_month: str, seed: int) -> pd.DataFrame:
    """Seeded weekly history for `series` (seller_id, storage_type, weekly_cube = typical weekly shipped cube).

    Yearly seasonality with a holiday peak (Black Friday to Christmas, weeks 47-51) and a Prime Day event (week 28)
    whose strength depends on the category; a trend per series; launches (a share start late, some only a few
    weeks before the end: the cold-start case), exits (no sales after a week), intermittent sellers (sales in a
    few weeks only), stockouts, and sellers who overstock (many weeks of cover on hand).
    """
    rng = np.random.default_rng([seed, 1207])
    n, W = len(series), int(weeks)
    end = history_end(first_month)
    mondays = pd.date_range(end=end, periods=W, freq="7D")
    woy = mondays.isocalendar().week.to_numpy().astype(float)
    sellers = series["seller_id"].drop_duplicates().to_numpy()
    s_of = pd.Index(sellers).get_indexer(series["seller_id"])
    S = len(sellers)
    category = np.array(CATEGORIES)[rng.integers(0, len(CATEGORIES), S)]
    size = series.groupby("seller_id", sort=False)["weekly_cube"].sum().reindex(sellers).to_numpy()
    q1, q2 = np.quantile(size, [1 / 3, 2 / 3]) if S else (0, 0)
    size_band = np.where(size <= q1, "small", np.where(size <= q2, "medium", "large"))
    overstock = rng.random(S) < 0.10
    cover = np.where(overstock, rng.uniform(12, 20, S), rng.uniform(4, 8, S))
    price = np.exp(rng.normal(np.log(60.0), 0.5, S))  # $ per shipped cube

    base = series["weekly_cube"].to_numpy(dtype=float)
    peak = np.array([HOLIDAY_PEAK[c] for c in category])[s_of] * rng.uniform(0.6, 1.4, n)
    holiday = np.exp(-0.5 * ((woy[None, :] - 49.5) / 1.6) ** 2)  # around Black Friday to Christmas
    prime = np.where(woy == 28, 1.0, 0.0)[None, :]
    amp = rng.uniform(0.0, 0.3, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    season = 1 + amp[:, None] * np.sin(2 * np.pi * woy[None, :] / 52 + phase[:, None]) + peak[:, None] * holiday + rng.uniform(0.2, 1.0, n)[:, None] * prime
    trend = np.exp(rng.normal(0.08, 0.25, n)[:, None] * (np.arange(W) - W + 1)[None, :] / 52)
    mean = base[:, None] * season * trend
    intermittent = rng.random(n) < 0.10
    p_sale = rng.uniform(0.15, 0.5, n)
    active = np.where(intermittent[:, None], rng.random((n, W)) < p_sale[:, None], True)
    mean = np.where(intermittent[:, None], mean / p_sale[:, None], mean)
    y = mean * rng.gamma(8.0, 1 / 8.0, (n, W)) * active
    # Stock: cover weeks of the coming demand; stockouts (nothing on hand, nothing shipped) now and then.
    # (the mean of this week and the next three; with fewer than 4 weeks, of those there are: shift(-3) left none)
    ahead = pd.DataFrame(mean.T).rolling(4, min_periods=1).mean().shift(-min(3, W - 1)).bfill().ffill().to_numpy().T
    on_hand = cover[s_of][:, None] * ahead * rng.uniform(0.8, 1.2, (n, W))
    stockout = rng.random((n, W)) < np.where(rng.random(n) < 0.15, 0.10, 0.02)[:, None]
    y = np.where(stockout, 0.0, y)
    on_hand = np.where(stockout, 0.0, on_hand)
    # Launches and exits.
    first = np.where(rng.random(n) < 0.15, rng.integers(0, max(W - 8, 1), n), 0)
    new = rng.random(n) < 0.05
    first = np.where(new, W - rng.integers(2, 9, n).clip(max=W), first).clip(0, W - 1)
    exited = (rng.random(n) < 0.04) & ~new
    last = np.where(exited, rng.integers(0, W, n).clip(min=first + 4), W - 1).clip(max=W - 1)
    col = np.arange(W)[None, :]
    keep = (col >= first[:, None]) & (col <= last[:, None])
    i, t = np.nonzero(keep)
    s = s_of[i]
    shipped = np.round(y[i, t], 3)
    return pd.DataFrame(
        {
            "seller_id": series["seller_id"].to_numpy()[i],
            "storage_type": series["storage_type"].to_numpy()[i],
            "week": mondays.strftime("%Y-%m-%d").to_numpy()[t],
            "shipped_cube": shipped,
            "sales": np.round(shipped * price[s] * rng.uniform(0.9, 1.1, len(i)), 2),
            "on_hand_cube": np.round(on_hand[i, t], 3),
            "category": category[s],
            "size_band": size_band[s],
        }
    )
