"""Needs and performance scores from history (models/forecast.md).

`panel` turns the history table into series x weeks arrays; `methods` holds the forecasters (seasonal naive, a
seasonal year-over-year model, a global LightGBM quantile model) and cold start; `backtest` scores them on rolling
origins and picks one; `needs` turns weekly quantiles into monthly cube to hold; `performance` scores sellers.
"""

from .metrics import coverage, pinball, wql
from .run import ForecastResult, run_forecast

__all__ = ["ForecastResult", "coverage", "pinball", "run_forecast", "wql"]
