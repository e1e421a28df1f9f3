"""Candidate forecasting models behind one interface, and the season length a frequency implies.

Every candidate turns a regular series (a pd.Series with a DatetimeIndex at a fixed frequency) into a forecast of
`horizon` steps with a prediction interval at `level` percent: a DataFrame of yhat, yhat_lower, yhat_upper indexed
by the future timestamps. The candidates span the usual baselines and the automatic statistical models:

- naive, seasonal_naive, drift (random walk with drift): the baselines any model must beat;
- auto_arima, auto_ets, auto_theta: statsforecast's automatic order / component / theta selection (the
  Hyndman-Khandakar algorithms of R's `forecast` package), used directly on numpy arrays;
- auto_arima_log: AutoARIMA on log(y), for positive seasonal series whose seasonal swings grow with their level
  (multiplicative seasons), where a linear model of y over- or under-shoots them; the backtest decides per series;
- mstl_ets, mstl_arima: the season taken out by STL (statsforecast's MSTL), the rest forecast by a non-seasonal
  AutoETS / AutoARIMA and the last season added back; the seasonal models for seasons longer than
  LONG_SEASON (weekly data's 52), where a seasonal ARIMA search takes minutes per fit and statsforecast's ETS
  silently drops the season, so auto_arima and auto_ets skip such series with that reason;
- prophet: trend with changepoints plus the seasonalities the frequency can show, and optionally a country's
  holidays (ProphetSettings);
- lstm, gru, tcn, transformer: sequence networks (neural.py) trained on the series' own windows.

Regressors: columns known ahead of time (a calendar flag, a planned price, a temperature forecast), given for the
history and the `horizon` steps after it. The ARIMA models take them as a regression with ARIMA errors
(statsforecast's exogenous X), Prophet as extra regressors and the sequence networks as input channels; the other
candidates forecast without them, and the backtest compares both kinds like any models. A regressor constant over
the history is left out (it cannot be estimated there). AutoARIMA with and without the regressors as two candidates,
left to the backtest, did worse on benchmarks/forecasting_regressors.py (mean MASE 1.480 against 1.295): a
regressor that starts late (a law) is constant in every fold, so the two tie there and the one without wins.

A candidate that cannot run on a series raises `ModelSkipped` (a ValueError) saying why — too short for its seasons,
or the library failed — so the caller can record it as skipped and go on with the others. With `log_transform` a
model sees log(y); its point forecast and bounds are exponentiated back, so yhat is the median of the forecast
distribution on the original scale (no bias adjustment) and the bounds stay valid quantiles.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
from pandas.tseries import offsets
from statsforecast.models import MSTL, AutoARIMA, AutoETS, AutoTheta, Naive, RandomWalkWithDrift, SeasonalNaive

from tmiv_assets.ml.forecasting.neural import ARCHITECTURES, NetworkSettings, Pretrained, network_forecast
from tmiv_assets.ml.monitoring.settings import SpecSettings

PROPHET_SEED = 0
PROPHET_SAMPLES = 500  # posterior draws for Prophet's intervals: enough for a 95% bound, and fast
COLUMNS = ["yhat", "yhat_lower", "yhat_upper"]
LOG_SUFFIX = "_log"  # a candidate of this name models log(y): see Candidate.log
ALONE = "without a season it is its non-seasonal model alone"
LONG_SEASON = 24  # statsforecast's ETS has no seasons longer than this; seasonal ARIMA beyond it is very slow

# Periods per natural cycle, by pandas offset: a year of months, a week of days, a day of hours.
_CYCLES: tuple[tuple[tuple[type, ...], int], ...] = (
    ((offsets.YearBegin, offsets.YearEnd, offsets.BYearBegin, offsets.BYearEnd), 1),
    ((offsets.QuarterBegin, offsets.QuarterEnd, offsets.BQuarterBegin, offsets.BQuarterEnd), 4),
    ((offsets.MonthBegin, offsets.MonthEnd, offsets.BusinessMonthBegin, offsets.BusinessMonthEnd,
      offsets.SemiMonthBegin, offsets.SemiMonthEnd), 12),
    ((offsets.Week,), 52),
    ((offsets.BusinessDay,), 5),
    ((offsets.Day,), 7),
    ((offsets.Hour,), 24),
)


class ModelSkipped(ValueError):
    """A candidate cannot run on this series; the message says why."""


def season_length_for(freq: str) -> int:
    """Observations per seasonal cycle for a pandas frequency: yearly 1, quarterly 4, monthly 12, weekly 52,
    business-daily 5, daily 7, hourly 24; a multiple such as '2h' divides the cycle (12)."""
    with warnings.catch_warnings():  # 'A', 'M', 'H' still parse but warn that they are deprecated aliases
        warnings.simplefilter("ignore", FutureWarning)
        try:
            offset = pd.tseries.frequencies.to_offset(freq)
        except ValueError as error:
            raise ValueError(f"freq {freq!r} is not a pandas frequency; use e.g. MS, W, D or h") from error
    for kinds, cycle in _CYCLES:
        if isinstance(offset, kinds):
            if offset.n < 1 or cycle % offset.n:
                break
            return max(cycle // offset.n, 1)
    raise ValueError(f"no default season length for freq {freq!r}; set season_length in the series spec")


def future_index(index: pd.DatetimeIndex, horizon: int) -> pd.DatetimeIndex:
    """The `horizon` timestamps after the last one of `index`, at its frequency."""
    freq = index.freq or (pd.infer_freq(index) if len(index) >= 3 else None)
    if freq is None:
        raise ValueError("the series index has no regular frequency; resample it (e.g. series.asfreq('MS'))")
    return pd.date_range(index[-1], periods=horizon + 1, freq=freq)[1:]


Forecast = tuple[np.ndarray, np.ndarray, np.ndarray]  # mean, lower, upper
# run(y, horizon, season_length, level, regressors over y's timestamps and the horizon's, or None)
Run = Callable[[pd.Series, int, int, int, pd.DataFrame | None], Forecast]


@dataclass(frozen=True)
class Candidate:
    """A named model: `run` forecasts numpy values; the wrapper checks the input and shapes the output."""

    name: str
    run: Run
    seasonal: bool = False
    """Uses the season: needs two full seasons (it cannot estimate a seasonal pattern from one)."""
    min_points: int = 1
    long_seasons: bool = True
    """Handles seasons longer than LONG_SEASON."""
    without_season: str = ""
    """Why the model is skipped without a season (season_length 1); empty when it runs without one."""
    log: bool = False
    """Models log(y) whatever `log_transform` says: a variant of another candidate (its name plus LOG_SUFFIX)."""
    regressors: bool = False
    """Uses the series' regressors when it has some (`run` gets them; otherwise None)."""

    def fit_predict(self, y: pd.Series, horizon: int, season_length: int, level: int = 95,
                    log_transform: bool = False, regressors: pd.DataFrame | None = None) -> pd.DataFrame:
        """Forecast `horizon` steps after `y`; raises ModelSkipped when this model cannot run on `y`. `regressors`
        holds the known-ahead columns at (at least) every timestamp of `y` and the `horizon` after it."""
        values = y.to_numpy(dtype=float)
        if not np.isfinite(values).all():
            raise ValueError(f"series has {int((~np.isfinite(values)).sum())} missing or infinite values")
        if log_transform and (values <= 0).any():
            raise ValueError("log_transform needs strictly positive values")
        self.check(len(values), season_length)
        if self.log:
            if log_transform:
                raise ModelSkipped(f"{self.name} models log(y), and log_transform already puts every model on the "
                                   "log scale")
            if (values <= 0).any():
                raise ModelSkipped(f"{self.name} models log(y) and needs strictly positive values; the series has "
                                   f"{int((values <= 0).sum())} zero or negative ones")
            log_transform = True
        index = future_index(y.index, horizon)
        known = regressors_over(regressors, y.index.append(index), len(y)) if self.regressors else None
        fitted = pd.Series(np.log(values) if log_transform else values, index=y.index)
        try:
            mean, lower, upper = self.run(fitted, horizon, season_length, level, known)
        except ModelSkipped:
            raise
        except Exception as error:  # a library failing on one series must not stop the other candidates
            raise ModelSkipped(f"{self.name} failed: {type(error).__name__}: {error}") from error
        frame = pd.DataFrame({"yhat": mean, "yhat_lower": lower, "yhat_upper": upper}, index=index, dtype=float)
        if log_transform:
            frame = np.exp(frame)
        if not np.isfinite(frame.to_numpy()).all():
            raise ModelSkipped(f"{self.name} produced non-finite forecasts")
        # Some models' bounds cross the point forecast at a step (e.g. Prophet's sampled bounds): keep them ordered.
        frame["yhat_lower"] = frame[["yhat_lower", "yhat"]].min(axis=1)
        frame["yhat_upper"] = frame[["yhat_upper", "yhat"]].max(axis=1)
        return frame

    def check(self, n: int, season_length: int) -> None:
        """Raise ModelSkipped when `n` observations are not enough for this model."""
        if self.without_season and season_length <= 1:
            raise ModelSkipped(f"{self.name} needs a season_length above 1 ({self.without_season})")
        if not self.long_seasons and season_length > LONG_SEASON:
            raise ModelSkipped(f"{self.name} skips seasons longer than {LONG_SEASON} (got {season_length}): "
                               "mstl_ets and mstl_arima model such a season by STL instead")
        if self.seasonal and season_length > 1 and n < 2 * season_length:
            raise ModelSkipped(f"{self.name} needs at least two full seasons ({2 * season_length} points at season "
                               f"length {season_length}) to fit, got {n}")
        if n < self.min_points:
            raise ModelSkipped(f"{self.name} needs at least {self.min_points} points, got {n}")


