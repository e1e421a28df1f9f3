"""SHAP explanations of a fitted pipeline in the model's own output space: class probabilities for classifiers, the
prediction for regression, mapped back to the input columns; and the reason codes of scored rows.

The values come from `contributions`: each of the AutoML bag's fold models explained by the fastest exact method
its library has, the bag's values the weighted sum of theirs, values + base = output checked on every row. Library
threads are held to the caller's count (one in the explain assets): with several explain steps side by side on 2
cores, tree libraries that each took every core made one step 10x slower.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import shap
from sklearn.pipeline import Pipeline

from tmiv_assets.ml.automl.decision import WeightedDecision
from tmiv_assets.ml.explain.contributions import ensemble_contributions, method_of, weighted_models
from tmiv_assets.ml.metrics import resolve_positive_class

AGNOSTIC_SAMPLE = 60  # rows explained when any model needs the permutation explainer


@dataclass(frozen=True)
class ShapReport:
    """SHAP values of a sample in the model's output space, the importance tables and the plots."""

    importance: pd.DataFrame
    """Columns: feature, mean_abs_shap, share; one row per input column (its encoded parts summed on each row),
    largest first."""
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
                     background_size: int = 100, seed: int = 0, threads: int = 1) -> ShapReport:
    """Explain `model` (feature steps, then a pipeline of ('preprocess', ...), ('estimator', ...)) on rows of X."""
    estimator = fitted_estimator(model)
    sample_size = affordable_rows(model, sample_size)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(X), size=min(sample_size, len(X)), replace=False))
    encoded, names, owners = _encoded(model, X.iloc[rows])
    background, _, _ = _encoded(model, X.iloc[np.sort(rng.choice(len(X), size=min(background_size, len(X)),
                                                                   replace=False))])
    explained = ensemble_contributions(estimator, encoded, background, seed, threads)
    values, base = explained.values, explained.base
    output = base + values.sum(axis=1)
    classifier = hasattr(estimator, "predict_proba")
    labels = [f"probability of {c}" for c in estimator.classes_] if classifier else ["prediction"]
    shown = _shown_output(estimator, output, positive_class) if classifier else 0
    explanation = shap.Explanation(values[:, :, shown], base_values=base[:, shown], data=encoded, feature_names=names)
    encoded_importance = _ranked(pd.DataFrame({"feature": names,
                                               "mean_abs_shap": np.abs(values).mean(axis=(0, 2))}))
    # A column's value on a row is the sum of its encoded parts' (one-hot, calendar parts): exact for the group.
    columns = list(dict.fromkeys(owners))
    grouped = np.stack([values[:, [owners[i] == column for i in range(len(names))], :].sum(axis=1)
                        for column in columns], axis=1)
    importance = _ranked(pd.DataFrame({"feature": columns, "mean_abs_shap": np.abs(grouped).mean(axis=(0, 2))}))
    table = pd.concat([pd.DataFrame(values[:, :, k], columns=names).assign(
        row=X.index[rows], explained=label, base_value=base[:, k], output=output[:, k])
        for k, label in enumerate(labels)], ignore_index=True)
    figures = _figures(explanation, encoded_importance["feature"].iloc[0], labels[shown])
    return ShapReport(importance, encoded_importance, table, figures, explained.methods, explained.additivity_error,
                      labels[shown], len(rows))


def affordable_rows(model: Pipeline, wanted: int) -> int:
    """How many rows to explain: `wanted`, or AGNOSTIC_SAMPLE when any model needs the permutation explainer
    (its cost grows with rows x evaluations x background rows)."""
    permutation = any(method_of(m) == "permutation" for _, m in weighted_models(fitted_estimator(model)))
    return min(wanted, AGNOSTIC_SAMPLE) if permutation else wanted


