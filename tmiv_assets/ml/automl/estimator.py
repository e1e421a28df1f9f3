"""AutoML: Optuna search over the model catalog within a time budget, then an ensemble of the best families."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from tmiv_assets.ml.automl.catalog import PRESETS, families_for
from tmiv_assets.ml.automl.ensembles import (
    caruana_selection,
    make_bagging,
    make_blending,
    make_stacking,
    make_voting,
)
from tmiv_assets.ml.automl.search import FamilyResult, SearchContext, search_families
from tmiv_assets.ml.automl.tuning import SAMPLERS, trials_frame
from tmiv_assets.ml.data.splits import cv_folds
from tmiv_assets.ml.features.preprocessing import make_preprocessor
from tmiv_assets.ml.metrics import LOWER_IS_BETTER, METRICS, PRIMARY_METRIC, check_metric, oof_score

logger = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)  # trials are reported through `progress` instead
SEARCH_SHARE = 0.8  # of the budget for the search; the rest refits the final models on all rows
ENSEMBLES = ("caruana", "voting", "stacking", "blending", "bagging", "best")
SCALERS = ("standard", "minmax", "robust", "none")
MIN_ROWS = 10


class AutoML(BaseEstimator):
    """Search the model catalog with Optuna, then ensemble the families' best models.

    Parameters
    ----------
    task : 'binary', 'multiclass', 'regression' or None to infer from y.
    metric : optimisation metric (default per task: roc_auc, f1_macro, rmse); see metrics.METRICS.
    time_budget_s : wall-clock budget for the whole fit, refit and ensemble included.
    seed, n_jobs : seed of folds, samplers and models; threads per model.
    preset : 'fast' (3 families, 3 folds, best single model), 'balanced', 'best_quality' (every family,
        the MLP included, deeper ensemble selection).
    sampler : 'tpe' (median pruning over CV folds), 'gp' (Bayesian), 'nsga2' (genetic), 'random', 'grid'.
    sampler_options : e.g. {'population_size': 10, 'crossover_prob': 0.9, 'mutation_prob': 0.1} for nsga2.
    ensemble : 'caruana' (greedy selection over out-of-fold predictions, the default), 'voting' (soft,
        equal weights over the top three), 'stacking', 'blending', 'bagging' (bootstrap aggregation of the
        best family) or 'best' (the best single family).
    scaler : scaling of numeric columns in the preprocessor: 'standard', 'minmax', 'robust' or 'none'.
    n_folds : cross-validation folds (None: the preset's); fit(..., times=...) makes them time-ordered.
    pinned_params : {family: {param: value}} fixed by the user over sampled and start values, e.g.
        {'mlp': {'max_epochs': 30, 'patience': 5}, 'lightgbm': {'n_estimators': 300}}.
    log_dir : TensorBoard event logs of the refitted networks go to <log_dir>/<family>; None writes none.
    include, exclude : family names to restrict the search to / leave out.
    max_trials : cap on tuning trials per family; with a budget that is not reached the fit is exactly
        reproducible (a time-bounded search depends on machine speed).
    progress : called with a dict per finished trial: event 'trial', family, number, trial (n of
        n_trials, an estimate), state, value, best (family), best_overall, elapsed_s, eta_s, pruned_reason.
    storage : Optuna RDB URL, journal file path or storage object; lets processes share the studies.
    """

    def __init__(self, task=None, metric=None, time_budget_s: float = 60, seed: int = 0, n_jobs: int = -1,
                 preset: str = "balanced", sampler: str = "tpe", sampler_options: dict | None = None,
                 ensemble: str = "caruana", include=None, exclude=None, max_trials: int | None = None,
                 progress: Callable[[dict], None] | None = None, storage=None, study_prefix: str = "automl",
                 scaler: str = "standard", n_folds: int | None = None, pinned_params: dict | None = None,
                 log_dir: str | None = None):
        self.task = task
        self.metric = metric
        self.time_budget_s = time_budget_s
        self.seed = seed
        self.n_jobs = n_jobs
        self.preset = preset
        self.sampler = sampler
        self.sampler_options = sampler_options
        self.ensemble = ensemble
        self.include = include
        self.exclude = exclude
        self.max_trials = max_trials
        self.progress = progress
        self.storage = storage
        self.study_prefix = study_prefix
        self.scaler = scaler
        self.n_folds = n_folds
        self.pinned_params = pinned_params
        self.log_dir = log_dir

    def fit(self, X: pd.DataFrame, y: pd.Series, times: pd.Series | None = None) -> AutoML:
        """Search and refit on X, y; with `times` (event time per row) the CV folds are time-ordered."""
        started = time.monotonic()
        X, y = self._validate(X, y)
        self.classes_ = np.unique(y) if self.task_ != "regression" else None
        families = families_for(self.task_, self.preset, self.include, self.exclude, len(X))
        times = None if times is None else pd.Series(times).reset_index(drop=True)
        self.folds_ = cv_folds(y, self.task_, self.n_folds or PRESETS[self.preset]["folds"], self.seed, times)
        self.cv_strategy_ = "time-ordered" if times is not None else "shuffled"
        scored = np.sort(np.concatenate([valid for _, valid in self.folds_]))
        context = SearchContext(self.task_, self.metric_, y, self.classes_, self.folds_,
                                _encode(X, self.folds_, self.scaler), self.seed, self.n_jobs, self.sampler,
                                self.sampler_options or {}, self.storage, f"{self.study_prefix}-{self.task_}",
                                self.max_trials, self.progress, self.pinned_params or {}, scored)
        deadline = started + self.time_budget_s * SEARCH_SHARE
        results, self.studies_ = search_families(context, families, PRESETS[self.preset]["tuned"], started, deadline)
        if not results:
            raise ValueError(f"time budget of {self.time_budget_s}s was too small to fit any model on {len(X):,} rows "
                             f"with {len(self.folds_)}-fold CV; raise time_budget_s")
        self.weights_, self.ensemble_score_ = self._ensemble_weights(results, y.iloc[scored], started)
        self.best_pipeline_ = self._refit(results, X, y, context)
        self.leaderboard_ = self._leaderboard(results)
        # Every family's trials, also those whose only trials were pruned or stopped at the budget.
        frames = [trials_frame(study, name) for name, study in self.studies_.items()]
        self.trials_ = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
        self.fit_seconds_ = time.monotonic() - started
        logger.info("AutoML fit %d families, %d trials in %.1fs; final %s", len(results), len(self.trials_),
                    self.fit_seconds_, self.weights_)
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "best_pipeline_")
        return self.best_pipeline_.predict(X)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "best_pipeline_")
        if self.task_ == "regression":
            raise AttributeError("predict_proba is only available for classification")
        return self.best_pipeline_.predict_proba(X)

    def leaderboard(self) -> pd.DataFrame:
        """One row per searched family: CV mean/std, fit seconds, trials, pruned, ensemble weight, params."""
        check_is_fitted(self, "leaderboard_")
        return self.leaderboard_.copy()

    def _validate(self, X: pd.DataFrame, y) -> tuple[pd.DataFrame, pd.Series]:
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"X must be a DataFrame, got {type(X).__name__}")
        y = pd.Series(y)
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
        if y.isna().any():
            raise ValueError(f"target has {int(y.isna().sum())} missing values; drop those rows first")
        for name, value, allowed in (("preset", self.preset, PRESETS), ("sampler", self.sampler, SAMPLERS),
                                     ("ensemble", self.ensemble, ENSEMBLES), ("scaler", self.scaler, SCALERS)):
            if value not in allowed:
                raise ValueError(f"{name} {value!r} is not one of {sorted(allowed)}")
        if not self.time_budget_s or self.time_budget_s <= 0:
            raise ValueError(f"time_budget_s must be positive, got {self.time_budget_s}")
        if X.shape[1] == 0 or X.isna().all().all():
            raise ValueError("every feature is entirely missing (or there are none); there is nothing to learn from")
        self.task_ = self.task or infer_task(y)
        if self.task_ not in METRICS:
            raise ValueError(f"task {self.task_!r} is not one of {sorted(METRICS)}")
        self.metric_ = check_metric(self.metric or PRIMARY_METRIC[self.task_], self.task_)
        if self.task_ != "regression" and y.nunique() < 2:
            raise ValueError(f"target has a single class ({y.iloc[0]!r}); classification needs two or more")
        if len(y) < MIN_ROWS:
            raise ValueError(f"{len(y)} rows are fewer than the {MIN_ROWS} needed for cross-validation")
        if self.task_ != "regression" and y.value_counts().min() < 2:
            counts = y.value_counts()
            raise ValueError(f"class {counts.idxmin()} has {counts.min()} row; every class needs two or more "
                             "rows for stratified cross-validation")
        return X.reset_index(drop=True), y.reset_index(drop=True)

    def _ensemble_weights(self, results: list[FamilyResult], y: pd.Series, started: float):
        ranked = sorted(results, key=lambda r: r.cv_mean, reverse=self.metric_ not in LOWER_IS_BETTER)
        rounds = PRESETS[self.preset]["ensemble_rounds"]
        if self.ensemble in ("best", "bagging") or len(results) == 1 or (self.ensemble == "caruana" and rounds == 0):
            return {ranked[0].family.name: 1.0}, ranked[0].cv_mean
        if self.ensemble != "caruana":
            top = ranked[:3]
            return {r.family.name: 1 / len(top) for r in top}, self._blend_score(top, [1 / len(top)] * len(top), y)
        selection = caruana_selection({r.family.name: r.oof for r in ranked},
                                      lambda p: oof_score(self.metric_, self.task_, y, p, self.classes_),
                                      greater_is_better=self.metric_ not in LOWER_IS_BETTER, rounds=rounds)
        weights = self._affordable(selection.weights, results, started)
        members = [r for r in results if r.family.name in weights]
        return weights, self._blend_score(members, [weights[r.family.name] for r in members], y)

    def _affordable(self, weights: dict[str, float], results: list[FamilyResult], started: float) -> dict[str, float]:
        """Members in order of weight while their estimated refit time fits in the budget; the first always."""
        cost = {r.family.name: r.fold_seconds for r in results}
        factor = 4 if self.ensemble == "stacking" else 1.5  # all rows instead of (K-1)/K of them, and a margin
        left = started + self.time_budget_s - time.monotonic()
        kept: dict[str, float] = {}
        for name, weight in sorted(weights.items(), key=lambda item: -item[1]):
            if kept and sum(cost[k] for k in kept) * factor + cost[name] * factor > left:
                logger.info("dropping %s from the ensemble: its refit would overrun the budget", name)
                continue
            kept[name] = weight
        return {k: v / sum(kept.values()) for k, v in kept.items()}

    def _blend_score(self, members: list[FamilyResult], weights: list[float], y: pd.Series) -> float:
        blend = sum(w * r.oof for w, r in zip(weights, members, strict=True)) / sum(weights)
        return oof_score(self.metric_, self.task_, y, blend, self.classes_)

    def _refit(self, results: list[FamilyResult], X: pd.DataFrame, y: pd.Series, context: SearchContext) -> Pipeline:
        """One preprocessor in front of the final estimator, so the pipeline keeps the ('preprocess',
        'estimator') shape that explanation and serving rely on."""
        members = [r for r in results if r.family.name in self.weights_]
        estimators = [(r.family.name, self._member(r, context)) for r in members]
        if self.ensemble == "bagging":
            final = make_bagging(estimators[0][1], self.task_, seed=self.seed)
        elif len(members) == 1:
            final = estimators[0][1]
        elif self.ensemble == "stacking":
            final = make_stacking(estimators, self.task_, cv=len(self.folds_), seed=self.seed)
        elif self.ensemble == "blending":
            final = make_blending(estimators, self.task_, seed=self.seed)
        else:
            final = make_voting(estimators, self.task_, weights=[self.weights_[r.family.name] for r in members])
        return Pipeline([("preprocess", make_preprocessor(self.scaler)), ("estimator", final)]).fit(X, y)

    def _member(self, result: FamilyResult, context: SearchContext):
        estimator = result.family.build(context.params_for(result.family, result.params), self.task_, self.seed,
                                        self.n_jobs)
        if self.log_dir and "log_dir" in estimator.get_params():
            estimator.set_params(log_dir=str(Path(self.log_dir) / result.family.name))
        return estimator

    def _leaderboard(self, results: list[FamilyResult]) -> pd.DataFrame:
        rows = [{"model": r.family.name, f"cv_{self.metric_}_mean": r.cv_mean, f"cv_{self.metric_}_std": r.cv_std,
                 "fit_seconds": round(r.fit_seconds, 3), "trials": len(r.trials),
                 "pruned": int((r.trials["state"] == "PRUNED").sum()),
                 "ensemble_weight": round(self.weights_.get(r.family.name, 0.0), 3), "params": repr(r.params)}
                for r in results]
        board = pd.DataFrame(rows).sort_values(f"cv_{self.metric_}_mean", ascending=self.metric_ in LOWER_IS_BETTER,
                                               kind="stable")
        return board.reset_index(drop=True)


def _encode(X: pd.DataFrame, folds, scaler: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each fold's training rows fit a preprocessor that encodes both sides once, reused by every trial."""
    encoded = []
    for train, valid in folds:
        preprocessor = make_preprocessor(scaler).fit(X.iloc[train])
        encoded.append((preprocessor.transform(X.iloc[train]), preprocessor.transform(X.iloc[valid])))
    return encoded


def infer_task(y: pd.Series) -> str:
    """regression for non-integer numbers or many distinct integers; binary / multiclass otherwise."""
    distinct = y.nunique(dropna=True)
    if pd.api.types.is_float_dtype(y) and not np.allclose(y.dropna(), np.round(y.dropna())):
        return "regression"
    if pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y) and distinct > 20:
        return "regression"
    return "binary" if distinct == 2 else "multiclass"
