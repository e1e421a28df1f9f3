"""AutoML: Optuna search over the model catalog within a time budget, then greedy ensemble selection."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import optuna
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.ensemble import VotingClassifier, VotingRegressor
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from tmiv_assets.ml.model_catalog import PRESETS, ModelFamily, families_for
from tmiv_assets.ml.training import LOWER_IS_BETTER, PRIMARY_METRIC, build_preprocessor
from tmiv_assets.ml.tuning import make_sampler, oof_score

logger = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)  # trials are reported through `progress` instead
METRICS = {"binary": ("roc_auc", "log_loss", "accuracy", "f1_macro"),
           "multiclass": ("f1_macro", "log_loss", "accuracy", "roc_auc"),
           "regression": ("rmse", "mae", "r2")}
REFIT_SHARE = 0.25  # of the budget kept back for refitting the final models on all rows


@dataclass
class _FamilyResult:
    family: ModelFamily
    params: dict
    cv_mean: float
    cv_std: float
    fit_seconds: float
    oof: np.ndarray
    trials: int
    pruned: int


class AutoML(BaseEstimator):
    """Search the model catalog with Optuna, then build a Caruana ensemble of the families' best models.

    Parameters
    ----------
    task : 'binary', 'multiclass', 'regression' or None to infer from y.
    metric : optimisation metric (default per task: roc_auc, f1_macro, rmse).
    time_budget_s : wall-clock budget for the whole fit, refit and ensemble included.
    preset : 'fast' (3 families, 3 folds, no ensemble), 'balanced', 'best_quality' (every family).
    sampler : 'tpe' (with median pruning over CV folds), 'gp' (Bayesian), 'nsga2' (genetic), 'random'.
    include, exclude : family names to restrict the search to / leave out.
    progress : called with a dict per finished trial (event 'trial': family, number, value, best,
        elapsed_s, eta_s, state) and per search phase (event 'phase').
    storage : Optuna storage URL or object; lets several processes share the studies.
    """

    def __init__(self, task=None, metric=None, time_budget_s: float = 60, seed: int = 0, n_jobs: int = -1,
                 preset: str = "balanced", sampler: str = "tpe", include=None, exclude=None,
                 progress: Callable[[dict], None] | None = None, storage=None, study_prefix: str = "automl"):
        self.task = task
        self.metric = metric
        self.time_budget_s = time_budget_s
        self.seed = seed
        self.n_jobs = n_jobs
        self.preset = preset
        self.sampler = sampler
        self.include = include
        self.exclude = exclude
        self.progress = progress
        self.storage = storage
        self.study_prefix = study_prefix

    def fit(self, X: pd.DataFrame, y: pd.Series) -> AutoML:
        started = time.monotonic()
        self._validate(X, y)
        self.task_ = self.task or infer_task(y)
        self.metric_ = self.metric or PRIMARY_METRIC[self.task_]
        if self.metric_ not in METRICS[self.task_]:
            raise ValueError(f"metric {self.metric_!r} does not fit task {self.task_!r}; use one of {METRICS[self.task_]}")
        y = y.reset_index(drop=True)
        X = X.reset_index(drop=True)
        self.classes_ = np.unique(y) if self.task_ != "regression" else None
        families = families_for(self.task_, self.preset, self.include, self.exclude, len(X))
        folds = self._folds(X, y)
        deadline = started + self.time_budget_s * (1 - REFIT_SHARE)
        results = self._search(families, X, y, folds, deadline)
        if not results:
            raise ValueError(f"time budget of {self.time_budget_s}s was too small to fit any model on "
                             f"{len(X):,} rows; raise time_budget_s")
        self.weights_ = self._ensemble(results, y)
        self.best_pipeline_ = self._refit(results, X, y)
        self.leaderboard_ = self._leaderboard(results)
        self.fit_seconds_ = time.monotonic() - started
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
        """One row per searched family: CV mean/std, fit seconds, trials, ensemble weight, params; best first."""
        check_is_fitted(self, "leaderboard_")
        return self.leaderboard_.copy()

    def _validate(self, X: pd.DataFrame, y: pd.Series) -> None:
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"X must be a DataFrame, got {type(X).__name__}")
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
        if y.isna().any():
            raise ValueError(f"target has {int(y.isna().sum())} missing values; drop those rows first")
        usable = [c for c in X.columns if X[c].notna().any()]
        if not usable:
            raise ValueError("every feature is entirely missing; there is nothing to learn from")
        folds = PRESETS[self.preset]["folds"] if self.preset in PRESETS else 5
        task = self.task or infer_task(y)
        if task != "regression":
            counts = y.value_counts()
            if len(counts) < 2:
                raise ValueError(f"target has a single class ({counts.index[0]!r}); classification needs two or more")
            if counts.min() < folds:
                raise ValueError(f"class {counts.idxmin()!r} has {counts.min()} rows, fewer than the {folds} CV folds; "
                                 "collect more rows or use preset='fast' (3 folds)")
        elif len(y) < 2 * folds:
            raise ValueError(f"{len(y)} rows are too few for {folds}-fold cross-validation")

    def _folds(self, X: pd.DataFrame, y: pd.Series) -> list[tuple[np.ndarray, np.ndarray]]:
        n_splits = PRESETS[self.preset]["folds"]
        splitter = (StratifiedKFold if self.task_ != "regression" else KFold)(n_splits, shuffle=True,
                                                                               random_state=self.seed)
        return list(splitter.split(X, y))

    def _pipeline(self, family: ModelFamily, params: dict) -> Pipeline:
        estimator = family.build(params, self.task_, self.seed, self.n_jobs)
        return Pipeline([("preprocess", build_preprocessor()), ("estimator", estimator)])

    def _search(self, families, X, y, folds, deadline) -> list[_FamilyResult]:
        results = []
        weights = [f.budget_weight for f in families]
        for position, family in enumerate(families):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                logger.info("budget spent before %s", family.name)
                break
            share = remaining * family.budget_weight / sum(weights[position:])
            result = self._search_family(family, X, y, folds, time.monotonic() + share, deadline)
            if result is not None:
                results.append(result)
        return results

    def _search_family(self, family, X, y, folds, family_deadline, deadline) -> _FamilyResult | None:
        direction = "minimize" if self.metric_ in LOWER_IS_BETTER else "maximize"
        study = optuna.create_study(
            study_name=f"{self.study_prefix}-{family.name}", direction=direction, storage=self.storage,
            load_if_exists=self.storage is not None, sampler=make_sampler(self.sampler, self.seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
        )
        study.enqueue_trial(family.defaults, skip_if_exists=True)
        best: dict = {}

        def objective(trial: optuna.Trial) -> float:
            params = {**family.defaults, **family.space(trial, self.task_)} if trial.number else dict(family.defaults)
            started = time.monotonic()
            oof = self._oof(family, params, X, y, folds, trial, deadline)
            value = oof_score(self.metric_, self.task_, y, oof, self.classes_)
            seconds = time.monotonic() - started
            fold_values = [oof_score(self.metric_, self.task_, y.iloc[v], oof[v], self.classes_) for _, v in folds]
            if not best or (value < best["value"] if direction == "minimize" else value > best["value"]):
                best.update(value=value, params=params, oof=oof, std=float(np.std(fold_values)), seconds=seconds)
            return value

        timeout = max(0.0, family_deadline - time.monotonic())
        study.optimize(objective, timeout=timeout, callbacks=[self._reporter(family, family_deadline)],
                       catch=(ValueError, np.linalg.LinAlgError))
        if not best:
            return None
        states = [t.state for t in study.trials]
        return _FamilyResult(family, best["params"], best["value"], best["std"], best["seconds"], best["oof"],
                             len(states), states.count(optuna.trial.TrialState.PRUNED))

    def _oof(self, family, params, X, y, folds, trial, deadline) -> np.ndarray:
        """Out-of-fold predictions (probabilities for classification); pruned on the running fold mean."""
        width = len(self.classes_) if self.classes_ is not None else 1
        oof = np.full((len(y), width), np.nan)
        seen = []
        for step, (train, valid) in enumerate(folds):
            model = self._pipeline(family, params).fit(X.iloc[train], y.iloc[train])
            oof[valid] = model.predict_proba(X.iloc[valid]) if self.classes_ is not None \
                else model.predict(X.iloc[valid]).reshape(-1, 1)
            seen.extend(valid)
            trial.report(oof_score(self.metric_, self.task_, y.iloc[seen], oof[seen], self.classes_), step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"fold {step + 1}: running {self.metric_} below the median of earlier trials")
            if time.monotonic() > deadline and step < len(folds) - 1 and trial.number > 0:
                raise optuna.TrialPruned("time budget reached mid-trial")
        return oof if self.classes_ is not None else oof[:, 0]

    def _reporter(self, family: ModelFamily, family_deadline: float):
        def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            event = {"event": "trial", "family": family.name, "number": trial.number, "state": trial.state.name,
                     "value": trial.value, "best": study.best_value if any(t.value is not None for t in study.trials) else None,
                     "eta_s": max(0.0, family_deadline - time.monotonic()),
                     "pruned_reason": trial.user_attrs.get("pruned_reason")}
            logger.debug("trial %s", event)
            if self.progress is not None:
                self.progress(event)
        return report

    def _ensemble(self, results: list[_FamilyResult], y: pd.Series) -> dict[str, float]:
        """Caruana et al. (2004): greedily add (with replacement) the member that most improves the OOF score."""
        rounds = PRESETS[self.preset]["ensemble_rounds"]
        ranked = sorted(results, key=lambda r: r.cv_mean, reverse=self.metric_ not in LOWER_IS_BETTER)
        if rounds == 0 or len(results) == 1:
            return {ranked[0].family.name: 1.0}
        better = (lambda a, b: a < b) if self.metric_ in LOWER_IS_BETTER else (lambda a, b: a > b)
        chosen: list[_FamilyResult] = [ranked[0]]
        total = ranked[0].oof.copy()
        current = ranked[0].cv_mean
        for _ in range(rounds):
            scores = [(oof_score(self.metric_, self.task_, y, (total + r.oof) / (len(chosen) + 1), self.classes_), r)
                      for r in results]
            score, member = max(scores, key=lambda s: -s[0] if self.metric_ in LOWER_IS_BETTER else s[0])
            if not better(score, current) and score != current:
                break
            chosen.append(member)
            total += member.oof
            current = score
        counts = pd.Series([r.family.name for r in chosen]).value_counts()
        self.ensemble_cv_score_ = current
        return (counts / counts.sum()).to_dict()

    def _refit(self, results: list[_FamilyResult], X: pd.DataFrame, y: pd.Series) -> Pipeline:
        members = [r for r in results if r.family.name in self.weights_]
        if len(members) == 1:
            return self._pipeline(members[0].family, members[0].params).fit(X, y)
        estimators = [(r.family.name, self._pipeline(r.family, r.params)) for r in members]
        weights = [self.weights_[r.family.name] for r in members]
        voting = (VotingClassifier(estimators, voting="soft", weights=weights) if self.classes_ is not None
                  else VotingRegressor(estimators, weights=weights))
        return Pipeline([("ensemble", voting)]).fit(X, y)

    def _leaderboard(self, results: list[_FamilyResult]) -> pd.DataFrame:
        rows = [{"model": r.family.name, f"cv_{self.metric_}_mean": r.cv_mean, f"cv_{self.metric_}_std": r.cv_std,
                 "fit_seconds": round(r.fit_seconds, 3), "trials": r.trials, "pruned": r.pruned,
                 "ensemble_weight": round(self.weights_.get(r.family.name, 0.0), 3), "params": repr(r.params)}
                for r in results]
        board = pd.DataFrame(rows).sort_values(f"cv_{self.metric_}_mean", ascending=self.metric_ in LOWER_IS_BETTER,
                                               kind="stable")
        return board.reset_index(drop=True)


def infer_task(y: pd.Series) -> str:
    """regression for non-integer numbers or many distinct integers; binary / multiclass otherwise."""
    distinct = y.nunique(dropna=True)
    if pd.api.types.is_float_dtype(y) and not np.allclose(y.dropna(), np.round(y.dropna())):
        return "regression"
    if pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y) and distinct > 20:
        return "regression"
    return "binary" if distinct == 2 else "multiclass"
