"""Performance of a classifier on unlabelled batches, estimated by Confidence-Based Performance Estimation (CBPE).

Labels of incoming rows arrive late or never; CBPE (the method of NannyML) estimates the metrics from the model's
predicted probabilities alone. The probabilities are first calibrated on reference rows with labels (the champion's
held-out test rows): isotonic regression (or Platt scaling) of each class one-vs-rest, rows renormalised. A calibrated
probability is the chance that the label is that class, so the expected confusion matrix of a batch follows:
- accuracy: the mean calibrated probability of the predicted class;
- F1 (binary, of the positive class) and macro F1: from the expected counts TP = sum of p over rows predicted as the
  class, FP = sum of 1 - p there, FN = sum of p over the other rows;
- ROC-AUC: rows sorted by the model's score, p and 1 - p counted as fractional positives and negatives, the area under
  the expected ROC curve by trapezoids (one-vs-rest, macro mean for multiclass, as scikit-learn's `multi_class="ovr"`).
The band around each estimate is the sampling error of the batch's labels: labels are drawn from the calibrated
probabilities (seeded Monte Carlo, `draws` times), the realised metric is computed per draw and the band is its
central `confidence` interval. The band does not include the error of the calibration itself.

CBPE holds under covariate shift (the inputs change, P(label | inputs) does not) as far as the calibrated probability
is P(label | inputs); calibration on the reference only makes it right on average over the reference's rows, so a
shift to rows where the model is over- or underconfident biases the estimate (most visibly ROC-AUC). Under concept
drift the estimate is wrong and only labels tell. `calibration="none"` keeps an already calibrated model's
probabilities (NannyML skips calibration when it does not lower the calibration error; here it is the caller's choice).

NannyML 0.13.1 itself is not used: it requires lightgbm<4.6, which conflicts with the pinned lightgbm==4.7.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special, stats
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from tmiv_assets.ml.metrics import resolve_positive_class

METRICS = {"binary": ("accuracy", "roc_auc", "f1", "f1_macro"), "multiclass": ("accuracy", "roc_auc", "f1_macro")}
"""Metrics `estimate` can compute per task; all of them by default."""
CALIBRATIONS = ("isotonic", "sigmoid", "none")
MIN_REFERENCE_ROWS = 50
MIN_CLASS_ROWS = 5  # fewer rows of a class cannot calibrate its probability
CHUNK_CELLS = 1 << 21  # rows x draws x (classes - 1) compared at once: bounded memory for any batch size


@dataclass(frozen=True)
class PerformanceEstimate:
    """One metric's estimate on one batch."""

    metric: str
    """One of "accuracy", "roc_auc", "f1" (binary, of the positive class) or "f1_macro"."""
    value: float
    """Expected metric on the batch; NaN where it is undefined (ROC-AUC when every row is surely one class)."""
    lower: float
    """Lower end of the `confidence` band of the sampling error."""
    upper: float
    rows: int


