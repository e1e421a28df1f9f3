"""Ensembles: greedy selection (Caruana), voting, stacking with a CV meta-learner, blending, bagging."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
from sklearn.ensemble import (
    BaggingClassifier,
    BaggingRegressor,
    StackingClassifier,
    StackingRegressor,
    VotingClassifier,
    VotingRegressor,
)
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.model_selection import train_test_split
from sklearn.utils.validation import check_is_fitted

from tmiv_assets.ml.data.spec import CLASSIFICATION


@dataclass(frozen=True)
class EnsembleSelection:
    """Result of greedy ensemble selection."""

    weights: dict[str, float]
    """Member name -> weight (selection counts over rounds, summing to 1)."""
    score: float
    """Score of the weighted average of the members' out-of-fold predictions."""
    history: tuple[float, ...]
    """Score after each round; the kept prefix ends at the best one."""


def caruana_selection(predictions: dict[str, np.ndarray], score: Callable[[np.ndarray], float],
                      greater_is_better: bool = True, rounds: int = 25) -> EnsembleSelection:
    """Ensemble selection from libraries of models (Caruana et al., 2004).

    Starting from the best single model, repeatedly add (with replacement) the member whose addition
    gives the best score of the averaged predictions; keep the rounds up to the best score seen. Ties
    go to the earlier member in `predictions`, so the result is deterministic.
    """
    if not predictions:
        raise ValueError("caruana_selection needs at least one member's predictions")
    sign = 1.0 if greater_is_better else -1.0
    names = list(predictions)
    singles = {name: score(predictions[name]) for name in names}
    first = max(names, key=lambda n: sign * singles[n])
    chosen, total, history = [first], predictions[first].astype(np.float64).copy(), [singles[first]]
    for _ in range(rounds):
        trial = {n: score((total + predictions[n]) / (len(chosen) + 1)) for n in names}
        best = max(names, key=lambda n: sign * trial[n])
        chosen.append(best)
        total += predictions[best]
        history.append(trial[best])
    keep = int(np.argmax(sign * np.asarray(history))) + 1  # first index of the best score
    counts = {name: chosen[:keep].count(name) / keep for name in dict.fromkeys(chosen[:keep])}
    return EnsembleSelection(counts, float(history[keep - 1]), tuple(float(h) for h in history))


def make_voting(estimators: list[tuple[str, object]], task: str, weights=None, voting: str = "soft"):
    """Soft (probability-averaging) or hard (majority) voting with optional weights; averaging for regression."""
    if task in CLASSIFICATION:
        return VotingClassifier(estimators, voting=voting, weights=weights)
    return VotingRegressor(estimators, weights=weights)


def make_stacking(estimators: list[tuple[str, object]], task: str, cv: int = 5, seed: int = 0, n_jobs: int = 1):
    """Stacking: a meta-learner fitted on the members' cross-validated predictions."""
    if task in CLASSIFICATION:
        return StackingClassifier(estimators, LogisticRegression(max_iter=2000, random_state=seed), cv=cv,
                                  stack_method="predict_proba", n_jobs=n_jobs)
    return StackingRegressor(estimators, RidgeCV(), cv=cv, n_jobs=n_jobs)


def make_bagging(estimator, task: str, n_estimators: int = 10, seed: int = 0, n_jobs: int = 1):
    """Bootstrap aggregation of one estimator."""
    cls = BaggingClassifier if task in CLASSIFICATION else BaggingRegressor
    return cls(estimator, n_estimators=n_estimators, random_state=seed, n_jobs=n_jobs)