def regressors_over(regressors: pd.DataFrame | None, index: pd.DatetimeIndex, history: int) -> pd.DataFrame | None:
    """The regressors at `index` (the history's `history` timestamps, then the future's), without the columns that
    are constant over the history; None when there are none left."""
    if regressors is None or regressors.shape[1] == 0:
        return None
    missing = index.difference(regressors.index)
    if len(missing):
        raise ValueError(f"the regressors have no rows for {len(missing)} timestamps the forecast needs (first "
                         f"{missing[0]}); give every regressor for the history and the {len(index) - history} steps "
                         "ahead")
    known = regressors.reindex(index).astype(float)
    if not np.isfinite(known.to_numpy()).all():
        raise ValueError(f"regressors {sorted(known.columns[~np.isfinite(known).all()])} have missing or infinite "
                         "values; fill them")
    varying = known.iloc[:history].nunique() > 1
    return known.loc[:, varying] if varying.any() else None


def _statsforecast(model: Callable[[int], object]) -> Run:
    def run(y: pd.Series, horizon: int, season_length: int, level: int, regressors: pd.DataFrame | None) -> Forecast:
        exogenous = {} if regressors is None else {"X": regressors.iloc[:len(y)].to_numpy(),
                                                   "X_future": regressors.iloc[len(y):].to_numpy()}
        # Models used directly on one array run single-threaded: no process pool, no numba threads to tune.
        result = model(season_length).forecast(y=y.to_numpy(), h=horizon, level=[level], **exogenous)
        # AutoARIMA returns its bounds as pandas Series on a 0..h-1 index: plain arrays, so nothing realigns them.
        return tuple(np.asarray(result[key], dtype=float) for key in ("mean", f"lo-{level}", f"hi-{level}"))

    return run


