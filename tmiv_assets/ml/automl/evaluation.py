"""Held-out evaluation of a fitted model: the no-skill baseline it must beat, and the plots a person reads."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on servers and in the daemon
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.calibration import CalibrationDisplay  # noqa: E402
from sklearn.metrics import PrecisionRecallDisplay  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402

from tmiv_assets.ml.automl.catalog import baseline_estimator  # noqa: E402
from tmiv_assets.ml.features.preprocessing import make_preprocessor  # noqa: E402
from tmiv_assets.ml.metrics import resolve_positive_class  # noqa: E402
from tmiv_assets.ml.plots import confusion_matrix_plot, predicted_vs_actual_plot, roc_plot  # noqa: E402


def fit_baseline(X: pd.DataFrame, y: pd.Series, task: str) -> Pipeline:
    """Class priors (or the mean) behind the same preprocessor as every searched model."""
    return Pipeline([("preprocess", make_preprocessor()), ("estimator", baseline_estimator(task))]).fit(X, y)


def evaluation_plots(model, X: pd.DataFrame, y: pd.Series, task: str, positive_class=None) -> dict[str, plt.Figure]:
    """ROC, precision-recall, calibration and confusion matrix (binary); confusion matrix (multiclass);
    predicted vs actual and residuals (regression); plus the training curves of members that record them."""
    figures: dict[str, plt.Figure] = {}
    if task == "regression":
        figures["predicted_vs_actual"] = predicted_vs_actual_plot(model, X, y)
        figures["residuals"] = residuals_plot(model, X, y)
    else:
        figures["confusion_matrix"] = confusion_matrix_plot(model, X, y)
    if task == "binary":
        positive = resolve_positive_class(model.classes_, positive_class)
        figures["roc"] = roc_plot(model, X, y, positive)
        figures["precision_recall"] = _figure(
            lambda ax: PrecisionRecallDisplay.from_estimator(model, X, y, pos_label=positive, ax=ax))
        figures["calibration"] = _figure(
            lambda ax: CalibrationDisplay.from_estimator(model, X, y, pos_label=positive, n_bins=10, ax=ax))
    for name, history in training_histories(model).items():
        figures[f"training_curve_{name}"] = training_curve_plot(history)
    return figures


def training_histories(model) -> dict[str, pd.DataFrame]:
    """Per-epoch loss frames (`history_`) of the networks anywhere inside a fitted pipeline or ensemble."""
    found: dict[str, pd.DataFrame] = {}

    def visit(name: str, estimator) -> None:
        if isinstance(getattr(estimator, "history_", None), pd.DataFrame):
            found[name] = estimator.history_
        for child_name, child in _children(estimator):
            visit(child_name, child)

    visit("model", model)
    return found


def _children(estimator) -> list[tuple[str, object]]:
    if isinstance(estimator, Pipeline):
        return list(estimator.steps)
    named = getattr(estimator, "named_estimators_", None)
    if named is not None:
        return list(named.items())
    fitted = getattr(estimator, "estimators_", None)
    if isinstance(fitted, list):
        return [(f"{type(estimator).__name__}_{i}", e) for i, e in enumerate(fitted) if hasattr(e, "get_params")]
    return []


def residuals_plot(model, X: pd.DataFrame, y: pd.Series) -> plt.Figure:
    predicted = model.predict(X)
    figure, axis = plt.subplots(figsize=(5, 4))
    axis.scatter(predicted, np.asarray(y) - predicted, s=8, alpha=0.6)
    axis.axhline(0, linestyle="--", color="grey")
    axis.set_xlabel("predicted")
    axis.set_ylabel("residual (actual - predicted)")
    return figure


def training_curve_plot(history: pd.DataFrame) -> plt.Figure:
    """Training and validation loss per epoch of a TorchMLP (`history_`)."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for column in ("train_loss", "val_loss"):
        axis.plot(history["epoch"], history[column], label=column)
    axis.set_xlabel("epoch")
    axis.set_ylabel("loss")
    axis.legend()
    return figure


def _figure(draw) -> plt.Figure:
    figure, axis = plt.subplots(figsize=(5, 4))
    draw(axis)
    return figure