class PerformanceEstimator:
    """Fit on reference rows with labels (the champion's predicted probabilities on its held-out test rows), then
    estimate metrics on unlabelled batches from the batch's probabilities alone.

    Probabilities are (rows, classes) in `classes` order, as scikit-learn's `predict_proba` with `model.classes_`;
    the predicted label is their argmax, as `predict`. Estimates are reproducible: every call draws from a generator
    seeded with `seed`.
    """

    def __init__(self, classes: Sequence, positive_class=None, confidence: float = 0.95, seed: int = 0,
                 calibration: str = "isotonic", draws: int = 200):
        self.classes = np.asarray(classes)
        if self.classes.ndim != 1 or len(self.classes) < 2:
            raise ValueError(f"a classifier needs at least two classes, got {np.atleast_1d(self.classes).tolist()}")
        if len({str(c) for c in self.classes}) != len(self.classes):
            raise ValueError(f"classes must be distinct, got {self.classes.tolist()}")
        if not 0 < confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
        if calibration not in CALIBRATIONS:
            raise ValueError(f"calibration {calibration!r} is not one of {CALIBRATIONS}")
        if draws < 10:
            raise ValueError(f"draws must be at least 10 for a band, got {draws!r}")
        self.task = "binary" if len(self.classes) == 2 else "multiclass"
        self.positive_class = resolve_positive_class(self.classes, positive_class) if self.task == "binary" else None
        self.positive_index = self.classes.tolist().index(self.positive_class) if self.task == "binary" else None
        self.confidence = confidence
        self.seed = seed
        self.calibration = calibration
        self.draws = draws
        self.calibrators_: list | None = None
        """After `fit`: per class, the fitted calibrator, or None where the probabilities are kept as they are."""

    def fit(self, reference_proba: np.ndarray, reference_y) -> PerformanceEstimator:
        proba = _normalised(reference_proba, len(self.classes), "reference_proba")
        labels = label_indices(reference_y, self.classes)
        if len(labels) != len(proba):
            raise ValueError(f"reference_proba has {len(proba)} rows but reference_y has {len(labels)}")
        if len(labels) < MIN_REFERENCE_ROWS:
            raise ValueError(f"the reference has {len(labels)} rows; calibrating probabilities needs at least "
                             f"{MIN_REFERENCE_ROWS} labelled rows")
        counts = np.bincount(labels, minlength=len(self.classes))
        if (counts > 0).sum() < 2:
            raise ValueError(f"the reference labels hold a single class ({self.classes[counts.argmax()].item()!r}); "
                             f"calibration needs rows of every class")
        if counts.min() < MIN_CLASS_ROWS:
            scarce = self.classes[counts < MIN_CLASS_ROWS].tolist()
            raise ValueError(f"the reference has fewer than {MIN_CLASS_ROWS} rows of class(es) {scarce}; "
                             f"calibration needs at least {MIN_CLASS_ROWS} rows of every class")
        # The positive column alone carries a binary model; multiclass is calibrated one-vs-rest per class.
        columns = [self.positive_index] if self.task == "binary" else range(len(self.classes))
        self.calibrators_ = [None] * len(self.classes)
        for k in columns:
            self.calibrators_[k] = _fit_calibrator(proba[:, k], labels == k, self.calibration)
        return self

    def calibrate(self, proba: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of `proba`'s rows, each row summing to 1."""
        if self.calibrators_ is None:
            raise RuntimeError("the estimator is not fitted; call fit(reference_proba, reference_y) first")
        return self._calibrated(_normalised(proba, len(self.classes), "proba"))

    def estimate(self, proba: np.ndarray, metrics: Sequence[str] | None = None) -> dict[str, PerformanceEstimate]:
        """Expected value and sampling band of each metric (all of METRICS[task] by default) on the batch."""
        if self.calibrators_ is None:
            raise RuntimeError("the estimator is not fitted; call fit(reference_proba, reference_y) first")
        metrics = _check_metrics(metrics, self.task)
        raw = _normalised(proba, len(self.classes), "proba")
        if len(raw) == 0:
            raise ValueError("the batch has no rows to estimate on")
        calibrated = self._calibrated(raw)
        predicted = raw.argmax(axis=1)
        expected = expected_metrics(calibrated, predicted, raw, metrics, self.positive_index)
        rng = np.random.default_rng(self.seed)
        simulated = simulate_metrics(calibrated, predicted, raw, metrics, self.positive_index, self.draws, rng)
        tail = (1 - self.confidence) / 2
        estimates = {}
        for metric in metrics:
            lower, upper = _quantiles(simulated[metric], (tail, 1 - tail))
            estimates[metric] = PerformanceEstimate(metric, expected[metric], lower, upper, len(raw))
        return estimates

    def _calibrated(self, proba: np.ndarray) -> np.ndarray:
        if self.task == "binary":
            positive = proba[:, self.positive_index]
            calibrator = self.calibrators_[self.positive_index]
            positive = positive if calibrator is None else calibrator.predict(positive)
            calibrated = np.empty_like(proba)
            calibrated[:, self.positive_index] = positive
            calibrated[:, 1 - self.positive_index] = 1 - positive
            return calibrated
        calibrated = np.column_stack([proba[:, k] if calibrator is None else calibrator.predict(proba[:, k])
                                      for k, calibrator in enumerate(self.calibrators_)])
        totals = calibrated.sum(axis=1, keepdims=True)
        # Isotonic steps can give a row zero for every class; such a row keeps the model's own probabilities.
        return np.where(totals > 0, calibrated / np.where(totals > 0, totals, 1), proba)


def label_indices(y, classes: Sequence) -> np.ndarray:
    """Each label's position in `classes`: equal values first (True is 1), else equal str() as
    `resolve_positive_class` matches ("1" is 1)."""
    classes = np.asarray(classes).tolist()
    exact, by_str = {c: k for k, c in enumerate(classes)}, {str(c): k for k, c in enumerate(classes)}
    codes, values = pd.factorize(np.asarray(y, dtype=object).reshape(-1), use_na_sentinel=False)
    positions = [exact.get(v, by_str.get(str(v))) for v in values]
    unknown = [v for v, k in zip(values, positions, strict=True) if k is None]
    if unknown:
        raise ValueError(f"labels {unknown[:10]} are not among the classes {classes}")
    return np.asarray(positions, dtype=np.intp)[codes]


def expected_metrics(calibrated: np.ndarray, predicted: np.ndarray, scores: np.ndarray, metrics: Sequence[str],
                     positive_index: int | None = None) -> dict[str, float]:
    """CBPE's expected metrics from calibrated probabilities (rows, classes), the predicted class index per row and
    the model's scores (its probabilities, which order rows for ROC-AUC); `positive_index` for binary F1/ROC-AUC."""
    n_classes = calibrated.shape[1]
    predicted_as = predicted[:, None] == np.arange(n_classes)
    true_positives = (calibrated * predicted_as).sum(axis=0)
    # 2TP / (2TP + FP + FN) = 2TP / (predicted count + expected true count)
    denominators = predicted_as.sum(axis=0) + calibrated.sum(axis=0)
    f1_per_class = np.divide(2 * true_positives, denominators, out=np.full(n_classes, np.nan), where=denominators > 0)
    values = {}
    for metric in metrics:
        if metric == "accuracy":
            values[metric] = true_positives.sum() / len(calibrated)
        elif metric == "f1":
            values[metric] = np.nan_to_num(f1_per_class[positive_index])  # 0 when nothing is or could be positive
        elif metric == "f1_macro":
            values[metric] = _nanmean(f1_per_class)
        else:
            columns = [positive_index] if n_classes == 2 else range(n_classes)
            values[metric] = np.mean([expected_roc_auc(scores[:, k], calibrated[:, k]) for k in columns])
    return {metric: float(value) for metric, value in values.items()}


def expected_roc_auc(scores: np.ndarray, positive_probability: np.ndarray) -> float:
    """Area under the expected ROC curve (NannyML's CBPE): rows by descending score, `positive_probability` and its
    complement counted as fractional positives and negatives, rows of equal score one step; NaN without both."""
    order = np.argsort(-scores, kind="stable")
    ordered_scores, positives = scores[order], positive_probability[order]
    step_ends = np.append(np.flatnonzero(np.diff(ordered_scores)), len(ordered_scores) - 1)
    true_positives = np.cumsum(positives)[step_ends]
    false_positives = np.cumsum(1 - positives)[step_ends]
    if true_positives[-1] <= 0 or false_positives[-1] <= 0:
        return float("nan")
    tpr = np.append(0.0, true_positives / true_positives[-1])
    fpr = np.append(0.0, false_positives / false_positives[-1])
    return float(np.trapezoid(tpr, fpr))


def simulate_metrics(calibrated: np.ndarray, predicted: np.ndarray, scores: np.ndarray, metrics: Sequence[str],
                     positive_index: int | None, draws: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Each metric realised on `draws` sets of labels drawn from the calibrated probabilities; NaN where a draw leaves
    it undefined.

    Vectorised over rows and draws, a chunk of rows at a time. Counts per class and draw give accuracy and F1; ROC-AUC
    is the Mann-Whitney statistic with the scores' ranks fixed, a matrix product of the ranks with the drawn labels.
    """
    n_rows, n_classes = calibrated.shape
    auc_classes = ([positive_index] if n_classes == 2 else list(range(n_classes))) if "roc_auc" in metrics else []
    ranks = {k: stats.rankdata(scores[:, k]) for k in auc_classes}  # average ranks: ties count half, as sklearn
    thresholds = np.cumsum(calibrated, axis=1)[:, :-1]
    true_counts = np.zeros((n_classes, draws))
    true_positives = np.zeros((n_classes, draws))
    positive_rank_sums = {k: np.zeros(draws) for k in auc_classes}
    chunk = max(1, CHUNK_CELLS // (draws * (n_classes - 1)))
    for start in range(0, n_rows, chunk):
        rows = slice(start, min(start + chunk, n_rows))
        uniforms = rng.random((rows.stop - rows.start, draws))
        # Inverse-CDF draw: the label is the number of cumulative probabilities the uniform reaches.
        labels = (uniforms[:, :, None] >= thresholds[rows, None, :]).sum(axis=2)
        for k in range(n_classes):
            is_class = labels == k
            true_counts[k] += is_class.sum(axis=0)
            true_positives[k] += is_class[predicted[rows] == k].sum(axis=0)
            if k in positive_rank_sums:
                positive_rank_sums[k] += ranks[k][rows] @ is_class
    predicted_counts = np.bincount(predicted, minlength=n_classes)[:, None]
    denominators = predicted_counts + true_counts
    f1_per_class = np.divide(2 * true_positives, denominators, out=np.full_like(denominators, np.nan),
                             where=denominators > 0)
    simulated = {}
    for metric in metrics:
        if metric == "accuracy":
            simulated[metric] = true_positives.sum(axis=0) / n_rows
        elif metric == "f1":
            simulated[metric] = np.nan_to_num(f1_per_class[positive_index])  # scikit-learn's zero_division=0
        elif metric == "f1_macro":
            simulated[metric] = _nanmean(f1_per_class, axis=0)  # absent classes leave the mean, as scikit-learn's
        else:
            aucs = []
            for k in auc_classes:
                positives = true_counts[k]
                pairs = positives * (n_rows - positives)
                numerator = positive_rank_sums[k] - positives * (positives + 1) / 2
                aucs.append(np.divide(numerator, pairs, out=np.full(draws, np.nan), where=pairs > 0))
            simulated[metric] = np.mean(aucs, axis=0)  # NaN when a class is missing from a draw
    return simulated


def _fit_calibrator(probability: np.ndarray, is_class: np.ndarray, method: str):
    """The calibrator of one class's probability; None for method "none" (probabilities kept as they are)."""
    if method == "none":
        return None
    return _new_calibrator(method).fit(probability, is_class)


def _new_calibrator(method: str):
    return IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip") if method == "isotonic" else _PlattCalibrator()


class _PlattCalibrator:
    """Platt scaling of a probability: a logistic regression on its log-odds."""

    def fit(self, probability: np.ndarray, is_class: np.ndarray) -> _PlattCalibrator:
        self.model = LogisticRegression(C=1e4).fit(self._log_odds(probability), is_class)
        return self

    def predict(self, probability: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(self._log_odds(probability))[:, 1]

    @staticmethod
    def _log_odds(probability: np.ndarray) -> np.ndarray:
        return special.logit(np.clip(probability, 1e-9, 1 - 1e-9)).reshape(-1, 1)


def _normalised(proba, n_classes: int, name: str) -> np.ndarray:
    proba = np.asarray(proba, dtype=float)
    if proba.ndim != 2 or proba.shape[1] != n_classes:
        raise ValueError(f"{name} must have one column per class ({n_classes}), got shape {proba.shape}")
    if not np.isfinite(proba).all() or (proba < 0).any():
        raise ValueError(f"{name} must hold finite, non-negative probabilities")
    totals = proba.sum(axis=1, keepdims=True)
    if (totals <= 0).any():
        raise ValueError(f"{name} has rows whose probabilities sum to zero")
    return proba / totals


def _check_metrics(metrics: Sequence[str] | None, task: str) -> tuple[str, ...]:
    if metrics is None:
        return METRICS[task]
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    unknown = [m for m in metrics if m not in METRICS[task]]
    if unknown:
        raise ValueError(f"metric(s) {unknown} cannot be estimated for a {task} model; use {METRICS[task]}")
    return metrics


def _nanmean(values: np.ndarray, axis: int | None = None):
    """Mean of the defined values; NaN (without numpy's warning) where none is."""
    defined = ~np.isnan(values)
    count = defined.sum(axis=axis)
    total = np.where(defined, values, 0).sum(axis=axis)
    return np.divide(total, count, out=np.full(np.shape(count), np.nan), where=count > 0)


def _quantiles(values: np.ndarray, levels: tuple[float, float]) -> tuple[float, float]:
    defined = values[~np.isnan(values)]
    if len(defined) == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(defined, levels)
    return float(low), float(high)