class _Blending(BaseEstimator):
    """Members fitted on all but a holdout; the meta-learner fitted on their holdout predictions."""

    def __init__(self, estimators: list[tuple[str, object]], final_estimator=None, holdout: float = 0.2, seed: int = 0):
        self.estimators = estimators
        self.final_estimator = final_estimator
        self.holdout = holdout
        self.seed = seed

    def fit(self, X, y):
        if not 0 < self.holdout < 1:
            raise ValueError(f"holdout must be in (0, 1), got {self.holdout}")
        stratify = y if isinstance(self, ClassifierMixin) else None
        train, held = train_test_split(np.arange(len(y)), test_size=self.holdout, random_state=self.seed,
                                       stratify=stratify)
        y = np.asarray(y)
        self.estimators_ = [clone(e).fit(_rows(X, train), y[train]) for _, e in self.estimators]
        self.final_estimator_ = clone(self.final_estimator or self._default_final())
        self.final_estimator_.fit(self._meta(_rows(X, held)), y[held])
        return self

    def _meta(self, X) -> np.ndarray:
        return np.column_stack([self._member_output(e, X) for e in self.estimators_])


class BlendingClassifier(ClassifierMixin, _Blending):
    """Blending for classification; the meta-learner sees the members' class probabilities."""

    def _default_final(self):
        return LogisticRegression(max_iter=2000, random_state=self.seed)

    def _member_output(self, estimator, X) -> np.ndarray:
        return estimator.predict_proba(X)

    def fit(self, X, y):
        self.classes_ = np.unique(np.asarray(y))
        return super().fit(X, y)

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "final_estimator_")
        return self.final_estimator_.predict_proba(self._meta(X))

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "final_estimator_")
        return self.final_estimator_.predict(self._meta(X))


class BlendingRegressor(RegressorMixin, _Blending):
    """Blending for regression; the meta-learner is a ridge regression on the members' predictions."""

    def _default_final(self):
        return RidgeCV()

    def _member_output(self, estimator, X) -> np.ndarray:
        return estimator.predict(X)

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "final_estimator_")
        return self.final_estimator_.predict(self._meta(X))


def make_blending(estimators: list[tuple[str, object]], task: str, holdout: float = 0.2, seed: int = 0):
    cls = BlendingClassifier if task in CLASSIFICATION else BlendingRegressor
    return cls(estimators, holdout=holdout, seed=seed)


def _rows(X, index: np.ndarray):
    return X.iloc[index] if hasattr(X, "iloc") else X[index]


class _FoldBag(BaseEstimator):
    """Weighted members, each the average of the models its cross-validation folds trained: the final model
    costs no refit, so it is ready when the search ends (bagging as in AutoGluon)."""

    def __init__(self, members: list[tuple[str, float, list]]):
        self.members = members

    @property
    def estimators_(self) -> list:
        return [model for _, _, models in self.members for model in models]

    def __sklearn_is_fitted__(self) -> bool:
        return True  # assembled from fitted models

    def _average(self, X, output) -> np.ndarray:
        total = sum(weight for _, weight, _ in self.members)
        return sum(weight / total * np.mean([output(m, X) for m in models], axis=0)
                   for _, weight, models in self.members)


class FoldBagClassifier(ClassifierMixin, _FoldBag):
    """Fold models trained on class codes 0..K-1; `classes` maps them back to the labels."""

    def __init__(self, members: list[tuple[str, float, list]], classes=None):
        super().__init__(members)
        self.classes = classes

    @property
    def classes_(self) -> np.ndarray:
        return np.asarray(self.classes)

    def fit(self, X, y):
        raise TypeError("FoldBagClassifier is assembled from fitted fold models; it is not fitted again")

    def predict_proba(self, X) -> np.ndarray:
        return self._average(X, lambda model, rows: model.predict_proba(rows))

    def decide(self, proba: np.ndarray) -> np.ndarray:
        """The classes predicted from `proba`, this model's probabilities: the most probable."""
        return self.classes_[np.asarray(proba).argmax(axis=1)]

    def predict(self, X) -> np.ndarray:
        return self.decide(self.predict_proba(X))


class FoldBagRegressor(RegressorMixin, _FoldBag):
    def fit(self, X, y):
        raise TypeError("FoldBagRegressor is assembled from fitted fold models; it is not fitted again")

    def predict(self, X) -> np.ndarray:
        return self._average(X, lambda model, rows: model.predict(rows))
