"""Seasonal ARIMA forecasts with prediction intervals, and a holdout backtest against seasonal naive."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from statsmodels.tsa.statespace.sarimax import SARIMAX, SARIMAXResults


@dataclass(frozen=True)
class Backtest:
    """Scores of the last `horizon` observations forecast from the data before them."""

    horizon: int
    mape: float
    seasonal_naive_mape: float
    forecast: pd.DataFrame


class SarimaForecaster:
    """SARIMA(p,d,q)(P,D,Q,s); the default orders are the 'airline model' of Box and Jenkins."""

    def __init__(
        self,
        order: tuple[int, int, int] = (0, 1, 1),
        seasonal_order: tuple[int, int, int] = (0, 1, 1),
        season_length: int = 12,
        log_transform: bool = False,
        interval: float = 0.95,
    ):
        self.order = order
        self.seasonal_order = seasonal_order
        self.season_length = season_length
        self.log_transform = log_transform
        self.interval = interval

    def fit(self, series: pd.Series) -> SarimaForecaster:
        """`series` has a DatetimeIndex with a regular frequency and no gaps."""
        if series.isna().any():
            raise ValueError(f"series has {int(series.isna().sum())} missing values; fill or drop them first")
        if len(series) < 2 * self.season_length + 2:
            raise ValueError(
                f"series has {len(series)} observations; SARIMA needs at least two seasons "
                f"({2 * self.season_length + 2})"
            )
        if self.log_transform and (series <= 0).any():
            raise ValueError("log_transform needs strictly positive values")
        values = np.log(series) if self.log_transform else series
        model = SARIMAX(
            values, order=self.order, seasonal_order=(*self.seasonal_order, self.season_length)
        )
        self.result_: SARIMAXResults = model.fit(disp=False)
        self.aic_ = float(self.result_.aic)
        return self

    def predict(self, horizon: int) -> pd.DataFrame:
        """Columns ds, yhat, yhat_lower, yhat_upper."""
        prediction = self.result_.get_forecast(steps=horizon)
        bounds = prediction.conf_int(alpha=1 - self.interval)
        frame = pd.DataFrame(
            {
                "ds": prediction.predicted_mean.index,
                "yhat": prediction.predicted_mean.to_numpy(),
                "yhat_lower": bounds.iloc[:, 0].to_numpy(),
                "yhat_upper": bounds.iloc[:, 1].to_numpy(),
            }
        )
        if self.log_transform:
            frame[["yhat", "yhat_lower", "yhat_upper"]] = np.exp(frame[["yhat", "yhat_lower", "yhat_upper"]])
        return frame

    def backtest(self, series: pd.Series, horizon: int) -> Backtest:
        """Refit on all but the last `horizon` points and score the forecast of those points."""
        train, test = series.iloc[:-horizon], series.iloc[-horizon:]
        forecast = SarimaForecaster(**self.get_params()).fit(train).predict(horizon)
        naive = np.resize(train.iloc[-self.season_length:].to_numpy(), horizon)
        return Backtest(
            horizon=horizon,
            mape=_mape(test.to_numpy(), forecast["yhat"].to_numpy()),
            seasonal_naive_mape=_mape(test.to_numpy(), naive),
            forecast=forecast.assign(actual=test.to_numpy()),
        )

    def get_params(self) -> dict:
        return {
            "order": self.order,
            "seasonal_order": self.seasonal_order,
            "season_length": self.season_length,
            "log_transform": self.log_transform,
            "interval": self.interval,
        }


def _mape(actual: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(np.abs((actual - predicted) / actual)) * 100)
