"""Global SHAP explanations of a fitted pipeline."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import shap
from sklearn.pipeline import Pipeline

TREE_LIBRARIES = {"lightgbm", "xgboost", "catboost"}
AGNOSTIC_SAMPLE = 60
AGNOSTIC_BACKGROUND = 40


@dataclass(frozen=True)
class ShapReport:
    """Mean |SHAP| per model input column and the beeswarm summary of the encoded features."""

    importance: pd.DataFrame
    """Columns: feature, mean_abs_shap, share; one row per input column, largest first."""
    encoded_importance: pd.DataFrame
    """The same per encoded (one-hot, scaled) feature."""
    summary_figure: plt.Figure
    n_rows: int


def explain_pipeline(
    model: Pipeline, X: pd.DataFrame, sample_size: int = 500, background_size: int = 100, seed: int = 0
) -> ShapReport:
    """Explain `model` (feature steps followed by ('preprocess', ...), ('estimator', ...)) on X."""
    *feature_steps, (_, fitted) = model.steps
    if not _is_fast(fitted.named_steps["estimator"]):
        sample_size = min(sample_size, AGNOSTIC_SAMPLE)  # each row costs ~2 x features model calls
    sample = X.sample(n=min(sample_size, len(X)), random_state=seed)
    features = Pipeline(feature_steps).transform(sample) if feature_steps else sample
    preprocess, estimator = fitted.named_steps["preprocess"], fitted.named_steps["estimator"]
    encoded = preprocess.transform(features)
    names = list(preprocess.get_feature_names_out())
    explainer = _explainer(estimator, encoded, names, background_size, seed)
    agnostic = isinstance(explainer, shap.explainers.Permutation)
    explanation = explainer(encoded, silent=True) if agnostic else explainer(encoded)
    values = np.abs(explanation.values)
    if values.ndim == 3:  # one slice per class: average the magnitude over classes
        values = values.mean(axis=2)
    encoded_importance = _ranked(pd.DataFrame({"feature": names, "mean_abs_shap": values.mean(axis=0)}))
    owner = [_input_column(name, list(features.columns)) for name in names]
    per_input = encoded_importance.assign(feature=[owner[names.index(f)] for f in encoded_importance["feature"]])
    importance = _ranked(per_input.groupby("feature", as_index=False)["mean_abs_shap"].sum())
    shap.summary_plot(explanation, show=False, max_display=15, plot_size=(7, 5))
    return ShapReport(importance, encoded_importance, plt.gcf(), len(sample))


def _explainer(estimator, encoded: np.ndarray, names: list[str], background_size: int, seed: int):
    """Exact path-dependent TreeSHAP for tree models, LinearSHAP for linear ones, and the model-agnostic
    permutation explainer over a small background sample for the rest (ensembles, kernels, neighbours)."""
    if type(estimator).__module__.split(".")[0] in TREE_LIBRARIES or hasattr(estimator, "tree_"):
        return shap.TreeExplainer(estimator, feature_names=names)
    if hasattr(estimator, "coef_"):
        background = shap.sample(encoded, min(background_size, len(encoded)), random_state=seed)
        return shap.Explainer(estimator, background, feature_names=names)
    background = shap.sample(encoded, min(AGNOSTIC_BACKGROUND, len(encoded)), random_state=seed)
    predict = estimator.predict_proba if hasattr(estimator, "predict_proba") else estimator.predict
    return shap.explainers.Permutation(predict, background, feature_names=names, seed=seed)


def _is_fast(estimator) -> bool:
    return (type(estimator).__module__.split(".")[0] in TREE_LIBRARIES or hasattr(estimator, "tree_")
            or hasattr(estimator, "coef_"))


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