@dataclass(frozen=True)
class ProphetSettings(SpecSettings):
    """Prophet's knobs a series spec may set (`prophet:`); the defaults are Prophet's own."""

    KIND: ClassVar[str] = "prophet"

    country_holidays: str | None = None
    """Country code of the `holidays` package (US, DE, GB, ...): each of its holidays gets its own effect. Daily or
    finer data only: coarser timestamps rarely fall on a holiday."""
    changepoint_prior_scale: float = 0.05
    """Trend flexibility: larger follows turns in the trend sooner, smaller extrapolates a steadier trend."""
    seasonality_mode: str = "additive"
    """'multiplicative' for seasonal swings that grow with the level."""

    def __post_init__(self):
        if self.country_holidays is not None:
            import holidays  # Prophet's own holiday source, installed with it

            if self.country_holidays not in holidays.list_supported_countries():
                raise ValueError(f"country_holidays {self.country_holidays!r} is not a country code of the holidays "
                                 "package; use e.g. US, DE, GB or FR")
        if not (isinstance(self.changepoint_prior_scale, int | float) and self.changepoint_prior_scale > 0):
            raise ValueError(f"changepoint_prior_scale must be a positive number, got {self.changepoint_prior_scale!r}")
        if self.seasonality_mode not in ("additive", "multiplicative"):
            raise ValueError(f"seasonality_mode must be additive or multiplicative, got {self.seasonality_mode!r}")


def prophet_candidate(settings: ProphetSettings) -> Candidate:
    """Prophet with `settings` as a candidate."""

    def run(y: pd.Series, horizon: int, season_length: int, level: int, regressors: pd.DataFrame | None) -> Forecast:
        return _prophet(y, horizon, level, settings, regressors)

    return Candidate("prophet", run, min_points=3, regressors=True)


