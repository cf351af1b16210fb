"""What `optalloc generate` and `optalloc simulate` are asked for: plain dataclasses, so the command line can show
their defaults without loading the engine."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GenerateSpec:
    sellers: int = 200
    fcs: int = 6
    regions: int = 3
    storage_types: int = 2
    months: int = 3
    rounds: int = 3
    requests: int = 300
    second_region_share: float = 0.2  # sellers that may also use a second region
    min_cube_share: float = 0.05
    multi_month_share: float = 0.3
    tightness: float = 0.9
    with_sales: bool = True
    first_month: str = "2026-10"
    seed: int = 0
    history_weeks: int = 0  # > 0: also a weekly `history` table ending before the period (optalloc.history)


@dataclass(frozen=True)
class SimulationSpec:
    sellers: int = 300
    fcs: int = 9
    regions: int = 3
    storage_types: int = 1
    rounds: int = 3
    tightness: float = 0.9  # FC capacity as a multiple of the sellers' forecast P50 need
    pool_share: float = 0.10  # of FC capacity, set aside for the market (the programme's default)
    forecast_error: float = 0.35  # sd of log(true need / P50 forecast)
    productivity_error: float = 0.4  # sd of log(true productivity / the planner's estimate)
    margin: float = 0.25  # profit per $ of sales: what a cube-month is worth to a seller, per $ it sells
    shading: tuple[float, float] = (0.5, 0.9)  # a bidder's first offer is value x U(shading)
    raise_share: float = 0.5  # a rebid closes this share of the gap between the last offer and the value
    first_round_weights: tuple[float, ...] = (0.5, 0.3, 0.2)  # which round a bidder first bids in (trimmed to `rounds`)
    seed: int = 0
