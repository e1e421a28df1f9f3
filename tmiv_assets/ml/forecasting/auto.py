"""Automatic model choice per series: backtest every candidate, choose by mean MASE, calibrate its intervals.

`AutoForecaster.fit` runs the rolling-origin backtest (backtest.py) over the candidates of models.py and the
median_top3 combination, ranks them by mean MASE — MASE because it is scale-free and compares a model with the
seasonal naive forecast, so one rule works for every series — and chooses AutoARIMA (on y or on log(y), whichever
has the lower backtest MASE) unless the best model beats it clearly (a mean MASE at least SWITCH_MARGIN lower and a
lower MASE in every fold) or AutoARIMA is worse than the seasonal naive forecast in every fold. Three folds of a
short series rank close models by chance: on the benchmark's 23 non-weekly series the lowest backtest MASE alone
gave a holdout MASE of 1.109 against AutoARIMA's 1.031, the clear-win rule 1.002, and with AutoARIMA's scale chosen
by the backtest 0.959. Then it refits the chosen model (or the combination's three members) on the whole series.
`predict` returns that forecast with the interval half-widths multiplied by the conformal factor from the chosen
model's backtest errors, so the nominal level is what the backtest delivered.

Decisions for degenerate input: a constant series, or one too short for a single fold of MIN_TRAIN training points
plus the horizon, raises a ValueError saying so (there is no model choice to make, and no honest score). A series
too short for two seasons runs the non-seasonal candidates only; the skipped ones carry the reason on the leaderboard.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tmiv_assets.ml.forecasting.backtest import (
    COMBINATION,
    BacktestResult,
    Calibration,
    backtest,
    calibrate,
    median_combination,
    widen,
)
from tmiv_assets.ml.forecasting.models import (
    CANDIDATES,
    COLUMNS,
    MODELS,
    Candidate,
    ModelSkipped,
    ProphetSettings,
    family,
    future_index,
    network_candidate,
    prophet_candidate,
    regressors_over,
    season_length_for,
)
from tmiv_assets.ml.forecasting.neural import ARCHITECTURES, NetworkSettings, Pretrained, pretrain

if TYPE_CHECKING:
    from tmiv_assets.ml.data.spec import SeriesSpec

logger = logging.getLogger(__name__)

DEFAULT_MODELS = ("auto_arima", "auto_arima_log")  # the default, on y or on log(y): the backtest picks the scale
SWITCH_MARGIN = 0.2  # a fifth lower mean backtest MASE, and lower in every fold, to choose another model


def prefer_default(board: pd.DataFrame, scores: pd.DataFrame, defaults: tuple[str, ...] = DEFAULT_MODELS,
                   margin: float = SWITCH_MARGIN) -> tuple[pd.DataFrame, str]:
    """The leaderboard with the default (the best-ranked of `defaults`) moved first unless the best model beats it
    clearly (a mean MASE at least `margin` lower, and lower in every fold) or the default is worse than the seasonal
    naive forecast (the naive one without a season) in every fold; and why the first model is chosen."""
    ok = board[board["status"] == "ok"]
    best = ok.iloc[0]
    default = next((model for model in ok["model"] if model in defaults), None)
    if default is None or best["model"] == default:
        return board, f"{best['model']}: the lowest mean backtest MASE"
    incumbent = ok[ok["model"] == default].iloc[0]
    folds = scores.pivot_table(index="fold", columns="model", values="mase")
    reference = next((m for m in ("seasonal_naive", "naive") if m in folds.columns), None)
    if reference is not None and bool((folds[default] > folds[reference]).all()):
        return board, (f"{best['model']}: the lowest mean backtest MASE ({default} was worse than {reference} in "
                       "every fold)")
    every_fold = bool((folds[best["model"]] < folds[default]).all())
    lower = 1 - best["mase"] / incumbent["mase"]
    if lower >= margin and every_fold:
        return board, f"{best['model']}: mean backtest MASE {lower:.0%} below {default}'s and lower in every fold"
    reason = f"only {lower:.0%} lower" if every_fold else f"{lower:.0%} lower, not in every fold"
    reordered = pd.concat([board[board["model"] == default], board[board["model"] != default]], ignore_index=True)
    return reordered, (f"{default}: the best, {best['model']} (mean MASE {best['mase']:.3f}), is {reason}; another "
                       f"model needs {margin:.0%} lower and every fold")


class AutoForecaster:
    """Backtest-driven choice of a forecasting model for one series.

    season_length None takes it from the series' frequency (`season_length_for`); models None runs every
    statistical candidate, Prophet, the combination and the sequence networks named in
    `network["architectures"]` (none by default: on the benchmark's 26 series they made the automatic choice
    worse, as extra candidates that win the backtest by luck more often than they win the holdout).
    `network` also takes NetworkSettings fields for them, and `architecture`, the network pre-trained on
    `pretraining` (other series of the same frequency), fine-tuned on this series and backtested as
    `<architecture>_transfer` beside the one trained from scratch. `prophet` takes ProphetSettings fields
    (country holidays, changepoint prior, seasonality mode).
    """

    def __init__(self, season_length: int | None = None, horizon: int = 12, folds: int = 3, level: int = 95,
                 models: list[str] | tuple[str, ...] | None = None, log_transform: bool = False,
                 network: dict | None = None, pretraining: tuple[pd.Series, ...] | list[pd.Series] = (),
                 prophet: dict | None = None):
        if not 0 < level < 100:
            raise ValueError(f"level is a percentage in (0, 100), got {level!r}")
        if horizon < 1 or folds < 1:
            raise ValueError(f"horizon and folds must be at least 1, got {horizon} and {folds}")
        self.season_length = season_length
        self.horizon = horizon
        self.folds = folds
        self.level = level
        self.models = tuple(models) if models is not None else None
        self.log_transform = log_transform
        self.network = dict(network or {})
        self.pretraining = tuple(pretraining)
        self.prophet = ProphetSettings.from_mapping(prophet or {})

    @classmethod
    def from_spec(cls, spec: SeriesSpec, **overrides) -> AutoForecaster:
        """Settings of a `SeriesSpec` (season_length, horizon, folds, log_transform, network, prophet), overridable
        by keyword."""
        settings = {"season_length": spec.season_length, "horizon": spec.horizon, "folds": spec.folds,
                    "log_transform": spec.log_transform, "network": spec.network, "prophet": spec.prophet}
        return cls(**(settings | overrides))

    def fit(self, series: pd.Series, regressors: pd.DataFrame | None = None) -> AutoForecaster:
        """Backtest every candidate, then refit the best on the whole series."""
        return self.evaluate(series, regressors=regressors).refit(series, regressors)

    def evaluate(self, series: pd.Series, progress: Callable[[dict], None] | None = None,
                 regressors: pd.DataFrame | None = None) -> AutoForecaster:
        """The rolling-origin backtest of every candidate: leaderboard_, fold_scores_, fold_forecasts_; `progress`
        as in `backtest.backtest`. `regressors`: columns known ahead (numbers), indexed by timestamp over the series
        and, for `refit`, the horizon after it; the ARIMA models, Prophet and the networks use them."""
        y = self._checked(series)
        self._known(y, regressors, ahead=0)
        networks = self._architectures()
        candidates = self._candidates(y, networks)
        models = self.models if self.models is not None else (*MODELS, *networks, COMBINATION)
        models = (*models, *(name for name in candidates if name not in CANDIDATES))
        result: BacktestResult = backtest(y, self.horizon, self.season_length_, models, self.folds, self.level,
                                          self.log_transform, candidates, progress, regressors)
        self.leaderboard_ = result.leaderboard()
        if not (self.leaderboard_["status"] == "ok").any():
            reasons = "; ".join(f"{model}: {status}" for model, status in result.status.items())
            raise ValueError(f"no model can forecast this series of {len(y)} points ({reasons})")
        self.fold_scores_ = result.scores
        self.leaderboard_, self.choice_ = prefer_default(self.leaderboard_, result.scores)
        # Which models forecast with the regressors (the others forecast the series from its past alone).
        takes = {name for name, candidate in candidates.items() if candidate.regressors and self.regressors_}
        takes |= {COMBINATION} if takes & set(result.members) else set()
        board = self.leaderboard_
        board["regressors"] = np.where(board["model"].isin(takes) & (board["status"] == "ok"),
                                       ", ".join(self.regressors_), "")
        self.fold_forecasts_ = result.forecasts
        self.combination_members_ = result.members
        return self

    def restore(self, leaderboard: pd.DataFrame, fold_forecasts: pd.DataFrame, combination_members: tuple[str, ...],
                season_length: int) -> AutoForecaster:
        """Take a backtest made earlier (e.g. in another step) instead of running `evaluate` again."""
        self.leaderboard_, self.fold_forecasts_ = leaderboard, fold_forecasts
        self.combination_members_, self.season_length_ = tuple(combination_members), season_length
        return self

    def refit(self, series: pd.Series, regressors: pd.DataFrame | None = None) -> AutoForecaster:
        """Refit the backtest's best model (the next one when that fails on the whole series) and calibrate its
        intervals on its backtest errors; `regressors` as in `evaluate`, and over the horizon too."""
        if not hasattr(self, "leaderboard_"):
            raise ValueError("call evaluate(series) or restore(...) before refit(series)")
        y = self._checked(series)
        self._known(y, regressors, ahead=self.horizon)
        failures = []
        for model in self.leaderboard_.loc[self.leaderboard_["status"] == "ok", "model"]:
            try:
                self.forecast_ = self._refit(y, model, self.combination_members_, regressors)
            except ModelSkipped as error:
                failures.append(f"{model}: {error}")
                logger.warning("refit of %s on the whole series failed (%s); trying the next model", model, error)
                continue
            self.chosen_ = model
            break
        else:
            raise ValueError(f"no model could be refitted on the whole series ({'; '.join(failures)})")
        self.members_ = self.combination_members_ if self.chosen_ == COMBINATION else (self.chosen_,)
        self.calibration_: Calibration = calibrate(self.fold_forecasts_[self.fold_forecasts_["model"] == self.chosen_],
                                                   self.level)
        self.calibration_factor_ = self.calibration_.factor
        return self

    def _architectures(self) -> tuple[str, ...]:
        """The sequence networks this series is backtested on (of `models`, when given)."""
        if self.models is not None:
            return tuple(model for model in self.models if model in ARCHITECTURES)
        return tuple(self.network.get("architectures", ()))

    def _candidates(self, y: pd.Series, networks: tuple[str, ...] = ()) -> dict[str, Candidate]:
        """The candidates with the spec's network settings, plus the transfer network when networks are in play
        and there are pre-training series (pre-trained once)."""
        candidates = dict(CANDIDATES)
        if self.prophet != ProphetSettings():
            candidates["prophet"] = prophet_candidate(self.prophet)
        if set(self.network) - {"architecture", "architectures"}:
            for architecture in ARCHITECTURES:
                candidates[architecture] = network_candidate(architecture, self._network(architecture))
        if not self.pretraining or not (networks or hasattr(self, "transfer_")):
            return candidates
        if not hasattr(self, "transfer_"):
            architecture = self.network.get("architecture", NetworkSettings.architecture)
            settings = self._network(architecture)
            # The lookback of the first backtest fold's training part, so every fold and the refit can use it.
            shortest = len(y) - self.folds * self.horizon
            lookback = settings.lookback_for(max(shortest, 1), self.horizon, self.season_length_)
            series = [np.log(s.to_numpy(float)) if self.log_transform and (s > 0).all() else s.to_numpy(float)
                      for s in self.pretraining]
            try:
                pretrained: Pretrained | str = pretrain(series, settings, lookback, self.horizon, self.season_length_)
            except ValueError as error:
                pretrained = f"pre-training failed: {error}"
            name = f"{architecture}_transfer"
            self.transfer_ = (network_candidate(name, settings, pretrained) if isinstance(pretrained, Pretrained)
                              else Candidate(name, _declines(pretrained)))
            self.pretrained_ = pretrained
        return candidates | {self.transfer_.name: self.transfer_}

    def _network(self, architecture: str) -> NetworkSettings:
        """The spec's network settings for one architecture (bidirectional is the LSTM's alone)."""
        shape = {key: value for key, value in self.network.items()
                 if key not in ("architecture", "architectures") and (key != "bidirectional" or architecture == "lstm")}
        return NetworkSettings(architecture=architecture, **shape)

    def _known(self, y: pd.Series, regressors: pd.DataFrame | None, ahead: int) -> None:
        """Fail early, naming what is missing, when `regressors` do not cover the series and `ahead` steps after it;
        `regressors_` lists the columns that vary over the series (the ones the models get)."""
        self.regressors_: tuple[str, ...] = ()
        if regressors is None:
            return
        if not isinstance(regressors, pd.DataFrame) or not isinstance(regressors.index, pd.DatetimeIndex):
            raise ValueError("regressors must be a DataFrame indexed by timestamps (the series' and the horizon's)")
        index = y.index.append(future_index(y.index, ahead)) if ahead else y.index
        known = regressors_over(regressors, index, len(y))
        self.regressors_ = () if known is None else tuple(known.columns)

    def _checked(self, series: pd.Series) -> pd.Series:
        y = _regular(series)
        if self.log_transform and (y <= 0).any():
            raise ValueError(f"log_transform needs strictly positive values; the series has {int((y <= 0).sum())} "
                             "zero or negative ones")
        if y.nunique() == 1:
            raise ValueError(f"series is constant ({y.iloc[0]!r} at all {len(y)} points): there is nothing to choose "
                             "between and no error scale; forecast the constant directly")
        if not hasattr(self, "season_length_"):
            self.season_length_ = self.season_length or season_length_for(y.index.freqstr)
        return y

    def predict(self) -> pd.DataFrame:
        """yhat, yhat_lower, yhat_upper over the horizon after the series, with calibrated intervals."""
        if not hasattr(self, "forecast_"):
            raise ValueError("call fit(series) before predict()")
        # Log-modelled data is positive, so a widened lower bound below zero only claims impossible values.
        logged = self.log_transform or all(family(member) != member for member in self.members_)
        return widen(self.forecast_, self.calibration_factor_, floor=0.0 if logged else None)

    def _refit(self, y: pd.Series, model: str, members: tuple[str, ...],
               regressors: pd.DataFrame | None) -> pd.DataFrame:
        names = members if model == COMBINATION else (model,)
        transfer = any(name not in CANDIDATES for name in names)  # pre-train only when the transfer network is used
        candidates = self._candidates(y, self._architectures() if transfer else ())
        forecasts = {name: candidates[name].fit_predict(y, self.horizon, self.season_length_, self.level,
                                                        self.log_transform, regressors) for name in names}
        if model != COMBINATION:
            return forecasts[model]
        stacked = pd.concat([frame.assign(model=name, fold=0, origin=frame.index[0], step=np.arange(len(frame)),
                                          ds=frame.index, actual=np.nan) for name, frame in forecasts.items()])
        combined = median_combination(stacked, members)
        return combined.set_index(pd.DatetimeIndex(combined["ds"], freq=forecasts[names[0]].index.freq))[COLUMNS]


def _declines(reason: str):
    """A candidate `run` that always skips with `reason`."""

    def run(y: pd.Series, horizon: int, season_length: int, level: int, regressors: pd.DataFrame | None):
        raise ModelSkipped(reason)

    return run


def _regular(series: pd.Series) -> pd.Series:
    """A float copy of `series` whose DatetimeIndex carries its frequency; a clear error otherwise."""
    if not isinstance(series, pd.Series) or not isinstance(series.index, pd.DatetimeIndex):
        raise ValueError("expected a pd.Series with a DatetimeIndex (see ingest.read_series_frame and split_series)")
    y = series.astype(float)
    if not np.isfinite(y.to_numpy()).all():
        raise ValueError(f"series has {int((~np.isfinite(y.to_numpy())).sum())} missing or infinite values; fill "
                         "or drop them first")
    if not y.index.is_monotonic_increasing or y.index.has_duplicates:
        raise ValueError("series index must be increasing without duplicate timestamps")
    freq = y.index.freq or (pd.infer_freq(y.index) if len(y) >= 3 else None)
    if freq is None:
        raise ValueError("series index has no regular frequency; resample it, e.g. series.asfreq('MS')")
    y.index = pd.DatetimeIndex(y.index, freq=freq)
    return y
