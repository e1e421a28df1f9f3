"""AutoML: Optuna search over the model catalog within a time budget, then an ensemble of the best families."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import optuna
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from tmiv_assets.ml.ensembles import caruana_selection, make_blending, make_stacking, make_voting
from tmiv_assets.ml.model_catalog import PRESETS, families_for, make_preprocessor
from tmiv_assets.ml.search import FamilyResult, SearchContext, search_families
from tmiv_assets.ml.training import (
    PRIMARY_METRIC,
    CandidateResult,
    build_preprocessor,
    candidate_estimators,
    score_model,
)
from tmiv_assets.ml.tuning import LOWER, METRICS, SAMPLERS, oof_score, trials_frame

logger = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)  # trials are reported through `progress` instead
SEARCH_SHARE = 0.8  # of the budget for the search; the rest refits the final models on all rows
ENSEMBLES = ("caruana", "voting", "stacking", "blending", "best")
MIN_ROWS = 10


class AutoML(BaseEstimator):
    """Search the model catalog with Optuna, then ensemble the families' best models.

    Parameters
    ----------
    task : 'binary', 'multiclass', 'regression' or None to infer from y.
    metric : optimisation metric (default per task: roc_auc, f1_macro, rmse); see tuning.METRICS.
    time_budget_s : wall-clock budget for the whole fit, refit and ensemble included.
    seed, n_jobs : seed of folds, samplers and models; threads per model.
    preset : 'fast' (3 families, 3 folds, best single model), 'balanced', 'best_quality' (every family,
        the MLP included, deeper ensemble selection).
    sampler : 'tpe' (median pruning over CV folds), 'gp' (Bayesian), 'nsga2' (genetic), 'random', 'grid'.
    sampler_options : e.g. {'population_size': 10, 'crossover_prob': 0.9, 'mutation_prob': 0.1} for nsga2.
    ensemble : 'caruana' (greedy selection over out-of-fold predictions, the default), 'voting' (soft,
        equal weights over the top three), 'stacking', 'blending', or 'best' (the best single family).
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
                 progress: Callable[[dict], None] | None = None, storage=None, study_prefix: str = "automl"):
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

    def fit(self, X: pd.DataFrame, y: pd.Series) -> AutoML:
        started = time.monotonic()
        X, y = self._validate(X, y)
        self.train_X_, self.train_y_ = X, y
        self.classes_ = np.unique(y) if self.task_ != "regression" else None
        families = families_for(self.task_, self.preset, self.include, self.exclude, len(X))
        folds = self._folds(X, y)
        context = SearchContext(self.task_, self.metric_, y, self.classes_, folds, _encode(X, folds), self.seed,
                                self.n_jobs, self.sampler, self.sampler_options or {}, self.storage,
                                f"{self.study_prefix}-{self.task_}", self.max_trials, self.progress)
        deadline = started + self.time_budget_s * SEARCH_SHARE
        results, self.studies_ = search_families(context, families, PRESETS[self.preset]["tuned"], started, deadline)
        if not results:
            raise ValueError(f"time budget of {self.time_budget_s}s was too small to fit any model on {len(X):,} rows "
                             f"with {len(folds)}-fold CV; raise time_budget_s")
        self.weights_, self.ensemble_score_ = self._ensemble_weights(results, y, started)
        self.best_pipeline_ = self._refit(results, X, y)
        self.leaderboard_ = self._leaderboard(results)
        # Every family's trials, also those whose only trials were pruned or stopped at the budget.
        self.trials_ = pd.concat([trials_frame(study, name) for name, study in self.studies_.items()],
                                 ignore_index=True)
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
                                     ("ensemble", self.ensemble, ENSEMBLES)):
            if value not in allowed:
                raise ValueError(f"{name} {value!r} is not one of {sorted(allowed)}")
        if not self.time_budget_s or self.time_budget_s <= 0:
            raise ValueError(f"time_budget_s must be positive, got {self.time_budget_s}")
        if X.shape[1] == 0 or X.isna().all().all():
            raise ValueError("every feature is entirely missing (or there are none); there is nothing to learn from")
        self.task_ = self.task or infer_task(y)
        if self.task_ not in METRICS:
            raise ValueError(f"task {self.task_!r} is not one of {sorted(METRICS)}")
        self.metric_ = self.metric or PRIMARY_METRIC[self.task_]
        if self.metric_ not in METRICS[self.task_]:
            raise ValueError(f"metric {self.metric_!r} does not fit task {self.task_!r}; use one of {METRICS[self.task_]}")
        if self.task_ != "regression" and y.nunique() < 2:
            raise ValueError(f"target has a single class ({y.iloc[0]!r}); classification needs two or more")
        if len(y) < MIN_ROWS:
            raise ValueError(f"{len(y)} rows are fewer than the {MIN_ROWS} needed for cross-validation")
        if self.task_ != "regression" and y.value_counts().min() < 2:
            counts = y.value_counts()
            raise ValueError(f"class {counts.idxmin()} has {counts.min()} row; every class needs two or more "
                             "rows for stratified cross-validation")
        return X.reset_index(drop=True), y.reset_index(drop=True)

    def _folds(self, X: pd.DataFrame, y: pd.Series) -> list[tuple[np.ndarray, np.ndarray]]:
        """Stratified K folds; K shrinks to the smallest class size (at least 2) rather than failing."""
        n_splits = PRESETS[self.preset]["folds"]
        if self.task_ == "regression":
            return list(KFold(n_splits, shuffle=True, random_state=self.seed).split(X))
        smallest = int(y.value_counts().min())
        if smallest < n_splits:
            logger.warning("smallest class has %d rows: using %d CV folds instead of %d", smallest, smallest, n_splits)
        return list(StratifiedKFold(min(n_splits, smallest), shuffle=True, random_state=self.seed).split(X, y))

    def _ensemble_weights(self, results: list[FamilyResult], y: pd.Series, started: float):
        ranked = sorted(results, key=lambda r: r.cv_mean, reverse=self.metric_ not in LOWER)
        rounds = PRESETS[self.preset]["ensemble_rounds"]
        if self.ensemble == "best" or len(results) == 1 or (self.ensemble == "caruana" and rounds == 0):
            return {ranked[0].family.name: 1.0}, ranked[0].cv_mean
        if self.ensemble != "caruana":
            top = ranked[:3]
            return {r.family.name: 1 / len(top) for r in top}, self._blend_score(top, [1 / len(top)] * len(top), y)
        selection = caruana_selection({r.family.name: r.oof for r in ranked},
                                      lambda p: oof_score(self.metric_, self.task_, y, p, self.classes_),
                                      greater_is_better=self.metric_ not in LOWER, rounds=rounds)
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

    def _refit(self, results: list[FamilyResult], X: pd.DataFrame, y: pd.Series) -> Pipeline:
        """One preprocessor in front of the final estimator, so the pipeline keeps the ('preprocess',
        'estimator') shape that explanation and serving rely on."""
        members = [r for r in results if r.family.name in self.weights_]
        estimators = [(r.family.name, r.family.build(r.params, self.task_, self.seed, self.n_jobs)) for r in members]
        if len(members) == 1:
            final = estimators[0][1]
        elif self.ensemble == "stacking":
            final = make_stacking(estimators, self.task_, cv=len(self._folds(X, y)), seed=self.seed)
        elif self.ensemble == "blending":
            final = make_blending(estimators, self.task_, seed=self.seed)
        else:
            final = make_voting(estimators, self.task_, weights=[self.weights_[r.family.name] for r in members])
        return Pipeline([("preprocess", make_preprocessor()), ("estimator", final)]).fit(X, y)

    def _leaderboard(self, results: list[FamilyResult]) -> pd.DataFrame:
        rows = [{"model": r.family.name, f"cv_{self.metric_}_mean": r.cv_mean, f"cv_{self.metric_}_std": r.cv_std,
                 "fit_seconds": round(r.fit_seconds, 3), "trials": len(r.trials),
                 "pruned": int((r.trials["state"] == "PRUNED").sum()),
                 "ensemble_weight": round(self.weights_.get(r.family.name, 0.0), 3), "params": repr(r.params)}
                for r in results]
        board = pd.DataFrame(rows).sort_values(f"cv_{self.metric_}_mean", ascending=self.metric_ in LOWER,
                                               kind="stable")
        return board.reset_index(drop=True)