def fitted_estimator(model: Pipeline):
    """The estimator at the end of a served AutoML pipeline, or a ValueError saying what the explainers need."""
    last = model.steps[-1][1] if isinstance(model, Pipeline) else None
    if not isinstance(last, Pipeline) or not {"preprocess", "estimator"} <= set(last.named_steps):
        raise ValueError(f"cannot explain a {type(model).__name__}: the explainers need the AutoML's served "
                         "pipeline (feature steps, then a pipeline of 'preprocess' and 'estimator' steps)")
    estimator = last.named_steps["estimator"]
    # class weights decide which class is predicted, not the probabilities the explainers explain
    return estimator.estimator if isinstance(estimator, WeightedDecision) else estimator


def _encoded(model: Pipeline, X: pd.DataFrame) -> tuple[np.ndarray, list[str], list[str]]:
    """(X as the estimator sees it, the encoded feature names, the input column each comes from)."""
    *feature_steps, (_, fitted) = model.steps
    preprocess = fitted.named_steps["preprocess"]
    expected = list(getattr(model, "feature_names_in_", X.columns))
    unknown, missing = sorted(set(X.columns) - set(expected)), sorted(set(expected) - set(X.columns))
    if unknown or missing:
        raise ValueError(f"rows to explain must have the model's input columns {expected}: unknown {unknown}, "
                         f"missing {missing}")
    X = X[expected]
    features = Pipeline(feature_steps).transform(X) if feature_steps else X
    # shap evaluates models on float32 copies: round first, so every model sees the same rows shap does and the
    # values sum exactly to the outputs (tree models otherwise split differently on a few rows).
    encoded = np.asarray(preprocess.transform(features), dtype=np.float32).astype(np.float64)
    names = list(preprocess.get_feature_names_out())
    source = getattr(feature_steps[0][1], "source_of", None) if feature_steps else None  # calendar parts -> time
    owners = [_input_column(name, list(features.columns)) for name in names]
    return encoded, names, [source(owner) for owner in owners] if source else owners


def input_contributions(model: Pipeline, X: pd.DataFrame, background: pd.DataFrame, positive_class=None,
                        threads: int = 1) -> tuple[pd.DataFrame, np.ndarray]:
    """(each row's SHAP values per input column, its base value) in the output a scored batch reports as `score`
    (the positive class's probability; the predicted class's for multiclass) or `prediction` for regression:
    base + the row's values = that output. One-hot parts are summed back into their column."""
    estimator = fitted_estimator(model)
    encoded, names, owners = _encoded(model, X)
    explained = ensemble_contributions(estimator, encoded, _encoded(model, background)[0], threads=threads)
    values, base = explained.values, explained.base
    if hasattr(estimator, "predict_proba"):
        classes = list(estimator.classes_)
        if len(classes) == 2:
            shown = np.full(len(X), classes.index(resolve_positive_class(estimator.classes_, positive_class)))
        else:
            shown = (base + values.sum(axis=1)).argmax(axis=1)
    else:
        shown = np.zeros(len(X), dtype=int)
    per_row = pd.DataFrame(values[np.arange(len(X)), :, shown], columns=names, index=X.index)
    return per_row.T.groupby(pd.Index(owners), sort=False).sum().T, base[np.arange(len(X)), shown]


def reason_codes(model: Pipeline, X: pd.DataFrame, background: pd.DataFrame, positive_class=None, top: int = 3,
                 threads: int = 1) -> pd.DataFrame:
    """Per row of X: the `top` input columns that moved its score most (`input_contributions`), with their signed
    values; `reason_base` + the top values + `reason_rest` = the row's score."""
    by_column, base = input_contributions(model, X, background, positive_class, threads)
    order = np.argsort(-by_column.abs().to_numpy(), axis=1, kind="stable")[:, :top]
    picked = np.take_along_axis(by_column.to_numpy(), order, axis=1)
    result = pd.DataFrame(index=X.index)
    for rank in range(order.shape[1]):
        result[f"reason_{rank + 1}"] = by_column.columns.to_numpy()[order[:, rank]]
        result[f"reason_{rank + 1}_contribution"] = picked[:, rank]
    result["reason_base"] = base
    result["reason_rest"] = by_column.sum(axis=1).to_numpy() - picked.sum(axis=1)
    return result


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
