"""Held-out evaluation: the metrics of ml.training.score_model plus MAPE and the confusion matrix, and plots."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # no display on servers and in the daemon
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn import metrics  # noqa: E402
from sklearn.calibration import CalibrationDisplay  # noqa: E402
from sklearn.inspection import permutation_importance  # noqa: E402
from sklearn.metrics import PrecisionRecallDisplay  # noqa: E402

from tmiv_assets.ml.plots import confusion_matrix_plot, predicted_vs_actual_plot, roc_plot  # noqa: E402
from tmiv_assets.ml.training import resolve_positive_class, score_model  # noqa: E402


@dataclass(frozen=True)
class Evaluation:
    """Scores of one model on held-out rows."""

    metrics: dict[str, float]
    """accuracy, precision, recall, f1, f1_macro, roc_auc, log_loss (classification);
    r2, rmse, mae, mape, explained_variance (regression)."""
    confusion: pd.DataFrame | None
    """Counts, actual classes as rows and predicted as columns; None for regression."""


def evaluate(model, X: pd.DataFrame, y: pd.Series, task: str, positive_class=None) -> Evaluation:
    """Score a fitted model (or pipeline) on X, y."""
    scores = score_model(model, X, y, task, positive_class)
    if task == "regression":
        scores["mape"] = float(metrics.mean_absolute_percentage_error(y, model.predict(X)))
        return Evaluation(scores, None)
    if task == "multiclass":
        predicted = model.predict(X)
        for name in ("precision", "recall"):
            scores[f"{name}_macro"] = float(getattr(metrics, f"{name}_score")(y, predicted, average="macro",
                                                                              zero_division=0))
    classes = model.classes_
    matrix = metrics.confusion_matrix(y, model.predict(X), labels=classes)
    return Evaluation(scores, pd.DataFrame(matrix, index=pd.Index(classes, name="actual"),
                                           columns=pd.Index(classes, name="predicted")))


def evaluation_plots(model, X: pd.DataFrame, y: pd.Series, task: str, positive_class=None) -> dict[str, plt.Figure]:
    """Confusion matrix, ROC, precision-recall and calibration (binary) or residuals and predicted vs actual
    (regression), plus permutation feature importance."""
    figures = {"feature_importance": feature_importance_plot(model, X, y)}
    if task == "regression":
        figures["residuals"] = residuals_plot(model, X, y)
        figures["predicted_vs_actual"] = predicted_vs_actual_plot(model, X, y)
        return figures
    figures["confusion_matrix"] = confusion_matrix_plot(model, X, y)
    if task == "binary":
        positive = resolve_positive_class(model.classes_, positive_class)
        figures["roc"] = roc_plot(model, X, y, positive)
        figures["precision_recall"] = _figure(
            lambda ax: PrecisionRecallDisplay.from_estimator(model, X, y, pos_label=positive, ax=ax))
        figures["calibration"] = _figure(
            lambda ax: CalibrationDisplay.from_estimator(model, X, y, pos_label=positive, n_bins=10, ax=ax))
    return figures


def feature_importance_plot(model, X: pd.DataFrame, y: pd.Series, top: int = 15, seed: int = 0) -> plt.Figure:
    """Permutation importance on the given rows: model-agnostic, so it works for ensembles too."""
    result = permutation_importance(model, X, y, n_repeats=5, random_state=seed)
    order = np.argsort(result.importances_mean)[::-1][:top]
    figure, axis = plt.subplots(figsize=(6, 0.35 * len(order) + 1))
    axis.barh(np.asarray(X.columns)[order], result.importances_mean[order],
              xerr=result.importances_std[order], color="tab:blue")
    axis.invert_yaxis()
    axis.set_xlabel("permutation importance (score drop)")
    return figure


def residuals_plot(model, X: pd.DataFrame, y: pd.Series) -> plt.Figure:
    predicted = model.predict(X)
    figure, axis = plt.subplots(figsize=(5, 4))
    axis.scatter(predicted, np.asarray(y) - predicted, s=8, alpha=0.6)
    axis.axhline(0, linestyle="--", color="grey")
    axis.set_xlabel("predicted")
    axis.set_ylabel("residual (actual - predicted)")
    return figure


def training_curve_plot(history: pd.DataFrame | dict) -> plt.Figure:
    """Loss per epoch / boosting round: a TorchMLP `history_` frame, or an `evals_result_` dict from
    LightGBM / XGBoost ({dataset: {metric: [values]}})."""
    figure, axis = plt.subplots(figsize=(6, 4))
    if isinstance(history, pd.DataFrame):
        for column in ("train_loss", "val_loss"):
            axis.plot(history["epoch"], history[column], label=column)
        axis.set_xlabel("epoch")
    else:
        for dataset, curves in history.items():
            for metric, values in curves.items():
                axis.plot(np.arange(1, len(values) + 1), values, label=f"{dataset} {metric}")
        axis.set_xlabel("boosting round")
    axis.set_ylabel("loss")
    axis.legend()
    return figure


def _figure(draw) -> plt.Figure:
    figure, axis = plt.subplots(figsize=(5, 4))
    draw(axis)
    return figure
