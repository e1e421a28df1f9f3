"""SHAP explanations of a fitted pipeline in the model's own output space: class probabilities for classifiers, the
prediction for regression.

The final AutoML model is a weighted bag: members, each the average of its cross-validation fold models. Its output
is a weighted average of the fold models' outputs, so its SHAP values are exactly the same weighted average of theirs
(SHAP is additive). Each fold model gets an exact explainer where one exists: interventional TreeSHAP on the
probability (or raw) output for LightGBM, XGBoost and scikit-learn trees and forests, LinearSHAP for linear
regression; any other model (CatBoost, whose explainer in shap has no interventional mode; a logistic model, whose
probability is not linear; k-NN, SVM, networks) the permutation explainer, which also sums exactly to the model
output. Every model sees the same rows, so the sum holds: values + base value = the bag's output, checked and
reported. TreeSHAP is checked per model too: where shap's copy of the trees disagrees with the library's own
prediction on a row (seen with LightGBM and random forests, up to 0.02), that model is explained by permutation.

Library threads are held to one inside the explainers (threadpoolctl): with several explain steps side by side on 2
cores, tree libraries that each take every core made one step 10x slower.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import shap
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

TREE_LIBRARIES = {"lightgbm", "xgboost"}
SKLEARN_TREES = {"DecisionTreeClassifier", "DecisionTreeRegressor", "RandomForestClassifier", "RandomForestRegressor",
                 "ExtraTreesClassifier", "ExtraTreesRegressor"}
AGNOSTIC_SAMPLE = 60  # rows explained when any model needs the permutation explainer
PERMUTATION_BACKGROUND = 20  # its cost is rows x evaluations x background rows
PERMUTATIONS = 3  # each forward-and-back pass is exact in sum; more passes only lower the variance
ADDITIVITY_TOLERANCE = 1e-5


@dataclass(frozen=True)
class ShapReport:
    """SHAP values of a sample in the model's output space, the importance tables and the plots."""

    importance: pd.DataFrame
    """Columns: feature, mean_abs_shap, share; one row per input column, largest first."""
    encoded_importance: pd.DataFrame
    """The same per encoded (one-hot, scaled) feature."""
    values: pd.DataFrame
    """One row per explained row and output: the encoded features' SHAP values, `base_value`, `output` (the
    model's value) and `explained` (e.g. 'probability of 1')."""
    figures: dict[str, plt.Figure]
    """beeswarm, bar, waterfall (the first sampled row), dependence (the top feature)."""
    methods: dict[str, str]
    """Model -> explainer used."""
    additivity_error: float
    """max |sum of values + base value - model output| over the sample."""
    explained: str
    n_rows: int


def explain_pipeline(model: Pipeline, X: pd.DataFrame, positive_class=None, sample_size: int = 300,
                     background_size: int = 100, seed: int = 0) -> ShapReport:
    """Explain `model` (feature steps, then a pipeline of ('preprocess', ...), ('estimator', ...)) on rows of X."""
    *feature_steps, (_, fitted) = model.steps
    preprocess, estimator = fitted.named_steps["preprocess"], fitted.named_steps["estimator"]
    models = _weighted_models(estimator)
    if any(_method(m) == "permutation" for _, m in models):
        sample_size = min(sample_size, AGNOSTIC_SAMPLE)
    features = Pipeline(feature_steps).transform(X) if feature_steps else X
    # shap evaluates models on float32 copies: round first, so every model sees the same rows shap does and the
    # values sum exactly to the outputs (tree models otherwise split differently on a few rows).
    encoded_all = np.asarray(preprocess.transform(features), dtype=np.float32).astype(np.float64)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(X), size=min(sample_size, len(X)), replace=False))
    background = encoded_all[np.sort(rng.choice(len(X), size=min(background_size, len(X)), replace=False))]
    encoded, names = encoded_all[rows], list(preprocess.get_feature_names_out())
    classifier = hasattr(estimator, "predict_proba")
    with threadpool_limits(1):
        values, base, methods = _combined(models, encoded, background, classifier, seed)
        output = estimator.predict_proba(encoded) if classifier else estimator.predict(encoded)[:, None]
    additivity = float(np.abs(values.sum(axis=1) + base - output).max())
    labels = [f"probability of {c}" for c in estimator.classes_] if classifier else ["prediction"]
    shown = _shown_output(estimator, output, positive_class) if classifier else 0
    explanation = shap.Explanation(values[:, :, shown], base_values=base[:, shown], data=encoded, feature_names=names)
    encoded_importance = _ranked(pd.DataFrame({"feature": names,
                                               "mean_abs_shap": np.abs(values).mean(axis=(0, 2))}))
    owner = {name: _input_column(name, list(features.columns)) for name in names}
    importance = _ranked(encoded_importance.assign(feature=encoded_importance["feature"].map(owner))
                         .groupby("feature", as_index=False)["mean_abs_shap"].sum())
    table = pd.concat([pd.DataFrame(values[:, :, k], columns=names).assign(
        row=X.index[rows], explained=label, base_value=base[:, k], output=output[:, k])
        for k, label in enumerate(labels)], ignore_index=True)
    figures = _figures(explanation, encoded_importance["feature"].iloc[0], labels[shown])
    return ShapReport(importance, encoded_importance, table, figures, methods, additivity, labels[shown], len(rows))


