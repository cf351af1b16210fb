"""Seeded synthetic instances of any size, with the skew of a real marketplace.

Seller size is log-normal (a few large sellers, many small); requests come more often from large
sellers; fees are log-normal around $4/cube; FC capacity is set so that the network is `tightness`
times the total P50 need (below 1 = scarce). Everything is drawn from one numpy Generator seeded
by `seed`, so the same arguments give the same instance, byte for byte.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .instance import Instance
from .specs import GenerateSpec  # noqa: F401 -- optalloc.generate.GenerateSpec, as before

STORAGE_TYPES = ["standard", "oversize", "extra_large", "apparel", "footwear", "aerosol", "flammable"]


def _ids(prefix: str, n: int) -> np.ndarray:
    """Zero-padded ids that sort in creation order: S000, S001, ..."""
    if n == 0:
        return np.array([], dtype=str)
    return np.char.add(prefix, np.char.zfill(np.arange(n).astype(str), len(str(n - 1))))


def _months(first: str, n: int) -> list[str]:
    return [p.strftime("%Y-%m") for p in pd.period_range(first, periods=n, freq="M")]


def generate(spec: GenerateSpec) -> Instance:
    rng = np.random.default_rng(spec.seed)
    months = _months(spec.first_month, spec.months)
    types = STORAGE_TYPES[: spec.storage_types]
    regions = [f"R{r:02d}" for r in range(spec.regions)]
    S, F, K, T = spec.sellers, spec.fcs, len(types), len(months)

    # Sellers: size (total monthly P50 cube) log-normal; a share `second_region_share` may also use a second region.
    size = np.exp(rng.normal(7.0, 1.4, S)).clip(50, 5e6)
    home = rng.integers(0, spec.regions, S)
    second = np.where(rng.random(S) < spec.second_region_share, (home + 1 + rng.integers(0, max(spec.regions - 1, 1), S)) % spec.regions, home)
    region_str = np.where(home == second, np.array(regions)[home], np.char.add(np.char.add(np.array(regions)[home], ";"), np.array(regions)[second]))
    seller_ids = _ids("S", S)
    sellers = pd.DataFrame(
        {
            "seller_id": seller_ids,
            "performance_score": np.round(rng.beta(5, 2, S) * 1000, 1),
            "productivity": np.round(np.exp(rng.normal(2.3, 0.6, S)), 2),
            "regions": region_str,
            "floor_cube": 0.0,
        }
    )

    # Needs: each seller stocks its main type and, with some chance, each other type; seasonality by month.
    type_share = rng.dirichlet(np.ones(K) * 0.6, S)
    main = rng.integers(0, K, S)
    type_share[np.arange(S), main] += 1.0
    type_share /= type_share.sum(axis=1, keepdims=True)
    season = 1.0 + 0.25 * np.sin(np.arange(T) / max(T, 1) * np.pi)
    stocks = (type_share > 0.05)
    s_idx, k_idx = np.nonzero(stocks)
    p50 = np.round(size[s_idx, None] * type_share[s_idx, k_idx][:, None] * season[None, :], 1)
    needs = pd.DataFrame(
        {
            "seller_id": np.repeat(seller_ids[s_idx], T),
            "storage_type": np.repeat(np.array(types)[k_idx], T),
            "month": np.tile(months, len(s_idx)),
            "p50_cube": p50.ravel(),
        }
    )
    needs["p90_cube"] = np.round(needs["p50_cube"] * (1 + rng.uniform(0.1, 0.5, len(needs))), 1)

    # FCs: round-robin over regions; each type/month's capacity (tightness x total P50, plus the 10% pool)
    # is split among FCs by a random weight per FC.
    fc_region = np.arange(F) % spec.regions
    fc_ids = _ids("FC", F)
    need_kt = needs.groupby(["storage_type", "month"])["p50_cube"].sum()
    rows = []
    weight = rng.uniform(0.6, 1.4, F)
    for k in types:
        for t in months:
            total = need_kt.get((k, t), 0.0) * spec.tightness / 0.9  # 10% pool on top of the net capacity
            cap = np.round(total * weight / weight.sum(), 0)
            rows.append(
                pd.DataFrame(
                    {"fc_id": fc_ids, "region": np.array(regions)[fc_region], "storage_type": k, "month": t,
                     "capacity_cube": cap, "pool_cube": np.round(cap * 0.10, 0)}
                )
            )
    fcs = pd.concat(rows, ignore_index=True)

    # Requests: sellers drawn in proportion to size; a type the seller stocks; 1 month or a run of months.
    Q = spec.requests
    stock_size = size[s_idx] * type_share[s_idx, k_idx]
    q_seller = rng.choice(len(s_idx), Q, p=stock_size / stock_size.sum())
    q_s, q_k = s_idx[q_seller], k_idx[q_seller]
    first = rng.integers(0, T, Q)
    length = np.where(rng.random(Q) < spec.multi_month_share, rng.integers(2, max(T, 2) + 1, Q), 1)
    last = np.minimum(first + length, T)
    month_arr = np.array(months)
    months_col = [";".join(month_arr[a:b]) for a, b in zip(first, last)]
    share_need = size[q_s] * type_share[q_s, q_k] * 0.5
    cap_est = np.maximum(0.2 * share_need, 2000.0)
    max_cube = np.round(cap_est * rng.uniform(0.05, 0.6, Q), 0).clip(1, None)
    min_cube = np.where(rng.random(Q) < spec.min_cube_share, np.round(max_cube * rng.uniform(0.3, 0.8, Q), 0), 0.0)
    rnd = rng.integers(1, spec.rounds + 1, Q)
    start = pd.Timestamp(months[0] + "-01", tz="UTC") - pd.Timedelta(days=7 * (spec.rounds + 1))
    submitted = start + pd.to_timedelta((rnd - 1) * 7 * 86400 + rng.integers(0, 7 * 86400, Q), unit="s")
    requests = pd.DataFrame(
        {
            "request_id": _ids("Q", Q),
            "seller_id": seller_ids[q_s],
            "storage_type": np.array(types)[q_k],
            "months": months_col,
            "max_fee_per_cube": np.round(np.exp(rng.normal(np.log(4.0), 0.45, Q)), 2),
            "max_cube": max_cube,
            "min_cube": min_cube,
            "round": rnd,
            "submitted_at": submitted,
        }
    )

    tables = {"fcs": fcs, "sellers": sellers, "needs": needs, "requests": requests}
    if spec.with_sales:
        used = np.round(needs["p50_cube"].to_numpy() * rng.uniform(0.6, 1.3, len(needs)), 1)
        prod = sellers.set_index("seller_id")["productivity"].reindex(needs["seller_id"]).to_numpy()
        tables["sales"] = needs[["seller_id", "storage_type", "month"]].assign(
            sales=np.round(prod * used * rng.uniform(0.7, 1.3, len(needs)), 2), used_cube=used
        )
    if spec.history_weeks > 0:  # its own random stream: the other tables do not change with it
        from .history import COVER_WEEKS, generate_history

        typical = size[s_idx] * type_share[s_idx, k_idx] / COVER_WEEKS
        series = pd.DataFrame({"seller_id": seller_ids[s_idx], "storage_type": np.array(types)[k_idx], "weekly_cube": typical})
        tables["history"] = generate_history(series, spec.history_weeks, months[0], spec.seed)
    # Round r took requests for the 7 days from start + 7(r - 1) (above): it closes on the last of them.
    closes = [(start + pd.Timedelta(days=7 * r - 1)).date().isoformat() for r in range(1, spec.rounds + 1)]
    period = {"period_id": f"P{months[0].replace('-', '')}", "months": months, "rounds": list(range(1, spec.rounds + 1)), "round_close_dates": closes}
    return Instance.from_tables(period=period, tables=tables, name=f"synthetic_s{spec.seed}", settings={})


def generate_single_pool(requests: int, seed: int = 0) -> Instance:
    """One FC, one storage type, one month, one round, divisible requests: the shape whose clearing is a sort."""
    rng = np.random.default_rng(seed)
    Q = requests
    sellers = pd.DataFrame(
        {"seller_id": ["S0"], "performance_score": [500.0], "productivity": [10.0], "regions": ["R00"], "floor_cube": [0.0]}
    )
    total = float(Q) * 500.0
    fcs = pd.DataFrame({"fc_id": ["FC0"], "region": ["R00"], "storage_type": ["standard"], "month": ["2026-10"], "capacity_cube": [total], "pool_cube": [total * 0.5]})
    needs = pd.DataFrame({"seller_id": ["S0"], "storage_type": ["standard"], "month": ["2026-10"], "p50_cube": [100.0]})
    requests_df = pd.DataFrame(
        {
            "request_id": _ids("Q", Q),
            "seller_id": "S0",
            "storage_type": "standard",
            "months": "2026-10",
            "max_fee_per_cube": np.round(np.exp(rng.normal(np.log(4.0), 0.45, Q)), 2),
            "max_cube": np.round(rng.uniform(1, 1999, Q), 0),
            "min_cube": 0.0,
            "round": 1,
            "submitted_at": pd.Timestamp("2026-09-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 7 * 86400, Q), unit="s"),
        }
    )
    return Instance.from_tables(
        period={"period_id": "P202610", "months": ["2026-10"], "rounds": [1]},
        tables={"fcs": fcs, "sellers": sellers, "needs": needs, "requests": requests_df},
        name=f"single_pool_{Q}_s{seed}",
    )
