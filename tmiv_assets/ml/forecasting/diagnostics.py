"""What a series looks like before any model: STL decomposition, unit-root tests and the differencing they imply.

ADF (null: a unit root) and KPSS (null: stationary) answer the same question from opposite sides, so they are
reported together: a series is called stationary only when ADF rejects and KPSS does not. The differencing
orders d and D are what AutoARIMA's own tests choose (statsforecast's ndiffs / nsdiffs), shown so a person can
read why it picked its model.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from statsforecast.arima import ndiffs, nsdiffs
from statsmodels.tools.sm_exceptions import InterpolationWarning
from statsmodels.tsa.seasonal import STL
from statsmodels.tsa.stattools import adfuller, kpss

ALPHA = 0.05


@dataclass(frozen=True)
class SeriesDiagnostics:
    adf_pvalue: float
    kpss_pvalue: float
    """KPSS p-values come from a table bounded to [0.01, 0.1]: 0.1 means 'at least 0.1'."""
    stationary: bool
    differences: int
    seasonal_differences: int
    trend_strength: float
    """1 - Var(remainder) / Var(trend + remainder), 0..1 (Wang, Smith and Hyndman 2006)."""
    seasonal_strength: float | None
    """The same for the season; None when the series has no season or under two full ones."""
    components: pd.DataFrame
    """observed, trend, seasonal, remainder by timestamp (seasonal 0 without a season)."""


def diagnose(y: pd.Series, season_length: int) -> SeriesDiagnostics:
    values = y.to_numpy(dtype=float)
    if len(values) < 8 or np.ptp(values) == 0:
        raise ValueError(f"diagnostics need at least 8 non-constant points, got {len(values)}")
    adf = float(adfuller(values, autolag="AIC", result_object=True).pvalue)
    with warnings.catch_warnings():  # the p-value is outside KPSS's table: it says so by the bound itself
        warnings.simplefilter("ignore", InterpolationWarning)
        kpss_p = float(kpss(values, regression="c", nlags="auto", result_object=True).pvalue)
    seasonal = season_length > 1 and len(values) >= 2 * season_length
    if seasonal:
        fit = STL(y, period=season_length, robust=True).fit()
        trend, season, remainder = fit.trend.to_numpy(), fit.seasonal.to_numpy(), fit.resid.to_numpy()
    else:
        window = max(3, min(len(values) // 4, 2 * (len(values) // 8) + 1))
        trend = pd.Series(values).rolling(window, center=True, min_periods=1).mean().to_numpy()
        season, remainder = np.zeros_like(values), values - trend

    def strength(component: np.ndarray) -> float:
        return float(max(0.0, 1 - np.var(remainder) / np.var(component + remainder)))

    return SeriesDiagnostics(
        adf_pvalue=round(adf, 4), kpss_pvalue=round(kpss_p, 4), stationary=bool(adf < ALPHA and kpss_p >= ALPHA),
        differences=int(ndiffs(values)),
        seasonal_differences=int(nsdiffs(values, period=season_length)) if seasonal else 0,
        trend_strength=round(strength(trend), 4),
        seasonal_strength=round(strength(season), 4) if seasonal else None,
        components=pd.DataFrame({"observed": values, "trend": trend, "seasonal": season, "remainder": remainder},
                                index=y.index),
    )