def _prophet(y: pd.Series, horizon: int, level: int, settings: ProphetSettings,
             regressors: pd.DataFrame | None) -> Forecast:
    from cmdstanpy.utils import get_logger
    from prophet import Prophet  # imported on use: it loads Stan, which the other candidates never need

    # cmdstanpy sets up its logger (at DEBUG, with an INFO handler) on first use: let it, then quiet it; both
    # libraries would log INFO lines on every fit otherwise.
    get_logger().setLevel(logging.WARNING)
    logging.getLogger("prophet").setLevel(logging.WARNING)
    # A seasonality is fitted when the data step is shorter than its cycle and the history covers two cycles.
    step = (y.index[0] + y.index.freq) - y.index[0] if y.index.freq is not None else pd.Timedelta(0)
    span = y.index[-1] - y.index[0]
    cycles = {"yearly_seasonality": pd.Timedelta(days=365.25), "weekly_seasonality": pd.Timedelta(days=7),
              "daily_seasonality": pd.Timedelta(days=1)}
    seasonalities = {name: bool(step < cycle and span >= 2 * cycle) for name, cycle in cycles.items()}
    model = Prophet(interval_width=level / 100, uncertainty_samples=PROPHET_SAMPLES, **seasonalities,
                    changepoint_prior_scale=settings.changepoint_prior_scale,
                    seasonality_mode=settings.seasonality_mode)
    if settings.country_holidays is not None:
        model.add_country_holidays(country_name=settings.country_holidays)
    known = pd.DataFrame(index=range(len(y) + horizon)) if regressors is None else regressors.reset_index(drop=True)
    # Prophet reserves names of its own components (trend, holidays, yhat, cap...): its regressors get
    # positional names, so any column of the user's can be one.
    known.columns = [f"regressor_{position}" for position in range(known.shape[1])]
    for column in known.columns:
        model.add_regressor(column)
    # Prophet draws its interval samples from numpy's global generator: seed it, then put the caller's state back.
    state = np.random.get_state()
    try:
        np.random.seed(PROPHET_SEED)
        model.fit(pd.concat([pd.DataFrame({"ds": y.index, "y": y.to_numpy()}), known.iloc[:len(y)]], axis=1))
        future = pd.concat([pd.DataFrame({"ds": future_index(y.index, horizon)}),
                            known.iloc[len(y):].reset_index(drop=True)], axis=1)
        forecast = model.predict(future)
    finally:
        np.random.set_state(state)
    return (forecast["yhat"].to_numpy(), forecast["yhat_lower"].to_numpy(), forecast["yhat_upper"].to_numpy())


def network_candidate(name: str, settings: NetworkSettings, pretrained: Pretrained | None = None) -> Candidate:
    """A sequence network (trained from scratch, or fine-tuned from `pretrained`) as a candidate."""
    # A pre-trained network was built for the other series' inputs, which carry no regressors.
    return Candidate(name, network_forecast(settings, pretrained), min_points=8, regressors=pretrained is None)


CANDIDATES: dict[str, Candidate] = {
    candidate.name: candidate
    for candidate in (
        Candidate("naive", _statsforecast(lambda m: Naive())),
        Candidate("seasonal_naive", _statsforecast(lambda m: SeasonalNaive(season_length=m)), seasonal=True,
                  without_season="without a season it is naive"),
        Candidate("drift", _statsforecast(lambda m: RandomWalkWithDrift()), min_points=2),
        Candidate("auto_arima", _statsforecast(lambda m: AutoARIMA(season_length=m)), seasonal=True, min_points=4,
                  long_seasons=False, regressors=True),
        Candidate("auto_arima_log", _statsforecast(lambda m: AutoARIMA(season_length=m)), seasonal=True,
                  min_points=4, long_seasons=False, log=True, regressors=True,
                  # On the benchmark's yearly series the log scale lost (mean MASE 1.41 against 1.21 on y).
                  without_season="the log scale is for seasonal swings that grow with the level"),
        Candidate("auto_ets", _statsforecast(lambda m: AutoETS(season_length=m)), seasonal=True, min_points=4,
                  long_seasons=False),
        Candidate("auto_theta", _statsforecast(lambda m: AutoTheta(season_length=m)), seasonal=True, min_points=4),
        Candidate("mstl_ets", _statsforecast(lambda m: MSTL(season_length=m, trend_forecaster=AutoETS(model="ZZN"))),
                  seasonal=True, min_points=4, without_season=ALONE),
        Candidate("mstl_arima", _statsforecast(lambda m: MSTL(season_length=m,
                                                              trend_forecaster=AutoARIMA(seasonal=False))),
                  seasonal=True, min_points=4, without_season=ALONE, regressors=True),
        prophet_candidate(ProphetSettings()),
        *(network_candidate(name, NetworkSettings(architecture=name)) for name in ARCHITECTURES),
    )
}
MODELS = tuple(name for name in CANDIDATES if name not in ARCHITECTURES)
"""The candidates every series is backtested on; the networks join on long series or when the spec names them."""


def family(model: str) -> str:
    """The model a log variant belongs to (auto_arima_log: auto_arima); any other model is its own."""
    return model.removesuffix(LOG_SUFFIX)


def fit_predict(model: str, y: pd.Series, horizon: int, season_length: int, level: int = 95,
                log_transform: bool = False, regressors: pd.DataFrame | None = None) -> pd.DataFrame:
    """Forecast with the named candidate (one of CANDIDATES); see `Candidate.fit_predict`."""
    if model not in CANDIDATES:
        raise ValueError(f"unknown model {model!r}; use one of {list(CANDIDATES)}")
    return CANDIDATES[model].fit_predict(y, horizon, season_length, level, log_transform, regressors)