def _encode(X: pd.DataFrame, folds) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each fold's training rows fit a preprocessor that encodes both sides once, reused by every trial."""
    encoded = []
    for train, valid in folds:
        preprocessor = make_preprocessor().fit(X.iloc[train])
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


def candidate_results(automl: AutoML, X_test: pd.DataFrame, y_test: pd.Series, positive_class=None,
                      seed: int = 0) -> list:
    """The final AutoML model and a no-skill baseline scored on the test split, then one row per searched
    family with its cross-validated score (families are not refitted alone, so they have no test score)."""
    final = CandidateResult("automl", automl.best_pipeline_, score_model(automl.best_pipeline_, X_test, y_test,
                            automl.task_, positive_class), round(automl.fit_seconds_, 3),
                            {"members": repr(automl.weights_), "preset": automl.preset, "sampler": automl.sampler})
    baseline_name, baseline = next((n, e) for n, e in candidate_estimators(automl.task_, seed).items()
                                   if n.startswith("baseline"))
    baseline_model = Pipeline([("preprocess", build_preprocessor()), ("estimator", baseline)])
    baseline_model.fit(automl.train_X_, automl.train_y_)
    results = [final, CandidateResult(baseline_name, baseline_model, score_model(baseline_model, X_test, y_test,
               automl.task_, positive_class), 0.0, {})]
    for row in automl.leaderboard_.to_dict("records"):
        cv = {k: v for k, v in row.items() if k.startswith("cv_")}
        results.append(CandidateResult(row["model"], None, cv | {"trials": row["trials"], "pruned": row["pruned"],
                                       "ensemble_weight": row["ensemble_weight"]}, row["fit_seconds"],
                                       {"params": row["params"]}))
    return results
