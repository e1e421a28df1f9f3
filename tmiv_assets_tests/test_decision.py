"""Class weights decide the predicted class where the search scores macro F1 and they pay on rows they were not
fitted on."""

import time

import numpy as np
import pandas as pd
from scipy.stats import norm
from sklearn.metrics import f1_score
from sklearn.pipeline import Pipeline

from tmiv_assets.ml.automl.decision import WeightedDecision, macro_f1_weights
from tmiv_assets.ml.automl.estimator import AutoML
from tmiv_assets.ml.deploy.serving import predict_rows
from tmiv_assets.ml.explain.shap_values import fitted_estimator

PRIORS = np.array([0.75, 0.18, 0.07])
MEANS = np.array([0.0, 0.7, 1.4])


def imbalanced(rows: int, seed: int) -> tuple[pd.DataFrame, pd.Series, np.ndarray]:
    """Three overlapping classes, the rarest 7% of rows: the most probable class is nearly always the common
    one. Returns the rows, their labels and the true class probabilities."""
    rng = np.random.default_rng(seed)
    codes = rng.choice(3, size=rows, p=PRIORS)
    x = rng.normal(MEANS[codes], 1.0)
    likelihood = PRIORS * norm.pdf(x[:, None], MEANS[None, :], 1.0)
    labels = np.array(["common", "middle", "rare"])[codes]
    noise = rng.normal(size=rows)  # a column that says nothing
    return pd.DataFrame({"x": x, "noise": noise}), pd.Series(labels), likelihood / likelihood.sum(axis=1,
                                                                                                  keepdims=True)


def macro(codes: np.ndarray, proba: np.ndarray, weights: np.ndarray) -> float:
    return f1_score(codes, (proba * weights).argmax(axis=1), average="macro")


def test_weights_fitted_on_some_rows_raise_macro_f1_on_others():
    _, labels, proba = imbalanced(5000, seed=1)
    codes = np.searchsorted(["common", "middle", "rare"], labels)
    weights, why = macro_f1_weights(codes, proba, seed=0)
    assert weights is not None and why.startswith("class weights: out-of-fold macro F1")
    assert weights.max() == 1.0 and weights[0] < weights[2]  # the rare class is predicted more often
    _, fresh_labels, fresh = imbalanced(50_000, seed=2)
    fresh_codes = np.searchsorted(["common", "middle", "rare"], fresh_labels)
    assert macro(fresh_codes, fresh, weights) > macro(fresh_codes, fresh, np.ones(3)) + 0.05


def test_weights_that_lose_on_held_apart_rows_are_refused_and_a_deadline_stops_the_check():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4, 2000)
    proba = rng.dirichlet(np.ones(4), 2000)  # says nothing of the class: any weights only fit noise
    weights, why = macro_f1_weights(codes, proba, seed=0)
    assert weights is None and "lost" in why
    _, labels, proba = imbalanced(3000, seed=3)
    weights, why = macro_f1_weights(np.searchsorted(["common", "middle", "rare"], labels), proba, seed=0,
                                    deadline=time.monotonic())
    assert weights is None and "did not finish" in why


def test_automl_decides_with_the_weights_and_serving_and_explainers_see_through_them():
    X, y, _ = imbalanced(3000, seed=4)
    model = AutoML(task="multiclass", include=["linear"], max_trials=2, time_budget_s=30, n_jobs=1).fit(X, y)
    assert model.decision_.startswith("class weights")
    assert set(model.decision_weights_) == {"common", "middle", "rare"}
    final = model.best_pipeline_.named_steps["estimator"]
    assert isinstance(final, WeightedDecision)
    X_test, y_test, _ = imbalanced(20_000, seed=5)
    proba = model.predict_proba(X_test)
    weights = np.array([model.decision_weights_[c] for c in model.classes_])
    np.testing.assert_array_equal(model.predict(X_test), model.classes_[(proba * weights).argmax(axis=1)])
    weighted = f1_score(y_test, model.predict(X_test), average="macro")
    most_probable = f1_score(y_test, model.classes_[proba.argmax(axis=1)], average="macro")
    assert weighted > most_probable + 0.05
    # served: the prediction as predict gives it, the score the predicted class's probability
    served = predict_rows(model.best_pipeline_, X_test.head(500), "multiclass")
    np.testing.assert_array_equal(served["prediction"], model.predict(X_test.head(500)))
    chosen = pd.Index(model.classes_).get_indexer(served["prediction"])
    np.testing.assert_allclose(served["score"], proba[np.arange(500), chosen])
    assert (served["score"] < proba[:500].max(axis=1)).any()  # some rows get a class less probable than the top
    # the explainers explain the probabilities, so they get the classifier the weights wrap
    assert fitted_estimator(Pipeline([("model", model.best_pipeline_)])) is final.estimator


def test_other_metrics_and_library_ensembles_keep_the_most_probable_class():
    X, y, _ = imbalanced(1500, seed=6)
    auc = AutoML(task="multiclass", metric="roc_auc", include=["linear"], max_trials=1, time_budget_s=30,
                 n_jobs=1).fit(X, y)
    assert auc.decision_ == "most probable class: the metric is roc_auc" and auc.decision_weights_ is None
    assert not isinstance(auc.best_pipeline_.named_steps["estimator"], WeightedDecision)
    stacked = AutoML(task="multiclass", include=["linear", "naive_bayes"], ensemble="stacking", max_trials=1,
                     time_budget_s=30, n_jobs=1).fit(X, y)
    assert stacked.decision_ == "most probable class: stacking's probabilities are not the search's"
    regression = AutoML(task="regression", include=["linear"], max_trials=1, time_budget_s=30, n_jobs=1).fit(
        X, pd.Series(np.arange(len(X), dtype=float)))
    assert regression.decision_ is None
