"""Which class a classifier predicts when the search scores macro F1: the most probable class after per-class
weights fitted on the search's out-of-fold probabilities, where they pay on rows they were not fitted on.

The highest probability maximises accuracy; macro F1 averages every class's F1, so on imbalanced classes a rare
class predicted a little more often gains more than the common classes lose. scikit-learn's
TunedThresholdClassifierCV does this for one threshold of a binary classifier and refits the model per fold;
these weights cover any number of classes and reuse the predictions the search already has.
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from tmiv_assets.ml.metrics import macro_f1

WEIGHT_STEPS = np.exp(np.linspace(np.log(0.25), np.log(4.0), 17))
"""Multipliers of a class's weight tried in each round of the coordinate ascent, 1 among them."""
ROUNDS = 3
MAX_ROWS = 50_000
"""Out-of-fold rows the weights are fitted on at most (a seeded sample beyond)."""
UNFINISHED = "most probable class: the weights' check did not finish in the time budget"


def macro_f1_weights(codes: np.ndarray, proba: np.ndarray, seed: int = 0, deadline: float | None = None,
                     ) -> tuple[np.ndarray | None, str]:
    """(per-class weights, why) for class codes 0..K-1 and their out-of-fold probabilities; the weights are
    None where they do not pay: fitted on each half of the rows, they must raise the other half's macro F1 on
    average (the search's folds already fitted the probabilities to these rows). None also when the monotonic
    `deadline` passes first."""
    codes, proba = np.asarray(codes), np.asarray(proba, dtype=np.float64)
    rng = np.random.default_rng(seed)
    if len(codes) > MAX_ROWS:
        sample = np.sort(rng.choice(len(codes), MAX_ROWS, replace=False))
        codes, proba = codes[sample], proba[sample]
    n_classes = proba.shape[1]
    plain = np.ones(n_classes)
    half = rng.permutation(len(codes)) < len(codes) // 2
    gains = []
    for fitted, held in ((half, ~half), (~half, half)):
        weights = _ascend(codes[fitted], proba[fitted], deadline)
        if weights is None:
            return None, UNFINISHED
        gains.append(_score(codes[held], proba[held], weights) - _score(codes[held], proba[held], plain))
    gain = float(np.mean(gains))
    if gain <= 0:
        outcome = f"lost {-gain:.4f} macro F1" if gain < 0 else "gained nothing"
        return None, f"most probable class: weights fitted on half the rows {outcome} on the other"
    weights = _ascend(codes, proba, deadline)
    if weights is None:
        return None, UNFINISHED
    before, after = _score(codes, proba, plain), _score(codes, proba, weights)
    return weights, (f"class weights: out-of-fold macro F1 {before:.4f} -> {after:.4f}; {gain:+.4f} on rows the "
                     "weights were not fitted on")


def _score(codes: np.ndarray, proba: np.ndarray, weights: np.ndarray) -> float:
    return macro_f1(codes, (proba * weights).argmax(axis=1), proba.shape[1])


def _ascend(codes: np.ndarray, proba: np.ndarray, deadline: float | None) -> np.ndarray | None:
    """Coordinate ascent: each class's weight in turn set to the step that scores best with the others fixed
    (ties keep it), for ROUNDS rounds or until none moves; None past the deadline. Scaled so the largest is 1."""
    n_classes = proba.shape[1]
    weights = np.ones(n_classes)
    best = _score(codes, proba, weights)
    for _ in range(ROUNDS):
        moved = False
        for k in range(n_classes):
            if deadline is not None and time.monotonic() > deadline:
                return None
            scaled = proba * weights
            scaled[:, k] = -np.inf
            rival, rival_class = scaled.max(axis=1), scaled.argmax(axis=1)
            chosen = weights[k]
            for step in WEIGHT_STEPS:  # only class k's weight changes, so each row's rival stays
                candidate = weights[k] * step
                score = macro_f1(codes, np.where(proba[:, k] * candidate > rival, k, rival_class), n_classes)
                if score > best + 1e-12:
                    best, chosen, moved = score, candidate, True
            weights[k] = chosen
        if not moved:
            break
    return weights / weights.max()


class WeightedDecision(ClassifierMixin, BaseEstimator):
    """A fitted classifier whose prediction is the class of the highest probability times `class_weights`
    (in `classes_` order); its probabilities are the classifier's own."""

    def __init__(self, estimator, class_weights):
        self.estimator = estimator
        self.class_weights = class_weights

    @property
    def classes_(self) -> np.ndarray:
        return self.estimator.classes_

    def __sklearn_is_fitted__(self) -> bool:
        return True  # wraps a fitted classifier

    def fit(self, X, y):
        raise TypeError("WeightedDecision wraps a fitted classifier; it is not fitted again")

    def predict_proba(self, X) -> np.ndarray:
        return self.estimator.predict_proba(X)

    def decide(self, proba: np.ndarray) -> np.ndarray:
        """The classes predicted from `proba`, this model's probabilities."""
        return self.classes_[(np.asarray(proba) * np.asarray(self.class_weights)).argmax(axis=1)]

    def predict(self, X) -> np.ndarray:
        return self.decide(self.predict_proba(X))