def _weighted_models(estimator) -> list[tuple[float, object]]:
    """(weight, model) of every model whose outputs the estimator averages; itself with weight 1 otherwise."""
    if hasattr(estimator, "members") and hasattr(estimator, "estimators_"):  # FoldBag: members of fold models
        total = sum(weight for _, weight, _ in estimator.members)
        return [(weight / total / len(models), model) for _, weight, models in estimator.members for model in models]
    return [(1.0, estimator)]


def _method(model) -> str:
    if any(c.__module__.split(".")[0] in TREE_LIBRARIES for c in type(model).__mro__) or (
            type(model).__name__ in SKLEARN_TREES):
        return "tree"  # wrappers such as XGBLabelClassifier included
    if hasattr(model, "coef_") and not hasattr(model, "predict_proba"):
        return "linear"
    return "permutation"


def _combined(models: list[tuple[float, object]], rows: np.ndarray, background: np.ndarray, classifier: bool,
              seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """Weighted sum of each model's SHAP values (rows, features, outputs) and base values (rows, outputs)."""
    values, base, methods = 0.0, 0.0, {}
    for index, (weight, model) in enumerate(models):
        method = _method(model)
        output = model.predict_proba(rows) if classifier else model.predict(rows)[:, None]
        model_values, model_base = _single(model, method, rows, background, classifier, seed)
        error = float(np.abs(model_values.sum(axis=1) + model_base - output).max())
        # Relative to the output's size: boosting libraries predict in float32 (1e-7 of the value).
        if error > ADDITIVITY_TOLERANCE * max(1.0, float(np.abs(output).max())):  # shap's trees disagree on a row
            method = f"permutation (TreeSHAP was off by {error:.2g})"
            model_values, model_base = _single(model, "permutation", rows, background, classifier, seed)
        values, base = values + weight * model_values, base + weight * model_base
        methods[f"{index}:{type(model).__name__}"] = method
    return np.asarray(values), np.asarray(base), methods


def _single(model, method: str, rows: np.ndarray, background: np.ndarray, classifier: bool,
            seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One model's SHAP values as (rows, features, outputs) and base values as (rows, outputs)."""
    if method == "tree":
        explainer = shap.TreeExplainer(model, data=background, feature_perturbation="interventional",
                                       model_output="probability" if classifier and _boosted(model) else "raw")
        explanation = explainer(rows, check_additivity=False)
    elif method == "linear":
        explanation = shap.LinearExplainer(model, background)(rows)
    else:
        predict = model.predict_proba if classifier else model.predict
        explainer = shap.explainers.Permutation(predict, background[:PERMUTATION_BACKGROUND], seed=seed)
        explanation = explainer(rows, max_evals=2 * PERMUTATIONS * rows.shape[1] + 1, silent=True)
    values, base = np.asarray(explanation.values, dtype=float), np.asarray(explanation.base_values, dtype=float)
    if values.ndim == 2:  # one output: regression, or a binary tree model explaining the positive class only
        values, base = values[:, :, None], base.reshape(len(rows), -1)[:, :1]
        if classifier:  # complete the other class: its probability is one minus this one
            values, base = np.concatenate([-values, values], axis=2), np.concatenate([1 - base, base], axis=1)
    return values, np.broadcast_to(base, (len(rows), values.shape[2]))


def _boosted(model) -> bool:
    """Boosting's raw output is a margin; a scikit-learn forest's already is the probability."""
    return type(model).__name__ not in SKLEARN_TREES


def _shown_output(estimator, output: np.ndarray, positive_class) -> int:
    """The output the plots show: the positive class for binary, the most often predicted class otherwise."""
    classes = list(estimator.classes_)
    if len(classes) == 2:
        if positive_class is None:
            return 1
        return [str(c) for c in classes].index(str(positive_class))
    return int(np.bincount(output.argmax(axis=1), minlength=len(classes)).argmax())


def _figures(explanation: shap.Explanation, top_feature: str, explained: str) -> dict[str, plt.Figure]:
    figures = {}
    for kind in ("beeswarm", "bar", "waterfall", "dependence"):
        plt.figure(figsize=(7, 5))
        if kind == "beeswarm":
            shap.plots.beeswarm(explanation, max_display=15, show=False)
        elif kind == "bar":
            shap.plots.bar(explanation, max_display=15, show=False)
        elif kind == "waterfall":
            shap.plots.waterfall(explanation[0], max_display=12, show=False)
        else:
            shap.plots.scatter(explanation[:, top_feature], color=explanation, show=False)
        figure = plt.gcf()
        figure.suptitle(f"SHAP {kind}: {explained}", fontsize=10)
        figures[kind] = figure
    return figures


def _ranked(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.sort_values("mean_abs_shap", ascending=False, kind="stable").reset_index(drop=True)
    total = frame["mean_abs_shap"].sum()
    return frame.assign(share=frame["mean_abs_shap"] / total if total > 0 else 0.0)


def _input_column(encoded_name: str, columns: list[str]) -> str:
    """One-hot names are '<column>_<category>'; the longest matching column owns the feature."""
    if encoded_name in columns:
        return encoded_name
    owners = [c for c in columns if encoded_name.startswith(f"{c}_")]
    return max(owners, key=len) if owners else encoded_name
